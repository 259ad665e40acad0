"""Masks are the truth: a boolean tensor per prunable parameter, keyed by its ``named_parameters()`` name.

Which parameters are prunable is decided here, for any architecture, from module types rather
than module paths: the weights of ``nn.Linear`` and GPT-2 style ``Conv1D`` layers inside the
transformer body (``model.base_model``), so embeddings, LayerNorms, biases and the task head are
left dense. The word embeddings stay dense even where a language-model head's decoder (a Linear) is
tied to them: ``named_parameters()`` lists a tied parameter once, under its body name, so the module
type of the decoder would otherwise make them prunable. A pooler the task does not use is not built
(transformers' masked-LM and token-classification models have none), so it is never pruned.

``MaskEnforcer`` keeps the pruned weights at zero through training, for every loop: hf-lottery's own,
``MaskedTrainingCallback`` (a ``transformers.Trainer``), ``find_ticket``'s training function and the example
script ``scripts/finetune_ticket.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers.pytorch_utils import Conv1D

from hf_lottery.foundations.errors import LotteryError

Mask = dict[str, torch.Tensor]
_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """1 bit per element, least significant bit first."""
    flat = mask.flatten().to(torch.uint8)
    flat = torch.nn.functional.pad(flat, (0, (-flat.numel()) % 8))
    return (flat.view(-1, 8) * _BITS).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    numel = math.prod(shape)
    bits = (packed.view(-1, 1) & _BITS).ne(0).flatten()
    return bits[:numel].view(shape)


class PackedMask(Mapping[str, torch.Tensor]):
    """A mask held at one bit a weight (``pack_mask``), each tensor unpacked only when read: a draw over a model
    too big to hold twice keeps the whole mask at an eighth of a ``torch.bool`` mask (which is a quarter of a
    float32 model), and whatever reads it tensor by tensor (applying, counting, saving) holds one bool tensor at
    a time."""

    def __init__(self) -> None:
        self._packed: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {}

    def __setitem__(self, name: str, mask: torch.Tensor) -> None:
        self._packed[name] = (pack_mask(mask.cpu()), tuple(mask.shape))

    def __getitem__(self, name: str) -> torch.Tensor:
        packed, shape = self._packed[name]
        return unpack_mask(packed, shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: shape for name, (_, shape) in self._packed.items()}


def mask_shapes(mask: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, without unpacking a ``PackedMask``."""
    if isinstance(mask, PackedMask):
        return mask.shapes()
    return {name: tuple(m.shape) for name, m in mask.items()}


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


def transposed_weights(model: nn.Module, prunable: list[str]) -> frozenset[str]:
    """The prunable weights stored ``(in, out)`` (GPT-2's ``Conv1D``), whose output rows are columns."""
    names = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, Conv1D)}
    return frozenset(names & set(prunable))


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


def dense_views(model: nn.Module, names: Sequence[str]) -> Mask:
    """``dense_mask`` as read-only views of one ``True`` each (``expand``): no memory, for a draw's starting mask
    on a model too big to hold a mask of it beside the one drawn. Never write into them."""
    params = dict(model.named_parameters())
    return {name: torch.ones((), dtype=torch.bool).expand(params[name].shape) for name in names}


def density(mask: Mask) -> float:
    total = sum(m.numel() for m in mask.values())
    return sum(int(m.sum()) for m in mask.values()) / total


def overlap(mask: Mask, other: Mask) -> float:
    """The share of ``mask``'s surviving weights that ``other`` keeps too (1.0: ``other`` keeps all of them)."""
    alive = sum(int(m.sum()) for m in mask.values())
    return sum(int((m & other[name]).sum()) for name, m in mask.items()) / max(alive, 1)


def thinned(
    mask: Mask, previous: Mask, floor: float, *, exempt: frozenset[str] = frozenset()
) -> tuple[list[str], list[str]]:
    """The tensors a draw of ``mask`` inside ``previous`` emptied, and those it left with weights but newly under
    ``floor`` density: a tensor pruned far harder than the rest, so a level is nearly without it.

    ``exempt`` tensors are not reported: those a structured draw empties or thins on purpose (the FFN of a
    transformer block that loses all or nearly all its neurons: ``Units.spanned``). A tensor that loses all its
    blocks is reported, as one that loses all its single weights is.
    """
    emptied, thin = [], []
    for name, m in mask.items():
        if name in exempt:
            continue
        alive, before = int(m.sum()), int(previous[name].sum())
        if alive == 0 and before > 0:
            emptied.append(name)
        elif alive > 0 and alive < floor * m.numel() <= before:
            thin.append(name)
    return emptied, thin


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
    """Zero the pruned weights in place, once (``MaskEnforcer`` keeps them at zero through training)."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        params[name].mul_(m.to(params[name].device))


def prunable_weights(model: nn.Module, prunable: Sequence[str]) -> dict[str, torch.Tensor]:
    """The model's own prunable parameters (no copies)."""
    names = set(prunable)
    return {name: p for name, p in model.named_parameters() if name in names}


# Elements per piece of a CPU tensor: below torch's intra-op grain size (32768) an elementwise op runs on
# the calling thread, with no fork-join of the thread pool.
_PIECE = 31 * 1024


class MaskEnforcer:
    """Keeps a model's pruned weights at exactly zero while it trains: the one object every training loop uses.

    ``mask`` maps ``named_parameters()`` names to boolean tensors (True = kept). Two ways of zeroing, each
    built on first use, on the device (and dtype) of the tensor it zeroes, so the model may be moved or
    cast after construction (``accelerate`` prepares the model after the enforcer is built):

    - ``mask_gradients`` and ``mask_weights`` multiply in place by a 0/1 mask of the parameter's dtype, for
      a loop that calls them at the right moment (hf-lottery's own: after DDP's reduction, before clipping).
    - ``hook_gradients`` and ``fill_weights`` use ``masked_fill`` with the boolean complement, for loops we
      do not own (``transformers.Trainer``, ``find_ticket``'s ``train_fn``): a quarter of the memory of a
      float mask, and an inf or NaN at a pruned position becomes 0 instead of NaN.

    Where the time of the multiply went, and why it is like this (the timings, from
    ``scripts/bench_masking.py``, are in docs/benchmarks.md):

    - Tensors whose mask keeps everything (all of them at level 0) are left out: multiplying them by
      ones is two full passes over their weights and gradients per step for nothing.
    - A multiply by a 0/1 mask of the parameter's own dtype is the fastest zeroing measured on CPU
      (a bool mask is cast to the parameter's dtype on every call; ``masked_fill_`` and ``where`` are
      slower).
    - Each per-tensor op forks and joins torch's thread pool. When another process holds a core, every
      join waits for a descheduled thread, which costs far more than the multiply itself, while one thread
      takes the same time whatever the load. So contiguous CPU tensors are cut into pieces below torch's
      grain size, which run on the calling thread. On idle cores that gives up some time per call (the
      multiply is memory-bound; a second thread halves it at best); on a many-core CPU it gives up more
      bandwidth. GPU tensors are not cut.
    """

    def __init__(self, model: nn.Module, mask: Mask) -> None:
        params = dict(model.named_parameters())
        pruned = [(name, params[name], m) for name, m in mask.items()]  # a name the model lacks fails here
        pruned = [(name, p, m) for name, p, m in pruned if not bool(m.all())]
        self.names = [name for name, _, _ in pruned]
        self.params = [p for _, p, _ in pruned]
        self._kept = [m for _, _, m in pruned]
        self._factors: list[torch.Tensor | None] = [None] * len(pruned)  # 0/1 in the parameter's dtype
        self._pieces: list[tuple[torch.Tensor, ...] | None] = [None] * len(pruned)
        self._pruned: list[torch.Tensor | None] = [None] * len(pruned)  # ~mask, for masked_fill
        self._handles: list[RemovableHandle] = []

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Multiply the gradients by their masks, in place: call it once they are complete (synchronised)."""
        self._multiply([p.grad for p in self.params])

    @torch.no_grad()
    def mask_weights(self) -> None:
        """Multiply the weights by their masks, in place."""
        self._multiply(list(self.params))

    @torch.no_grad()
    def fill_weights(self) -> None:
        """Set the pruned weights to 0 with ``masked_fill_`` (an inf or NaN there becomes 0 too)."""
        for i, p in enumerate(self.params):
            p.masked_fill_(self._pruned_on(i, p.device), 0)

    def hook_gradients(self) -> None:
        """Zero each gradient at its pruned positions as it is computed, until ``unhook``.

        A ``Tensor.register_hook`` hook on a parameter runs on every backward, before the gradient is
        accumulated into ``.grad``: before DDP's reducer reads it and before any clipping. Hooks left by an
        earlier call are removed first.
        """
        self.unhook()
        for i, p in enumerate(self.params):
            self._handles.append(p.register_hook(self._gradient_hook(i)))

    def unhook(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.no_grad()
    def revived(self) -> dict[str, int]:
        """The masked tensors that have nonzero weights at pruned positions, and how many each."""
        counts = {
            name: int(p[self._pruned_on(i, p.device)].count_nonzero())
            for i, (name, p) in enumerate(zip(self.names, self.params, strict=True))
        }
        return {name: n for name, n in counts.items() if n}

    def _gradient_hook(self, i: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def hook(grad: torch.Tensor) -> torch.Tensor:
            return grad.masked_fill(self._pruned_on(i, grad.device), 0)

        return hook

    def _pruned_on(self, i: int, device: torch.device) -> torch.Tensor:
        """The boolean complement of mask ``i`` on ``device``, built once per device."""
        pruned = self._pruned[i]
        if pruned is None or pruned.device != device:
            pruned = self._pruned[i] = (~self._kept[i]).to(device)
        return pruned

    def _factor(self, i: int, like: torch.Tensor) -> torch.Tensor:
        """Mask ``i`` as 0/1 on the device and in the dtype of ``like``, cut into pieces if it lives on CPU."""
        m = self._factors[i]
        if m is None or m.device != like.device or m.dtype != like.dtype:
            m = self._factors[i] = self._kept[i].to(device=like.device, dtype=like.dtype).contiguous()
            self._pieces[i] = m.view(-1).split(_PIECE) if m.device.type == "cpu" and m.numel() > _PIECE else None
        return m

    def _multiply(self, tensors: list[torch.Tensor | None]) -> None:
        """One fused in-place multiply of ``tensors`` by their masks; CPU tensors as pieces (see the class)."""
        targets: list[torch.Tensor] = []
        factors: list[torch.Tensor] = []
        for i, t in enumerate(tensors):
            if t is None:
                continue
            m = self._factor(i, t)
            pieces = self._pieces[i]
            if pieces is not None and t.is_contiguous():
                targets += t.view(-1).split(_PIECE)
                factors += pieces
            else:
                targets.append(t)
                factors.append(m)
        if targets:
            torch._foreach_mul_(targets, factors)
