"""The pruning kernels: selection by score magnitude (IMP's rule, and any strategy's scores) and random selection
(a control's).

``keep_counts`` gives how many weights survive a density (one total, or one count per tensor: ``--scope``);
``magnitude_prune`` and ``random_prune`` choose which; ``row_prune`` keeps the same share of each output row;
``nm_prune`` keeps N of every M consecutive inputs (the 2:4 pattern sparse tensor cores run).
The level schedule is ``PruneArguments.level_densities``; the strategies live in ``hf_lottery/strategies/`` and
call these kernels on their scores; the controls live in ``hf_lottery/controls/``, where ``random-prune`` calls
``random_prune``.

Every kernel only removes weights that are still alive, so masks only ever shrink, and removes an exact
count: ties at the magnitude threshold are broken by position, never by chance. Magnitude selection is an
exact two-level radix select over the weights' float bits, streaming over the tensors with no concatenated
copy and no sort.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch

from hf_lottery.foundations.errors import LotteryError

from .masks import Mask


def keep_counts(mask: Mask, density: float, scope: str) -> dict[str, int] | int:
    """How many weights survive at ``density``: one total (global scope) or one count per tensor."""
    if scope == "layer":
        return {name: round(m.numel() * density) for name, m in mask.items()}
    return round(sum(m.numel() for m in mask.values()) * density)


def magnitude_prune(weights: dict[str, torch.Tensor], mask: Mask, keep: dict[str, int] | int) -> Mask:
    """Keep the ``keep`` largest-magnitude alive weights, globally (int) or per tensor (dict)."""
    if isinstance(keep, int):
        return _prune_group(weights, mask, list(mask), keep)
    new: Mask = {}
    for name in mask:
        new.update(_prune_group(weights, mask, [name], keep[name]))
    return new


# The threshold search is a two-level radix select on the bits of |w| as float32: for non-negative
# floats the IEEE bit pattern, read as an integer, orders exactly like the value (NaN above +inf). Level
# one counts the alive weights per value of the top 16 bits (sign cleared: 2^15 bins), level two counts,
# inside the one bin holding the remove-th smallest magnitude, the low 16 bits (2^16 bins). That gives the
# exact threshold and how many alive weights lie below it, in three streaming passes over the weights,
# slice by slice, with no copy of the weights, no concatenation and no sort: the extra memory is the new
# masks plus a few temporaries of one slice.
_SLICE = 1 << 22  # elements per slice: temporaries stay at tens of MB whatever the tensor size
_HIGH_BINS = 1 << 15
_LOW_BINS = 1 << 16
# The int16 halves of a float32, as laid out in memory: which one holds the sign, exponent and top mantissa.
_HIGH, _LOW = (1, 0) if sys.byteorder == "little" else (0, 1)


def _slices(
    weights: dict[str, torch.Tensor], mask: Mask, name: str
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(start, float32 slice, mask slice) over the flattened tensor ``name``, in row-major order."""
    flat, alive = weights[name].detach().reshape(-1), mask[name].reshape(-1)
    for start in range(0, flat.numel(), _SLICE):
        x = flat[start : start + _SLICE].float().cpu().contiguous()
        yield start, x, alive[start : start + _SLICE]


def _rank_bin(hist: torch.Tensor, rank: int) -> tuple[int, int]:
    """The bin holding the ``rank``-th smallest (1-based) counted element, and how many lie in lower bins."""
    cumulative = hist.cumsum(0)
    b = int(torch.searchsorted(cumulative, rank))
    return b, int(cumulative[b - 1]) if b > 0 else 0


@torch.no_grad()
def _prune_group(weights: dict[str, torch.Tensor], mask: Mask, names: list[str], keep: int) -> Mask:
    """Prune the ``alive - keep`` smallest-magnitude alive weights of ``names`` taken together.

    The threshold is the remove-th smallest alive magnitude; every alive weight below it goes, and
    the rest of the count comes from the weights equal to it, first by tensor order then by position.
    """
    alive = sum(int(mask[n].sum()) for n in names)
    remove = alive - keep
    if remove <= 0:
        return {n: mask[n].clone() for n in names}

    # Level one: the top half of |w|'s bits (exponent and 7 mantissa bits). Dead weights are sent to
    # bin 0 (a multiply is cheaper than a select) and taken out of it again.
    high_hist = torch.zeros(_HIGH_BINS, dtype=torch.int64)
    for n in names:
        for _, x, m in _slices(weights, mask, n):
            high = x.view(torch.int16)[_HIGH::2] & 0x7FFF
            high_hist += torch.bincount(high * m, minlength=_HIGH_BINS)
    high_hist[0] -= sum(mask[n].numel() for n in names) - alive
    high_bin, below = _rank_bin(high_hist, remove)

    # Level two: the low half of the bits of the alive weights in that bin, gathered slice by slice.
    low_hist = torch.zeros(_LOW_BINS, dtype=torch.int64)
    for n in names:
        for _, x, m in _slices(weights, mask, n):
            halves = x.view(torch.int16)
            low = halves[_LOW::2][((halves[_HIGH::2] & 0x7FFF) == high_bin) & m]
            low_hist += torch.bincount(low.int() & 0xFFFF, minlength=_LOW_BINS)
    low_bin, below_in_bin = _rank_bin(low_hist, remove - below)
    threshold = (high_bin << 16) | low_bin  # the bits of the remove-th smallest alive magnitude
    ties_to_remove = remove - below - below_in_bin

    new: Mask = {}
    for n in names:
        out = torch.empty(mask[n].numel(), dtype=torch.bool)
        for start, x, m in _slices(weights, mask, n):
            bits = x.view(torch.int32) & 0x7FFFFFFF
            kept = out[start : start + x.numel()]
            torch.ge(bits, threshold, out=kept)
            kept &= m
            if ties_to_remove > 0:
                ties = ((bits == threshold) & m).nonzero().squeeze(1)[:ties_to_remove]
                kept[ties] = False
                ties_to_remove -= len(ties)
        new[n] = out.view(mask[n].shape)
    return new


@torch.no_grad()
def row_prune(
    scores: dict[str, torch.Tensor], mask: Mask, density: float, transposed: frozenset[str] = frozenset()
) -> Mask:
    """Keep, in every output row of every tensor, the ``round(row length x density)`` highest-scoring alive
    weights (all of a row's alive weights when fewer are alive); ties go to the earlier position.

    An output row is a row of ``nn.Linear``'s ``(out, in)`` weight and a column of the names in ``transposed``
    (GPT-2's ``Conv1D`` stores ``(in, out)``); a 1-D tensor is one row.
    """
    new: Mask = {}
    for name, alive in mask.items():
        flip = name in transposed and alive.dim() == 2
        score = scores[name].detach().float().abs().cpu()
        score, kept_before = (score.T, alive.T) if flip else (score, alive)
        rows = score.reshape(-1, score.shape[-1]) if score.dim() > 1 else score.reshape(1, -1)
        alive_rows = kept_before.reshape(rows.shape)
        keep = min(round(rows.shape[1] * density), rows.shape[1])
        kept = torch.empty(rows.shape, dtype=torch.bool)
        # A few rows at a time: the sort's int64 indices and ranks take 16 bytes a weight, of a slice, not a tensor.
        step = max(1, _SLICE // rows.shape[1])
        positions = torch.arange(rows.shape[1])
        for start in range(0, rows.shape[0], step):
            part, alive_part = rows[start : start + step], alive_rows[start : start + step]
            order = torch.where(alive_part, part, -torch.inf).sort(dim=1, descending=True, stable=True).indices
            rank = torch.empty_like(order).scatter_(1, order, positions.expand_as(order))
            torch.logical_and(rank < keep, alive_part, out=kept[start : start + step])
        kept = kept.reshape(score.shape)
        new[name] = (kept.T if flip else kept).contiguous()
    return new


@torch.no_grad()
def nm_prune(
    scores: dict[str, torch.Tensor], mask: Mask, n: int, m: int, transposed: frozenset[str] = frozenset()
) -> Mask:
    """Keep, in every group of ``m`` consecutive weights along each tensor's input dimension, the ``n``
    highest-scoring alive ones (all of a group's alive weights when fewer are alive); ties go to the earlier
    position.

    The input dimension is dim 1 of ``nn.Linear``'s ``(out, in)`` weight and dim 0 of the names in ``transposed``
    (GPT-2's ``Conv1D``): the groups lie along the reduction of the matrix product, which is what a 2:4 sparse
    kernel needs. ``check_nm`` refuses, beforehand, a tensor whose input dimension ``m`` does not divide.
    """
    new: Mask = {}
    for name, alive in mask.items():
        flip = name in transposed
        score = scores[name].detach().float().abs().cpu()
        score, kept_before = (score.T, alive.T) if flip else (score, alive)
        groups = torch.where(kept_before, score, -torch.inf).reshape(-1, m)
        order = groups.sort(dim=1, descending=True, stable=True).indices
        kept = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, order[:, :n], True)
        kept = kept.reshape(score.shape) & kept_before
        new[name] = (kept.T if flip else kept).contiguous()
    return new


def check_nm(shapes: dict[str, torch.Size], n: int, m: int, transposed: frozenset[str] = frozenset()) -> None:
    """Refuse, in one line, an ``n:m`` pattern some prunable tensor cannot take: one that is not 2-D or whose input
    dimension (see ``nm_prune``) ``m`` does not divide."""
    for name, shape in shapes.items():
        if len(shape) != 2:
            raise LotteryError(f"--nm {n}:{m} groups a weight's inputs; {name} is not a matrix (shape {tuple(shape)})")
        inputs = shape[0] if name in transposed else shape[1]
        if inputs % m:
            raise LotteryError(
                f"--nm {n}:{m}: {name} has {inputs} inputs, which {m} does not divide; --exclude it or choose "
                "another pattern"
            )


def random_prune(mask: Mask, keep: dict[str, int], generator: torch.Generator) -> Mask:
    """Keep ``keep[name]`` weights of each tensor, drawn uniformly among its alive weights."""
    new: Mask = {}
    for name, m in mask.items():
        alive = m.flatten().nonzero().squeeze(1)
        chosen = alive[torch.randperm(len(alive), generator=generator)[: keep[name]]]
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[chosen] = True
        new[name] = flat.view_as(m)
    return new
