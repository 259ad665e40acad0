"""Every file name of a run directory, in one place.

    run_dir/
      config.json                    the RunConfig (format_version 2), written first
      model/                         the model's config.json and tokenizer files (for export)
      rewind_point.safetensors       weights every level rewinds to (saved once)
      imp/level_0/ ... level_N/      the lottery ticket search; level 0 is the dense model
      random-prune/level_1/ ...      controls, when asked for
      reinit/level_1/ ...
      results.json, results.md, sparsity_vs_metric.png

A level folder holds mask.safetensors, weights.safetensors (trained), sparsity.json and
metrics.json; metrics.json is written last, so its presence means the level is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMP = "imp"


@dataclass(frozen=True)
class LevelPaths:
    root: Path

    @property
    def branch(self) -> str:
        return self.root.parent.name

    @property
    def number(self) -> int:
        return int(self.root.name.removeprefix("level_"))

    @property
    def mask(self) -> Path:
        return self.root / "mask.safetensors"

    @property
    def weights(self) -> Path:
        return self.root / "weights.safetensors"

    @property
    def sparsity(self) -> Path:
        return self.root / "sparsity.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    def is_done(self) -> bool:
        return self.metrics.exists()


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def model_files(self) -> Path:
        return self.root / "model"

    @property
    def rewind_point(self) -> Path:
        return self.root / "rewind_point.safetensors"

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def results_table(self) -> Path:
        return self.root / "results.md"

    @property
    def plot(self) -> Path:
        return self.root / "sparsity_vs_metric.png"

    def level(self, branch: str, level: int) -> LevelPaths:
        return LevelPaths(self.root / branch / f"level_{level}")
