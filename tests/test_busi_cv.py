"""``benchmarks/busi_cv.py``: the issue-13 summary says where each fold ran."""

from __future__ import annotations

from tests.helpers import load_benchmark


def test_hardware_names_each_folds_cpu_and_precision() -> None:
    module = load_benchmark("busi_cv")
    folds = [{"fold": 0, "cpu": "AMD EPYC", "precision": "bf16-mixed"},
             {"fold": 1, "cpu": "Intel(R) Xeon(R) Processor", "precision": "bf16-mixed"},
             {"fold": 2, "cpu": "Intel(R) Xeon(R) Processor", "precision": "bf16-mixed"}]
    assert module.hardware(folds) == ("2 CPU cores (AMD EPYC: folds 0; Intel(R) Xeon(R) Processor: folds 1, 2), "
                                      "bf16-mixed")
    same = [{**f, "cpu": None, "precision": "32-true"} for f in folds]
    assert module.hardware(same) == "2 CPU cores (Xeon, AVX-512 BF16), 32-true"
