"""DICOM output of a prediction: a Segmentation (SEG) and a TID 1500 measurement report (SR), with highdicom.

For a DICOM input both reference the analysed image (study, series, instance and, when it has one, frame of
reference) and copy its patient and study identifiers; nothing about the patient is invented, an identifier
the source lacks stays empty (DICOM type 2). For a raster input (PNG, JPEG, …) nothing is written unless the
caller asks for a *derived* copy: a Secondary Capture of the decoded image in a new study, marked DERIVED and
naming buscad and the source file, without patient identifiers; the SEG and SR then reference it.

- SEG (``NAME_seg.dcm``): BINARY, one segment "lesion" — category (49755003, SCT, "Morphologically Abnormal
  Structure"), type (52988006, SCT, "Lesion"), anatomic region (76752008, SCT, "Breast"), automatic, algorithm
  "buscad" with the model's id and version, family (123110, DCM, "Artificial Intelligence"). The frame equals
  ``prediction.mask`` (the PNG mask) pixel for pixel at the source's size.
- SR (``NAME_sr.dcm``, Comprehensive 3D SR, TID 1500): observer context = the model as a device; one image-level
  group (TID 1501) with the class probabilities, classifier label, refined label and flags; one planar ROI group
  (TID 1410) referencing the SEG segment (its Tracking UID is the segment's) with the total lesion area; one
  planar ROI group per connected lesion with its outline (closed POLYLINE) and area, long axis (longest
  diameter) and short axis (extent perpendicular to it) — in mm / mm² when the pixel spacing is known, else in
  ``({pixels}, UCUM, "pixels")``. The largest lesion's group also carries the BI-RADS-style descriptor
  categories of the record (``descriptors``), marked as automated estimates.
- SC (``NAME_sc.dcm``): only for a raster input with ``derived=True``.

Concepts DICOM has no code for use the private scheme :data:`SCHEME` (declared in each SR). The SEG and SR are
research output, not a diagnosis: the SR is PRELIMINARY, PARTIAL and UNVERIFIED. See ``docs/dicom.md``.
"""

from __future__ import annotations

import datetime
import io
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from buscad.data.images import read_regular_file
from buscad.data.limits import one_line, sniff_format
from buscad.errors import BuscadError, DataError
from buscad.io import write_bytes_atomic

SCHEME = "99BUSCAD"
"""Private coding scheme of the concepts DICOM has no standard code for (refined label, flags, …)."""
SUFFIXES = {"sc": "_sc.dcm", "seg": "_seg.dcm", "sr": "_sr.dcm"}
"""File name suffix per kind; written in this order (the SEG and SR reference the SC, the SR the SEG)."""
SERIES_NUMBERS = {"sc": 9900, "seg": 9901, "sr": 9902}
MANUFACTURER = "buscad"
PIXEL_UNIT = ("{pixels}", "UCUM", "pixels")
"""Unit of lengths and areas measured without a pixel spacing (a UCUM annotation, PS3.16 §7.2.2)."""
TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                       "StudyDate", "StudyTime", "ReferringPhysicianName")
"""Type 2 attributes the SEG and SR copy from the source: kept as they are, empty when the source lacks them."""
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class Analysed(Protocol):
    """What this module needs of a prediction (:class:`buscad.inference.predictor.Prediction`)."""

    record: dict[str, Any]
    mask: np.ndarray
    image: np.ndarray


@dataclass(frozen=True)
class ModelIdentity:
    """The model as DICOM names it: algorithm identification (SEG, SR) and device observer (SR)."""

    model_id: str
    version: str
    architecture: str
    checksum: str
    software_version: str

    @classmethod
    def from_card(cls, card: Mapping[str, Any]) -> ModelIdentity:
        """From :meth:`buscad.inference.predictor.Predictor.model_card`: the release version for the built-in
        model, else the model id (architecture + weights checksum prefix) names the version."""
        from buscad import __version__

        model_id = str(card.get("model_id") or "unknown")
        release = card.get("release") or {}
        version = f"{release.get('name', 'buscad')} {release['version']}" if release.get("version") else model_id
        return cls(model_id=model_id, version=version, architecture=str(card.get("architecture") or "unknown"),
                   checksum=str(card.get("checksum") or ""), software_version=__version__)

    @property
    def device_uid(self) -> str:
        """A UID fixed by the weights' checksum: the same model is the same device observer in every SR."""
        from pydicom.uid import generate_uid

        return str(generate_uid(entropy_srcs=["buscad-model", self.checksum or self.model_id]))


@dataclass
class DicomOutput:
    """The instances of one prediction by kind (``sc``, ``seg``, ``sr``): pydicom datasets and their encoding."""

    datasets: dict[str, Any]
    files: dict[str, bytes]

    def encoded(self) -> dict[str, bytes]:
        """Each instance as a DICOM Part 10 file (bytes), in :data:`SUFFIXES` order."""
        return dict(self.files)


def encode(datasets: Mapping[str, Any]) -> dict[str, bytes]:
    """Part 10 files (preamble, file meta) of the datasets, in :data:`SUFFIXES` order."""
    from pydicom import dcmwrite

    files = {}
    for kind in SUFFIXES:
        if kind in datasets:
            buffer = io.BytesIO()
            dcmwrite(buffer, datasets[kind], enforce_file_format=True)
            files[kind] = buffer.getvalue()
    return files


def source_header(source: str | os.PathLike[str] | bytes, name: str | None = None) -> Any | None:
    """The DICOM header (pydicom Dataset, no pixels) of ``source``, or None when it is a raster image.

    The reader keeps no dataset, so the file is parsed again here; the format is judged by content as the
    reader judges it. DataError (one line) when it cannot be read or parsed.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    return _header(_source_bytes(source, label), label)


def _source_bytes(source: str | os.PathLike[str] | bytes, label: str) -> bytes:
    return bytes(source) if isinstance(source, (bytes, bytearray)) else read_regular_file(Path(source), label)


def _header(data: bytes, label: str) -> Any | None:
    from buscad.inference.readers import DICOM_SUFFIXES

    image_format = sniff_format(data)
    if image_format != "DICOM" and not (image_format is None and Path(label).suffix.lower() in DICOM_SUFFIXES):
        return None
    import pydicom

    try:
        return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
    except RecursionError as exc:
        raise DataError(f"{label}: not a readable DICOM file (elements nested too deeply)") from exc
    except Exception as exc:  # any parser failure of an untrusted file is one line
        raise DataError(f"{label}: invalid DICOM file ({type(exc).__name__}: {one_line(exc)})") from exc


def build_dicom(prediction: Analysed, source: str | os.PathLike[str] | bytes, model: ModelIdentity, *,
                name: str | None = None, derived: bool = False) -> DicomOutput | None:
    """The SEG and SR (and, for a raster input with ``derived``, the SC) of one prediction.

    ``source`` is the analysed file (path or bytes). Returns None for a raster input without ``derived``.
    Raises DataError (one line) when the source cannot be referenced: a multi-frame DICOM, a file without
    the UIDs a reference needs, a size that differs from the mask's.
    """
    label = name or str(prediction.record.get("input") or "<bytes>")
    data = _source_bytes(source, label)
    header = _header(data, label)
    if header is None and not derived:
        return None
    try:
        if header is None:
            image = secondary_capture(prediction, label, sniff_format(data))
            reference = image
            datasets: dict[str, Any] = {"sc": image}
        else:
            reference = _checked_source(header, prediction.mask.shape, label)
            datasets = {}
        seg = segmentation(prediction.mask, reference, model)
        datasets["seg"] = seg
        datasets["sr"] = report(prediction.record, prediction.mask, reference, seg, model)
        files = encode(datasets)  # here, so a value copied from the source that cannot be encoded is one line too
    except BuscadError:
        raise
    except Exception as exc:  # whatever an untrusted header makes highdicom or pydicom refuse is one line
        raise DataError(f"{label}: cannot write DICOM output ({type(exc).__name__}: {one_line(exc)})") from exc
    return DicomOutput(datasets, files)


def write_dicom(prediction: Analysed, source: str | os.PathLike[str] | bytes, out_dir: str | os.PathLike[str],
                stem: str, model: ModelIdentity, *, derived: bool = False) -> dict[str, Path]:
    """Write ``<stem>_seg.dcm`` and ``<stem>_sr.dcm`` (and ``<stem>_sc.dcm``) atomically into ``out_dir``.

    Returns the paths by kind and records them in ``prediction.record["dicom_paths"]`` (both empty for a
    raster input without ``derived``). Each file is complete or absent; when one fails, those already
    written are removed.
    """
    output = build_dicom(prediction, source, model, name=str(prediction.record.get("input") or stem), derived=derived)
    if output is None:
        prediction.record["dicom_paths"] = {}
        return {}
    out = Path(out_dir)
    written: dict[str, Path] = {}
    try:
        for kind, data in output.encoded().items():
            path = out / f"{stem}{SUFFIXES[kind]}"
            write_bytes_atomic(path, data)
            written[kind] = path
    except BaseException:
        for path in written.values():
            path.unlink(missing_ok=True)
        raise
    prediction.record["dicom_paths"] = {kind: str(path) for kind, path in written.items()}
    return written


# --- the source --------------------------------------------------------------------------------------------


def _checked_source(header: Any, shape: tuple[int, ...], label: str) -> Any:
    """A copy of the source header the SEG and SR can reference: required UIDs present, one frame, the mask's
    size; missing type 2 patient/study attributes added empty (never filled in)."""
    missing = [keyword for keyword in REQUIRED_UIDS if not str(header.get(keyword, "") or "").strip()]
    if missing:
        raise DataError(f"{label}: the DICOM file has no {' or '.join(missing)}; no DICOM output can reference it")
    frames = _int(header.get("NumberOfFrames", 1) or 1, label, "NumberOfFrames")
    if frames > 1:
        raise DataError(f"{label}: multi-frame DICOM ({frames} frames); DICOM output is written for single-frame "
                        "images only (buscad analyses frame 1)")
    rows, columns = _int(header.get("Rows"), label, "Rows"), _int(header.get("Columns"), label, "Columns")
    if (rows, columns) != tuple(shape[:2]):
        raise DataError(f"{label}: the DICOM file is {rows}x{columns} pixels but the prediction is "
                        f"{shape[0]}x{shape[1]}; was the file changed?")
    source = header.copy()
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in source or source[keyword].value is None:
            setattr(source, keyword, "")
    if "Modality" not in source:
        source.Modality = "OT"
    if "PixelSpacing" in source and not source.get("SliceThickness"):
        # highdicom would copy it into a Pixel Measures item without the SliceThickness that item needs (type
        # 1C); a 2-D ultrasound frame has none, and the SR carries the measurements in mm anyway
        del source.PixelSpacing
    return source


def _int(value: Any, label: str, keyword: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{label}: DICOM {keyword} is not a whole number ({str(value)[:40]!r})") from None


def secondary_capture(prediction: Analysed, label: str, raster_format: str | None = None) -> Any:
    """A Secondary Capture of the decoded raster image, in a new study, marked derived.

    No patient identifiers: the type 2 patient and study attributes are present and empty. ImageType
    DERIVED\\SECONDARY; the derivation description names buscad and the source file.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    image = np.ascontiguousarray(np.asarray(prediction.image, dtype=np.uint8))
    file_name = _text(Path(label).name, 200)
    now = datetime.datetime.now()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword in TYPE2_PATIENT_STUDY:
        setattr(ds, keyword, "")
    ds.StudyInstanceUID = generate_uid()
    ds.StudyDescription = "buscad analysis of a non-DICOM image (derived)"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBERS["sc"]
    ds.SeriesDescription = "buscad: image derived from a raster file"
    ds.Modality = "OT"
    ds.Laterality = ""  # type 2C (breasts are paired): unknown, so empty
    ds.Manufacturer = MANUFACTURER
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = (f"Created by buscad from the raster file {file_name} (no DICOM source, "
                                "no patient identifiers); pixels as buscad decoded them for analysis")
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.BurnedInAnnotation = "NO"
    if raster_format == "JPEG":  # the pixels went through lossy JPEG compression before they reached us
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    photometric = "RGB" if image.ndim == 3 else "MONOCHROME2"
    ds.set_pixel_data(image, photometric, 8)
    return ds


# --- SEG -----------------------------------------------------------------------------------------------------


def segmentation(mask: np.ndarray, source: Any, model: ModelIdentity) -> Any:
    """A BINARY Segmentation of ``source`` with one segment, "lesion", whose frame is ``mask > 0``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="buscad", family=codes.cid7162.ArtificialIntelligence, version=_text(model.version, 64),
        source=MANUFACTURER, parameters=_parameters(model),
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        tracking_uid=hd.UID(), tracking_id="buscad lesion", anatomic_regions=[codes.SCT.Breast],
    )
    seg = hd.seg.Segmentation(
        source_images=[source], pixel_array=(np.asarray(mask) > 0).astype(np.uint8), segmentation_type="BINARY",
        segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=SERIES_NUMBERS["seg"],
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=_text(f"buscad {model.architecture}", 64), software_versions=model.software_version,
        device_serial_number=_text(model.model_id, 64), content_label="LESION",
        content_description=_text(f"Lesion segmentation by buscad ({model.model_id})", 64),
        series_description=_text(f"buscad lesion segmentation ({model.model_id})", 64),
        omit_empty_frames=False,
    )
    if not _has_plane_orientation(seg):  # General Image: type 2C when frames carry no patient orientation
        seg.PatientOrientation = source.get("PatientOrientation", "")
    return seg


def _has_plane_orientation(seg: Any) -> bool:
    groups = list(seg.get("SharedFunctionalGroupsSequence", [])) + list(seg.get("PerFrameFunctionalGroupsSequence", []))
    return any("PlaneOrientationSequence" in group for group in groups)


def _parameters(model: ModelIdentity) -> dict[str, str]:
    return {"model_id": _text(model.model_id, 64), "architecture": _text(model.architecture, 64),
            "weights_sha256": model.checksum[:64], "buscad_version": model.software_version}


# --- SR ------------------------------------------------------------------------------------------------------


def report(record: Mapping[str, Any], mask: np.ndarray, source: Any, seg: Any, model: ModelIdentity) -> Any:
    """A Comprehensive 3D SR holding a TID 1500 Measurement Report of one prediction (see the module doc)."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    algorithm = hd.sr.AlgorithmIdentification(
        name="buscad", version=_text(model.version, 64),
        parameters=[f"{key}={value}" for key, value in _parameters(model).items()],
    )
    algorithm.append(hd.sr.CodeContentItem(  # TID 4019 row 4 (highdicom < 0.28 has no `family` argument)
        name=hd.sr.CodedConcept("111000", "DCM", "Algorithm Family"), value=codes.cid7162.ArtificialIntelligence,
        relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD,
    ))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=model.device_uid, name="buscad", manufacturer_name=MANUFACTURER, model_name=model.model_id,
            serial_number=model.checksum or None,
        ),
    )
    site = hd.sr.FindingSite(anatomic_location=codes.SCT.Breast)
    groups: list[Any] = [_image_group(record, source, algorithm, site)]
    lesions = (record.get("measurements") or {}).get("lesions") or []
    if lesions:
        groups.append(_segment_group(record, source, seg, algorithm, site))
        groups += _lesion_groups(lesions, mask, source, algorithm, site, record)
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.UltrasonographyOfBreast, imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source, seg], content=content[0], series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBERS["sr"], sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, series_description=_text(f"buscad measurement report ({model.model_id})", 64),
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "buscad private codes"
    scheme.CodingSchemeResponsibleOrganization = "buscad project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def code(value: str, meaning: str) -> Any:
    """A concept of the private scheme :data:`SCHEME`."""
    from highdicom.sr import CodedConcept

    return CodedConcept(value, SCHEME, meaning)


def label_code(label: str) -> Any:
    """The coded value of a class: SCT Normal / Benign / Malignant / Lesion, else a private code."""
    from pydicom.sr.codedict import codes

    known = {"normal": codes.SCT.Normal, "benign": codes.SCT.Benign, "malignant": codes.SCT.Malignant,
             "lesion": codes.SCT.Lesion}
    return known.get(label) or code(f"label-{label}"[:16], f"buscad class {label}")


def probability_code(label: str) -> Any:
    """The concept name of a class probability: (111047, DCM, "Probability of cancer") for malignant."""
    from pydicom.sr.codedict import codes

    if label == "malignant":
        return codes.DCM.ProbabilityOfCancer
    return code(f"p-{label}"[:16], f"Probability of {label}")


def flag_code(flag: str) -> Any:
    return code(f"flag-{flag}"[:16], f"buscad flag: {flag}")


REFINED_LABEL = ("refined-label", "Refined label")
CLASSIFIER_LABEL = ("classifier-label", "Classifier label")


def _image_group(record: Mapping[str, Any], source: Any, algorithm: Any, site: Any) -> Any:
    """TID 1501: the whole image — class probabilities, classifier label, refined label and flags."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    measurements = [
        hd.sr.Measurement(name=probability_code(label), value=float(p), unit=codes.UCUM.NoUnits)
        for label, p in (record.get("probabilities") or {}).items() if p is not None
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier="buscad image assessment"),
        algorithm_id=algorithm, finding_sites=[site], measurements=measurements or None,
        qualitative_evaluations=_evaluations(record),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )


def _evaluations(record: Mapping[str, Any]) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    evaluations = [hd.sr.QualitativeEvaluation(code(*REFINED_LABEL), label_code(str(record.get("refined_label"))))]
    if record.get("label"):
        evaluations.append(hd.sr.QualitativeEvaluation(code(*CLASSIFIER_LABEL), label_code(str(record["label"]))))
    for flag, on in (record.get("flags") or {}).items():
        evaluations.append(hd.sr.QualitativeEvaluation(flag_code(str(flag)), codes.SCT.Yes if on else codes.SCT.No))
    return evaluations


def _segment_group(record: Mapping[str, Any], source: Any, seg: Any, algorithm: Any, site: Any) -> Any:
    """TID 1410 referencing SEG segment 1 (frame 1), tracked by the segment's Tracking UID: the total area."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    segment = seg.SegmentSequence[0]
    reference = hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, frame_number=1, segment_number=1,
        source_image=hd.sr.SourceImageForSegmentation.from_source_image(source),
    )
    # The image reference macro allows a frame number or a segment number, not both (PS3.3 Table 10-3): the
    # SEG has one frame, holding segment 1, so the frame identifies the segment.
    del reference[0].ReferencedSOPSequence[0].ReferencedSegmentNumber
    total = (record.get("measurements") or {}).get("total") or {}
    spacing = record.get("pixel_spacing_mm")
    area, unit = (total["area_mm2"], codes.UCUM.SquareMillimeter) if spacing else (total["area_px"], _pixels())
    measurements = [hd.sr.Measurement(name=codes.SCT.Area, value=float(area), unit=unit)]
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=segment.TrackingUID, identifier=segment.TrackingID),
        referenced_segment=reference, finding_type=codes.SCT.Lesion,
        finding_category=codes.SCT.MorphologicallyAbnormalStructure, algorithm_id=algorithm, finding_sites=[site],
        measurements=measurements,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(code(*REFINED_LABEL),
                                                             label_code(str(record.get("refined_label"))))],
    )


def _lesion_groups(lesions: list[Mapping[str, Any]], mask: np.ndarray, source: Any, algorithm: Any, site: Any,
                   record: Mapping[str, Any]) -> list[Any]:
    """TID 1410 per connected lesion: its outline (closed POLYLINE), area, long and short axis."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    spacing = record.get("pixel_spacing_mm")
    outlines = lesion_outlines(mask, lesions)
    groups = []
    for index, (lesion, outline) in enumerate(zip(lesions, outlines)):
        if spacing:
            length, area_unit = codes.UCUM.Millimeter, codes.UCUM.SquareMillimeter
            values = (lesion["area_mm2"], lesion["longest_diameter_mm"], lesion["perpendicular_diameter_mm"])
        else:
            length = area_unit = _pixels()
            values = (lesion["area_px"], lesion["longest_diameter_px"], lesion["perpendicular_diameter_px"])
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=outline,
                                   source_image=hd.sr.SourceImageForRegion.from_source_image(source))
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(identifier=f"buscad lesion {lesion['id']}"),
            referenced_region=region, finding_type=codes.SCT.Lesion,
            finding_category=codes.SCT.MorphologicallyAbnormalStructure, algorithm_id=algorithm,
            finding_sites=[site],
            measurements=[
                hd.sr.Measurement(name=codes.SCT.Area, value=float(values[0]), unit=area_unit),
                hd.sr.Measurement(name=codes.SCT.LongAxis, value=float(values[1]), unit=length),
                hd.sr.Measurement(name=codes.SCT.ShortAxis, value=float(values[2]), unit=length),
            ],
            # the descriptors describe the largest lesion, which measure_lesions lists first
            qualitative_evaluations=descriptor_evaluations(record.get("descriptors")) if index == 0 else None,
        ))
    return groups


DESCRIPTOR_NOTE = ("descriptors", "BI-RADS-style descriptors", "estimate", "Automated estimate, not BI-RADS")
"""(name value, name meaning, value value, value meaning): flags the descriptor items as machine estimates."""


def descriptor_evaluations(descriptors: Mapping[str, Any] | None) -> list[Any] | None:
    """The BI-RADS-style descriptor categories of :mod:`buscad.postprocess.descriptors` as coded evaluations
    (DICOM's breast ultrasound concepts; "not circumscribed" has no code, so it is private), preceded by a
    private item marking them as automated estimates, not a BI-RADS assessment. None without descriptors."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not descriptors:
        return None
    concepts: dict[str, tuple[Any, dict[str, Any]]] = {
        "orientation": (codes.DCM.Orientation, {"parallel": codes.DCM.Parallel, "not parallel": codes.DCM.NotParallel}),
        "shape": (codes.SCT.Shape, {"oval": codes.SCT.OvoidShapeOval, "round": codes.SCT.RoundShape,
                                    "irregular": codes.SCT.Irregular}),
        "margin": (codes.DCM.Margins, {"circumscribed": codes.SCT.Circumscribed,
                                       "not circumscribed": code("notcircumscribed", "Not circumscribed")}),
        "posterior": (codes.DCM.PosteriorAcousticFeatures, {
            "enhancement": codes.DCM.PosteriorEnhancement, "shadowing": codes.DCM.PosteriorShadowing,
            "none": codes.DCM.NoPosteriorAcousticFeatures,
            "combined": codes.DCM.CombinedPosteriorEnhancementAndShadowing}),
        "echo_pattern": (codes.DCM.EchoPattern, {"anechoic": codes.DCM.Anechoic, "hypoechoic": codes.DCM.Hypoechoic,
                                                 "isoechoic": codes.DCM.Isoechoic, "hyperechoic": codes.DCM.Hyperechoic}),
    }
    evaluations = []
    for key, (name, values) in concepts.items():
        entry = descriptors.get(key)
        category = entry.get("category") if isinstance(entry, Mapping) else None
        if isinstance(category, str) and category in values:
            evaluations.append(hd.sr.QualitativeEvaluation(name, values[category]))
    if not evaluations:
        return None
    note = DESCRIPTOR_NOTE
    return [hd.sr.QualitativeEvaluation(code(note[0], note[1]), code(note[2], note[3])), *evaluations]


def lesion_outlines(mask: np.ndarray, lesions: list[Mapping[str, Any]]) -> list[np.ndarray]:
    """Closed outer outline of each measured lesion as (column, row) SCOORD points (pixel centres at +0.5).

    Lesions are matched to the mask's 8-connected components by bounding box and area (the keys
    :func:`buscad.inference.measure.measure_lesions` records). The outline follows the pixel edges.
    """
    from skimage import measure

    labels = measure.label(np.asarray(mask) > 0, connectivity=2)
    regions = {(tuple(int(v) for v in r.bbox), int(r.area)): r for r in measure.regionprops(labels)}
    outlines = []
    for lesion in lesions:
        region = regions.get((tuple(int(v) for v in lesion["bbox_px"]), int(lesion["area_px"])))
        if region is None:
            raise DataError(f"lesion {lesion.get('id')} of the record is not in the mask")
        padded = np.pad(region.image.astype(np.float32), 1)
        contour = max(measure.find_contours(padded, 0.5), key=len)  # (row, col), closed: first == last
        contour = measure.approximate_polygon(contour, tolerance=0.25)
        rows = contour[:, 0] - 1 + region.bbox[0] + 0.5
        cols = contour[:, 1] - 1 + region.bbox[1] + 0.5
        outlines.append(np.stack([cols, rows], axis=1).astype(np.float32))
    return outlines


def _pixels() -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(*PIXEL_UNIT)


def _text(value: str, limit: int) -> str:
    """A DICOM string value: control characters and backslashes removed, at most ``limit`` characters."""
    cleaned = "".join(c for c in value if unicodedata.category(c)[0] != "C" and c != "\\")
    return cleaned[:limit]
