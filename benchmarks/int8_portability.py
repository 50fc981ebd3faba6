"""Does an int8 model answer the same on every CPU? Full-range against 7-bit (``reduce_range``) weights.

    python3 benchmarks/int8_portability.py --checkpoint RUN/checkpoints/best.ckpt --manifest A.csv --manifest B.csv

CPUs with VNNI or AMX multiply int8 pairs into 32-bit sums exactly; CPUs with AVX2 only (no VNNI) use a
16-bit intermediate (``vpmaddubsw``) that saturates when full-range weights meet large activations, so one
int8 file can give other masks there than on the machine that checked it at export. For one trained
checkpoint: export to float ONNX, quantize twice with ``buscad.inference.quantize.quantize_onnx``
(full-range and 7-bit weights; calibrated on ``--calibration`` images of the manifests, never among the
checked ones), and score ``--n`` other images three ways, each as mean mask Dice and class agreement:

- *exact vs float*: the int8 file's arithmetic computed in float (ONNX Runtime with graph optimizations
  off: DequantizeLinear → float Conv → QuantizeLinear), what VNNI/AMX CPUs compute up to float rounding,
  against the float model;
- *this CPU vs float*: ONNX Runtime's fused int8 kernels of the CPU the script runs on, against the float model;
- *this CPU vs exact*: how much the answers depend on the CPU's kernels (1.0 on VNNI/AMX CPUs).

The built-in model's file is scored the third way too. Writes results/NAME.{json,md} (``--name``, default
int8_portability); run it on a CPU without VNNI to see the effect (the header names the CPU and its int8
units). Committed: ``int8_portability`` (AVX2 only, the 0.4.0 file), ``int8_portability_vnni`` (AVX-512 VNNI,
the 0.5.0 file and its release checkpoint).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from buscad.hardware import cpu_int8_units
from buscad.training.provenance import benchmark_header, write_benchmark_results

RESULTS = Path(__file__).resolve().parent / "results"
THREADS = 2


def sample_images(manifests: list[Path], n: int, seed: int) -> list[Path]:
    """``n`` image files drawn evenly from the manifests (seeded), in a shuffled order."""
    from buscad.data.manifest import image_file, read_manifest

    rng = np.random.default_rng(seed)
    files: list[Path] = []
    for manifest in manifests:
        frame = read_manifest(manifest)
        take = rng.choice(len(frame), size=min(len(frame), n // len(manifests)), replace=False)
        files += [image_file(frame.iloc[int(i)]) for i in take]
    order = rng.permutation(len(files))
    return [files[int(i)] for i in order]


def answers(path: Path, batch: np.ndarray, threshold: float, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """(lesion masks, class decisions) of an ONNX file; ``exact`` turns graph optimizations off, so no
    fused int8 kernel runs and the QDQ graph is computed in float."""
    import onnxruntime as ort

    from buscad.postprocess.probability import lesion_mask, lesion_probability

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    if exact:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [output.name for output in session.get_outputs()]
    masks, classes = [], []
    for start in range(0, len(batch), 8):
        values = dict(zip(outputs, session.run(None, {name: batch[start:start + 8]}), strict=True))
        masks.append(lesion_mask(lesion_probability(values["segmentation"]), threshold))
        classes.append(values["classification"].argmax(1))
    return np.concatenate(masks), np.concatenate(classes)


def weight_range(path: Path) -> str:
    """Whether an int8 file's weights use all 8 bits or 7 (``reduce_range`` keeps them within ±64)."""
    import onnx
    from onnx import numpy_helper

    largest = max(int(np.abs(numpy_helper.to_array(init).astype(np.int16)).max())
                  for init in onnx.load(str(path)).graph.initializer
                  if init.data_type == onnx.TensorProto.INT8 and init.name.endswith("_quantized"))
    return "7-bit weights" if largest <= 64 else "full-range weights"


def agreement(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    dices = []
    for x, y in zip(a[0], b[0], strict=True):
        total = int(x.sum() + y.sum())
        dices.append(1.0 if total == 0 else 2.0 * float((x & y).sum()) / total)
    return {"mask_dice": round(float(np.mean(dices)), 4), "min_mask_dice": round(float(np.min(dices)), 3),
            "masks_below_0.9": int(np.sum(np.asarray(dices) < 0.9)),
            "class_agreement": round(float(np.mean(a[1] == b[1])), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, action="append", required=True, help="repeatable")
    parser.add_argument("--n", type=int, default=400, help="images checked")
    parser.add_argument("--calibration", type=int, default=100, help="calibration images (others)")
    parser.add_argument("--name", default="int8_portability",
                        help="results file name, e.g. one per kind of CPU (default: %(default)s)")
    args = parser.parse_args()

    from buscad.inference.builtin import builtin_model
    from buscad.inference.onnx import export_onnx, load_onnx
    from buscad.inference.quantize import preprocessed_batch, quantize_onnx

    files = sample_images(args.manifest, args.n + args.calibration, seed=0)
    record = benchmark_header("int8_portability.py")
    record["machine"]["int8_units"] = cpu_int8_units() or ["none (AVX2 only)"]
    record |= {"checkpoint": str(args.checkpoint), "manifests": [str(m) for m in args.manifest],
               "n_check": args.n, "n_calibration": args.calibration, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        float_path = export_onnx(args.checkpoint, Path(tmp) / "float.onnx").path
        _, spec, _, _ = load_onnx(float_path)
        check = preprocessed_batch(files[args.calibration:], spec)
        calibration = preprocessed_batch(files[:args.calibration], spec)
        reference = answers(float_path, check, spec.seg_threshold, exact=False)
        for name, reduce_range in (("full-range weights", False), ("7-bit weights (reduce_range)", True)):
            int8_path = Path(tmp) / f"int8_{int(reduce_range)}.onnx"
            quantize_onnx(float_path, int8_path, calibration, check[:8], min_dice=0.0, min_class_agreement=0.0,
                          reduce_range=reduce_range)
            exact = answers(int8_path, check, spec.seg_threshold, exact=True)
            kernels = answers(int8_path, check, spec.seg_threshold, exact=False)
            record["variants"][name] = {"exact_vs_float": agreement(reference, exact),
                                        "this_cpu_vs_float": agreement(reference, kernels),
                                        "this_cpu_vs_exact": agreement(exact, kernels)}
    builtin = builtin_model()
    _, builtin_spec, _, _ = load_onnx(builtin.path)
    builtin_check = preprocessed_batch(files[args.calibration:], builtin_spec)
    record["builtin_model"] = {"file": builtin.path.name, "version": builtin.version,
                               "weights": weight_range(builtin.path), "this_cpu_vs_exact": agreement(
        answers(builtin.path, builtin_check, builtin_spec.seg_threshold, exact=True),
        answers(builtin.path, builtin_check, builtin_spec.seg_threshold, exact=False))}
    write_benchmark_results(RESULTS, args.name, record, markdown(record))


def markdown(record: dict) -> str:
    machine = record["machine"]
    lines = [
        "# int8 on CPUs with and without VNNI: full-range vs 7-bit weights", "",
        f"`{record['command']}` — {record['date']}, {machine['cpu']}, {machine['cores']} cores, int8 units: "
        f"{', '.join(machine['int8_units'])}.", "",
        f"Checkpoint `{record['checkpoint']}`; {record['n_check']} checked images, {record['n_calibration']} other "
        "calibration images, drawn evenly from the manifests. Mean mask Dice (minimum; masks below 0.9) / class "
        "agreement. *Exact*: the file's int8 arithmetic computed in float (graph optimizations off), what "
        "VNNI/AMX CPUs compute; *this CPU*: ONNX Runtime's fused int8 kernels here.", "",
        "| weights | exact vs float | this CPU vs float | this CPU vs exact |", "|---|---|---|---|",
    ]

    def cell(a: dict) -> str:
        return f"{a['mask_dice']:.4f} ({a['min_mask_dice']:.3f}; {a['masks_below_0.9']}) / {a['class_agreement']:.3f}"

    for name, row in record["variants"].items():
        lines.append(f"| {name} | {cell(row['exact_vs_float'])} | {cell(row['this_cpu_vs_float'])} | "
                     f"{cell(row['this_cpu_vs_exact'])} |")
    builtin = record["builtin_model"]
    lines += ["", f"Built-in model `{builtin['file']}` {builtin['version']} ({builtin['weights']}), this CPU vs exact: "
              f"{cell(builtin['this_cpu_vs_exact'])}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
