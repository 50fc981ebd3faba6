"""Evaluation you can trust: explicit conventions, nothing silently dropped.

``metrics`` (per-image segmentation metrics, NaN-counting aggregates), ``classification`` (scikit-learn),
``calibration`` (ECE, reliability bins), ``stats`` (paired Wilcoxon / McNemar with effect sizes),
``run_eval`` (run and cv directories, read through :mod:`buscad.rundir`), ``compare`` (two runs on the same
images). Refining lives in :mod:`buscad.postprocess.refine` (shared with inference); a checkpoint on any
manifest is :func:`buscad.workflows.evaluate_checkpoint`; simulated predictions for checking the evaluation
itself are :mod:`buscad.testing.simulate`. Nothing here imports training or inference.
"""
