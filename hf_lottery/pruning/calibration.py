"""Calibration statistics: what each prunable weight's inputs look like on a few examples, for strategies that
score weights by their activations (Wanda's ``|W| x ||X||``).

``InputNorms`` hooks the modules that own prunable weights and accumulates, per weight, the squared L2 norm of
each input feature over every token it sees, in float32. ``observe(block)`` hooks only the weights inside
``block``, so the statistics can be gathered for a whole model forward (``input_norms``), or block by block
(``blockwise_masks``), where each block is pruned before the next one sees its outputs, as Wanda's reference code
does, with one block at a time on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from hf_lottery.foundations.errors import LotteryError

from .architectures import block_list
from .masks import PackedMask

# Sums a tensor over the processes that share a calibration (``accelerator.reduce(t, "sum")``).
Reduce = Callable[[torch.Tensor], torch.Tensor]
# One block's mask from its prunable weights and their ``InputNorms`` (a strategy's draw).
Draw = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]]


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

    def result(self, reduce: Reduce | None = None) -> dict[str, torch.Tensor]:
        """The norms per weight observed so far, on the device of its inputs.

        With ``reduce``, each process having observed its own examples, the squared sums of every weight this was
        built for, and whether the process saw it, are summed across processes in one call, before the square
        root: every process gets the norms over all the examples, and a weight counts as reached when any process
        reached it. Every process must call it, with the same weights."""
        sums = self._sums if reduce is None else self._reduced(reduce)
        transposed = {name for module, name in self._owners.items() if isinstance(module, Conv1D)}
        return {
            name: (total.sqrt().unsqueeze(1) if name in transposed else total.sqrt().unsqueeze(0))
            for name, total in sums.items()
        }

    def _reduced(self, reduce: Reduce) -> dict[str, torch.Tensor]:
        """The squared sums over all processes; zeros stand in for a weight this process did not reach, so that
        every process sends a tensor of the same shape."""
        if not self._owners:
            return {}
        device = next(iter(self._owners)).weight.device
        names = list(self._owners.values())
        sizes = [module.weight.shape[0 if isinstance(module, Conv1D) else 1] for module in self._owners]
        local = [
            self._sums[name].to(device) if name in self._sums else torch.zeros(size, device=device)
            for name, size in zip(names, sizes, strict=True)
        ]
        seen = torch.tensor([float(name in self._sums) for name in names], device=device)
        *totals, reached = reduce(torch.cat([*local, seen])).split([*sizes, len(names)])
        return {name: total for name, total, hit in zip(names, totals, reached.tolist(), strict=True) if hit > 0}


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


@torch.no_grad()
def unreached(model: nn.Module, prunable: Sequence[str], batch: Mapping[str, torch.Tensor]) -> list[str]:
    """The prunable weights one forward of ``batch`` does not reach (cross-attention with no encoder states, say):
    checked on one example before a run writes anything, so that a calibrated strategy is refused in one line."""
    seen = input_norms(model, prunable, [batch], model.get_input_embeddings().weight.device)
    return [name for name in prunable if name not in seen]


class _Reached(Exception):
    """Raised by the first block's pre-hook: the model's forward has built everything the blocks are called with,
    and nothing after it needs to run."""


@torch.no_grad()
def blockwise_masks(
    model: nn.Module,
    prunable: Sequence[str],
    batches: Sequence[Mapping[str, torch.Tensor]],
    device: torch.device,
    *,
    draw: Draw,
    reduce: Reduce | None = None,
) -> PackedMask:
    """Prune ``model``'s repeated blocks one after the other, each drawn (``draw(weights, norms)``) from the inputs
    it gets from the blocks before it already pruned, so that a later block's mask accounts for the pruning of the
    earlier ones; returns the mask of every prunable weight, whose pruned weights are zeroed in ``model`` itself.

    The model's forward runs only up to its first block, once per batch, to catch everything the blocks are called
    with (hidden states, attention mask, position embeddings..., without a cache); then each block in turn is moved
    to ``device``, run on those inputs while its ``InputNorms`` are taken (summed across processes by ``reduce``,
    each process holding its own share of ``batches``), pruned, run again to give the next block its inputs, and
    moved back. So ``device`` holds one block and the activations of all batches at its input, never the model;
    the rest of the model stays where it is, and nothing is copied; the mask is kept packed, a bit a weight. Eval
    mode, float32 statistics, no autocast, as ``input_norms``.

    ``draw`` is a strategy applied to one block: ``strategy.prune(ScoringContext(weights, previous, density,
    scope="row", inputs=lambda samples: norms))`` with ``previous`` the block's part of the mask it prunes inside;
    scope ``row`` or ``layer``, since a global threshold ranks all the blocks' weights together, which a draw of
    one block cannot. ``reduce`` is
    ``lambda t: accelerator.reduce(t, "sum")`` when several processes calibrate together; every process then
    draws the same mask.

    Prunable weights outside the blocks (BERT's pooler) are drawn last, from one forward of the whole pruned model
    where it lies (``_prune_rest``). Every block must be called with the same inputs but its hidden states (models
    whose layers alternate attention kinds are refused: ``check_blocks``).
    """
    path, blocks = check_blocks(model, prunable)
    wanted = set(prunable)
    inside = [
        [n for n, _ in block.named_parameters(prefix=f"{path}.{i}") if n in wanted] for i, block in enumerate(blocks)
    ]
    found = {n for names in inside for n in names}
    outside = [n for n in prunable if n not in found]
    training = model.training
    model.eval()
    mask = PackedMask()
    try:
        with torch.autocast(device.type, enabled=False):
            inputs = _first_block_inputs(model, blocks[0], batches, device)
            for i, (block, names) in enumerate(zip(blocks, inside, strict=True)):
                home = next(block.parameters()).device
                block.to(device)
                try:
                    if names:
                        prefix = f"{path}.{i}"
                        drawn = _prune_block(model, block, names, inputs, draw=draw, reduce=reduce, prefix=prefix)
                        for name in names:
                            mask[name] = drawn.pop(name)
                    if i < len(blocks) - 1:
                        for j, (args, kwargs) in enumerate(inputs):
                            inputs[j] = _with_hidden(args, kwargs, block(*args, **kwargs))
                finally:
                    block.to(home)
            if outside:
                for name, drawn in _prune_rest(model, outside, batches, draw=draw, reduce=reduce).items():
                    mask[name] = drawn
    finally:
        model.train(training)
    return mask


def _prune_rest(
    model: nn.Module,
    names: list[str],
    batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    draw: Draw,
    reduce: Reduce | None,
) -> dict[str, torch.Tensor]:
    """The prunable weights outside the blocks (BERT's pooler), drawn last from one forward of the whole pruned
    model where it lies, so that they too see the pruned blocks' outputs; those weights pruned in place."""
    norms = InputNorms(model, names)
    entry = model.get_input_embeddings().weight.device
    with norms.observe():
        for batch in batches:
            model(**{k: v.to(entry) for k, v in batch.items()})
    return _draw_and_prune(dict(model.named_parameters()), names, norms.result(reduce), draw)


def check_blocks(model: nn.Module, prunable: Sequence[str]) -> tuple[str, nn.ModuleList]:
    """The model's repeated blocks and their path (``block_list``); refuses, in one line, a model ``blockwise_masks``
    cannot calibrate: one without them, or whose blocks are called with different attention masks."""
    found = block_list(model, prunable)
    if found is None:
        raise LotteryError(
            f"blockwise calibration needs the model's repeated blocks (a list of config.num_hidden_layers layers "
            f"holding prunable weights), and {type(model).__name__} has none"
        )
    path, blocks = found
    kinds = getattr(model.config, "layer_types", None) or []
    if len(set(kinds)) > 1:
        raise LotteryError(
            f"blockwise calibration calls every block with the first block's attention mask, and the blocks of "
            f"{type(model).__name__} differ ({', '.join(sorted(set(kinds)))})"
        )
    return path, blocks


def _first_block_inputs(
    model: nn.Module, first: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], device: torch.device
) -> list[tuple[tuple, dict]]:
    """Per batch, the positional and keyword arguments ``first`` is called with, on ``device``; the model's forward
    stops there. Batches go to the device of the model's input embeddings, where its forward starts."""
    caught: list[tuple[tuple, dict]] = []

    def catch(module: nn.Module, args: tuple, kwargs: dict) -> None:
        caught.append((_to(args, device), _to(kwargs, device)))
        raise _Reached

    entry = model.get_input_embeddings().weight.device
    no_cache = {"use_cache": False} if getattr(model.config, "use_cache", None) is not None else {}
    handle = first.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model(**{k: v.to(entry) for k, v in batch.items()}, **no_cache)
            except _Reached:
                pass
    finally:
        handle.remove()
    return caught


def _prune_block(
    model: nn.Module,
    block: nn.Module,
    names: list[str],
    inputs: list[tuple[tuple, dict]],
    *,
    draw: Draw,
    reduce: Reduce | None,
    prefix: str,
) -> dict[str, torch.Tensor]:
    """The mask ``draw`` gives the weights ``names`` of ``block`` from their norms on ``inputs``; those weights
    pruned in place."""
    norms = InputNorms(model, names)
    with norms.observe(block):
        for args, kwargs in inputs:
            block(*args, **kwargs)
    return _draw_and_prune(dict(block.named_parameters(prefix=prefix)), names, norms.result(reduce), draw)


def _draw_and_prune(
    params: Mapping[str, nn.Parameter], names: list[str], seen: Mapping[str, torch.Tensor], draw: Draw
) -> dict[str, torch.Tensor]:
    """The mask ``draw`` gives the weights ``names`` (of ``params``) from their norms ``seen``, those weights pruned
    in place; refuses, in one line, a weight no calibration example reached."""
    unseen = [n for n in names if n not in seen]
    if unseen:
        raise LotteryError(
            f"the calibration examples never reach {unseen[0]}, so it has no input to score by: --exclude it"
        )
    weights = {n: params[n] for n in names}
    drawn = draw(weights, dict(seen))
    for name, weight in weights.items():
        weight.masked_fill_(~drawn[name].to(weight.device), 0)
    return {name: drawn[name] for name in names}


def _with_hidden(args: tuple, kwargs: dict, output: torch.Tensor | tuple) -> tuple[tuple, dict]:
    """A block's call with its hidden states replaced by ``output``'s (a block returns them alone or first in a
    tuple, by model and transformers version)."""
    hidden = output[0] if isinstance(output, tuple) else output
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _to(value, device: torch.device):
    """``value``'s tensors, inside tuples, lists and dicts too, on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value
