"""Masks are the truth: a boolean tensor per prunable parameter, keyed by its ``named_parameters()`` name.

Which parameters are prunable is decided here, for any architecture, from module types rather
than module paths: the weights of ``nn.Linear`` and GPT-2 style ``Conv1D`` layers inside the
transformer body (``model.base_model``), so embeddings, LayerNorms, biases and the task head are
left dense. The word embeddings stay dense even where a language-model head's decoder (a Linear) is
tied to them: ``named_parameters()`` lists a tied parameter once, under its body name, so the module
type of the decoder would otherwise make them prunable. A pooler the task does not use is not built
(transformers' masked-LM and token-classification models have none), so it is never pruned.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .errors import LotteryError

Mask = dict[str, torch.Tensor]


def default_prunable(model: nn.Module) -> list[str]:
    """Names of the Linear/Conv1D weights of the transformer body, head excluded."""
    body = getattr(model, "base_model", model)
    body_params = {id(p) for p in body.parameters()}
    embeddings = {id(m.weight) for m in (_embeddings(model, "input"), _embeddings(model, "output")) if m is not None}
    owners = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, (nn.Linear, Conv1D)) and isinstance(getattr(module, "weight", None), nn.Parameter)
    }
    return [
        name
        for name, param in model.named_parameters()
        if id(param) in owners and id(param) in body_params and id(param) not in embeddings
    ]


def _embeddings(model: nn.Module, which: str) -> nn.Module | None:
    getter = getattr(model, f"get_{which}_embeddings", None)
    try:
        module = getter() if getter is not None else None
    except NotImplementedError:
        return None
    return module if isinstance(getattr(module, "weight", None), nn.Parameter) else None


def select_prunable(
    model: nn.Module, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None
) -> list[str]:
    """Prunable parameter names: the default set, or exactly those ``include`` matches, minus ``exclude``.

    A pattern that matches nothing is an error, since it is almost always a typo.
    """
    names = [name for name, _ in model.named_parameters()]
    if include:
        for pattern in include:
            if not any(re.search(pattern, n) for n in names):
                raise LotteryError(f"--include {pattern!r} matches no parameter of the model")
        selected = [n for n in names if any(re.search(p, n) for p in include)]
    else:
        selected = default_prunable(model)
    for pattern in exclude or []:
        if not any(re.search(pattern, n) for n in selected):
            raise LotteryError(f"--exclude {pattern!r} matches no prunable weight")
    selected = [n for n in selected if not any(re.search(p, n) for p in exclude or [])]
    if not selected:
        raise LotteryError("no prunable weights are left after --include/--exclude")
    return selected


def dense_mask(model: nn.Module, names: Sequence[str]) -> Mask:
    params = dict(model.named_parameters())
    return {name: torch.ones_like(params[name], dtype=torch.bool, device="cpu") for name in names}


def density(mask: Mask) -> float:
    total = sum(m.numel() for m in mask.values())
    return sum(int(m.sum()) for m in mask.values()) / total


def sparsity_report(mask: Mask) -> dict:
    """Per-tensor and total sparsity of the prunable weights."""
    tensors = {}
    for name, m in mask.items():
        alive = int(m.sum())
        tensors[name] = {"numel": m.numel(), "alive": alive, "sparsity": 1.0 - alive / m.numel()}
    numel = sum(t["numel"] for t in tensors.values())
    alive = sum(t["alive"] for t in tensors.values())
    return {"total": {"numel": numel, "alive": alive, "sparsity": 1.0 - alive / numel}, "tensors": tensors}


def check_mask(mask: Mask, model: nn.Module, source: str) -> None:
    """Refuse a mask whose names, shapes or dtype do not fit the model (a corrupt or foreign file)."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        if name not in params:
            raise LotteryError(f"{source}: mask names {name!r}, which the model does not have")
        if m.dtype != torch.bool:
            raise LotteryError(f"{source}: mask {name!r} has dtype {m.dtype}, expected bool")
        if m.shape != params[name].shape:
            raise LotteryError(
                f"{source}: mask {name!r} has shape {tuple(m.shape)}, the weight {tuple(params[name].shape)}"
            )


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mask) -> None:
    """Zero the pruned weights in place."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        params[name].mul_(m.to(params[name].device))


def zero_pruned_gradient(pruned: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``Tensor.register_hook`` hook that zeroes the gradient where ``pruned`` is True.

    On a parameter it runs on every backward, before the gradient is accumulated into ``.grad``: before DDP's
    reducer reads it and before any clipping. ``masked_fill`` turns an inf or NaN at a pruned position into 0.
    """

    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad.masked_fill(pruned, 0)

    return hook


def prunable_weights(model: nn.Module, prunable: Sequence[str]) -> dict[str, torch.Tensor]:
    """The model's own prunable parameters (no copies)."""
    names = set(prunable)
    return {name: p for name, p in model.named_parameters() if name in names}
