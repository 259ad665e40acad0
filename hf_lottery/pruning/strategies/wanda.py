"""Wanda (Sun et al. 2023): a weight's score is its magnitude times the L2 norm of its input feature over a few
calibration examples, so a small weight on a loud input outranks a larger one on a quiet input. Wanda compares
the scores within each output row (``--scope row``); ``--scope layer`` compares them per tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from hf_lottery.foundations.errors import LotteryError

from .arguments import WandaArguments
from .base import PruningStrategy, ScoringContext


class Wanda(PruningStrategy):
    name = "wanda"
    description = "by |weight| x the L2 norm of its input on calibration examples (Wanda, Sun et al. 2023)"
    arguments = WandaArguments
    calibrated = True
    samples_option = "calibration_samples"

    def scores(self, context: ScoringContext) -> Mapping[str, torch.Tensor]:
        norms = context.input_norms(self.calibration_samples)
        unseen = [name for name in context.weights if name not in norms]
        if unseen:
            raise LotteryError(
                f"--strategy wanda: the calibration examples never reach {unseen[0]}, so it has no input to score "
                "by; --exclude it or use --strategy magnitude"
            )
        return {name: w.detach().abs().float() * norms[name].to(w.device) for name, w in context.weights.items()}
