"""Magnitude pruning (IMP's rule): keep the largest trained weights, over all tensors at once or per tensor."""

from __future__ import annotations

import torch

from ..masks import Mask
from ..pruning import keep_counts, magnitude_prune
from .base import PruningStrategy


class GlobalMagnitude(PruningStrategy):
    name = "global"
    description = "by magnitude, one global threshold over all prunable tensors"

    def prune(self, weights: dict[str, torch.Tensor], previous: Mask, density: float) -> Mask:
        return magnitude_prune(weights, previous, keep_counts(previous, density, "global"))


class LayerMagnitude(PruningStrategy):
    name = "layer"
    description = "by magnitude, the same fraction in each tensor"

    def prune(self, weights: dict[str, torch.Tensor], previous: Mask, density: float) -> Mask:
        return magnitude_prune(weights, previous, keep_counts(previous, density, "layer"))
