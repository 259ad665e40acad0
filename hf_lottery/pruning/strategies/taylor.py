"""First-order Taylor scores (Molchanov et al. 2019; TextPruner, LLM-Pruner): setting weights to zero changes the
loss by about -Σ w x dL/dw over them, so a weight scores |w x dL/dw| and a unit (a neuron, a head, a block) the
absolute value of that sum over its weights, |Σ w x dL/dw|: the first-order estimate of removing the unit whole,
in which the terms of its weights may cancel. The gradient is of the task loss summed over a seeded subset of the
training examples.

The gradients are taken from the weights being pruned (a level's trained weights), in eval mode (no dropout) and
float32, one example per batch, so that a draw is deterministic; the run draws on the main process and broadcasts,
so every rank holds the same mask.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.pruning.masks import Mask

from .arguments import TaylorArguments
from .base import PruningStrategy, ScoringContext


class Taylor(PruningStrategy):
    name = "taylor"
    description = "by first-order Taylor |weight x gradient of the loss| on training examples"
    arguments = TaylorArguments
    calibrated = True
    whole_model = True
    samples_option = "taylor_samples"

    def scores(self, context: ScoringContext) -> Mapping[str, torch.Tensor]:
        return {name: change.abs() for name, change in self.changes(context).items()}

    def prune(self, context: ScoringContext) -> Mask:
        """Units kept by |Σ w x dL/dw| over their weights (single weights by |w x dL/dw|, as ``scores`` gives)."""
        if context.pattern is not None or context.scope == "row":  # single weights, allocated otherwise
            return super().prune(context)
        totals = context.units.sums(self.changes(context))
        return self.keep_units(context, {group: total.abs() for group, total in totals.items()})

    def changes(self, context: ScoringContext) -> dict[str, torch.Tensor]:
        """w x dL/dw per prunable weight, signed."""
        gradients = loss_gradients(context, self.calibration_samples)
        return {name: w.detach().float() * gradients[name] for name, w in context.weights.items()}


def loss_gradients(context: ScoringContext, samples: int) -> dict[str, torch.Tensor]:
    """The gradient of the task loss, summed over ``samples`` calibration examples, of each weight of
    ``context.weights`` (float32), with the blocks the mask before removed skipped; the model's own gradients
    are left as they were (none)."""
    model, batches = context.model, context.calibration_examples(samples)
    was_training = model.training
    model.eval()
    try:
        with context.units.skipping(model, context.previous), torch.enable_grad():
            for batch in batches:
                model(**batch).loss.backward()
        by_name = {name: p for name, p in model.named_parameters()}
        removed = {name for name in context.weights if not bool(context.previous[name].any())}  # skipped blocks
        missing = [name for name in context.weights if by_name[name].grad is None and name not in removed]
        if missing:
            raise LotteryError(f"--strategy taylor: the loss does not reach {missing[0]}; --exclude it")
        return {
            name: torch.zeros_like(w, dtype=torch.float32) if by_name[name].grad is None
            else by_name[name].grad.detach().float().clone()
            for name, w in context.weights.items()
        }  # fmt: skip
    finally:
        for p in model.parameters():
            p.grad = None
        model.train(was_training)
