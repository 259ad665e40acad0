"""Recovery that keeps the mask: fine-tune a ticket through low-rank adapters whose update is masked.

Each adapted weight trains as ``W + where(M, B A, 0) * alpha / rank``, with ``W`` the frozen (pruned) weight,
``A`` (rank x in) and ``B`` (out x rank) the only trainable tensors, and ``M`` the ticket's mask. The mask is
inside the update, so a pruned weight stays exactly zero by construction, whatever the optimizer does, and
merging the update into ``W`` keeps every zero: the merged model is a plain transformers model, the ticket's
sparsity intact, with the stock ``state_dict`` keys that ``save_pretrained`` and ``from_pretrained`` expect.
PEFT's LoRA cannot do this: it has no mask on its update, and ``merge_and_unload`` adds the whole ``B A``,
which fills in the pruned weights.

The update is a ``torch.nn.utils.parametrize`` parametrization of the layer's ``weight``, so any training
loop sees an ordinary model. Its memory cost: each adapted layer materialises its effective weight
``W + where(M, B A, 0) * scale`` (the layer's full size) in every forward, and autograd keeps it for the
backward, one per adapted layer; ``B A`` itself is transient. The optimizer state is that of ``A`` and ``B``
only.

Under hf-lottery's ``training.train`` (``MaskEnforcer`` built from ``named_parameters()`` names, AdamW over
``model.parameters()``), pass an empty mask: the adapted weights are renamed
``<layer>.parametrizations.weight.original`` (the ticket's names no longer exist) and need no enforcing,
being frozen with their update masked. The frozen parameters get no gradient, so AdamW, fused or not, skips
them, weight decay included.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers.pytorch_utils import Conv1D

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.pruning.masks import Mask, apply_mask, check_mask

SOURCE = "masked adapters"


class MaskedDelta(nn.Module):
    """The parametrization of one weight: ``weight + where(kept, B A, 0) * scale``.

    ``A`` and ``B`` follow LoRA's convention (``A`` rank x in, ``B`` out x rank); a GPT-2 ``Conv1D`` stores its
    weight (in, out), so its update is transposed. ``torch.where`` rather than a multiply, so an inf or NaN in
    ``B A`` cannot reach a pruned weight.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, kept: torch.Tensor, *, scale: float, transposed: bool):
        super().__init__()
        self.A = nn.Parameter(a)
        self.B = nn.Parameter(b)
        # Not persistent: the mask is the ticket's, not training state, so checkpoints and best-of copies skip it.
        self.register_buffer("kept", kept, persistent=False)
        self.scale, self.transposed = scale, transposed

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta = self.B @ self.A
        if self.transposed:
            delta = delta.T
        return torch.add(weight, torch.where(self.kept, delta, 0), alpha=self.scale)


class MaskedAdapters:
    """The adapters ``add_masked_adapters`` put on ``model``: their parameters to train, and ``merge``."""

    def __init__(self, model: nn.Module, deltas: dict[str, MaskedDelta], trainable: dict[int, bool]) -> None:
        self.model = model
        self.deltas = deltas  # the adapted weight's name (the ticket's) -> its parametrization
        self._trainable = trainable  # id(parameter) -> its requires_grad before the base was frozen
        self.merged = False

    @property
    def names(self) -> list[str]:
        """The adapted weights, by their names in the ticket's mask."""
        return list(self.deltas)

    def parameters(self) -> list[nn.Parameter]:
        """The trainable tensors: every adapter's ``A`` and ``B``, in the order of ``names``."""
        return [p for delta in self.deltas.values() for p in (delta.A, delta.B)]

    @torch.no_grad()
    def merge(self) -> None:
        """Add each masked update into its weight and remove the adapters, leaving a stock model.

        The weights keep their identity (an optimizer or a prepared model holding them stays valid), and every
        parameter gets back the ``requires_grad`` it had before ``add_masked_adapters`` froze it.
        """
        if self.merged:
            raise LotteryError(f"{SOURCE}: merged already")
        modules = dict(self.model.named_modules())
        for name in self.deltas:
            parametrize.remove_parametrizations(modules[name.rpartition(".")[0]], "weight", leave_parametrized=True)
        for p in self.model.parameters():
            p.requires_grad_(self._trainable.get(id(p), p.requires_grad))
        self.merged = True


def add_masked_adapters(
    model: nn.Module, mask: Mask, *, rank: int, alpha: float | None = None, seed: int
) -> MaskedAdapters:
    """Put a masked low-rank adapter on each weight ``mask`` names and freeze the rest of ``model``.

    ``mask`` is a ticket's: ``named_parameters()`` names of Linear/Conv1D weights to booleans (True = kept). Its
    pruned weights are zeroed first (as ``apply_mask`` does), so that after ``merge`` they are exactly zero.
    ``alpha`` defaults to ``rank``, a scale of 1, as PEFT's LoRA defaults do (r 8, alpha 8): the learning rate
    then acts on ``B A`` as it is. ``A`` is drawn from ``seed`` (LoRA's Kaiming-uniform init, on CPU, in the
    order of ``named_parameters()``), so the same call gives the same adapters on any device, which resuming
    a checkpointed run needs; ``B`` starts at zero, so the adapted model starts as the ticket.
    """
    if rank < 1:
        raise LotteryError(f"{SOURCE}: rank must be 1 or more, got {rank}")
    alpha = float(rank) if alpha is None else alpha
    if not (math.isfinite(alpha) and alpha > 0):
        raise LotteryError(f"{SOURCE}: alpha must be > 0, got {alpha}")
    if not mask:
        raise LotteryError(f"{SOURCE}: the mask names no weight to adapt")
    modules = dict(model.named_modules())
    for name in mask:
        owner, _, leaf = name.rpartition(".")
        module = modules.get(owner)
        if leaf != "weight" or not isinstance(module, (nn.Linear, Conv1D)):
            raise LotteryError(f"{SOURCE}: {name!r} is not the weight of a Linear or Conv1D layer")
        if parametrize.is_parametrized(module, "weight"):
            raise LotteryError(f"{SOURCE}: {name!r} has an adapter already; merge it first")
    check_mask(mask, model, SOURCE)
    apply_mask(model, mask)
    trainable = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    deltas = {}
    for name, weight in [(n, p) for n, p in model.named_parameters() if n in mask]:
        module = modules[name.rpartition(".")[0]]
        transposed = isinstance(module, Conv1D)
        fan_out, fan_in = weight.shape[::-1] if transposed else weight.shape
        a = nn.init.kaiming_uniform_(torch.empty(rank, fan_in), a=math.sqrt(5), generator=generator)
        delta = MaskedDelta(
            a.to(device=weight.device, dtype=weight.dtype),
            torch.zeros(fan_out, rank, device=weight.device, dtype=weight.dtype),
            mask[name].to(weight.device),
            scale=alpha / rank,
            transposed=transposed,
        )
        parametrize.register_parametrization(module, "weight", delta)
        deltas[name] = delta
    return MaskedAdapters(model, deltas, trainable)
