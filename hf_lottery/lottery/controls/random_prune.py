"""Random pruning: the ticket's per-tensor survivor counts (per block for neurons and heads), drawn at random
inside the previous random mask.

Same layer-wise sparsity, same rewinding, same training: if the ticket beats it, the magnitude-chosen mask
is what wins, not the sparsity profile.
"""

from __future__ import annotations

import torch

from hf_lottery.pruning.masks import Mask
from hf_lottery.pruning.selection import random_prune
from hf_lottery.pruning.units import Units

from .base import Control


class RandomPrune(Control):
    name = "random-prune"
    label = "random pruning"
    style = "s--"
    description = "random pruning with the ticket's per-tensor sparsity"

    def mask(self, *, ticket: Mask, previous: Mask, level: int, seed: int, units: Units) -> Mask:
        counts = {group: int(m.sum()) for group, m in units.alive(ticket).items()}
        kept = random_prune(units.alive(previous), counts, torch.Generator().manual_seed(seed * 1000 + level))
        return units.expand(kept, previous)
