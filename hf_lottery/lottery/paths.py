"""The layout of a run directory, and the names of the files the run as a whole reads and writes.

    run_dir/
      config.json                    the RunConfig (format_version 4), written first
      model/                         the model's config.json and tokenizer files (for export)
      rewind_point.safetensors       weights every level rewinds to (saved once)
      teacher_logits.safetensors     with --distill on a classifier: the teacher's logits per training example
      run_log.jsonl                  one line per invocation: its reach (levels, target, controls), processes, command
      imp/level_0/ ... level_N/      the lottery ticket search (the trunk); level 0 is the dense model
      imp/level_N_to_70.00/          a level clipped to hit --target-sparsity exactly: off the trunk, never a parent
      random-prune/level_1/ ...      controls, when asked for
      reinit/level_1/ ...
      one-shot/level_1_to_90.00/     a cheaper ticket method's levels (hf_lottery/methods/), over the same level 0
      early-bird/...                 (its search levels and settings: see methods/early_bird.py)
      results.json, results.md, sparsity_vs_metric.png
      replicate_1/ ...               with --replicates: the same run under other seeds, each with this layout

A level folder holds mask.safetensors, weights.safetensors (trained), sparsity.json and
metrics.json; metrics.json is written last, so its presence means the level is complete. While a level
trains with --save-steps, checkpoint/ holds its latest training state (removed when the level is complete).

Some names live next to the code that writes them, not here:

- ``training.log`` (in the run directory, one line per finished level) is appended by ``save_level``, which
  writes a level's files; ``model/base_model.json`` (the base model's name, revision, commit and whether it is
  a local folder) is written by ``start_run_dir``, which creates the run directory, and read back when a ticket
  is exported.
- The early-bird method (``methods/early_bird.py``) names its own files: ``early-bird/settings.json``,
  ``early-bird/search_K/`` with ``mask.safetensors`` and ``search.json``, and ``early_bird_distances.png`` in
  the run directory.
- The checkpoints inside a level (``checkpoint.py``): ``checkpoint/step_<N>/``, holding Accelerate's state
  plus ``progress.json`` and ``best_weights.safetensors``, written as ``checkpoint/.step_<N>.tmp-save`` first.
- Atomic writes (``storage.py``): a file or folder is written to a ``.<name>.tmp-*`` sibling and renamed into
  place, and a folder is renamed to one before it is deleted; the next run removes any a kill left behind.
- With ``--report-to tensorboard``, Accelerate writes TensorBoard's event files under the run directory.
- The lock of the invocation using the directory (``rundir.py``): ``.hf-lottery.lock``, and beside it while held
  ``.hf-lottery.lock.pid``; neither is part of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMP = "imp"
REPLICATE_PREFIX = "replicate_"  # replicate r > 0 of a run lives in replicate_<r>/ inside it
DENSE = "dense"


def run_name(branch: str, level: int, sparsity: float) -> str:
    """What the log, the results table and the card call a level's run, so that all three name it alike: level 0
    is the dense model (its folder is ``imp/level_0``), or, for ``hf-lottery finetune``, the fine-tuned ticket."""
    if level:
        return branch
    return DENSE if sparsity == 0 else "fine-tuned ticket"


@dataclass(frozen=True)
class LevelPaths:
    root: Path

    @property
    def branch(self) -> str:
        return self.root.parent.name

    @property
    def number(self) -> int:
        return int(self.root.name.removeprefix("level_").split("_")[0])

    @property
    def clipped(self) -> bool:
        return "_to_" in self.root.name

    @property
    def clipped_to(self) -> float | None:
        """The target sparsity a clipped level hits (its folder says it in percent)."""
        return float(self.root.name.split("_to_")[1]) / 100 if self.clipped else None

    @property
    def name(self) -> str:
        """The folder relative to the run directory, e.g. ``imp/level_3`` (recorded in the results)."""
        return f"{self.branch}/{self.root.name}"

    @property
    def mask(self) -> Path:
        return self.root / "mask.safetensors"

    @property
    def rewind_point(self) -> Path:
        """The rewind point of the run directory (or replicate) the level is in."""
        return self.root.parent.parent / "rewind_point.safetensors"

    @property
    def weights(self) -> Path:
        return self.root / "weights.safetensors"

    @property
    def sparsity(self) -> Path:
        return self.root / "sparsity.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"

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

    @property
    def run_log(self) -> Path:
        return self.root / "run_log.jsonl"

    def replicate(self, replicate: int) -> RunPaths:
        """Where a replicate lives: replicate 0 is the run directory itself, so a run without replicates is one."""
        return self if replicate == 0 else RunPaths(self.root / f"{REPLICATE_PREFIX}{replicate}")

    def replicates(self) -> list[RunPaths]:
        """The replicates after replicate 0 that exist on disk, by number."""
        found = [(int(number), folder) for folder in self.root.glob(f"{REPLICATE_PREFIX}*")
                 if (number := folder.name.removeprefix(REPLICATE_PREFIX)).isdigit() and folder.is_dir()]  # fmt: skip
        return [RunPaths(folder) for _, folder in sorted(found)]

    def level(self, branch: str, level: int, clipped_to: float | None = None) -> LevelPaths:
        """A trunk level, or with ``clipped_to`` (a target sparsity) the level clipped to hit it."""
        suffix = "" if clipped_to is None else f"_to_{100 * clipped_to:.2f}"
        return LevelPaths(self.root / branch / f"level_{level}{suffix}")
