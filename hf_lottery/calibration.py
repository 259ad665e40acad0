"""Calibration statistics: what each prunable weight's inputs look like on a few examples, for strategies that
score weights by their activations (Wanda's ``|W| x ||X||``).

``InputNorms`` hooks the modules that own prunable weights and accumulates, per weight, the squared L2 norm of
each input feature over every token it sees, in float32. ``observe(block)`` hooks only the weights inside
``block``, so the statistics can be gathered for a whole model forward, or block by block when a model is
calibrated one layer at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


class InputNorms:
    """Per prunable weight, the L2 norm of each input feature over the tokens observed, shaped to broadcast
    against the weight: ``(1, in)`` for ``nn.Linear``'s ``(out, in)``, ``(in, 1)`` for GPT-2's ``Conv1D``."""

    def __init__(self, model: nn.Module, prunable: Sequence[str]) -> None:
        names = set(prunable)
        self._owners: dict[nn.Module, str] = {}
        for module_name, module in model.named_modules():
            weight = f"{module_name}.weight" if module_name else "weight"
            if weight in names and isinstance(module, (nn.Linear, Conv1D)):
                self._owners[module] = weight
        self._sums: dict[str, torch.Tensor] = {}

    @contextmanager
    def observe(self, block: nn.Module | None = None) -> Iterator[None]:
        """Accumulate the inputs of the prunable weights inside ``block`` (all of them by default) while in the
        block."""
        inside = None if block is None else set(block.modules())
        handles = [
            module.register_forward_pre_hook(self._hook(name))
            for module, name in self._owners.items()
            if inside is None or module in inside
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str):
        def accumulate(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            squares = x.pow(2).sum(0)
            self._sums[name] = squares if name not in self._sums else self._sums[name] + squares

        return accumulate

    def unseen(self) -> list[str]:
        """The prunable weights no observed forward reached (a layer the calibration data never runs)."""
        return [name for name in self._owners.values() if name not in self._sums]

    def result(self) -> dict[str, torch.Tensor]:
        """The norms per weight observed so far, on the device of its inputs."""
        transposed = {name for module, name in self._owners.items() if isinstance(module, Conv1D)}
        return {
            name: (total.sqrt().unsqueeze(1) if name in transposed else total.sqrt().unsqueeze(0))
            for name, total in self._sums.items()
        }


@torch.no_grad()
def input_norms(
    model: nn.Module, prunable: Sequence[str], batches: Sequence[Mapping[str, torch.Tensor]], device: torch.device
) -> dict[str, torch.Tensor]:
    """``InputNorms`` of ``model`` over ``batches``: in eval mode, in float32 (no autocast), on ``device``; the
    model's training mode is restored after. Every token of a batch counts, so batches of one example each keep
    padding out of the norms."""
    norms = InputNorms(model, prunable)
    training = model.training
    model.eval()
    try:
        with norms.observe(), torch.autocast(device.type, enabled=False):
            for batch in batches:
                model(**{k: v.to(device) for k, v in batch.items()})
    finally:
        model.train(training)
    return norms.result()
