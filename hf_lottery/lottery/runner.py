"""``hf-lottery prune``: the IMP driver (``hf_lottery.lottery.imp``) over every replicate, then the run's results.

The results are written after each replicate's levels and once more when all are done, so the run directory's
table, plot and ``results.json`` give each level's mean and std over the replicates.
"""

from __future__ import annotations

from contextlib import ExitStack

from .config import RunConfig
from .finished import Finished
from .imp import DryRun, prepare_run, run_levels
from .replicates import replicate_config
from .report import write_results
from .rows import LevelResult
from .run import Run, RunEvents


def run_lottery(config: RunConfig, events: RunEvents | None = None) -> list[LevelResult]:
    """Run (or resume) every level of IMP, its controls and methods, in every replicate; return one result row
    per level (none for a dry run).

    Replicate 0 is the run itself; each other replicate is prepared like it (its own model load, so that its task
    head is drawn from its own seed) and trained into its own folder. ``events`` observe every training.
    The run directory stays locked from its first write to the last results, errors included.
    """
    with ExitStack() as held:
        return _run_lottery(config, events, held)


def _run_lottery(config: RunConfig, events: RunEvents | None, held: ExitStack) -> list[LevelResult]:
    try:
        run = prepare_run(config, events, held)
    except DryRun:
        return []
    except Finished as finished:  # nothing left to do where nothing can be written: its results as they are
        return finished.rows
    rows = train_and_report(run)
    replicates = config.prune.replicates
    for replicate in range(1, replicates):
        replica = replicate_config(run.config, replicate)  # as resolved: the same directory, kind and settings
        run.accelerator.print(f"replicate {replicate} of {replicates - 1} (seed {replica.train.seed})")
        train_and_report(prepare_run(replica, events))
    if replicates > 1:
        rows = report(run)
    return rows


def train_and_report(run: Run) -> list[LevelResult]:
    """Train every level of ``run`` that is not finished, then write its results."""
    run_levels(run)
    return report(run)


def report(run: Run) -> list[LevelResult]:
    """Write the run's results on the main process; its result rows there, none on the other ranks."""
    rows = write_results(run.paths, run.metric.name) if run.accelerator.is_main_process else []
    run.accelerator.wait_for_everyone()
    return rows
