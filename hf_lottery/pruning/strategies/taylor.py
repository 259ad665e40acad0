"""First-order Taylor scores (Molchanov et al. 2019; TextPruner, LLM-Pruner): a weight's score is |w x dL/dw|, the
first-order estimate of how much the loss changes when the weight is set to zero, with the gradient of the task
loss summed over a seeded subset of the training examples. Units (neurons, heads, blocks) are scored by the L2
norm of their weights' scores, as every strategy's are (``PruningStrategy.prune``).

The gradients are taken from the weights being pruned (a level's trained weights), in eval mode (no dropout) and
float32, one example per batch, so that a draw is deterministic; the run draws on the main process and broadcasts,
so every rank holds the same mask.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from hf_lottery.foundations.errors import LotteryError

from .arguments import TaylorArguments
from .base import PruningStrategy, ScoringContext


class Taylor(PruningStrategy):
    name = "taylor"
    description = "by first-order Taylor |weight x gradient of the loss| on training examples"
    arguments = TaylorArguments
    calibrated = True
    samples_option = "taylor_samples"

    def scores(self, context: ScoringContext) -> Mapping[str, torch.Tensor]:
        gradients = loss_gradients(context, self.calibration_samples)
        return {name: (w.detach().float() * gradients[name]).abs() for name, w in context.weights.items()}


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
        missing = [name for name in context.weights if by_name[name].grad is None]
        if missing:
            raise LotteryError(f"--strategy taylor: the loss does not reach {missing[0]}; --exclude it")
        return {name: by_name[name].grad.detach().float().clone() for name in context.weights}
    finally:
        for p in model.parameters():
            p.grad = None
        model.train(was_training)
