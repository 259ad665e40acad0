"""What a ticket method is: another way than IMP's trunk to reach a mask, trained as a branch over the same dense
level 0 and rewind point, so adding one to a finished run trains only its own levels.

A new method is one module with a subclass of ``Method`` plus one line in ``hf_lottery.lottery.methods.METHODS``.
A subclass sets ``name`` (its branch folder), ``label`` and ``style`` (the plot's legend and matplotlib
format), ``description`` and ``citation`` (the card's words), and implements:

- ``arguments``: a dataclass of its own options (``Plugin``), all of role reach: a method is a branch, so
  adding it to a finished run extends the run; ``asked()``: whether its options ask for it;
- ``settings()``: its options that decide what its levels are, recorded in its folder (``record_settings(run)``
  at the start of ``train``) and held to by ``check(paths)``, which refuses, in one line and before anything is
  written, what the run directory cannot take; ``check_run(prune, train)``: refuse
  run settings it cannot work with; ``check_model(model, prunable)``: a model it cannot prune;
- ``train(run)``: train its levels that are not finished, each saved with ``run.train_from_rewind`` into
  ``run.paths.level(name, n, clipped_to=sparsity)``. ``run`` is a ``RunContext``, all a method may call of the
  run, in three small protocols: ``Shares`` (``paths``, ``accelerator``, ``tag``, ``shared_mask``,
  ``shared_flag``, ``warn``), ``Draws`` (``model``, the rewind point; ``prunable``, ``new_head``, ``prune``,
  ``trained_model``, ``borrowed_model``, ``draw_mask``, ``draw_by_block``, ``warn_if_untrained``) and ``Trains``
  (``train_level``, ``train_from_rewind``, ``train_and_save``, ``evaluate_and_save``);
- ``search_steps(paths, level)``: the optimizer steps spent, beyond level 0 and the level's own training,
  to find the mask of its level ``level`` (the results' total steps column);
- ``results_section(paths)``: optionally, Markdown (and figures) for ``results.md`` about how it searched;
- ``plan(prune, steps, plugins)``: the ``--dry-run`` table's rows of its trainings (level, sparsity, optimizer
  steps, run name; ``steps`` is a level's, ``plugins`` every plug-in's options), and ``search_levels(prune)``, how
  many shortened search levels come on top, if any.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

import torch
from accelerate import Accelerator
from torch import nn
from transformers import PreTrainedModel

from hf_lottery.foundations.arguments import PruneArguments, TrainArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.registry import Plugin
from hf_lottery.foundations.storage import read_json, write_json
from hf_lottery.lottery.paths import LevelPaths, RunPaths
from hf_lottery.pruning.masks import Mask

# A --dry-run row of a method's training: its level (a number, or "-"), sparsity, optimizer steps and run name.
PlanRow = tuple[int | str, float, int, str]
SETTINGS = "settings.json"  # in a method's folder: the settings its levels were found with (``Method.settings``)


class TrainLevel(Protocol):
    """Train ``model`` in place with ``mask`` fixed and return its validation metrics (the run's metric among them),
    and its held-out ones prefixed ``test_`` when the run has a test split.

    ``on_step(step, model)``, when given, must be called before the first step (step 0) and after every
    optimizer step: level 0 saves the rewind point through it. ``checkpoint`` is the level's folder for
    checkpoints inside it, where the training keeps any (a level resumed from one calls ``on_step`` only for
    the steps after it). ``learning_rate`` replaces the run's peak learning rate for this training (a recovery's).
    """

    def __call__(
        self, model: PreTrainedModel, mask: Mask, *, level: int, desc: str, tag: str, on_step=None, checkpoint=None,
        learning_rate: float | None = None,
    ) -> dict: ...  # fmt: skip


class Shares(Protocol):
    """Where the run lives and what its processes share: every rank holds the same masks and decisions."""

    paths: RunPaths
    accelerator: Accelerator

    def tag(self, name: str) -> str: ...

    def shared_mask(self, compute: Callable[[], Mask]) -> Mask: ...

    def shared_flag(self, flag: bool | None) -> bool: ...

    def warn(self, message: str) -> None: ...


class Draws(Protocol):
    """The rewind point, the weights of finished levels, and masks drawn from them by the run's strategy."""

    model: PreTrainedModel  # the rewind point
    prunable: list[str]
    new_head: bool  # the task head is new: before training, the model scores chance

    @property
    def prune(self) -> PruneArguments: ...

    def trained_model(self, level: LevelPaths) -> PreTrainedModel: ...

    def borrowed_model(self, level: LevelPaths) -> AbstractContextManager[PreTrainedModel]: ...

    def draw_mask(
        self,
        model: nn.Module,
        weights: dict[str, torch.Tensor],
        previous: Mask,
        density: float,
        *,
        what: str | None,
        pattern: tuple[int, int] | None = None,
    ) -> Mask: ...

    def draw_by_block(
        self, model: nn.Module, density: float, *, what: str, pattern: tuple[int, int] | None
    ) -> Mask: ...

    def warn_if_untrained(self, mask: Mask, density: float, *, what: str) -> None: ...


class Trains(Protocol):
    """Training (or scoring) a level and saving it, as every branch of the run does."""

    train_level: TrainLevel

    def train_from_rewind(
        self, paths: LevelPaths, mask: Mask, *, level: int, desc: str, start: Callable[[nn.Module], None] | None = None
    ) -> None: ...

    def train_and_save(
        self, paths: LevelPaths, model: PreTrainedModel, mask: Mask, *, level: int, desc: str, adapter_rank=None,
        learning_rate: float | None = None,
    ) -> None: ...  # fmt: skip

    def evaluate_and_save(self, paths: LevelPaths, model: PreTrainedModel, mask: Mask, *, desc: str) -> None: ...


class RunContext(Shares, Draws, Trains, Protocol):
    """All a method sees of the run it is a branch of: ``lottery.run.Run`` implements it (and declares so, and a
    test holds their signatures equal); a method imports no run module. What each member does is said once, on
    ``Run``."""


class Method(Plugin):
    name: ClassVar[str]
    label: ClassVar[str]
    style: ClassVar[str]
    description: ClassVar[str]  # for the card: "one-shot pruning of the dense fine-tuned weights"
    citation: ClassVar[str]  # for the card: where the method comes from
    noun: ClassVar[str] = "winning lottery ticket"  # for the card: "A <noun> of bert-base-uncased"
    stops_levels: ClassVar[bool] = False  # stops a level mid-training (hf-lottery's loop can; a user's train_fn not)
    scores_untrained: ClassVar[bool] = False  # scores a model it did not train (hf-lottery's loop can; train_fn not)
    trains: ClassVar[str | None] = None  # the method whose masks it trains, asked in the same invocation
    by_block: ClassVar[bool] = False  # draws a calibrated mask block by block: per row or per tensor, never global

    def asked(self) -> bool:
        """Whether the run asks for this method (its own options say so)."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Its options that decide what its levels are, beyond the run's own (which name the run directory): the
        first invocation records them in its folder (``record_settings``) and ``check`` holds later ones to them.
        None by default."""
        return {}

    def check(self, paths: RunPaths) -> None:
        """Refuse settings that differ from those recorded in its folder (its levels there were found with those);
        a folder with levels and no record holds levels from before the settings were recorded, found with the
        defaults (None)."""
        asked = self.settings()
        folder = paths.root / self.name
        file = folder / SETTINGS
        if file.is_file():
            found = read_json(file)
        elif any(LevelPaths(level).is_done() for level in folder.glob("level_*")):
            found = dict.fromkeys(asked)
        else:
            return
        changed = [k for k in asked if found.get(k) != asked[k]]
        if changed:

            def flags(values: Mapping[str, Any]) -> str:
                return ", ".join(f"--{k.replace('_', '-')} {values.get(k)}" for k in changed)

            raise LotteryError(
                f"{folder} holds levels found with {flags(found)}; this run asks for {flags(asked)}: give the same "
                "or another --output-dir"
            )

    def record_settings(self, run: RunContext) -> None:
        """Record ``settings()`` in its folder, once, before its first level (see ``check``)."""
        file = run.paths.root / self.name / SETTINGS
        if self.settings() and run.accelerator.is_main_process and not file.is_file():
            write_json(file, self.settings())

    def check_run(self, prune: PruneArguments, train: TrainArguments) -> None:
        """Refuse, in one line, run settings the method cannot work with; nothing by default."""

    def check_model(self, model: nn.Module, prunable: list[str]) -> None:
        """Refuse, in one line, a model whose prunable weights the method cannot prune; nothing by default."""

    def train(self, run: RunContext) -> None:
        raise NotImplementedError

    def search_steps(self, paths: RunPaths, level: int) -> int:
        return 0

    def results_section(self, paths: RunPaths) -> str:
        return ""

    def plan(self, prune: PruneArguments, steps: int, plugins: Mapping[str, Any]) -> list[PlanRow]:
        raise NotImplementedError

    def search_levels(self, prune: PruneArguments) -> int:
        return 0
