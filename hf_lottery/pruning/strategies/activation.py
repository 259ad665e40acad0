"""Activation-based unit scores (as Minitron ranks width): a unit's score is how much it outputs on a seeded subset
of the training examples, averaged over their tokens:

- a neuron: the mean absolute value of its activation (its input feature of the FFN's down projection);
- a head (KV group): the mean absolute value of its heads' outputs (their input features of the attention's
  output projection);
- a block (``--unit layer``): the mean absolute change it makes to the hidden states, |output - input|, averaged
  over the hidden size too.

Read by hooks on the modules themselves, in eval mode and float32, one example per batch (no padding), with the
units removed before skipped or zero: deterministic on one process; the run draws on the main process and
broadcasts. Only units: a single weight has no output of its own.
"""

from __future__ import annotations

import torch

from hf_lottery.pruning.masks import Mask
from hf_lottery.pruning.units import LAYERS_GROUP, Spans

from .arguments import ActivationArguments
from .base import PruningStrategy, ScoringContext


class Activation(PruningStrategy):
    name = "activation"
    description = "by the mean absolute output of each unit on training examples"
    arguments = ActivationArguments
    calibrated = True
    whole_model = True
    samples_option = "activation_samples"
    units = ("neuron", "head", "layer")

    def prune(self, context: ScoringContext) -> Mask:
        return self.keep_units(context, activations(context, self.calibration_samples))


@torch.no_grad()
def activations(context: ScoringContext, samples: int) -> dict[str, torch.Tensor]:
    """Per group of ``context.units``, each unit's mean absolute output over the tokens of ``samples`` calibration
    examples (see the module's docstring)."""
    model, batches, units = context.model, context.calibration_examples(samples), context.units
    totals: dict[str, torch.Tensor] = {}

    def add(group: str, value: torch.Tensor) -> None:
        totals[group] = totals.get(group, 0) + value.double().cpu()

    if isinstance(units, Spans):
        targets = {}
        for group, spans in units.groups.items():
            inputs = [span for span in spans if not span.out]  # the down (output) projection: a unit per input slice
            targets[group] = (model.get_submodule(inputs[0].name.removesuffix(".weight")), inputs[0].width)

        def hook(group: str, width: int):
            def record(module, args) -> None:
                x = args[0].float().abs().flatten(0, -2).sum(0)  # per input feature, summed over tokens
                add(group, x.reshape(-1, width).mean(1))

            return record

        handles = [module.register_forward_pre_hook(hook(g, w)) for g, (module, w) in targets.items()]
    else:
        blocks = model.get_submodule(units.path)

        def change(index: int):
            def record(module, args, kwargs, output) -> None:
                before = args[0] if args else kwargs["hidden_states"]
                after = output[0] if isinstance(output, tuple) else output
                step = torch.zeros(len(blocks), dtype=torch.float64)
                step[index] = (after.float() - before.float()).abs().mean(-1).sum().double()
                add(LAYERS_GROUP, step)

            return record

        handles = [block.register_forward_hook(change(i), with_kwargs=True) for i, block in enumerate(blocks)]
    tokens = context.observe(batches, handles)
    return {group: (total / tokens).float() for group, total in totals.items()}
