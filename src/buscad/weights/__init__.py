"""Package data: the built-in model (ONNX), its release.json (file, sha256, version) and its model card.

Loaded and verified by :mod:`buscad.inference.builtin`; rebuilt by ``benchmarks/build_builtin_model.py``.
"""
