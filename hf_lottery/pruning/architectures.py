"""What hf-lottery knows of each model type, in one table: an entry per ``config.model_type``.

Pruning units (``hf_lottery.pruning.units``) read where a model's FFN neurons, attention heads and transformer
blocks lie; compact export (``hf_lottery.tickets.compact``) reads which config fields set their width and depth;
calibration reads the blocks it feeds one after the other. Supporting one more model type is one entry here
(copy the closest one); a model type with no entry still prunes by elements and blocks, and calibrates through
its one list of ``num_hidden_layers`` blocks when it has one.

Patterns are matched against ``named_parameters()`` names, with any prefix of the task's wrapper
(``bert.``, ``model.``, ``transformer.``) allowed before them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from hf_lottery.foundations.errors import LotteryError


@dataclass(frozen=True)
class Architecture:
    """Where one model type keeps what pruning units, compact export and calibration need.

    ``layers`` matches a weight inside a transformer block: group 1 is the path of the list of blocks, group 2
    the block's number. ``ffn`` are the FFN's weights of block ``{i}`` (any prefix before), each with whether a
    neuron is an output row (``out``: the up and gate projections) or an input column (``in``: the down
    projection). ``attention`` are the weights of one KV group (a KV head with its query heads), with the side and
    whether the tensor holds every query head of the group (True) or one KV head; empty where the config ties the
    head size to ``hidden_size / num_attention_heads`` and so cannot express fewer heads at the same width.
    ``depth`` and ``width`` are the config fields a layer and a neuron cut change; ``per_layer`` config lists with
    one entry per block. ``embeddings`` is the word embeddings' weight and ``tied_heads`` the output weights tied to
    it (a masked-LM decoder, an LM head), with their biases where they have them.
    """

    layers: str
    ffn: tuple[tuple[str, str], ...]
    depth: str = "num_hidden_layers"
    width: str = "intermediate_size"
    attention: tuple[tuple[str, str, bool], ...] = ()
    per_layer: tuple[str, ...] = ()
    embeddings: str = ""
    tied_heads: tuple[str, ...] = ()

    def ffn_patterns(self) -> list[tuple[str, str]]:
        """The FFN weights as patterns whose group 1 is the block's number."""
        return [(rf"{_block(pattern)}$", side) for pattern, side in self.ffn]

    def attention_patterns(self, config) -> list[tuple[str, str, int]]:
        """The attention weights of a KV group as patterns whose group 1 is the block's number, each with the
        width of one unit along its side (a KV head's rows, or its group's query heads')."""
        head_dim, per_group = self.head_dim(config), self.heads_per_group(config)
        return [(rf"{_block(p)}$", side, head_dim * (per_group if whole else 1)) for p, side, whole in self.attention]

    def ffn_width(self, config) -> int:
        """The FFN's width (GPT-2's ``n_inner`` None means 4 x ``n_embd``)."""
        return getattr(config, self.width) or 4 * config.hidden_size

    @staticmethod
    def head_dim(config) -> int:
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    @staticmethod
    def heads_per_group(config) -> int:
        return config.num_attention_heads // config.num_key_value_heads

    def set_heads(self, config, groups: int) -> dict[str, tuple[int, int]]:
        """Set ``config`` to ``groups`` KV groups at the same head size; return the fields changed (before, after)."""
        per_group, head_dim = self.heads_per_group(config), self.head_dim(config)
        changes = {
            "num_key_value_heads": (config.num_key_value_heads, groups),
            "num_attention_heads": (config.num_attention_heads, groups * per_group),
        }
        config.num_key_value_heads, config.num_attention_heads, config.head_dim = groups, groups * per_group, head_dim
        return changes


def _block(pattern: str) -> str:
    """``pattern`` of block ``{i}``, its number captured."""
    return pattern.replace(".", r"\.").replace("{i}", r"(\d+)")


_BERT = Architecture(
    layers=r"^((?:.*\.)?encoder\.layer)\.(\d+)\.",
    ffn=(("layer.{i}.intermediate.dense.weight", "out"), ("layer.{i}.output.dense.weight", "in")),
    embeddings="embeddings.word_embeddings.weight",
    tied_heads=("cls.predictions.decoder.weight",),
)
_LLAMA = Architecture(
    layers=r"^((?:.*\.)?layers)\.(\d+)\.",
    ffn=(
        ("layers.{i}.mlp.gate_proj.weight", "out"),
        ("layers.{i}.mlp.up_proj.weight", "out"),
        ("layers.{i}.mlp.down_proj.weight", "in"),
    ),  # fmt: skip
    attention=(
        ("layers.{i}.self_attn.q_proj.weight", "out", True),
        ("layers.{i}.self_attn.k_proj.weight", "out", False),
        ("layers.{i}.self_attn.v_proj.weight", "out", False),
        ("layers.{i}.self_attn.o_proj.weight", "in", True),
    ),
    per_layer=("layer_types",),  # Qwen2's attention kinds
    embeddings="embed_tokens.weight",
    tied_heads=("lm_head.weight",),
)

ARCHITECTURES: dict[str, Architecture] = {
    "bert": _BERT,
    "roberta": _BERT,
    "distilbert": Architecture(
        layers=r"^((?:.*\.)?transformer\.layer)\.(\d+)\.",
        ffn=(("layer.{i}.ffn.lin1.weight", "out"), ("layer.{i}.ffn.lin2.weight", "in")),
        depth="n_layers",
        width="hidden_dim",
        embeddings="embeddings.word_embeddings.weight",
        tied_heads=("vocab_projector.weight",),
    ),
    "gpt2": Architecture(
        layers=r"^((?:.*\.)?h)\.(\d+)\.",
        ffn=(("h.{i}.mlp.c_fc.weight", "out"), ("h.{i}.mlp.c_proj.weight", "in")),
        depth="n_layer",
        width="n_inner",
        embeddings="wte.weight",
        tied_heads=("lm_head.weight",),
    ),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
}


def architecture(config, need: str | None = None) -> Architecture | None:
    """The table's entry for ``config.model_type``; with ``need`` (what asks, as the user names it), refuse in one
    line a model type the table does not know."""
    model_type = getattr(config, "model_type", None)
    entry = ARCHITECTURES.get(model_type)
    if entry is None and need is not None:
        raise LotteryError(
            f"{need} knows the model types {', '.join(sorted(ARCHITECTURES))}, not {model_type!r} "
            "(one entry in hf_lottery.pruning.architectures adds one)"
        )
    return entry


def block_list(model: nn.Module, prunable: Sequence[str]) -> tuple[str, nn.ModuleList] | None:
    """The model's repeated transformer blocks and their path: where its table entry says, else the one
    ``nn.ModuleList`` of ``config.num_hidden_layers`` modules holding the most ``prunable`` weights; None when
    it has none."""
    config = getattr(model, "config", None)
    entry = architecture(config)
    if entry is not None:
        paths = {found.group(1) for name in prunable if (found := re.search(entry.layers, name))}
        if len(paths) != 1:
            return None
        path = paths.pop()
        return path, model.get_submodule(path)
    layers = getattr(config, "num_hidden_layers", None)
    wanted = set(prunable)
    candidates = [
        (sum(n in wanted for n, _ in module.named_parameters(prefix=name)), name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and layers is not None and len(module) == layers
    ]
    held, path, blocks = max(candidates, key=lambda c: c[0], default=(0, "", None))
    return (path, blocks) if held else None
