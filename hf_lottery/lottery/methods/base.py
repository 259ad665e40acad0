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
  ``run.paths.level(name, n, clipped_to=sparsity)``; ``run`` is a ``RunContext``, all a method sees of the run;
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


class RunContext(Protocol):
    """What a method sees of the run it is a branch of (the run implements it; a method imports no run module)."""

    paths: RunPaths
    accelerator: Accelerator
    model: PreTrainedModel  # the rewind point
    prunable: list[str]
    new_head: bool  # the task head is new: before training, the model scores chance

    @property
    def prune(self) -> PruneArguments: ...

    def tag(self, name: str) -> str:
        """The tracker tag of a folder of the run (``early-bird/search_2``)."""

    def train_level(
        self, model: PreTrainedModel, mask: Mask, *, level: int, desc: str, tag: str, on_step=None, checkpoint=None
    ) -> dict:
        """Train ``model`` in place with ``mask`` fixed; ``on_step(step, model)`` returning True stops it there."""

    def shared_mask(self, compute: Callable[[], Mask]) -> Mask:
        """``compute()`` on the main process, the same mask on every rank."""

    def shared_flag(self, flag: bool | None) -> bool:
        """The main process's ``flag`` on every rank."""

    def trained_model(self, level: LevelPaths) -> PreTrainedModel:
        """A copy of the model holding the weights a finished level trained."""

    def borrowed_model(self, level: LevelPaths) -> AbstractContextManager[PreTrainedModel]:
        """The run's own model holding the weights ``level`` trained, to prune or train in place (no copy); it
        holds the rewind point again after."""

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
        """The run's strategy applied to ``weights`` (parameters of ``model``) inside ``previous``, keeping
        ``density`` (in an N:M ``pattern`` if given); ``what`` names the draw in warnings (None: a draw that only
        looks)."""

    def draw_by_block(self, model: nn.Module, density: float, *, what: str, pattern: tuple[int, int] | None) -> Mask:
        """The run's strategy applied to ``model``'s dense weights, pruning them in place: block by block from
        calibration statistics for a calibrated strategy (one block on the accelerator at a time, every process
        drawing the same mask), at once from the weights otherwise."""

    def evaluate_and_save(self, paths: LevelPaths, model: PreTrainedModel, mask: Mask, *, desc: str) -> None:
        """Score ``model`` with ``mask`` applied, untrained, and save it as the level ``paths``."""

    def train_and_save(
        self, paths: LevelPaths, model: PreTrainedModel, mask: Mask, *, level: int, desc: str, adapter_rank=None,
        learning_rate: float | None = None,
    ) -> None:  # fmt: skip
        """Train ``model`` in place with ``mask`` applied and fixed (or, with ``adapter_rank``, only through masked
        low-rank adapters merged in after), at ``learning_rate`` (None: the run's); save it as the level
        ``paths``."""

    def train_from_rewind(
        self, paths: LevelPaths, mask: Mask, *, level: int, desc: str, start: Callable[[nn.Module], None] | None = None
    ) -> None:
        """Train ``mask`` from the rewind point and save the level to ``paths``."""

    def warn_if_untrained(self, mask: Mask, density: float, *, what: str) -> None:
        """Warn, naming the mask ``what``, when it keeps more than 98% of the weights the run's strategy keeps
        when it draws ``density`` from the rewind weights (a mask that training did not choose)."""

    def warn(self, message: str) -> None:
        """Print one warning line (on the main process)."""


class Method(Plugin):
    name: ClassVar[str]
    label: ClassVar[str]
    style: ClassVar[str]
    description: ClassVar[str]  # for the card: "one-shot magnitude pruning of the dense fine-tuned weights"
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
