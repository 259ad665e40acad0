"""Replicates: the same run under other seeds, to tell a ticket's effect from seed noise.

Replicate 0 is the run directory itself, exactly as a run without ``--replicates`` writes it (and the one
exported); replicate r > 0 is the same config with the seed ``replicate_seed(seed, r)``, in ``replicate_<r>/``
with the same layout. Each is a run of its own, so it resumes and extends like one, and its head is
initialised under its own seed. The run directory's results add, per row, every replicate's metric and their
mean and standard deviation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hf_lottery.foundations.storage import read_json

from .config import RunConfig
from .paths import RunPaths
from .rundir import finished_levels

# A run's seeds per level: training level L uses seed + L (reinit's seed + 1 among them), random-prune's mask of
# level L seed * 1000 + L. Replicate seeds keep these apart for runs of fewer levels than this.
LEVEL_SEEDS = 1000


def _seed_ranges(seed: int) -> tuple[range, range]:
    """Every seed a run of seed ``seed`` may use: its training and reinit seeds, and its random-prune seeds."""
    return range(seed, seed + LEVEL_SEEDS), range(seed * 1000, seed * 1000 + LEVEL_SEEDS)


def replicate_seed(seed: int, replicate: int) -> int:
    """The seed of replicate ``replicate`` of a run of seed ``seed`` (replicate 0: ``seed`` itself).

    The rule: starting from ``seed``, each next replicate takes the first of ``previous + 1000``,
    ``previous + 2000``, ... whose seeds (``s + L`` and ``s * 1000 + L`` for levels L < 1000) meet none of the
    seeds of the replicates before it. So no two replicates share a seed (replicate 0's included), and a
    replicate's seed depends only on ``seed`` and its number: adding replicates never changes earlier ones.
    """
    taken = list(_seed_ranges(seed))
    current = seed
    for _ in range(replicate):
        current += LEVEL_SEEDS
        while any(_overlap(mine, other) for mine in _seed_ranges(current) for other in taken):
            current += LEVEL_SEEDS
        taken += _seed_ranges(current)
    return current


def _overlap(a: range, b: range) -> bool:
    return a.start < b.stop and b.start < a.stop


def replicate_config(config: RunConfig, replicate: int) -> RunConfig:
    """Replicate ``replicate`` of a prepared config: its seed and folder; a single run (its command reproduces it)."""
    folder = str(RunPaths(Path(config.output_dir)).replicate(replicate).root)
    train = dataclasses.replace(config.train, seed=replicate_seed(config.train.seed, replicate), output_dir=folder)
    return dataclasses.replace(config, train=train, prune=dataclasses.replace(config.prune, replicates=1))


def replicate_metrics(paths: RunPaths) -> list[dict[str, dict]]:
    """The finished levels of each replicate after replicate 0 on disk, by number: each level's ``metrics.json`` by
    its folder (``imp/level_1``), which the results of replicate 0 add to its rows (``rows.collect_rows``)."""
    return [{level.name: read_json(level.metrics) for level in finished_levels(other)} for other in paths.replicates()]
