"""Compact structured tickets: the kept neurons, heads or layers sliced out into a smaller stock model.

A neuron, head or layer ticket is elementwise on disk (``hf_lottery.pruning.units``); here its kept units become a model
whose config is smaller (``intermediate_size``, the number of heads, or of layers, the kept blocks renumbered),
which stock ``transformers`` loads and runs at the smaller size with nothing from hf-lottery. Stock configs hold
one width for every block, so a neuron or head ticket whose blocks kept different numbers of units (``--scope
global``) is padded to its widest block with removed units, whose weights are zero: the output is the same, at the
widest block's speed. A layer ticket is the only faithful model of itself: its removed blocks, zeroed in a model of
the dense depth, would still add their biases and apply their LayerNorms.

``compare_latency`` times the compact model against the dense one it was cut from, when an export is asked to.
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass
from statistics import median

import torch
from torch import nn

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.pruning.architectures import Architecture, architecture
from hf_lottery.pruning.masks import Mask
from hf_lottery.pruning.units import UNIT_TYPES, Layers, LayersAndNeurons, Spans, find_units

LATENCY_REPEATS = 10  # timed forward passes of each model; the median of each is compared
LATENCY_WARMUP = 2  # untimed passes of each first (the first allocates)


@dataclass
class Compaction:
    """How a structured ticket's full-size tensors are cut down to its compact model's."""

    config: object  # the compact model's config
    changes: dict[str, tuple[int, int]]  # config field: (before, after)
    padded: bool  # some blocks kept fewer units than the widest, and carry removed ones to match it
    index: dict[str, tuple[int, torch.Tensor]]  # tensor name: (dim, kept indices along it)
    blocks: tuple[str, dict[int, int]] | None = None  # a layer cut: the blocks' path, kept block: its new number

    def cut(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` (weights, or masks) of the full model, cut to the compact one's shapes (and names)."""
        out = {}
        for name, t in state.items():
            renamed = self._rename(name)
            if renamed is not None:
                out[renamed] = _take(t, *self.index[name]) if name in self.index else t
        return out

    def _rename(self, name: str) -> str | None:
        """A tensor's name in the compact model: its block renumbered, None when its block is removed."""
        if self.blocks is None:
            return name
        path, numbers = self.blocks
        found = re.match(rf"{re.escape(path)}\.(\d+)\.(.*)$", name)
        if found is None:
            return name
        new = numbers.get(int(found.group(1)))
        return None if new is None else f"{path}.{new}.{found.group(2)}"

    def cut_model(self, model: nn.Module) -> nn.Module:
        """Another model of the full shape (the ticket's rewind point), cut the same way."""
        small = type(model)._from_config(self.config, dtype=next(model.parameters()).dtype)
        small.load_state_dict(self.cut(model.state_dict()), strict=True)
        return small


def refuse_uncompactable(unit: str) -> None:
    """A ticket of ``unit``s that no smaller model can hold is refused in one line."""
    if not UNIT_TYPES[unit].compacts:
        raise LotteryError(
            f"only neuron, head and layer tickets become smaller models; this run prunes {unit}s, which stay in a "
            "model of the dense size (the sparse files hold them compactly)"
        )


def compaction(model: nn.Module, mask: Mask, unit: str) -> Compaction:
    """How to cut ``model`` (and any model of its shape) to the stock model of its type that holds only the
    ``unit``s that ``mask`` keeps."""
    refuse_uncompactable(unit)
    entry = architecture(model.config, need="compact export")
    units = find_units(unit, model, list(mask))
    if isinstance(units, Layers):
        return _layer_compaction(model.config, entry, units, mask)
    if isinstance(units, LayersAndNeurons):  # the kept blocks, renumbered, each cut to the neurons it keeps
        depth = _layer_compaction(model.config, entry, units.layers, mask)
        removed = {f"layer {i}" for i in units.removed(mask)}
        kept = Spans("neuron", {g: spans for g, spans in units.neurons.groups.items() if g not in removed})
        width = _span_compaction(model, mask, kept, entry, "neuron", depth.config)
        return Compaction(width.config, {**depth.changes, **width.changes}, width.padded, width.index, depth.blocks)
    assert isinstance(units, Spans)
    return _span_compaction(model, mask, units, entry, unit, model.config)


def _span_compaction(model: nn.Module, mask: Mask, units: Spans, entry: Architecture, unit: str, config) -> Compaction:
    """The cut of a neuron or head ticket (``config``: the model's, or its shallower one): each block cut to its
    kept units, padded to the widest block's."""
    params = dict(model.named_parameters())
    alive = units.alive(mask)
    width = max(1, max(int(kept.sum()) for kept in alive.values()))
    index: dict[str, tuple[int, torch.Tensor]] = {}
    for group, spans in units.groups.items():
        keep = _padded(alive[group], width)
        for span in spans:
            rows = (keep[:, None] * span.width + torch.arange(span.width)).reshape(-1)
            index[span.name] = (span.dim, rows)
            bias = span.name.removesuffix("weight") + "bias"
            if span.out and bias in params:
                index[bias] = (0, rows)
    new_config = copy.deepcopy(config)
    if unit == "neuron":
        changes = {entry.width: (entry.ffn_width(model.config), width)}
        setattr(new_config, entry.width, width)
    else:
        changes = entry.set_heads(new_config, width)
    padded = any(int(kept.sum()) < width for kept in alive.values())
    return Compaction(new_config, changes, padded, index)


def _layer_compaction(config, entry: Architecture, units: Layers, mask: Mask) -> Compaction:
    """The cut of a layer ticket: the removed blocks dropped, the kept ones renumbered in order."""
    removed = set(units.removed(mask))
    kept = [i for i in range(len(units.blocks)) if i not in removed]
    if not kept:
        raise LotteryError("this ticket removes every transformer block: there is no model to write")
    new_config = copy.deepcopy(config)
    before = getattr(config, entry.depth)
    setattr(new_config, entry.depth, len(kept))
    for name in entry.per_layer:
        values = getattr(config, name, None)
        if isinstance(values, list) and len(values) == before:
            setattr(new_config, name, [values[i] for i in kept])
    numbers = {old: new for new, old in enumerate(kept)}
    return Compaction(new_config, {entry.depth: (before, len(kept))}, False, {}, (units.path, numbers))


def _padded(kept: torch.Tensor, width: int) -> torch.Tensor:
    """The indices of the kept units, with the first removed ones added to reach ``width``, in order."""
    chosen = kept.clone()
    chosen[(~kept).nonzero().squeeze(1)[: width - int(kept.sum())]] = True
    return chosen.nonzero().squeeze(1)


def _take(tensor: torch.Tensor, dim: int, rows: torch.Tensor) -> torch.Tensor:
    return tensor.index_select(dim, rows.to(tensor.device)).contiguous()


def compare_latency(
    dense: nn.Module, compact: nn.Module, input_ids: torch.Tensor, *, repeats: int = LATENCY_REPEATS
) -> dict:
    """The compact model's forward time over the dense one's on ``input_ids``, with the conditions (an export
    times them on CPU, where it loads them).

    Both in one process, taking turns (which goes first alternates), so that both see the same threads, load and
    caches: a ratio is what carries to another machine, the milliseconds are this one's. Each time is the median
    of ``repeats`` passes, after a warm-up; in ``torch.inference_mode``, as inference runs.
    """
    models = {"dense": dense.eval(), "compact": compact.eval()}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(LATENCY_WARMUP):
                model(input_ids=input_ids)
        for turn in range(repeats):
            for name in list(models)[:: 1 if turn % 2 == 0 else -1]:
                start = time.perf_counter()
                models[name](input_ids=input_ids)
                times[name].append(time.perf_counter() - start)
    dense_s, compact_s = median(times["dense"]), median(times["compact"])
    return {
        "ratio": compact_s / dense_s, "dense_ms": 1e3 * dense_s, "compact_ms": 1e3 * compact_s,
        "device": input_ids.device.type,
        "threads": torch.get_num_threads(), "batch": input_ids.shape[0], "sequence_length": input_ids.shape[1],
        "repeats": repeats,
    }  # fmt: skip
