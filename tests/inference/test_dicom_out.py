"""DICOM SEG + SR output (issue 18): read back with highdicom and pydicom, references, identifiers, units."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pytest
from PIL import Image
from pydicom.sr.codedict import codes

from buscad.errors import DataError
from buscad.inference.dicom_out import PIXEL_UNIT, SCHEME, ModelIdentity, build_dicom, lesion_outlines, write_dicom
from buscad.inference.measure import measure_lesions
from buscad.inference.outputs import write_outputs
from buscad.inference.predictor import Prediction, Predictor
from tests.helpers import clinical_dicom, ellipse_mask, partial_lesion_model, speckle_image

SHAPE = (72, 96)
LESION = ellipse_mask(*SHAPE, (36, 44), (14, 24)) | ellipse_mask(*SHAPE, (60, 86), (4, 5))


@pytest.fixture(scope="module")
def lesion_predictor(tiny_checkpoint: Callable[..., Path]) -> Predictor:
    """A tiny untrained model shifted to call ~15 % of an image lesion (real outlines and measurements)."""
    path = tiny_checkpoint(adjust=partial_lesion_model, min_lesion_pixels=4)
    return Predictor.from_checkpoint(path, threads=1, precision="32-true")


@pytest.fixture(scope="module")
def model(lesion_predictor: Predictor) -> ModelIdentity:
    return ModelIdentity.from_card(lesion_predictor.model_card())


def known_prediction(mask: np.ndarray, spacing: tuple[float, float] | None, source: str = "scan.dcm",
                     label: str = "malignant") -> Prediction:
    """A prediction whose mask and numbers are known (for exact unit and value checks)."""
    probabilities = {"normal": 0.1, "benign": 0.25, "malignant": 0.65} if label != "normal" else {
        "normal": 0.9, "benign": 0.06, "malignant": 0.04}
    record = {"input": source, "label": label, "probabilities": probabilities, "refined_label": label,
              "flags": {"inconsistent": False, "uncertain": True}, "reasons": [],
              "measurements": measure_lesions(mask, spacing), "model_id": "unet-0123456789ab",
              "pixel_spacing_mm": list(spacing) if spacing else None}
    return Prediction(record, mask, mask.astype(np.float32), speckle_image(*mask.shape, lesion=mask))


def read_png_mask(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 0


def seg_mask(seg: Any, source_uid: str) -> np.ndarray:
    pixels = seg.get_pixels_by_source_instance([source_uid], segment_numbers=[1])
    return pixels[0, :, :, 0] > 0


def measurement_values(group: Any) -> dict[str, tuple[float, str]]:
    return {m.name.meaning: (float(m.value), m.unit.value) for m in group.get_measurements()}


def evaluations(group: Any) -> dict[str, str]:
    return {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}


def test_seg_and_sr_of_a_dicom_input(lesion_predictor: Predictor, model: ModelIdentity, tmp_path: Path) -> None:
    """End to end with the real predictor: SEG = PNG mask, references, identifiers, SR contents in mm."""
    import pydicom

    image = speckle_image(*SHAPE, seed=2, lesion=LESION)
    path = clinical_dicom(tmp_path / "scan.dcm", image, region_delta_cm=(0.01, 0.01))
    prediction = lesion_predictor.analyze(path)
    record = prediction.record
    assert record["pixel_spacing_mm"] == [0.1, 0.1] and record["measurements"]["lesions"], record
    pngs = write_outputs(prediction, tmp_path / "out", "scan")
    paths = write_dicom(prediction, path, tmp_path / "dicom", "scan", model)
    assert sorted(paths) == ["seg", "sr"]
    assert [p.name for p in paths.values()] == ["scan_seg.dcm", "scan_sr.dcm"]
    assert record["dicom_paths"] == {kind: str(p) for kind, p in paths.items()}

    source = pydicom.dcmread(path)
    seg = hd.seg.segread(paths["seg"])
    assert np.array_equal(seg_mask(seg, source.SOPInstanceUID), read_png_mask(pngs["mask"]))
    assert np.array_equal(seg_mask(seg, source.SOPInstanceUID), prediction.mask > 0)
    assert (seg.Rows, seg.Columns) == SHAPE and seg.SegmentationType == "BINARY"
    for dataset in (seg, pydicom.dcmread(paths["sr"])):
        assert dataset.StudyInstanceUID == source.StudyInstanceUID
        assert dataset.SeriesInstanceUID != source.SeriesInstanceUID
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                        "StudyDate", "StudyTime"):
            assert dataset[keyword].value == source[keyword].value, keyword
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    derivation = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert derivation.ReferencedSOPInstanceUID == source.SOPInstanceUID
    segment = seg.get_segment_description(1)
    assert segment.segment_label == "lesion"
    assert segment.segmented_property_category == codes.SCT.MorphologicallyAbnormalStructure
    assert segment.segmented_property_type == codes.SCT.Lesion
    assert list(segment.anatomic_regions) == [codes.SCT.Breast]
    algorithm = segment.algorithm_identification[0]
    assert algorithm.AlgorithmName == "buscad" and algorithm.AlgorithmVersion == model.version == record["model_id"]
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert model.model_id in algorithm.AlgorithmParameters

    sr = hd.sr.srread(paths["sr"])
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.VerificationFlag == "UNVERIFIED" and sr.PreliminaryFlag == "PRELIMINARY"
    evidence = {item.ReferencedSOPInstanceUID
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == {source.SOPInstanceUID, seg.SOPInstanceUID}
    observer = sr.content.get_observer_contexts()[0]
    assert observer.observer_type == codes.DCM.Device
    device = observer.observer_identifying_attributes
    assert (device.name, device.model_name, device.uid) == ("buscad", record["model_id"], model.device_uid)

    image_group = sr.content.get_image_measurement_groups()[0]
    values = measurement_values(image_group)
    assert values["Probability of cancer"] == (pytest.approx(record["probabilities"]["malignant"]), "1")
    assert values["Probability of benign"][0] == pytest.approx(record["probabilities"]["benign"])
    assert values["Probability of normal"][0] == pytest.approx(record["probabilities"]["normal"])
    states = evaluations(image_group)
    assert states["Refined label"] == record["refined_label"].capitalize()
    for flag, on in record["flags"].items():
        assert states[f"buscad flag: {flag}"] == ("Yes" if on else "No")
    assert image_group.source_images[0].referenced_sop_instance_uid == source.SOPInstanceUID

    planar = sr.content.get_planar_roi_measurement_groups()
    segment_groups = [g for g in planar if g.reference_type == codes.DCM.ReferencedSegmentationFrame]
    region_groups = [g for g in planar if g.reference_type == codes.DCM.ImageRegion]
    assert len(segment_groups) == 1 and len(region_groups) == len(record["measurements"]["lesions"])
    segment_group = segment_groups[0]
    assert segment_group.tracking_uid == segment.tracking_uid  # the SR group tracks the SEG segment
    frame_reference = segment_group.referenced_segmentation_frame
    assert frame_reference[0].referenced_sop_instance_uid == seg.SOPInstanceUID
    assert frame_reference[1].referenced_sop_instance_uid == source.SOPInstanceUID
    total = record["measurements"]["total"]
    assert measurement_values(segment_group)["Area"] == (pytest.approx(total["area_mm2"]), "mm2")
    for lesion, group in zip(record["measurements"]["lesions"], region_groups):
        assert measurement_values(group) == {
            "Area": (pytest.approx(lesion["area_mm2"]), "mm2"),
            "Long axis": (pytest.approx(lesion["longest_diameter_mm"]), "mm"),
            "Short axis": (pytest.approx(lesion["perpendicular_diameter_mm"]), "mm"),
        }
        region = group.roi
        assert region.graphic_type.value == "POLYLINE"
        if lesion["id"] == 1 and record.get("descriptors"):  # the largest lesion carries the descriptors
            assert evaluations(group)["Orientation"].lower() == record["descriptors"]["orientation"]["category"]
        selected_from = region.ContentSequence[0]  # the SCOORD's IMAGE item (SELECTED FROM)
        assert selected_from.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        points = region.value
        assert np.allclose(points[0], points[-1])  # closed outline


def test_units_without_pixel_spacing_are_pixels(model: ModelIdentity, tmp_path: Path) -> None:
    path = clinical_dicom(tmp_path / "nospacing.dcm", speckle_image(*SHAPE, lesion=LESION))
    prediction = known_prediction(LESION, None, str(path))
    sr = hd.sr.srread(write_dicom(prediction, path, tmp_path, "nospacing", model)["sr"])
    lesions = prediction.record["measurements"]["lesions"]
    region_groups = [g for g in sr.content.get_planar_roi_measurement_groups()
                     if g.reference_type == codes.DCM.ImageRegion]
    assert len(region_groups) == len(lesions) == 2
    for lesion, group in zip(lesions, region_groups):
        units = {m.name.meaning: m.unit for m in group.get_measurements()}
        assert {(u.value, u.scheme_designator, u.meaning) for u in units.values()} == {PIXEL_UNIT}
        assert measurement_values(group)["Area"][0] == lesion["area_px"]
        assert measurement_values(group)["Long axis"][0] == pytest.approx(lesion["longest_diameter_px"])


def test_mm_values_follow_the_spacing(model: ModelIdentity, tmp_path: Path) -> None:
    """Anisotropic spacing: the SR holds exactly the record's mm values, which are the measured ellipse's."""
    path = clinical_dicom(tmp_path / "aniso.dcm", speckle_image(*SHAPE, lesion=LESION), pixel_spacing=(0.08, 0.12))
    prediction = known_prediction(LESION, (0.08, 0.12), str(path))
    sr = hd.sr.srread(write_dicom(prediction, path, tmp_path, "aniso", model)["sr"])
    group = next(g for g in sr.content.get_planar_roi_measurement_groups()
                 if g.reference_type == codes.DCM.ImageRegion)
    big = prediction.record["measurements"]["lesions"][0]
    assert measurement_values(group)["Area"] == (pytest.approx(big["area_mm2"]), "mm2")
    assert big["area_mm2"] == pytest.approx(big["area_px"] * 0.08 * 0.12, rel=1e-3)
    assert measurement_values(group)["Long axis"] == (pytest.approx(big["longest_diameter_mm"]), "mm")
    assert big["longest_diameter_mm"] == pytest.approx(2 * 24 * 0.12, rel=0.05)  # horizontal major axis


def test_descriptor_categories_are_coded_on_the_largest_lesion(model: ModelIdentity, tmp_path: Path) -> None:
    path = clinical_dicom(tmp_path / "scan.dcm", speckle_image(*SHAPE, lesion=LESION), pixel_spacing=(0.1, 0.1))
    prediction = known_prediction(LESION, (0.1, 0.1), str(path))
    prediction.record["descriptors"] = {
        "note": "automated estimates", "units": "mm",
        "orientation": {"category": "parallel", "depth_to_width": 0.6}, "shape": {"category": "oval"},
        "margin": {"category": "not circumscribed"}, "posterior": {"category": None},
        "echo_pattern": {"category": "hypoechoic"},
    }
    sr = hd.sr.srread(write_dicom(prediction, path, tmp_path, "scan", model)["sr"])
    largest, other = (g for g in sr.content.get_planar_roi_measurement_groups()
                      if g.reference_type == codes.DCM.ImageRegion)
    expected = {"BI-RADS-style descriptors": "Automated estimate, not BI-RADS", "Orientation": "Parallel",
                "Shape": "Ovoid shape (Oval)", "Margins": "Not circumscribed", "Echo pattern": "Hypoechoic"}
    assert expected.items() <= evaluations(largest).items()
    assert "Posterior acoustic features" not in evaluations(largest)  # not assessable: left out
    assert "Orientation" not in evaluations(other)


def test_outline_follows_the_lesion_edge() -> None:
    lesions = measure_lesions(LESION)["lesions"]
    outlines = lesion_outlines(LESION, lesions)
    for lesion, outline in zip(lesions, outlines):
        min_row, min_col, max_row, max_col = lesion["bbox_px"]
        # pixel edges: SCOORD (column, row) from the bbox's corners (pixel centres are at +0.5)
        assert outline[:, 0].min() == pytest.approx(min_col, abs=0.51)
        assert outline[:, 0].max() == pytest.approx(max_col, abs=0.51)
        assert outline[:, 1].min() == pytest.approx(min_row, abs=0.51)
        assert outline[:, 1].max() == pytest.approx(max_row, abs=0.51)


def test_normal_image_gets_an_empty_segment(model: ModelIdentity, tmp_path: Path) -> None:
    import pydicom

    empty = np.zeros(SHAPE, dtype=bool)
    path = clinical_dicom(tmp_path / "normal.dcm", speckle_image(*SHAPE), pixel_spacing=(0.1, 0.1))
    prediction = known_prediction(empty, (0.1, 0.1), str(path), label="normal")
    paths = write_dicom(prediction, path, tmp_path, "normal", model)
    seg = hd.seg.segread(paths["seg"])
    assert not seg_mask(seg, pydicom.dcmread(path).SOPInstanceUID).any()
    sr = hd.sr.srread(paths["sr"])
    assert sr.content.get_planar_roi_measurement_groups() == []
    assert evaluations(sr.content.get_image_measurement_groups()[0])["Refined label"] == "Normal"


def test_missing_patient_identifiers_stay_empty(model: ModelIdentity, tmp_path: Path) -> None:
    import pydicom

    path = clinical_dicom(tmp_path / "anon.dcm", speckle_image(*SHAPE, lesion=LESION),
                          patient={"PatientName": "", "PatientBirthDate": "", "PatientSex": "", "AccessionNumber": ""})
    assert "PatientName" not in pydicom.dcmread(path)
    paths = write_dicom(known_prediction(LESION, None, str(path)), path, tmp_path, "anon", model)
    for kind in ("seg", "sr"):
        dataset = pydicom.dcmread(paths[kind])
        assert dataset.PatientID == "PAT-0042"  # copied
        for keyword in ("PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber"):
            assert keyword in dataset and not dataset[keyword].value, (kind, keyword)  # type 2: present, empty


def test_raster_input_writes_nothing_unless_asked(model: ModelIdentity, tmp_path: Path) -> None:
    import pydicom

    image = speckle_image(*SHAPE, lesion=LESION)
    path = tmp_path / "Jane Doe scan.png"
    Image.fromarray(image).save(path)
    prediction = known_prediction(LESION, None, str(path))
    prediction.image = image
    assert write_dicom(prediction, path, tmp_path / "dicom", "jane", model) == {}
    assert prediction.record["dicom_paths"] == {} and not (tmp_path / "dicom").exists()

    paths = write_dicom(prediction, path, tmp_path / "dicom", "jane", model, derived=True)
    assert [p.name for p in paths.values()] == ["jane_sc.dcm", "jane_seg.dcm", "jane_sr.dcm"]
    sc, seg_ds, sr_ds = (pydicom.dcmread(paths[kind]) for kind in ("sc", "seg", "sr"))
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and list(sc.ImageType) == ["DERIVED", "SECONDARY"]
    assert "buscad" in sc.DerivationDescription and "Jane Doe scan.png" in sc.DerivationDescription
    assert np.array_equal(sc.pixel_array, image)
    for dataset in (sc, seg_ds, sr_ds):  # a new study, no identifiers invented
        assert dataset.StudyInstanceUID == sc.StudyInstanceUID
        assert not dataset.PatientName and not dataset.PatientID and not dataset.PatientBirthDate
    seg = hd.seg.segread(paths["seg"])
    assert np.array_equal(seg_mask(seg, sc.SOPInstanceUID), LESION)
    sr = hd.sr.srread(paths["sr"])
    assert sr.content.get_image_measurement_groups()[0].source_images[0].referenced_sop_instance_uid == \
        sc.SOPInstanceUID


def test_jpeg_raster_is_marked_lossy(model: ModelIdentity, tmp_path: Path) -> None:
    import pydicom

    path = tmp_path / "scan.jpg"
    Image.fromarray(speckle_image(*SHAPE)).save(path, quality=90)
    prediction = known_prediction(np.zeros(SHAPE, bool), None, str(path), label="normal")
    sc = pydicom.dcmread(write_dicom(prediction, path, tmp_path, "scan", model, derived=True)["sc"])
    assert sc.LossyImageCompression == "01"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"frames": 3}, r"multi-frame DICOM \(3 frames\)"),
        ({"uids": False}, "no StudyInstanceUID or SeriesInstanceUID"),
    ],
)
def test_unusable_source_is_one_line_and_writes_nothing(model: ModelIdentity, tmp_path: Path, options: dict[str, Any],
                                                        message: str) -> None:
    path = clinical_dicom(tmp_path / "bad.dcm", speckle_image(*SHAPE), **options)
    with pytest.raises(DataError, match=message) as caught:
        write_dicom(known_prediction(LESION, None, str(path)), path, tmp_path / "dicom", "bad", model)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(path))
    assert not (tmp_path / "dicom").exists()


def test_size_mismatch_is_refused(model: ModelIdentity, tmp_path: Path) -> None:
    path = clinical_dicom(tmp_path / "small.dcm", speckle_image(40, 50))
    with pytest.raises(DataError, match="40x50 pixels but the prediction is 72x96"):
        build_dicom(known_prediction(LESION, None, str(path)), path, model)


def test_corrupt_dicom_is_one_line(model: ModelIdentity, tmp_path: Path) -> None:
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7f")
    with pytest.raises(DataError) as caught:
        write_dicom(known_prediction(LESION, None, str(path)), path, tmp_path, "broken", model)
    assert "\n" not in str(caught.value)


def test_hostile_readable_inputs_give_files_or_one_line(lesion_predictor: Predictor, model: ModelIdentity) -> None:
    """Every file of the hostile corpus that buscad reads and analyses: DICOM output or one DataError line."""
    from tests.hostile import corpus

    outcomes = {}
    for item in corpus(expect="ok"):
        variants = [(item.name, item.data)]
        if item.data[128:132] == b"DICM":  # the same hostile values in a file that has the UIDs to reference
            variants.append((f"uids-{item.name}", _with_uids(item.data)))
        for name, data in variants:
            prediction = lesion_predictor.analyze(data, name=name)
            try:
                output = build_dicom(prediction, data, model, name=name, derived=True)
            except DataError as exc:
                assert "\n" not in str(exc) and str(exc).startswith(name), exc
                outcomes[name] = "multi-frame" if "multi-frame" in str(exc) else "refused"
                continue
            assert output is not None and {"seg", "sr"} <= set(output.encoded())
            outcomes[name] = "written"
    assert "multi-frame" in outcomes.values(), outcomes  # the corpus's cine loop
    assert all(outcomes[name] in ("written", "multi-frame") for name in outcomes if name.startswith("uids-")), outcomes


def _with_uids(data: bytes) -> bytes:
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def test_a_failed_write_leaves_no_files(model: ModelIdentity, tmp_path: Path) -> None:
    """The SR cannot replace a folder of its name: the SEG written before it is removed, no temp file remains."""
    path = clinical_dicom(tmp_path / "scan.dcm", speckle_image(*SHAPE, lesion=LESION))
    out = tmp_path / "dicom"
    (out / "scan_sr.dcm").mkdir(parents=True)
    with pytest.raises(OSError):
        write_dicom(known_prediction(LESION, None, str(path)), path, out, "scan", model)
    assert [p.name for p in out.iterdir()] == ["scan_sr.dcm"]


def test_bytes_source_and_private_codes_declared(model: ModelIdentity, tmp_path: Path) -> None:
    import pydicom

    path = clinical_dicom(tmp_path / "scan.dcm", speckle_image(*SHAPE, lesion=LESION), pixel_spacing=(0.1, 0.1))
    output = build_dicom(known_prediction(LESION, (0.1, 0.1), "upload.dcm"), path.read_bytes(), model,
                         name="upload.dcm")
    assert output is not None
    files = output.encoded()
    assert list(files) == ["seg", "sr"] and all(data[128:132] == b"DICM" for data in files.values())
    sr = pydicom.dcmread(io.BytesIO(files["sr"]))
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == SCHEME


def test_model_identity_of_the_builtin_release() -> None:
    card = {"model_id": "unet-abcdef012345", "architecture": "unet", "checksum": "ab" * 32,
            "release": {"name": "buscad-busi", "version": "1.2"}}
    identity = ModelIdentity.from_card(card)
    assert identity.version == "buscad-busi 1.2" and identity.model_id == "unet-abcdef012345"
    assert identity.device_uid == ModelIdentity.from_card(card).device_uid  # stable per weights
    assert identity.device_uid != ModelIdentity.from_card({**card, "checksum": "cd" * 32}).device_uid


@pytest.mark.slow
def test_dciodvfy_finds_no_errors(lesion_predictor: Predictor, model: ModelIdentity, tmp_path: Path) -> None:
    """dicom3tools' validator on SEG and SR (DICOM inputs: spacing from US regions, from PixelSpacing, none) and
    on the derived SC, SEG and SR of a raster input."""
    validator = shutil.which("dciodvfy")
    if validator is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    written: list[Path] = []
    image = speckle_image(*SHAPE, seed=2, lesion=LESION)
    for name, options in (("regions", {"region_delta_cm": (0.01, 0.01)}), ("spacing", {"pixel_spacing": (0.1, 0.1)}),
                          ("px", {"frame_of_reference": False})):
        path = clinical_dicom(tmp_path / f"{name}.dcm", image, **options)
        written += write_dicom(lesion_predictor.analyze(path), path, tmp_path / "out", name, model).values()
    raster = tmp_path / "raster.png"
    Image.fromarray(image).save(raster)
    written += write_dicom(lesion_predictor.analyze(raster), raster, tmp_path / "out", "raster", model,
                           derived=True).values()
    assert len(written) == 9
    for path in written:
        result = subprocess.run([validator, str(path)], capture_output=True, text=True, timeout=120)
        lines = (result.stdout + result.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, (path.name, errors)
