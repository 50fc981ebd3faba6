"""Build the built-in model from a pooled training run: calibrate, choose the refining policy, export, ship.

    python3 benchmarks/generalization.py run --train busi+bus-bra --fold 0 --work W   # the training run
    python3 benchmarks/build_builtin_model.py --run W/runs/robust_busi+bus-bra/fold_0 --version 0.2.0

Steps (each printed and recorded in ``src/buscad/weights/release.json`` and the model card):

1. Predict the run's validation part (patient-grouped, never trained on) and fit a temperature to the
   class logits there (:func:`buscad.evaluation.calibration.fit_temperature`).
2. On the run's held-out test part (both datasets), compare the refining policies — ``published``
   (empty mask ⇒ normal) and ``keep-class`` — by malignant sensitivity / specificity and normal
   specificity, and take the one that misses fewer malignant lesions without losing normal specificity.
3. Write the checkpoint with temperature and policy in its spec, export ONNX, quantize to int8 when the
   int8 model agrees with the float one (mask Dice and class agreement ≥ 0.95 on validation images),
   and copy the file into the package with its sha256.
4. Analyse ``examples/images`` with the shipped file and store the record the tests pin
   (``tests/data/builtin_examples.json``).
The card's figures come from ``RUN``'s held-out part; ``docs/model_card.md`` is written from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from buscad import LABELS, rundir
from buscad.checkpoint import load_bundle, save_bundle
from buscad.data.manifest import image_file, write_manifest
from buscad.evaluation.calibration import apply_temperature, calibration_metrics, fit_temperature
from buscad.evaluation.cross_dataset import fold_test_table, score_test_set
from buscad.inference.builtin import RELEASE_FILE, sha256_of
from buscad.inference.onnx import export_onnx, load_onnx
from buscad.inference.quantize import preprocessed_batch, quantize_onnx
from buscad.workflows import evaluate_checkpoint

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "src" / "buscad" / "weights"
EXAMPLES = REPO / "examples" / "images"
EXPECTED = REPO / "tests" / "data" / "builtin_examples.json"
CARD = REPO / "docs" / "model_card.md"
MODEL_FILE = "buscad-bus.onnx"


def probabilities(table: pd.DataFrame) -> np.ndarray:
    return table[[f"prob_{label}" for label in LABELS]].to_numpy(dtype=float)


def truth_index(table: pd.DataFrame) -> np.ndarray:
    return np.array([LABELS.index(t) if t in LABELS else -1 for t in table["label"]])


def with_policy(test: pd.DataFrame, policy: str) -> pd.DataFrame:
    """The per-image table as the refining ``policy`` would have labelled (and masked) it.

    ``published`` is what the run wrote; ``keep-class`` keeps the classifier's label (an empty mask stays
    empty); ``segmentation`` keeps the thresholded mask and names a segmented lesion by p(benign) vs
    p(malignant), so its Dice is the unrefined one.
    """
    table = test.copy()
    if policy == "keep-class":
        table["pred_label"] = table["pred_label_raw"]
    elif policy == "segmentation":
        lesion = np.where(table["prob_malignant"] > table["prob_benign"], "malignant", "benign")
        table["pred_label"] = np.where(table["pred_pixels_raw"] > 0, lesion, "normal")
        for column in ("dice", "iou", "hd95"):
            table[column] = table[f"{column}_raw"]
    return table


POLICIES = ("published", "keep-class", "segmentation")


def policy_table(test: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """Per policy and dataset: malignant sensitivity/specificity, normal specificity, accuracy, Dice."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for policy in POLICIES:
        out[policy] = {}
        for dataset, part in with_policy(test, policy).groupby("dataset"):
            labels = part["pred_label"].astype(str)
            malignant, benign, normal = (part["label"] == c for c in ("malignant", "benign", "normal"))
            out[policy][dataset] = {
                "malignant_sensitivity": float((labels[malignant] == "malignant").mean()) if malignant.any() else None,
                "malignant_specificity": float((labels[benign] != "malignant").mean()) if benign.any() else None,
                "normal_specificity": float((labels[normal] == "normal").mean()) if normal.any() else None,
                "lesions_called_normal": int(((labels == "normal") & ~normal).sum()),
                "accuracy": float((labels == part["label"]).mean()),
                "dice": float(part["dice"].mean()),
            }
    return out


def choose_policy(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """The policy with the highest malignant sensitivity (summed over datasets) whose malignant specificity
    stays within 2 points of the published rule's; ties go to the one calling fewer lesions normal."""
    def total(policy: str, key: str) -> float:
        return float(np.nansum([v[key] if v[key] is not None else np.nan for v in table[policy].values()]))

    floor = total("published", "malignant_specificity") - 0.02 * len(table["published"])
    allowed = [p for p in POLICIES if total(p, "malignant_specificity") >= floor]
    return max(allowed, key=lambda p: (round(total(p, "malignant_sensitivity"), 6), -total(p, "lesions_called_normal")))


def held_out_figures(test: pd.DataFrame, temperature: float, policy: str) -> dict[str, dict[str, float]]:
    """score_test_set per dataset with the chosen policy's labels and calibrated probabilities."""
    table = with_policy(test, policy)
    table[[f"prob_{label}" for label in LABELS]] = apply_temperature(probabilities(table), temperature)
    figures = {}
    for dataset, part in table.groupby("dataset"):
        metrics = score_test_set(part)
        if "birads" in part and part["birads"].astype(str).str.len().gt(0).any():
            lesions = part[part["label"].isin(("benign", "malignant"))]
            birads = pd.to_numeric(lesions["birads"], errors="coerce")
            keep = birads.notna()
            metrics["auc_birads_as_score"] = float(roc_auc_score(lesions.loc[keep, "label"] == "malignant",
                                                                 birads[keep]))
        metrics["n_per_label"] = part["label"].value_counts().to_dict()
        figures[dataset] = metrics
    return figures


def example_records(model_path: Path) -> list[dict]:
    from buscad.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(model_path)
    records = []
    for path in sorted(EXAMPLES.glob("*.png")):
        result = predictor.analyze(path)
        records.append({"image": path.name, "refined_label": result.record["refined_label"],
                        "label": result.record["label"], "lesion_pixels": int(result.mask.sum()),
                        "probabilities": result.record["probabilities"]})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a fold directory of the pooled training")
    parser.add_argument("--version", required=True)
    parser.add_argument("--name", default="buscad-bus")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    run = args.run
    cases = rundir.read_cases(run)
    bundle = load_bundle(rundir.layout(run).best_checkpoint)

    # 1. temperature on the validation part
    val_dir = run.parent / f"{run.name}_validation_part"  # not under RUN/external: it is no test set
    if not rundir.has_evaluation(val_dir):
        val_manifest = write_manifest(cases[cases["split"] == "val"].drop(columns=["split"]),
                                      run.parent / f"{run.name}_validation_part.csv")
        evaluate_checkpoint(rundir.layout(run).best_checkpoint, val_manifest, val_dir)
    val = rundir.read_per_image(val_dir)
    temperature = fit_temperature(probabilities(val), truth_index(val))

    # 2. refining policy on the held-out test part
    test = fold_test_table(run)
    test = test[test["case_id"].isin(cases.loc[cases["split"] == "test", "case_id"])].copy()
    birads = cases.set_index("case_id")["birads"] if "birads" in cases.columns else None
    test["birads"] = birads.loc[test["case_id"]].to_numpy() if birads is not None else ""
    policies = policy_table(test)
    policy = choose_policy(policies)
    ece = {dataset: {"before": calibration_metrics(probabilities(part), truth_index(part))["ece"],
                     "after": calibration_metrics(apply_temperature(probabilities(part), temperature),
                                                  truth_index(part))["ece"]}
           for dataset, part in test.groupby("dataset")}
    figures = held_out_figures(test, temperature, policy)

    # 3. spec, export, quantize, ship
    spec = dataclasses.replace(bundle.spec, temperature=temperature, refine_policy=policy,
                               training_data="curated BUSI + BUS-BRA (pool, fold 0 training part)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = save_bundle(folder / "release.ckpt", bundle.model, spec)
        float_path = export_onnx(ckpt, folder / "release.onnx").path
        train_files = [image_file(r) for _, r in cases[cases["split"] == "train"].sample(100, random_state=0).iterrows()]
        val_files = [image_file(r) for _, r in cases[cases["split"] == "val"].sample(100, random_state=0).iterrows()]
        _, onnx_spec, _, _ = load_onnx(float_path)
        int8_path = folder / "release.int8.onnx"
        try:
            check = quantize_onnx(float_path, int8_path, preprocessed_batch(train_files, onnx_spec),
                                  preprocessed_batch(val_files, onnx_spec))
            shipped, quantization = int8_path, check.to_dict() | {"type": "int8-static-qdq"}
        except Exception as exc:  # noqa: BLE001 - the float model ships when int8 disagrees
            print(f"int8 refused: {exc}")
            shipped, quantization = float_path, {"type": "float32", "int8_refused": str(exc)}
        WEIGHTS.mkdir(parents=True, exist_ok=True)
        for old in WEIGHTS.glob("*.onnx"):
            old.unlink()
        target = WEIGHTS / MODEL_FILE
        shutil.copyfile(shipped, target)
    summary = {
        "trained_on": "curated BUSI (444 images, 5-fold split, folds 1-4 minus validation) + BUS-BRA (1875 images, "
                      "official 5-fold partition, folds 2-5 minus validation)",
        "held_out": "fold 0 of each: BUSI 89 images, BUS-BRA 376 images (never used in training or calibration)",
        "temperature": round(temperature, 4), "refine_policy": policy, "quantization": quantization,
        "held_out_figures": figures, "ece": ece, "policies": policies,
        "training": {k: v for k, v in (rundir.read_run_info(run) or {}).items() if k in ("epochs_run", "precision",
                                                                                     "timings", "git_commit")},
        "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python3 benchmarks/build_builtin_model.py " + " ".join(sys.argv[1:]),
    }
    release = {"name": args.name, "version": args.version, "file": MODEL_FILE, "sha256": sha256_of(target),
               "card": "model_card.md", "summary": {"trained_on": summary["trained_on"],
                                                    "held_out": summary["held_out"]}}
    (WEIGHTS / RELEASE_FILE).write_text(json.dumps(release, indent=2) + "\n")
    (REPO / "benchmarks" / "results" / "builtin_model.json").write_text(
        json.dumps(summary, indent=2, default=str) + "\n")

    # 4. the examples' pinned record
    EXPECTED.parent.mkdir(parents=True, exist_ok=True)
    EXPECTED.write_text(json.dumps(example_records(target), indent=2) + "\n")
    print(json.dumps(summary, indent=2, default=str))
    print(f"{target}: {target.stat().st_size / 1e6:.2f} MB, sha256 {release['sha256']}")


if __name__ == "__main__":
    main()
