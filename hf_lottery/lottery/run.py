"""A run as every branch sees it, and what every branch does with a level: draw its mask once, from files on
disk, and train it from the rewind point.

IMP's trunk, its controls and the cheaper ticket methods (``hf_lottery.lottery.methods``, through the protocols of
``RunContext`` they are given) share these steps, so a mask is computed the same way, on the main process only and
broadcast, and a level is saved the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property, partial
from typing import Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch import nn
from transformers import PreTrainedModel

from hf_lottery.foundations.arguments import PruneArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import load_weights
from hf_lottery.pruning.calibration import blockwise_masks, input_norms
from hf_lottery.pruning.masks import (
    Mask,
    apply_mask,
    dense_mask,
    dense_views,
    overlap,
    pack_mask,
    prunable_weights,
    thinned,
    transposed_weights,
    unpack_mask,
)
from hf_lottery.pruning.selection import keep_counts
from hf_lottery.pruning.strategies import ScoringContext
from hf_lottery.pruning.units import Units, find_units
from hf_lottery.training.adapters import add_masked_adapters
from hf_lottery.training.tasks import Metric

from .config import RunConfig
from .methods import Method, asked_methods
from .methods.base import RunContext, TrainLevel
from .paths import IMP, REPLICATE_PREFIX, LevelPaths, RunPaths
from .rundir import load_level_weights, save_level

THIN_TENSOR = 0.01  # a tensor left under this density (and under half the draw's) is warned of
UNTRAINED_OVERLAP = 0.98  # a method's mask sharing more of its weights with the rewind weights' own is warned of

# Calibration examples: ``samples`` examples of the run's training data, one per batch (see ``calibration``).
Calibration = Callable[[int], Iterable[Mapping[str, torch.Tensor]]]


def run_units(model: nn.Module, prunable: list[str], prune: PruneArguments, densities: list[float]) -> Units:
    """The ``--unit`` units of ``model``'s prunable weights; refuses, in one line and before anything is written,
    a model the kind does not fit and a level that would remove no whole unit."""
    units = find_units(prune.unit, model, prunable, block_size=prune.block_size)
    if units.kind == "element":
        return units
    alive = units.alive(dense_views(model, prunable))
    total = sum(m.numel() for m in alive.values())
    for level in range(1, len(densities)):
        keep = keep_counts(alive, densities[level], prune.scope)
        if keep_counts(alive, densities[level - 1], prune.scope) == keep:
            raise LotteryError(
                f"level {level} would remove no whole {units.kind} (the model has {total}, "
                f"{prune.scope} scope): raise --prune-fraction or lower --levels"
            )
        if (keep if isinstance(keep, int) else sum(keep.values())) == 0:
            raise LotteryError(
                f"level {level} would remove every {units.kind} (the model has {total}): lower --levels or "
                "--target-sparsity"
            )
    return units


class Evaluate(Protocol):
    """Score ``model`` with ``mask`` applied, without training it: the validation metrics and, with a test split, the
    held-out ones prefixed ``test_``, and ``steps`` 0."""

    def __call__(self, model: PreTrainedModel, mask: Mask, *, desc: str, tag: str) -> dict: ...


class RunEvents:
    """What a caller of ``run_lottery`` may observe as the run goes, by overriding these (each does nothing by
    default), as a ``transformers.TrainerCallback`` observes a ``Trainer``. They are called on every process, for
    every training a run does (IMP's levels, the controls', the methods', and an early-bird search's), with the
    training's ``tag``, the folder it trains (``imp/level_3``, ``early-bird/search_1``); a level already finished
    on disk is not trained again, so it has no events. An exception raised in one stops the run there, as a kill
    would.
    """

    def level_started(self, tag: str, model: PreTrainedModel, mask: Mask) -> None:
        """Before the first step: ``model`` holds the weights the training starts from, ``mask`` applied."""

    def step_ended(self, tag: str, step: int, model: PreTrainedModel) -> None:
        """After optimizer step ``step`` of the training (and after step 0, before any training)."""

    def level_ended(self, tag: str, metrics: dict) -> None:
        """After the training, with its scores and ``steps``, before the level is saved."""


def observed(train_level: TrainLevel, events: RunEvents) -> TrainLevel:
    """``train_level`` with ``events`` told of each training."""

    def train(
        model: PreTrainedModel, mask: Mask, *, level: int, desc: str, tag: str, on_step=None, checkpoint=None,
        learning_rate: float | None = None,
    ):  # fmt: skip
        events.level_started(tag, model, mask)

        def step(at: int, trained: PreTrainedModel) -> bool | None:
            stop = on_step(at, trained) if on_step is not None else None
            events.step_ended(tag, at, trained)
            return stop

        metrics = train_level(
            model, mask, level=level, desc=desc, tag=tag, on_step=step, checkpoint=checkpoint,
            learning_rate=learning_rate,
        )  # fmt: skip
        events.level_ended(tag, metrics)
        return metrics

    return train


@dataclass
class Run(RunContext):
    """Everything a level needs, loaded and checked once before anything is written.

    The CLI and the Python API (``find_ticket``) differ only in ``train_level``: hf-lottery's own loop on a
    task's data, or the user's training function.
    """

    config: RunConfig
    paths: RunPaths
    accelerator: Accelerator
    model: PreTrainedModel  # the rewind point once it exists; before that, the pretrained weights
    prunable: list[str]
    densities: list[float]
    units: Units  # what the run's masks keep or remove as one (--unit)
    metric: Metric
    train_level: TrainLevel
    calibration: Calibration | None = None  # none for find_ticket: the user's training function holds the data
    evaluate: Evaluate | None = None  # none for find_ticket: the user's training function scores
    new_head: bool = False  # the task head is new, drawn at random: an untrained level 0 scores chance

    @property
    def prune(self) -> PruneArguments:
        return self.config.prune

    @cached_property
    def transposed(self) -> frozenset[str]:
        """The prunable weights stored ``(in, out)`` (GPT-2's ``Conv1D``), whose output rows are columns."""
        return transposed_weights(self.model, self.prunable)

    def tag(self, name: str) -> str:
        """A tracker tag: the level's folder (``imp/level_3``), under its replicate's for replicates > 0."""
        replicate = self.paths.root.name
        return f"{replicate}/{name}" if replicate.startswith(REPLICATE_PREFIX) else name

    def branches(self) -> list[str]:
        """IMP and its controls, trained level by level."""
        return [IMP, *self.prune.control]

    def methods(self) -> list[Method]:
        """The cheaper ticket methods this invocation asks for, each a branch over level 0."""
        return asked_methods(self.config.plugins)

    def level_paths(self, branch: str, level: int) -> LevelPaths:
        """Where a level of this invocation lives: on the trunk, or off it when it is clipped to the target."""
        clipped = level == len(self.densities) - 1 and self.prune.last_level_clipped(self.densities)
        return self.paths.level(branch, level, self.prune.target_sparsity if clipped else None)

    def shared_mask(self, compute: Callable[[], Mask]) -> Mask:
        """``compute()`` on the main process, broadcast, so every rank holds the same mask."""
        mask = compute() if self.accelerator.is_main_process else None
        if self.accelerator.num_processes == 1:
            return mask
        shapes = {name: tuple(m.shape) for name, m in mask.items()} if mask is not None else None
        payload = [shapes, {name: pack_mask(m) for name, m in mask.items()} if mask is not None else None]
        broadcast_object_list(payload, from_process=0)
        shapes, packed = payload
        return {name: unpack_mask(packed[name].cpu(), shape) for name, shape in shapes.items()}

    def shared_flag(self, flag: bool | None) -> bool:
        """The main process's ``flag`` on every rank (a decision made from weights only the main process saw)."""
        if self.accelerator.num_processes == 1:
            return bool(flag)
        payload = [flag]
        broadcast_object_list(payload, from_process=0)
        return bool(payload[0])

    def trained_model(self, level: LevelPaths) -> PreTrainedModel:
        """A copy of the model holding the weights a finished level trained."""
        trained = copy.deepcopy(self.model)
        load_level_weights(trained, level)
        return trained

    @contextmanager
    def borrowed_model(self, level: LevelPaths) -> Iterator[PreTrainedModel]:
        """The run's own model holding the weights ``level`` trained, to prune or train in place; it holds the
        rewind point again after. A model too big to copy is never copied this way (``trained_model`` copies)."""
        load_level_weights(self.model, level)
        try:
            yield self.model
        finally:
            load_weights(self.model, self.paths.rewind_point)

    def draw_mask(
        self,
        model: nn.Module,
        weights: dict[str, torch.Tensor],
        previous: Mask,
        density: float,
        *,
        what: str | None,
        pattern: tuple[int, int] | None = None,
    ) -> Mask:
        """The run's strategy applied to ``weights`` (parameters of ``model``) inside ``previous`` (in an N:M
        ``pattern``, when given); warns, naming the draw ``what``, when a tensor loses every weight or is left under
        1% of them while the draw keeps more (``what=None``: a draw that only looks, such as early-bird's checks).

        The strategy scores from a ``ScoringContext``; calibration statistics, when it asks for them, are computed
        from ``model`` for this draw."""

        def inputs(samples: int) -> dict[str, torch.Tensor]:
            with self.units.skipping(model, previous):  # the blocks removed before are not run
                return self.input_norms(model, samples)

        def examples(samples: int) -> list[dict[str, torch.Tensor]]:
            device = self.accelerator.device
            model.to(device)
            return [{k: v.to(device) for k, v in batch.items()} for batch in self.calibration(samples)]

        context = self._context(weights, previous, density, pattern, None if self.calibration is None else inputs)
        if self.calibration is not None:
            context = replace(context, model=model, examples=examples)
        mask = self.config.strategy().prune(context)
        if what is not None:
            self._warn_if_thinned(mask, previous, density, what)
        return mask

    def draw_by_block(self, model: nn.Module, density: float, *, what: str, pattern: tuple[int, int] | None) -> Mask:
        """The run's strategy applied to ``model``'s weights, dense, pruning them in place: block by block from
        calibration statistics for a calibrated strategy (``calibration.blockwise_masks``: each block's inputs come
        from the pruned blocks before it, and only one block is on the accelerator), the processes splitting the
        calibration examples and summing their statistics, so that every process draws the same mask; at once
        from the weights otherwise (on the main process, broadcast)."""
        previous = dense_views(model, self.prunable)
        strategy = self.config.strategy()
        if not strategy.calibrated:
            weights = prunable_weights(model, self.prunable)
            mask = self.shared_mask(
                lambda: self.draw_mask(model, weights, previous, density, what=what, pattern=pattern)
            )
            apply_mask(model, mask)
            return mask

        def draw(weights: dict[str, torch.Tensor], norms: dict[str, torch.Tensor]) -> Mask:
            block = {name: previous[name] for name in weights}
            return strategy.prune(self._context(weights, block, density, pattern, lambda samples: norms))

        accelerator = self.accelerator
        batches = list(self.calibration(strategy.calibration_samples))
        mine = batches[accelerator.process_index :: accelerator.num_processes]
        reduce = None if accelerator.num_processes == 1 else lambda total: accelerator.reduce(total, "sum")
        mask = blockwise_masks(model, self.prunable, mine, accelerator.device, draw=draw, reduce=reduce)
        self._warn_if_thinned(mask, previous, density, what)
        return mask

    def _context(
        self,
        weights: dict[str, torch.Tensor],
        previous: Mask,
        density: float,
        pattern: tuple[int, int] | None,
        inputs: Callable[[int], dict[str, torch.Tensor]] | None,
    ) -> ScoringContext:
        """What the run's strategy scores a draw from: the run's scope, units and weight layout with the draw's own
        weights, mask, density, N:M pattern and calibration statistics."""
        return ScoringContext(
            weights=weights, previous=previous, density=density, scope=self.prune.scope, units=self.units,
            transposed=self.transposed, pattern=pattern, inputs=inputs,
        )  # fmt: skip

    def _warn_if_thinned(self, mask: Mask, previous: Mask, density: float, what: str) -> None:
        """Warn when ``mask`` empties a tensor or leaves it under 1% while the draw keeps more, unless its units
        span it with others (neurons, heads): a transformer block losing all its neurons is what removing
        neurons means."""
        # and under half the draw's own density: a draw that keeps about 1% in all must not flag every tensor
        emptied, thin = thinned(mask, previous, min(THIN_TENSOR, density / 2), exempt=self.units.spanned)
        thin_words = f"left under {THIN_TENSOR:.0%} of the weights of"
        for tensors, done in ((emptied, "removed every weight of"), (thin, thin_words)):
            if tensors:
                self.warn(
                    f"{what} {done} {_names(tensors)}: their scores are far below the rest (an untrained "
                    "pooler, say); --scope layer or --exclude keeps them"
                )

    def warn_if_untrained(self, mask: Mask, density: float, *, what: str) -> None:
        """Warn when ``mask`` keeps nearly the weights the run's strategy keeps when it draws ``density`` from the
        rewind weights: then training did not choose the mask, and a ticket method is one-shot pruning of the
        rewind point under another name."""
        rewind = self.draw_mask(
            self.model, prunable_weights(self.model, self.prunable), dense_mask(self.model, self.prunable), density,
            what=None,
        )  # fmt: skip
        shared = overlap(mask, rewind)
        if shared > UNTRAINED_OVERLAP:
            self.warn(
                f"{what}: {shared:.1%} of its surviving weights are those the {self.prune.strategy} strategy keeps "
                "in the rewind weights at the same density: this mask carries no training information"
            )

    def warn(self, message: str) -> None:
        """One warning line, printed by the main process."""
        self.accelerator.print(f"warning: {message}")

    def train_from_rewind(
        self,
        paths: LevelPaths,
        mask: Mask,
        *,
        level: int,
        desc: str,
        start: Callable[[nn.Module], None] | None = None,
    ) -> None:
        """Train ``mask`` from the rewind point (after ``start`` changed the weights, for a control); save the
        level."""
        model = copy.deepcopy(self.model)
        if start is not None:
            start(model)
        self.train_and_save(paths, model, mask, level=level, desc=desc)

    def train_and_save(
        self, paths: LevelPaths, model: PreTrainedModel, mask: Mask, *, level: int, desc: str, adapter_rank=None,
        learning_rate: float | None = None,
    ) -> None:  # fmt: skip
        """Train ``model`` in place with ``mask`` applied and fixed, or with ``adapter_rank``, only through masked
        low-rank adapters (``hf_lottery.training.adapters``) merged in after, at ``learning_rate`` (None: the run's);
        save it as the level ``paths``."""
        apply_mask(model, mask)
        own = {} if learning_rate is None else {"learning_rate": learning_rate}  # find_ticket's train_fn takes none
        train = partial(
            self.train_level, level=level, desc=desc, tag=self.tag(paths.name), checkpoint=paths.checkpoint, **own
        )
        if adapter_rank is None:
            metrics = train(model, mask)
        else:
            adapters = add_masked_adapters(model, mask, rank=adapter_rank, seed=self.config.train.seed + level)
            try:  # the adapted weights have other names, and their update is masked: nothing to enforce
                metrics = train(model, {})
            finally:
                adapters.merge()
        self.save(paths, model, mask, metrics)

    def evaluate_and_save(self, paths: LevelPaths, model: PreTrainedModel, mask: Mask, *, desc: str) -> None:
        """Score ``model`` with ``mask`` applied, untrained, and save it as the level ``paths``."""
        apply_mask(model, mask)
        metrics = self.evaluate(model, mask, desc=desc, tag=self.tag(paths.name))
        self.save(paths, model, mask, metrics)

    def save(self, paths: LevelPaths, model: PreTrainedModel, mask: Mask, metrics: dict) -> None:
        """Save ``model`` as the level ``paths``, its metrics recorded with the run's facts and unit counts."""
        save_level(
            self.accelerator, paths, model, mask, self.record(metrics, mask), self.metric, self.units.dead(model, mask)
        )

    def record(self, metrics: dict, mask: Mask) -> dict:
        """What a level's ``metrics.json`` holds beside its facts: its scores, the command that trained it and, for
        units other than single weights, the unit kind and the share of units removed."""
        record = {**metrics, "command": self.config.to_command()}
        if self.units.kind != "element":
            alive, total = self.units.counts(mask)
            record.update(unit=self.units.kind, unit_sparsity=1.0 - alive / total)
        return record

    def input_norms(self, model: nn.Module, samples: int) -> dict[str, torch.Tensor]:
        """Calibration statistics of ``model``'s prunable weights over ``samples`` examples of the training data
        (the first of a permutation seeded by the run's seed), on the accelerator's device."""
        model.to(self.accelerator.device)
        return input_norms(model, self.prunable, list(self.calibration(samples)), self.accelerator.device)


def _names(tensors: list[str]) -> str:
    """The first few of ``tensors``, for a warning line."""
    return ", ".join(tensors[:3]) + (" and more" if len(tensors) > 3 else "")
