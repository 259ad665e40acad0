"""Magnitude pruning (IMP's rule): the largest trained weights are kept."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .base import PruningStrategy, ScoringContext


class Magnitude(PruningStrategy):
    name = "magnitude"
    description = "by magnitude"

    def scores(self, context: ScoringContext) -> Mapping[str, torch.Tensor]:
        return context.weights  # the selection compares |w| itself: no copy of the weights
