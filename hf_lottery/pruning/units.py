"""Pruning units: what a mask keeps or removes as one, and how a unit maps onto the weights it spans.

The mask on disk and in training stays elementwise: a unit mask is expanded onto every tensor it spans, so every
tensor of a unit agrees and everything that reads masks (training, resume, the sparse format, ``load_ticket``, the
Trainer callback) keeps working. A unit's score is the L2 norm of its weights' scores over every tensor it spans
(for magnitude, the L2 norm of its weights); units are then selected exactly as single weights are (one ranking
over all units, or per group with ``--scope layer``), by ``hf_lottery.pruning.selection``.

Unit kinds:

- ``element``: single weights (each tensor is its own group: today's masks, bit for bit);
- ``block``: square ``B x B`` blocks of each weight (the shape torch's BSR kernel runs), a group per tensor;
- ``neuron``: an FFN intermediate unit: its row in the up-projection (and the gate's, in gated FFNs) and its
  column in the down-projection, a group per transformer block;
- ``head``: an attention KV group (a KV head with its query heads): its rows in Q, K and V and its columns in the
  output projection, a group per block. Only where a config expresses fewer heads at the same hidden size (an
  explicit ``head_dim``): BERT and GPT-2 derive the head size from ``hidden_size / num_attention_heads``;
- ``layer``: a whole transformer block, every prunable weight in it; one group, all blocks ranked together. A
  removed block is skipped while the run trains and scores (``Layers.skipping``), not only zeroed: a zeroed
  post-LayerNorm block (BERT, RoBERTa, DistilBERT, GPT-2) still adds its biases and applies its LayerNorms, so
  only a model without the block is the ticket (compact export builds that one).

Where each model type keeps its neurons, heads and blocks is ``hf_lottery.pruning.architectures``; what a kind
implies for the rest of a run (the scopes that rank it, whether its removed units are skipped while training,
whether its tickets compact) are class attributes here. Tensors no unit spans stay dense. Biases are never in a
unit: a pruned neuron's bias meets a zero column.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from hf_lottery.foundations.errors import LotteryError

from .architectures import Architecture, architecture
from .masks import Mask, default_prunable, transposed_weights

DEFAULT_BLOCK_SIZE = 32
LAYERS_GROUP = "layers"  # the one group of layer units: every block ranked together


@dataclass(frozen=True)
class Span:
    """Where a group's units lie in one tensor: unit ``u`` is ``width`` consecutive indices along ``dim``, which
    are the tensor's outputs (``out``: its bias, if any, is indexed the same way) or its inputs."""

    name: str
    dim: int
    width: int
    out: bool


class Units:
    """The units of a run's prunable weights, by group (a tensor, or a transformer block).

    ``sums`` adds a per-weight quantity up per unit, ``scores`` turns element scores into one score per unit,
    ``alive`` reads which units a mask keeps, and
    ``expand`` writes a unit mask back onto the weights; with these a unit mask is selected by the same kernels
    as an element mask (``hf_lottery.pruning.selection``).
    """

    kind = "element"
    scopes: tuple[str, ...] = ("global", "layer", "row")  # the --scope values that rank these units
    compacts = False  # a ticket of these units is written as a smaller stock model (compact export)
    skips_removed = False  # removed units are skipped while the run trains: only the compact model is the ticket

    @property
    def spanned(self) -> frozenset[str]:
        """The tensors whose units span other tensors too (neurons, heads): a transformer block losing all its
        units empties them, which is what removing those units means, not a tensor scored far below the rest.
        None for single weights and blocks, whose units lie in one tensor: a tensor losing all of them is such a
        tensor."""
        return frozenset()

    def sums(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per group, the sum of ``values`` (one per prunable weight) over each unit's weights."""
        return dict(values)

    def scores(self, scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per group, each unit's score (a single weight's is its own)."""
        return dict(scores)

    def alive(self, mask: Mask) -> Mask:
        return dict(mask)

    def expand(self, units: Mask, previous: Mask) -> Mask:
        """The elementwise mask of ``units`` (per group), inside ``previous``; tensors no unit spans keep theirs."""
        return dict(units)

    def counts(self, mask: Mask) -> tuple[int, int]:
        """(units alive, units in all)."""
        alive = self.alive(mask)
        return sum(int(m.sum()) for m in alive.values()), sum(m.numel() for m in alive.values())

    def skipping(self, model: nn.Module, mask: Mask):
        """A context in which ``model`` runs as the ticket ``mask`` is: zeroed weights suffice, but for layers."""
        return nullcontext()

    def dead(self, model: nn.Module, mask: Mask) -> int:
        """Parameters outside the mask that the removed units leave without effect (a removed neuron's bias, a
        removed block's biases and norms), which a compact export drops too; none for single weights and blocks."""
        return 0


class Grouped(Units):
    """Units of several weights, each scored by the L2 norm of its weights' scores."""

    def scores(self, scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        squares = {name: s.detach().float().cpu().square() for name, s in scores.items()}
        return {group: total.sqrt() for group, total in self.sums(squares).items()}


class Blocks(Grouped):
    """``size x size`` blocks of every prunable matrix; a group per tensor."""

    kind = "block"
    scopes = ("global", "layer")

    def __init__(self, size: int) -> None:
        self.size = size

    def _tiles(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape
        return x.reshape(rows // self.size, self.size, cols // self.size, self.size)

    def sums(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self._tiles(v.detach().float().cpu()).sum((1, 3)) for name, v in values.items()}

    def alive(self, mask: Mask) -> Mask:
        return {name: self._tiles(m).any(3).any(1) for name, m in mask.items()}

    def expand(self, units: Mask, previous: Mask) -> Mask:
        out = {}
        for name, kept in units.items():
            full = kept.repeat_interleave(self.size, 0).repeat_interleave(self.size, 1)
            out[name] = full & previous[name]
        return out


class Spans(Grouped):
    """Units that span several tensors (neurons, heads): a group per transformer block."""

    scopes = ("global", "layer")
    compacts = True

    def __init__(self, kind: str, groups: dict[str, tuple[Span, ...]]) -> None:
        self.kind = kind
        self.groups = groups

    @property
    def spanned(self) -> frozenset[str]:
        return frozenset(span.name for spans in self.groups.values() for span in spans)

    @staticmethod
    def _per_unit(x: torch.Tensor, span: Span) -> torch.Tensor:
        """``x`` as (unit, everything of that unit)."""
        moved = x.movedim(span.dim, 0)
        return moved.reshape(moved.shape[0] // span.width, -1)

    def sums(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            group: sum(self._per_unit(values[s.name].detach().float().cpu(), s).sum(1) for s in spans)
            for group, spans in self.groups.items()
        }

    def alive(self, mask: Mask) -> Mask:
        return {group: self._per_unit(mask[spans[0].name], spans[0]).any(1) for group, spans in self.groups.items()}

    def dead(self, model: nn.Module, mask: Mask) -> int:
        params = dict(model.named_parameters())
        alive, count = self.alive(mask), 0
        for group, spans in self.groups.items():
            removed = int((~alive[group]).sum())
            for span in spans:
                bias = span.name.removesuffix("weight") + "bias"
                if span.out and bias in params and bias not in mask:
                    count += removed * span.width
        return count

    def expand(self, units: Mask, previous: Mask) -> Mask:
        out = dict(previous)
        for group, spans in self.groups.items():
            for span in spans:
                shape = [1] * previous[span.name].dim()
                shape[span.dim] = -1
                out[span.name] = previous[span.name] & units[group].repeat_interleave(span.width).view(shape)
        return out


class Layers(Grouped):
    """Whole transformer blocks: unit ``i`` is every prunable weight of block ``i`` of the list at ``path``."""

    kind = "layer"
    scopes = ("global",)
    compacts = True
    skips_removed = True

    def __init__(self, path: str, blocks: list[tuple[str, ...]]) -> None:
        self.path = path
        self.blocks = blocks  # per block, the prunable weights in it

    @property
    def spanned(self) -> frozenset[str]:
        return frozenset(name for names in self.blocks for name in names)

    def sums(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        per_block = [sum(values[n].detach().float().cpu().sum() for n in names) for names in self.blocks]
        return {LAYERS_GROUP: torch.stack(per_block)}

    def alive(self, mask: Mask) -> Mask:
        return {LAYERS_GROUP: torch.tensor([any(bool(mask[n].any()) for n in names) for names in self.blocks])}

    def expand(self, units: Mask, previous: Mask) -> Mask:
        out = dict(previous)
        for kept, names in zip(units[LAYERS_GROUP].tolist(), self.blocks, strict=True):
            for name in names:
                out[name] = previous[name] & kept
        return out

    def dead(self, model: nn.Module, mask: Mask) -> int:
        prefixes = tuple(f"{self.path}.{i}." for i in self.removed(mask))
        return sum(p.numel() for name, p in model.named_parameters() if name.startswith(prefixes) and name not in mask)

    def removed(self, mask: Mask) -> list[int]:
        """The blocks ``mask`` removes, in order."""
        return [i for i, kept in enumerate(self.alive(mask)[LAYERS_GROUP].tolist()) if not kept]

    @contextmanager
    def skipping(self, model: nn.Module, mask: Mask) -> Iterator[None]:
        """``model`` with the blocks ``mask`` removes skipped: each returns its input hidden states (a block of
        transformers 5 returns its hidden states alone), so the model runs as the one without those blocks that
        compact export writes. The blocks' parameters stay, untouched and without gradients."""
        blocks = model.get_submodule(self.path)
        skipped = [blocks[i] for i in self.removed(mask)]
        for block in skipped:
            block.forward = _pass_through
        try:
            yield
        finally:
            for block in skipped:
                del block.forward


def _pass_through(hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return hidden_states


class LayersAndNeurons(Grouped):
    """Whole transformer blocks and the FFN neurons of the blocks kept, in one run: each kind keeps the level's
    density of its own units (``--scope layer``: the blocks ranked against each other, each block's neurons among
    themselves), so a level removes a share of the depth and the same share of each block's width.

    One budget across the kinds would rank a block's score against a neuron's, and neither magnitude nor the data
    scores put them on one scale; a share per kind is what the latency of a compact model follows (depth and
    width each cut by the share). A removed block's neurons are removed with it; the unit counts are the
    neurons', those of removed blocks included."""

    kind = "layer+neuron"
    scopes = ("layer",)
    compacts = True
    skips_removed = True

    def __init__(self, layers: Layers, neurons: Spans) -> None:
        self.layers, self.neurons = layers, neurons
        self.path = layers.path

    @property
    def spanned(self) -> frozenset[str]:
        return self.layers.spanned | self.neurons.spanned

    def sums(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**self.layers.sums(values), **self.neurons.sums(values)}

    def alive(self, mask: Mask) -> Mask:
        return {**self.layers.alive(mask), **self.neurons.alive(mask)}

    def expand(self, units: Mask, previous: Mask) -> Mask:
        blocks = self.layers.expand({LAYERS_GROUP: units[LAYERS_GROUP]}, previous)
        return self.neurons.expand({g: units[g] for g in self.neurons.groups}, blocks)

    def counts(self, mask: Mask) -> tuple[int, int]:
        return self.neurons.counts(mask)

    def removed(self, mask: Mask) -> list[int]:
        return self.layers.removed(mask)

    def skipping(self, model: nn.Module, mask: Mask):
        return self.layers.skipping(model, mask)

    def dead(self, model: nn.Module, mask: Mask) -> int:
        removed = {f"layer {i}" for i in self.layers.removed(mask)}  # their biases are counted by the blocks'
        kept = Spans(self.neurons.kind, {g: s for g, s in self.neurons.groups.items() if g not in removed})
        return self.layers.dead(model, mask) + kept.dead(model, mask)


ELEMENT = Units()


UNIT_TYPES: dict[str, type[Units]] = {
    "element": Units,
    "block": Blocks,
    "neuron": Spans,
    "head": Spans,
    "layer": Layers,
    "layer+neuron": LayersAndNeurons,
}


def check_scope(unit: str, scope: str) -> None:
    """Refuse, in one line, a ``--scope`` that cannot rank ``--unit`` units."""
    if scope in UNIT_TYPES[unit].scopes:
        return
    if scope == "row" and "global" in UNIT_TYPES[unit].scopes:
        raise LotteryError(f"--scope row compares single weights within a row; --unit {unit} takes global or layer")
    if UNIT_TYPES[unit].scopes == ("layer",):
        raise LotteryError(
            f"--unit {unit} removes the same share of each kind of unit (the blocks among themselves, each block's "
            f"neurons among themselves): add --scope layer"
        )
    raise LotteryError(
        f"--unit {unit} ranks the transformer blocks against each other (--scope global); "
        f"--scope {scope} would keep every block, each being one unit"
    )


def find_units(kind: str, model: nn.Module, prunable: Sequence[str], *, block_size: int | None = None) -> Units:
    """The ``kind`` units over the ``prunable`` weights of ``model``; refuses, in one line, a model or a weight the
    kind does not fit, and a unit that spans a weight left out of the prunable set."""
    params = dict(model.named_parameters())
    shapes = {name: params[name].shape for name in prunable}
    if kind == "element":
        return ELEMENT
    if kind == "block":
        size = block_size or DEFAULT_BLOCK_SIZE
        for name, shape in shapes.items():
            if len(shape) != 2 or shape[0] % size or shape[1] % size:
                raise LotteryError(
                    f"--block-size {size} does not tile {name} ({'x'.join(map(str, shape))}): "
                    "choose a size that divides every prunable weight, or --unit element"
                )
        return Blocks(size)
    entry = architecture(model.config, need=f"--unit {kind}")
    if kind in ("layer", "layer+neuron"):
        # a block removed whole must hold only prunable weights, of the kinds a block has (not its biases and norms)
        layers = _layers(shapes, entry, set(default_prunable(model)))
        if kind == "layer":
            return layers
        neurons = find_units("neuron", model, prunable)
        return LayersAndNeurons(layers, neurons)
    if kind == "neuron":
        tensors = [(pattern, side, 1) for pattern, side in entry.ffn_patterns()]
    else:  # head (PruneArguments checks the name)
        if not entry.attention:
            raise LotteryError(
                f"--unit head needs a config that can hold fewer heads at the same hidden size; model type "
                f"{model.config.model_type!r} ties the head size to hidden_size / num_attention_heads"
            )
        tensors = entry.attention_patterns(model.config)
    transposed = transposed_weights(model, list(prunable))
    return Spans(kind, _span_groups(kind, tensors, shapes, transposed, set(params)))


def _span_groups(
    kind: str,
    tensors: list[tuple[str, str, int]],
    shapes: Mapping[str, torch.Size],
    transposed: frozenset[str],
    model_names: set[str],
) -> dict[str, tuple[Span, ...]]:
    groups: dict[str, list[Span]] = {}
    for name in sorted(model_names):
        for pattern, side, width in tensors:
            found = re.search(pattern, name)
            if found is None:
                continue
            if name not in shapes:
                raise LotteryError(
                    f"--unit {kind} spans {name}, which --include/--exclude leave out of the prunable weights: "
                    "prune all of it or use --unit element"
                )
            # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out).
            dim = (0 if side == "out" else 1) ^ (name in transposed)
            groups.setdefault(f"layer {int(found.group(1))}", []).append(Span(name, dim, width, side == "out"))
    if not groups:
        raise LotteryError(f"--unit {kind}: none of the prunable weights belongs to a {kind}")
    for group, spans in groups.items():
        counts = {shapes[s.name][s.dim] // s.width for s in spans}
        if len(counts) != 1:
            raise LotteryError(f"--unit {kind}: the tensors of {group} disagree on how many units it has")
    return dict(sorted(((g, tuple(s)) for g, s in groups.items()), key=lambda item: int(item[0].split()[1])))


def _layers(shapes: Mapping[str, torch.Size], entry: Architecture, model_names: set[str]) -> Layers:
    """The layer units: every prunable weight by its block. ``model_names`` are the weights a block may hold that
    must be prunable with it (the default prunable set): a block skipped whole cannot keep one of them."""
    paths, blocks = set(), {}
    for name in sorted(model_names | set(shapes)):
        found = re.search(entry.layers, name)
        if found is None:
            continue
        if name not in shapes:
            raise LotteryError(
                f"--unit layer removes whole blocks, and --include/--exclude leave {name} out of the prunable "
                "weights: prune all of each block or use another --unit"
            )
        paths.add(found.group(1))
        blocks.setdefault(int(found.group(2)), []).append(name)
    if len(paths) != 1:
        raise LotteryError("--unit layer: none of the prunable weights belongs to a transformer block")
    count = max(blocks) + 1
    if sorted(blocks) != list(range(count)):
        raise LotteryError("--unit layer: some transformer blocks hold no prunable weight")
    return Layers(paths.pop(), [tuple(blocks[i]) for i in range(count)])
