"""What a pruning strategy is: the rule that turns a level's trained weights into the next level's mask.

A new strategy is one module with a subclass of ``PruningStrategy`` plus one line in
``hf_lottery.strategies.STRATEGIES``; ``--scope NAME`` chooses it. A subclass sets ``name`` and
``description`` (the card's words for it) and implements ``prune``: it may only remove weights that are
still alive (masks only shrink) and must keep exactly the survivors ``density`` asks for, with ties broken
without chance, so that a resumed run computes the same mask.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..masks import Mask


class PruningStrategy:
    name: ClassVar[str]
    description: ClassVar[str]  # for the card: "by magnitude, one global threshold over all prunable tensors"

    def prune(self, weights: dict[str, torch.Tensor], previous: Mask, density: float) -> Mask:
        """The mask that keeps ``density`` of the prunable weights, chosen among those alive in ``previous``."""
        raise NotImplementedError
