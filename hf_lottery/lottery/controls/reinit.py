"""Random re-initialisation: the ticket's mask on freshly drawn weights, the rest rewound as for the ticket.

If the ticket beats it, the winning initialisation (the rewind point's weights) matters, not only the mask.
"""

from __future__ import annotations

import torch
from torch import nn

from hf_lottery.pruning.masks import Mask
from hf_lottery.pruning.units import Units

from .base import Control


class Reinit(Control):
    name = "reinit"
    label = "random reinit"
    style = "^:"
    description = "the ticket's mask with re-initialised weights"

    def mask(self, *, ticket: Mask, previous: Mask, level: int, seed: int, units: Units) -> Mask:
        return ticket

    def start(self, model: nn.Module, prunable: list[str], *, seed: int) -> None:
        """The prunable weights drawn afresh from the model's own initialisation: one draw, the same every level."""
        with torch.random.fork_rng():
            torch.manual_seed(seed + 1)
            fresh = type(model)._from_config(model.config)
        fresh_params = dict(fresh.named_parameters())
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in prunable:
                    param.copy_(fresh_params[name])
