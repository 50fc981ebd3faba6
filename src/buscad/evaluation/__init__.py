"""Evaluation you can trust: explicit conventions, nothing silently dropped.

``metrics`` (per-image segmentation metrics, NaN-counting aggregates), ``classification`` (scikit-learn),
``calibration`` (ECE, reliability bins), ``refine`` (prediction refining with flags and reasons),
``stats`` (paired Wilcoxon / McNemar with effect sizes), ``run_eval`` (run and cv directories),
``compare`` (two runs on the same images), ``external`` (a checkpoint on any manifest), ``simulate``
(predictions of known quality, for checking the evaluation itself).
"""
