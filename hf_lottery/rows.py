"""A run's result rows, one per finished level, read from its files; and the one rule for "matches dense".

The rule decides which level ``--level best`` ships, which weights ``--keep-weights needed`` keeps while the run
goes, and what the scripts report, so that all three agree.
"""

from __future__ import annotations

from pathlib import Path

from .methods import METHODS
from .paths import IMP, LevelPaths, RunPaths
from .replicates import add_replicates
from .rundir import finished_levels
from .storage import read_json
from .tasks import Metric

# "Matches dense": within one point of a higher-is-better metric (on a 0-1 scale: accuracy, F1), or, for a
# lower-is-better one (perplexity, loss), at most this share above dense (0.01: 1% higher perplexity).
DEFAULT_TOLERANCE = 0.01


def collect_rows(paths: RunPaths) -> list[dict]:
    """Every finished level on disk, dense first: those of earlier invocations and controls added later too.

    Each row gets ``total_steps``: the optimizer steps spent to produce it, its own training plus level 0 and
    whatever found its mask (the IMP trunk levels before it, or a method's search), which is what the cheaper
    methods are compared by. With replicates on disk, each row also gets every replicate's metric, their mean and
    std (``replicates.add_replicates``).
    """
    rows = [{**read_json(level.metrics), "path": level.name} for level in finished_levels(paths)]
    trunk = {r["level"]: r.get("steps", 0) for r in rows if r["branch"] == IMP and not is_clipped(r)}
    for row in rows:
        before = 0
        if row["level"] > 0:
            before = trunk.get(0, 0)
            if row["branch"] in METHODS:
                before += METHODS[row["branch"]]().search_steps(paths, row["level"])
            else:
                before += sum(trunk.get(n, 0) for n in range(1, row["level"]))
        row["total_steps"] = before + row.get("steps", 0)
    add_replicates(rows, paths)
    return rows


def row_path(row: dict) -> str:
    """A row's folder relative to the run directory (rows of hf-lottery 0.1 name none: theirs were all on the
    trunk)."""
    return row.get("path", f"{row['branch']}/level_{row['level']}")


def is_clipped(row: dict) -> bool:
    """Whether a row's level was clipped to hit a target sparsity (off the trunk)."""
    return LevelPaths(Path(row_path(row))).clipped


def row_metric(row: dict) -> Metric:
    """The metric of a result row; rows of hf-lottery 0.1 carry no direction (all its metrics grow)."""
    return Metric(row["metric"], row.get("greater_is_better", True))


def score(row: dict) -> float:
    """What levels are compared by: the mean over the replicates when the run has them, else the metric."""
    return row.get("mean", row[row["metric"]])


def within_tolerance(value: float, dense: float, metric: Metric, tolerance: float) -> bool:
    """Whether ``value`` "matches" dense: ``tolerance`` below it in metric units, or, for a lower-is-better
    metric such as perplexity, at most ``tolerance`` (a share) above it: perplexity spans no fixed scale.
    """
    if metric.greater_is_better:
        return value >= dense - tolerance
    return value <= dense * (1 + tolerance)


def best_ticket(rows: list[dict], tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """The sparsest ticket whose score is within ``tolerance`` of dense (row 0), of IMP or a cheaper method (the
    better one at equal sparsity; controls are never tickets).

    Validation scores only: the test scores (``test_*``) are never read here, so they stay an estimate of the
    chosen level that the choice did not flatter. With replicates it compares their means.
    """
    metric = row_metric(rows[0])
    dense = score(rows[0])
    tickets = [r for r in rows if r["branch"] == IMP or r["branch"] in METHODS]
    within = [r for r in tickets if within_tolerance(score(r), dense, metric, tolerance)]
    sign = 1 if metric.greater_is_better else -1
    return max(within, key=lambda r: (round(r["sparsity"], 6), sign * score(r)))
