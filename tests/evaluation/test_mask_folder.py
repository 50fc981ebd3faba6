"""evaluate-predictions: another tool's masks scored by buscad's metrics give what buscad evaluate gives."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from buscad import rundir
from buscad.data.export import case_identifier
from buscad.data.manifest import load_mask, read_manifest
from buscad.errors import DataError
from buscad.evaluation.mask_folder import evaluate_mask_folder, mask_candidates
from buscad.evaluation.run_eval import eval_settings
from buscad.postprocess.probability import lesion_mask
from buscad.workflows import evaluate_checkpoint

COMPARED = ("dice", "iou", "hd95", "dice_raw", "pred_label", "pred_label_raw", "correct", "inconsistent")


@pytest.fixture(scope="module")
def evaluated(tiny_checkpoint: Callable[..., Path], synthetic_manifest: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    out, _ = evaluate_checkpoint(tiny_checkpoint(), synthetic_manifest, tmp_path_factory.mktemp("eval") / "run")
    return out


def _export_masks(run: Path, folder: Path, name: Callable[[str], str]) -> Path:
    """The run's thresholded (raw) masks as 0/1 PNGs named the way another tool would name them."""
    folder.mkdir(parents=True)
    settings = eval_settings(run)
    cases = rundir.read_cases(run).set_index("case_id")
    for _, prediction in rundir.read_predictions(run).iterrows():
        case = cases.loc[prediction["case_id"]]
        shape = (int(case["height"]), int(case["width"]))
        probability = rundir.read_probability_mask(run, prediction["mask_file"], shape)
        mask = lesion_mask(probability, settings.seg_threshold).astype(np.uint8)
        Image.fromarray(mask).save(folder / name(prediction["case_id"]))
    return folder


def test_same_numbers_as_evaluate(evaluated: Path, synthetic_manifest: Path, tmp_path: Path) -> None:
    masks = _export_masks(evaluated, tmp_path / "nnunet_out", lambda c: f"{case_identifier(c)}.png")
    classes = rundir.read_predictions(evaluated)[["case_id", "prob_normal", "prob_benign", "prob_malignant"]]
    classes.to_csv(tmp_path / "classes.csv", index=False)
    out, metrics = evaluate_mask_folder(masks, synthetic_manifest, tmp_path / "scored",
                                        classes=tmp_path / "classes.csv", settings=eval_settings(evaluated))
    reference = rundir.read_metrics(evaluated)
    for key in ("dice", "dice_raw", "iou", "hd95", "dice_lesion_only", "accuracy", "balanced_accuracy", "auc_macro"):
        assert metrics[key] == pytest.approx(reference[key], nan_ok=True, abs=1e-6), key
    ours = rundir.read_per_image(out).set_index("case_id")
    theirs = rundir.read_per_image(evaluated).set_index("case_id")
    pd.testing.assert_frame_equal(ours.loc[theirs.index, list(COMPARED)], theirs[list(COMPARED)], check_dtype=False)


def test_masks_only_scores_segmentation(evaluated: Path, synthetic_manifest: Path, tmp_path: Path) -> None:
    masks = _export_masks(evaluated, tmp_path / "pred", lambda c: f"{case_identifier(c)}_mask.png")
    _, metrics = evaluate_mask_folder(masks, synthetic_manifest, tmp_path / "scored")
    assert metrics["dice_raw"] == pytest.approx(rundir.read_metrics(evaluated)["dice_raw"], abs=1e-6)
    assert np.isnan(metrics["accuracy"])


def test_perfect_masks_score_one(synthetic_manifest: Path, tmp_path: Path) -> None:
    folder = tmp_path / "truth"
    folder.mkdir()
    for _, row in read_manifest(synthetic_manifest).iterrows():
        Image.fromarray(load_mask(row).astype(np.uint8) * 255).save(folder / mask_candidates(row["case_id"])[0])
    _, metrics = evaluate_mask_folder(folder, synthetic_manifest, tmp_path / "scored")
    assert metrics["dice"] == pytest.approx(1.0) and metrics["iou"] == pytest.approx(1.0)


def test_missing_or_misfit_masks_fail_in_one_line(evaluated: Path, synthetic_manifest: Path, tmp_path: Path) -> None:
    masks = _export_masks(evaluated, tmp_path / "pred", lambda c: f"{case_identifier(c)}.png")
    first = sorted(masks.iterdir())[0]
    shutil.move(first, tmp_path / "elsewhere.png")
    with pytest.raises(DataError, match=r"no predicted mask for 1 of \d+ cases") as error:
        evaluate_mask_folder(masks, synthetic_manifest, tmp_path / "scored")
    assert "\n" not in str(error.value)
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(first)
    with pytest.raises(DataError, match="mask size 7x5 differs"):
        evaluate_mask_folder(masks, synthetic_manifest, tmp_path / "scored2")
    assert not (tmp_path / "scored2").exists()
