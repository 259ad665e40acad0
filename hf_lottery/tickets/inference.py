"""Sparse inference on CPU: swap very sparse Linear/Conv1D layers for CSR sparse × dense matmuls.

A pruned weight multiplied densely costs as much as the unpruned one. ``sparsify_for_inference`` replaces
each ``nn.Linear`` (and GPT-2 ``Conv1D``) at least ``DEFAULT_MIN_SPARSITY`` sparse with a ``SparseLinear``
that runs torch's own CSR kernel (MKL's sparse ``mm``), and leaves every other layer dense::

    model = sparsify_for_inference(model, masks=masks)   # masks optional: the mask is the truth
    with torch.inference_mode():
        out = model(**inputs)

CSR beats the dense matmul only above a break-even sparsity that rises with threads and tokens, hence the
threshold; ``torch.addmm(b, W_csr, x.T).T`` is the one fast order of the product, so the output is computed as
``(out, tokens)`` and transposed back into a contiguous tensor, and weights wider than ``K_TILE`` inputs are split
into column blocks. The measurements behind each choice, and what threads and a loaded machine do to them, are in
docs/benchmarks.md ("Sparse inference", from ``scripts/bench_inference.py``).

What it leaves alone: layers under the threshold, layers not on the CPU (CUDA's sparse kernels have their own
break-even, unmeasured here) and float16/bfloat16 layers (torch has no CPU CSR matmul for them) stay dense, and
are logged; embeddings, attention scores, LayerNorm and activations are unchanged. It is for inference only:
weights are buffers, the model is put in ``eval()`` with ``requires_grad`` off, and a ``SparseLinear`` given an
input that requires grad, with grad enabled, raises ``LotteryError``. ``save_pretrained`` fails on the CSR buffers
(safetensors cannot store them): keep the dense checkpoint or the ticket and call ``sparsify_for_inference`` after
loading.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.pruning.masks import apply_mask, check_mask

logger = logging.getLogger(__name__)

DEFAULT_MIN_SPARSITY = 0.93
"""Break-even measured with ``scripts/bench_inference.py --kernels`` (the module docstring; docs/benchmarks.md)."""

DEFAULT_MIN_BLOCK_SPARSITY = 0.9
"""The block sparsity from which whole BSR models beat dense on both CPUs measured, one sequence or a batch at
a time, with 1 or 2 threads; below it one CPU's BSR was slower (``scripts/bench_structured.py``;
docs/benchmarks.md)."""

BLOCK_SIZES = (32, 16)
"""Block sides BSR is tried with, largest first; smaller blocks store so many indices that BSR loses to CSR."""

K_TILE = 768
"""Widest column block of a CSR weight (see ``SparseLinear``); measured, not derived from the cache size."""

SUPPORTED_DTYPES = (torch.float32, torch.float64)
"""torch's CPU CSR matmul (MKL) has no float16/bfloat16 kernel: such layers stay dense."""


class SparseLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` stored in CSR: an inference-only stand-in for a sparse ``nn.Linear``.

    Computed as ``(W @ x.T).T`` by ``torch.addmm`` with the CSR matrix on the left (MKL's sparse kernel);
    ``F.linear(x, W_csr)`` would convert ``W.T`` to CSR again on every call and is slower than dense.
    A weight wider than ``K_TILE`` inputs is stored as column blocks, multiplied one after the other into
    the same output, so that the rows of ``x.T`` each block reads stay in cache (faster for BERT's 3072-wide
    FFN output; docs/benchmarks.md). The blocks and the bias are buffers, not parameters: nothing here trains.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        """From a dense ``(out, in)`` weight: its nonzeros, or exactly the survivors of ``mask`` (zeros included)."""
        super().__init__()
        weight = weight.detach()
        if weight.dim() != 2 or weight.layout != torch.strided:
            raise LotteryError(f"SparseLinear needs a dense 2-D weight, got {weight.dim()}-D {weight.layout}")
        if weight.dtype not in SUPPORTED_DTYPES:
            raise LotteryError(
                f"SparseLinear runs float32 and float64 weights (torch has no CPU CSR kernel for {weight.dtype})"
            )
        alive = weight != 0 if mask is None else mask.to(device=weight.device, dtype=torch.bool)
        if alive.shape != weight.shape:
            raise LotteryError(f"mask of shape {tuple(alive.shape)} does not fit a weight of {tuple(weight.shape)}")
        self.out_features, self.in_features = weight.shape
        blocks = max(1, math.ceil(self.in_features / K_TILE))
        bounds = [round(i * self.in_features / blocks) for i in range(blocks + 1)]
        self.widths = [b - a for a, b in pairwise(bounds)]
        for i, (a, b) in enumerate(pairwise(bounds)):
            self.register_buffer(f"weight_{i}", _csr(weight[:, a:b], alive[:, a:b]))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.training = False

    def blocks(self) -> list[torch.Tensor]:
        """The CSR column blocks of the weight, left to right."""
        return [getattr(self, f"weight_{i}") for i in range(len(self.widths))]

    @property
    def nnz(self) -> int:
        """Stored entries: the survivors (a 0.0 that a mask kept is stored)."""
        return sum(block.values().numel() for block in self.blocks())

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / max(self.out_features * self.in_features, 1)

    def to_dense(self) -> torch.Tensor:
        """The ``(out, in)`` weight with zeros in place (for checks; inference never builds it)."""
        return torch.cat([block.to_dense() for block in self.blocks()], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise LotteryError(
                "SparseLinear is inference-only: run the model under torch.inference_mode() or torch.no_grad()"
            )
        if x.dtype != self.weight_0.dtype:
            raise LotteryError(f"SparseLinear holds {self.weight_0.dtype} weights but got a {x.dtype} input")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 0:
            return x.new_empty(*lead, self.out_features)
        # MKL wants the dense operand row-major: x.T is copied once (cheap next to the product; torch would
        # do it inside addmm otherwise), and each column block of W reads its own rows of it.
        xt = x2.T.contiguous()
        parts = xt.split(self.widths) if len(self.widths) > 1 else (xt,)
        blocks = self.blocks()
        if self.bias is None:
            y = torch.mm(blocks[0], parts[0])
        else:
            y = torch.addmm(self.bias.unsqueeze(1), blocks[0], parts[0])
        for block, part in zip(blocks[1:], parts[1:], strict=True):
            y.addmm_(block, part)
        # (out, tokens) back to (tokens, out), contiguous, so that later code may .view() it as nn.Linear's.
        return y.T.contiguous().view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, sparsity={self.sparsity:.3f}"
        )


class BlockSparseLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` stored in BSR (square blocks): an inference-only stand-in for a Linear whose
    mask keeps or removes whole blocks (``--unit block``).

    Computed as ``(W @ x.T).T`` by ``torch.addmm`` with the BSR matrix on the left, as ``SparseLinear`` does with
    CSR; only the kept blocks are stored, so the kernel reads dense tiles and skips the removed ones.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, alive: torch.Tensor, block: int):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.block = block
        with warnings.catch_warnings():  # torch's "BSR support is in beta" notice
            warnings.simplefilter("ignore", UserWarning)
            kept = (weight.detach() * alive).to_sparse_bsr((block, block))
        self.register_buffer("weight", kept)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.training = False

    @property
    def sparsity(self) -> float:
        return 1.0 - self.weight.values().numel() / max(self.out_features * self.in_features, 1)

    def to_dense(self) -> torch.Tensor:
        return self.weight.to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise LotteryError(
                "BlockSparseLinear is inference-only: run the model under torch.inference_mode() or torch.no_grad()"
            )
        lead = x.shape[:-1]
        xt = x.reshape(-1, self.in_features).T  # a column-major view: BSR reads it faster than a row-major copy
        if self.bias is None:
            y = torch.mm(self.weight, xt)
        else:
            y = torch.addmm(self.bias.unsqueeze(1), self.weight, xt)
        return y.T.contiguous().view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, block={self.block}, "
            f"bias={self.bias is not None}, sparsity={self.sparsity:.3f}"
        )


@dataclass(frozen=True)
class LayerDecision:
    """What ``sparsify_for_inference`` does with one Linear/Conv1D layer, and why; ``shape`` is ``(out, in)``."""

    name: str
    shape: tuple[int, int]
    sparsity: float
    swapped: bool
    reason: str
    block: int | None = None  # the side of the square blocks its mask keeps whole, when it runs on BSR


def plan_inference(
    model: nn.Module,
    min_sparsity: float | None = None,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    min_block_sparsity: float | None = None,
) -> list[LayerDecision]:
    """What ``sparsify_for_inference`` would do with each Linear/Conv1D layer, changing nothing."""
    thresholds = _threshold(min_sparsity), _threshold(min_block_sparsity, DEFAULT_MIN_BLOCK_SPARSITY)
    return [decision for decision, _, _ in _plan(model, *thresholds, _checked(model, masks))]


def sparsify_for_inference(
    model: nn.Module,
    min_sparsity: float | None = None,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    min_block_sparsity: float | None = None,
) -> nn.Module:
    """Swap each ``nn.Linear``/``Conv1D`` whose mask keeps whole square blocks (``--unit block``) and is at least
    ``min_block_sparsity`` sparse for a ``BlockSparseLinear`` (BSR), each other one at least ``min_sparsity``
    sparse for a ``SparseLinear`` (CSR), in place.

    Sparsity is the share of exact zeros of a weight or, for a weight named in ``masks`` (a dict of bool
    tensors keyed by ``named_parameters()`` names, as hf-lottery writes them), the share the mask prunes: the
    mask is the truth, so a survivor equal to 0.0 is kept and a pruned weight is zeroed whatever its value
    (every masked weight of the model is zeroed first, dense layers included). ``min_sparsity`` defaults to
    ``DEFAULT_MIN_SPARSITY`` and ``min_block_sparsity`` to ``DEFAULT_MIN_BLOCK_SPARSITY`` (measured: see
    docs/benchmarks.md). A layer is block-structured when every ``B x B`` tile of its mask, for ``B`` in
    ``BLOCK_SIZES``, is kept or removed whole. Only exact ``nn.Linear`` (not
    subclasses such as ``MultiheadAttention``'s projection, which is not called as a module) and ``Conv1D``
    are considered. Returns the model, now in ``eval()`` with ``requires_grad`` off; what was swapped is
    logged (``sparse_layers(model)`` lists it, ``plan_inference`` tells beforehand, with reasons).
    """
    threshold = _threshold(min_sparsity)
    block_threshold = _threshold(min_block_sparsity, DEFAULT_MIN_BLOCK_SPARSITY)
    masks = _checked(model, masks)
    if masks:
        apply_mask(model, masks)
    plan = _plan(model, threshold, block_threshold, masks)
    for decision, weight, alive in plan:
        if decision.swapped:
            parent, _, child = decision.name.rpartition(".")
            old = model.get_submodule(decision.name)
            if decision.block:
                new: nn.Module = BlockSparseLinear(weight, old.bias, alive, decision.block)
            else:
                new = SparseLinear(weight, old.bias, alive)
            setattr(model.get_submodule(parent), child, new)
    model.eval()
    model.requires_grad_(False)
    _log([decision for decision, _, _ in plan], threshold)
    return model


def sparse_layers(model: nn.Module) -> dict[str, float]:
    """Name → sparsity of each ``SparseLinear`` and ``BlockSparseLinear`` in ``model``: what
    ``sparsify_for_inference`` swapped."""
    swapped = (SparseLinear, BlockSparseLinear)
    return {name: m.sparsity for name, m in model.named_modules() if isinstance(m, swapped)}


def _threshold(min_sparsity: float | None, default: float = DEFAULT_MIN_SPARSITY) -> float:
    threshold = default if min_sparsity is None else float(min_sparsity)
    if not 0.0 <= threshold <= 1.0:
        raise LotteryError(f"min_sparsity must be between 0 and 1, got {min_sparsity}")
    return threshold


def _checked(model: nn.Module, masks: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    masks = dict(masks or {})
    if masks:
        check_mask(masks, model, "masks")
    return masks


def _plan(
    model: nn.Module, threshold: float, block_threshold: float, masks: dict[str, torch.Tensor]
) -> list[tuple[LayerDecision, torch.Tensor, torch.Tensor]]:
    """Each Linear/Conv1D layer's decision, with its weight as ``(out, in)`` and which of its entries are alive."""
    names = {id(p): n for n, p in model.named_parameters()}
    plan = []
    for name, module in model.named_modules():
        if type(module) is nn.Linear:  # exact type: subclasses (MultiheadAttention's out_proj) are used differently
            transposed = False
        elif isinstance(module, Conv1D):  # GPT-2: the weight is (in, out) and y = x @ W + b
            transposed = True
        else:
            continue
        weight = module.weight.detach()
        mask = masks.get(names.get(id(module.weight), ""))
        # The mask is the truth: a surviving 0.0 is alive, a pruned weight is dead whatever its value.
        alive = weight != 0 if mask is None else mask.to(weight.device)
        if transposed:
            weight, alive = weight.T, alive.T
        sparsity = 1.0 - int(alive.sum()) / max(alive.numel(), 1)
        shape = (weight.shape[0], weight.shape[1])
        block = _whole_blocks(alive) if sparsity >= block_threshold else None
        if block is not None:
            reason = _keep_dense_because(name, weight, sparsity, block_threshold)
            swapped = f"{block}x{block} blocks kept whole, sparsity >= {block_threshold:g}"
        else:
            reason = _keep_dense_because(name, weight, sparsity, threshold)
            swapped = f"sparsity >= {threshold:g}"
        decision = LayerDecision(name, shape, sparsity, reason is None, reason or swapped, block)
        plan.append((decision, weight, alive))
    return plan


def _whole_blocks(alive: torch.Tensor) -> int | None:
    """The largest of ``BLOCK_SIZES`` whose every tile of ``alive`` is all alive or all pruned, if any."""
    for size in BLOCK_SIZES:
        rows, cols = alive.shape
        if rows % size or cols % size:
            continue
        tiles = alive.reshape(rows // size, size, cols // size, size)
        if torch.equal(tiles.all(3).all(1), tiles.any(3).any(1)):
            return size
    return None


def _keep_dense_because(name: str, weight: torch.Tensor, sparsity: float, threshold: float) -> str | None:
    if name == "":
        return "the model itself is the layer; nothing to swap it in"
    if sparsity < threshold:
        return f"sparsity {sparsity:.3f} < {threshold:g}: CSR would not be faster"
    if weight.device.type != "cpu":
        return f"on {weight.device}: CSR is only faster than dense on CPU"
    if weight.dtype not in SUPPORTED_DTYPES:
        return f"{weight.dtype}: torch has no CPU CSR kernel for it"
    return None


def _log(decisions: list[LayerDecision], threshold: float) -> None:
    for d in decisions:
        logger.debug(
            "%s %s: sparsity %.3f, %s (%s)", d.name, d.shape, d.sparsity, "sparse" if d.swapped else "dense", d.reason
        )
    swapped = sum(d.swapped for d in decisions)
    logger.info(
        "sparsify_for_inference: %d of %d Linear/Conv1D layers now sparse (threshold %g)",
        swapped,
        len(decisions),
        threshold,
    )
    unsupported = [d for d in decisions if not d.swapped and d.sparsity >= threshold]
    if unsupported:
        logger.warning(
            "%d layers at or above %g sparsity stay dense: %s", len(unsupported), threshold, unsupported[0].reason
        )


def _csr(weight: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """The CSR matrix of ``weight``'s alive entries, with int32 indices.

    int32 because torch's MKL build (LP64) takes them as they are, where int64 ones are converted on every call.
    """
    rows, cols = alive.nonzero(as_tuple=True)
    crow = torch.zeros(weight.shape[0] + 1, dtype=torch.int32, device=weight.device)
    crow[1:] = torch.bincount(rows, minlength=weight.shape[0]).cumsum(0)
    with warnings.catch_warnings():  # torch's "CSR support is in beta" notice
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            crow, cols.to(torch.int32), weight[rows, cols], tuple(weight.shape), check_invariants=False
        )
