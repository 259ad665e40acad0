"""A run's result rows, one per finished level, read from its files; and the one rule for "matches dense".

The rule decides which level ``--level best`` ships (none, when no pruned level matches), which weights
``--keep-weights needed`` keeps while the run goes, and what the scripts report, so that all three agree.

On disk a row is one flat JSON object (a level's ``metrics.json``, an entry of ``results.json`` and of
``ticket.json``'s ``levels``), its scores beside its other fields; in memory it is a ``LevelResult``, whose
``from_dict`` and ``to_dict`` keep that shape, so that the files of earlier versions read and new ones look
the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

from hf_lottery.foundations.arguments import DEFAULT_TOLERANCE
from hf_lottery.foundations.storage import read_json
from hf_lottery.training.tasks import TEST_PREFIX, Metric

from .methods import METHODS
from .paths import IMP, LevelPaths, RunPaths
from .replicates import replicate_metrics
from .rundir import finished_levels


@dataclass(frozen=True)
class LevelResult:
    """One finished level: what its ``metrics.json`` records, its folder, and what the run's results add to it.

    ``scores`` holds what the task kind measured, which differs by kind (``accuracy``, ``f1``, ``perplexity``...):
    the validation scores and, with a test split, the same ones on it (``test_accuracy``). The rest is what
    every level has, or (None) what only some have.
    """

    level: int
    branch: str  # imp, a control or a method
    path: str  # the level's folder relative to the run directory: imp/level_3, one-shot/level_1_to_90.00
    sparsity: float
    metric: str  # the name of the run's metric, one of the keys of scores
    greater_is_better: bool
    scores: dict[str, float]
    steps: int | None = None  # optimizer steps of its own training; find_ticket's train_fn counts none
    resumed_from_step: int | None = None  # where a killed training resumed, if it was
    command: str | None = None  # the command that trained it (none for hf-lottery finetune's level)
    processes: int | None = None  # how many processes trained it; levels of earlier versions do not say
    total_steps: int | None = None  # the steps it cost in all (collect_rows); results of 0.1 have none
    replicates: list[float] | None = None  # with replicates: each one's metric, replicate 0 (this row's) first
    mean: float | None = None  # and their mean
    std: float | None = None  # and sample std (0 for one)
    unit: str | None = None  # what the mask removes as one, when not single weights (neuron, block, head)
    unit_sparsity: float | None = None  # and the share of those units removed
    untrained_head: bool | None = None  # level 0 scored untrained (--train-dense false) under a new, random head
    parameters: int | None = None  # every parameter of the model (a tied one once); levels of earlier versions lack it
    kept_parameters: int | None = None  # and those its mask keeps: ``parameters`` less the pruned weights
    weights: str | None = None  # where its weights are when it wrote none (``rundir.AT_REWIND``)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> LevelResult:
        """A row as a level's ``metrics.json`` or ``results.json`` holds it: any key that is not a field is a score.

        Rows of hf-lottery 0.1 name no folder (theirs were all IMP trunk levels) and no direction (all its
        metrics grow).
        """
        fields = {key: row[key] for key in _FIELDS if key in row}
        fields.setdefault("path", f"{row['branch']}/level_{row['level']}")
        fields.setdefault("greater_is_better", True)
        return cls(**fields, scores={key: value for key, value in row.items() if key not in _FIELDS})

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object of ``results.json`` and ``ticket.json``: the scores beside the other fields, of
        which those that are None are left out, as they always were."""
        fields = {key: getattr(self, key) for key in _FIELDS}
        return {**self.scores, **{key: value for key, value in fields.items() if value is not None}}

    @property
    def value(self) -> float:
        """The level's validation score on the run's metric (replicate 0's, with replicates)."""
        return self.scores[self.metric]

    @property
    def test_value(self) -> float | None:
        """Its score on the run's metric on the test split; None when the run has none."""
        return self.scores.get(TEST_PREFIX + self.metric)

    @property
    def compared_value(self) -> float:
        """What levels are compared by: the mean over the replicates when the run has them, else ``value``."""
        return self.value if self.mean is None else self.mean

    @property
    def main_metric(self) -> Metric:
        """The run's metric with its direction."""
        return Metric(self.metric, self.greater_is_better)

    @property
    def level_paths(self) -> LevelPaths:
        """Its folder, relative to the run directory (``run.root / row.path`` is the real one)."""
        return LevelPaths(Path(self.path))

    @property
    def is_clipped(self) -> bool:
        """Whether the level was clipped to hit a target sparsity (off the trunk)."""
        return self.level_paths.clipped

    @property
    def on_trunk(self) -> bool:
        """Whether it is an IMP trunk level, which the next level is pruned from."""
        return self.branch == IMP and not self.is_clipped

    @property
    def is_reference(self) -> bool:
        """Whether it is a dense level 0 that a pruned level can be said to match: fine-tuned, or the pretrained
        model scored as it is (``--train-dense false``) under a head it was trained with; a new head scores
        chance until trained."""
        return self.level == 0 and self.sparsity == 0 and not self.untrained_head

    @property
    def is_ticket(self) -> bool:
        """Whether it is a candidate ticket: IMP's or a cheaper method's (controls never are)."""
        return self.branch == IMP or self.branch in METHODS


_FIELDS = tuple(field.name for field in dataclasses.fields(LevelResult) if field.name != "scores")


def collect_rows(paths: RunPaths) -> list[LevelResult]:
    """Every finished level on disk, dense first: those of earlier invocations and controls added later too.

    Each row gets ``total_steps``: the optimizer steps spent to produce it, its own training plus level 0 and
    whatever found its mask (the IMP trunk levels before it, or a method's search), which is what the cheaper
    methods are compared by. With replicates on disk, each row also gets every replicate's metric, their mean and
    std.
    """
    rows = [LevelResult.from_dict({**read_json(level.metrics), "path": level.name}) for level in finished_levels(paths)]
    trunk = {row.level: row.steps or 0 for row in rows if row.on_trunk}

    def before(row: LevelResult) -> int:
        if row.level == 0:
            return 0
        if row.branch in METHODS:
            return trunk.get(0, 0) + METHODS[row.branch]().search_steps(paths, row.level)
        return trunk.get(0, 0) + sum(trunk.get(n, 0) for n in range(1, row.level))

    rows = [dataclasses.replace(row, total_steps=before(row) + (row.steps or 0)) for row in rows]
    return _add_replicates(rows, paths)


def _add_replicates(rows: list[LevelResult], paths: RunPaths) -> list[LevelResult]:
    """Give each of replicate 0's rows every replicate's metric (``replicates``, replicate 0 first), their ``mean``
    and sample ``std``, when the run has replicates on disk. A level that some replicate has not finished yet
    counts only those that have it (``len(replicates)``); the row's own scores stay replicate 0's.
    """
    others = replicate_metrics(paths)
    if not others:
        return rows
    added = []
    for row in rows:
        values = [row.value, *(levels[row.path][row.metric] for levels in others if row.path in levels)]
        std = stdev(values) if len(values) > 1 else 0.0
        added.append(dataclasses.replace(row, replicates=values, mean=fmean(values), std=std))
    return added


def read_results(paths: RunPaths) -> list[LevelResult]:
    """The rows of a run's ``results.json`` (as the last invocation wrote them, of any version)."""
    return [LevelResult.from_dict(row) for row in read_json(paths.results_json)]


def within_tolerance(value: float, dense: float, metric: Metric, tolerance: float) -> bool:
    """Whether ``value`` "matches" dense: ``tolerance`` below it in metric units, or, for a lower-is-better
    metric such as perplexity, at most ``tolerance`` (a share) above it: perplexity spans no fixed scale.
    """
    if metric.greater_is_better:
        return value >= dense - tolerance
    return value <= dense * (1 + tolerance)


def pruned_tickets(rows: list[LevelResult]) -> list[LevelResult]:
    """The candidate tickets that prune something: IMP's levels and the cheaper methods', never a control's, and
    never the dense level 0 (a fine-tuned ticket's level 0 is sparse, so it is one)."""
    return [r for r in rows if r.is_ticket and r.sparsity > 0]


def best_ticket(rows: list[LevelResult], tolerance: float = DEFAULT_TOLERANCE) -> LevelResult | None:
    """The sparsest pruned ticket whose score is within ``tolerance`` of dense (row 0), of IMP or a cheaper method
    (the better one at equal sparsity); None when there is none: the dense model is no ticket.

    Validation scores only: the test scores (``test_*``) are never read here, so they stay an estimate of the
    chosen level that the choice did not flatter. With replicates it compares their means. A run whose level 0
    is no reference (an untrained new head) has none.
    """
    if rows[0].untrained_head:
        return None
    metric, dense = rows[0].main_metric, rows[0].compared_value
    within = [r for r in pruned_tickets(rows) if within_tolerance(r.compared_value, dense, metric, tolerance)]
    sign = 1 if metric.greater_is_better else -1
    return max(within, key=lambda r: (round(r.sparsity, 6), sign * r.compared_value), default=None)


def best_scoring(rows: list[LevelResult]) -> LevelResult | None:
    """The pruned ticket with the best score, however far from dense (the sparser at equal scores); None when the
    run has no pruned level. While no level is within tolerance, it is the one to name and to keep."""
    sign = 1 if rows[0].greater_is_better else -1
    return max(pruned_tickets(rows), key=lambda r: (sign * r.compared_value, round(r.sparsity, 6)), default=None)
