"""Helpers for tests and benchmarks, never for producing published numbers.

``simulate`` (run directories with simulated predictions of a known quality, to check evaluation,
reports and comparisons without training) and ``planted`` (planted copies and look-alike frames, the
ground truth for measuring a duplicate detector). Nothing in the product imports this package.
"""
