"""Pruning: masks and the kernels that choose them, with no training and no run directory.

Masks and keeping pruned weights at zero; the selection kernels (magnitude, random, N:M, rows); pruning units
(elements, neurons, heads, layers) and the architecture knowledge they need; block-by-block calibration
statistics; the scoring strategies (``strategies/``).
"""
