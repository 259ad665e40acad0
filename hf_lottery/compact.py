"""Compact structured tickets: the kept neurons or heads sliced out into a smaller stock model.

A neuron or head ticket is elementwise on disk (``hf_lottery.units``); here its kept units become a model whose
config is smaller (``intermediate_size``, or the number of heads), which stock ``transformers`` loads and runs at
the smaller size with nothing from hf-lottery. Stock configs hold one width for every block, so a ticket whose
blocks kept different numbers of units (``--scope global``) is padded to its widest block with removed units,
whose weights are zero: the output is the same, at the widest block's speed.

``compare_latency`` times the compact model against the dense one it was cut from, when an export is asked to.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from statistics import median

import torch
from torch import nn

from .errors import LotteryError
from .masks import Mask, transposed_weights
from .units import Spans, find_units

# The config field a neuron cut changes, per model type (GPT-2's n_inner None means 4 x n_embd).
NEURON_FIELDS = {
    "bert": "intermediate_size", "roberta": "intermediate_size", "distilbert": "hidden_dim", "gpt2": "n_inner",
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3"), "intermediate_size"),
}  # fmt: skip


LATENCY_REPEATS = 10  # timed forward passes of each model; the median of each is compared
LATENCY_WARMUP = 2  # untimed passes of each first (the first allocates)


@dataclass
class Compaction:
    """How a structured ticket's full-size tensors are cut down to its compact model's."""

    config: object  # the compact model's config
    changes: dict[str, tuple[int, int]]  # config field: (before, after)
    padded: bool  # some blocks kept fewer units than the widest, and carry removed ones to match it
    index: dict[str, tuple[int, torch.Tensor]]  # tensor name: (dim, kept indices along it)

    def cut(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` (weights, or masks) of the full model, cut to the compact one's shapes."""
        return {name: _take(t, *self.index[name]) if name in self.index else t for name, t in state.items()}

    def cut_model(self, model: nn.Module) -> nn.Module:
        """Another model of the full shape (the ticket's rewind point), cut the same way."""
        small = type(model)._from_config(self.config, dtype=next(model.parameters()).dtype)
        small.load_state_dict(self.cut(model.state_dict()), strict=True)
        return small


def compaction(model: nn.Module, mask: Mask, unit: str) -> Compaction:
    """How to cut ``model`` (and any model of its shape) to the stock model of its type that holds only the
    ``unit``s (neuron or head) that ``mask`` keeps."""
    if unit not in ("neuron", "head"):
        raise LotteryError(
            f"only neuron and head tickets become smaller models; this run prunes {unit}s, which stay in a model "
            "of the dense size (the sparse files hold them compactly)"
        )
    config = model.config
    if unit == "neuron" and config.model_type not in NEURON_FIELDS:
        raise LotteryError(f"compact export knows {', '.join(sorted(NEURON_FIELDS))}, not {config.model_type!r}")
    params = dict(model.named_parameters())
    units = find_units(
        unit, {name: m.shape for name, m in mask.items()}, config=config,
        transposed=transposed_weights(model, list(mask)), model_names=set(params),
    )  # fmt: skip
    assert isinstance(units, Spans)
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
    changes = _change_config(new_config, unit, width, alive)
    padded = any(int(kept.sum()) < width for kept in alive.values())
    return Compaction(new_config, changes, padded, index)


def _padded(kept: torch.Tensor, width: int) -> torch.Tensor:
    """The indices of the kept units, with the first removed ones added to reach ``width``, in order."""
    chosen = kept.clone()
    chosen[(~kept).nonzero().squeeze(1)[: width - int(kept.sum())]] = True
    return chosen.nonzero().squeeze(1)


def _take(tensor: torch.Tensor, dim: int, rows: torch.Tensor) -> torch.Tensor:
    return tensor.index_select(dim, rows.to(tensor.device)).contiguous()


def _change_config(config, unit: str, width: int, alive: dict[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    """Set the fields of ``config`` that the cut changes; return them with their old and new values."""
    total = len(next(iter(alive.values())))
    if unit == "neuron":
        field = NEURON_FIELDS[config.model_type]
        before = getattr(config, field) or 4 * config.n_embd  # GPT-2: None means 4 x n_embd
        setattr(config, field, width)
        return {field: (before, width)}
    per_group = config.num_attention_heads // config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    changes = {"num_key_value_heads": (total, width), "num_attention_heads": (total * per_group, width * per_group)}
    config.num_key_value_heads, config.num_attention_heads, config.head_dim = width, width * per_group, head_dim
    return changes


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
