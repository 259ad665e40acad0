"""A finished run shown without writing: rerunning the command of a run with nothing left to do, in a directory this
process cannot write (a read-only disk, another user's results), shows its results instead of failing on its lock.

A run with something left to do still takes the lock and says, in one line, that it cannot write there.
"""

from __future__ import annotations

import os

from .config import RunConfig
from .methods import asked_methods
from .paths import IMP, RunPaths
from .rows import LevelResult, read_results


class Finished(Exception):
    """Every level the invocation asks for is on disk and the directory cannot be written: ``rows`` are its results."""

    def __init__(self, rows: list[LevelResult]) -> None:
        super().__init__("nothing left to do")
        self.rows = rows


def refuse_writes_if_finished(config: RunConfig, paths: RunPaths) -> None:
    """Raise ``Finished`` with the run's results when ``paths`` cannot be written and nothing is left to do."""
    if _writable(paths.root) or not _nothing_left(config, paths):
        return
    raise Finished(read_results(paths))


def _writable(folder) -> bool:
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return True  # the lock says why
    return not read_only and os.access(folder, os.W_OK)


def _nothing_left(config: RunConfig, paths: RunPaths) -> bool:
    """Whether every level this invocation asks for is finished and the results are written (one replicate only)."""
    prune = config.prune
    if not paths.results_json.exists() or prune.replicates > 1:
        return False
    densities = prune.level_densities()
    clipped = prune.last_level_clipped(densities)
    wanted = [paths.level(IMP, 0)] + [
        paths.level(branch, level, prune.target_sparsity if clipped and level == len(densities) - 1 else None)
        for level in range(1, len(densities))
        for branch in (IMP, *prune.control)
    ]
    if not all(level.is_done() for level in wanted):
        return False
    for method in asked_methods(config.plugins):
        for level, sparsity, _, name in method.plan(prune, 0, config.plugins):
            folders = (
                paths.root.glob(f"{name}/level_*_to_{100 * sparsity:.2f}")  # a level the method finds as it goes
                if level == "-"
                else [paths.level(name, level, clipped_to=sparsity).root]
            )
            if not any((folder / "metrics.json").exists() for folder in folders):
                return False
    return True
