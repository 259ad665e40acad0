"""Random pruning: the ticket's per-tensor survivor counts, drawn at random inside the previous random mask.

Same layer-wise sparsity, same rewinding, same training: if the ticket beats it, the magnitude-chosen mask
is what wins, not the sparsity profile.
"""

from __future__ import annotations

import torch

from ..masks import Mask
from ..pruning import random_prune
from .base import Control


class RandomPrune(Control):
    name = "random-prune"
    label = "random pruning"
    style = "s--"
    description = "random pruning with the ticket's per-tensor sparsity"

    def mask(self, *, ticket: Mask, previous: Mask, level: int, seed: int) -> Mask:
        counts = {name: int(m.sum()) for name, m in ticket.items()}
        return random_prune(previous, counts, torch.Generator().manual_seed(seed * 1000 + level))
