"""Checkpoints inside a level (``--save-steps``): a killed level resumes mid-way, to the same result.

Accelerate's ``save_state`` holds the model, optimizer, scheduler, gradient scaler, each process's RNG
states and its accumulation counter. The rest is ours: the generators the data draws from (the sampler's
order and a masked-LM collator's masking, per process), the best-so-far evaluation of ``--eval-steps``
with its weights, and the position in the data.

The position is replayed, not skipped: a checkpoint holds the data generators as they were at the start
of its epoch and the number of batches of that epoch trained on; resuming restores the generators and
draws those batches again without training on them. Skipping would not do: Accelerate's loader collates
one batch ahead, so at any step a collator's generator has drawn for one batch more than was trained on.

Layout: ``checkpoint/step_<N>/``. Every process writes into ``checkpoint/.step_<N>.tmp-save``; after a
barrier the main process renames it into place and only then removes the older ones (Accelerate's
``total_limit`` deletes the old one first), so a kill at any moment leaves a whole checkpoint, the
highest-numbered one; the next run removes a temporary folder left behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import follow_umask, load_tensors, read_json, save_tensors, write_json

# The best evaluation so far: the metric's value, all the metrics, and the weights (on CPU).
Best = tuple[float, dict[str, float], dict[str, torch.Tensor]]

PROGRESS = "progress.json"
BEST_WEIGHTS = "best_weights.safetensors"


class LevelCheckpoints:
    """The checkpoints of one level's training in ``folder`` (None: no checkpoints).

    ``order`` is the training loader's generator and ``collator`` its collate function; a collator that
    draws random numbers keeps a ``torch.Generator`` as ``generator``, as transformers' collators do.
    """

    def __init__(self, folder: Path | None, accelerator: Accelerator, order: torch.Generator, collator: Any) -> None:
        self.folder, self.accelerator = folder, accelerator
        self.order, self.collator = order, collator
        self._epoch_start: dict[str, torch.Tensor] = {}  # the data generators' states when the epoch began
        self._used = 0  # batches of the current epoch handed to training
        self._replay = 0  # batches the next epoch draws again without training: the restored position

    def restore(self) -> tuple[int, Best | None] | None:
        """Load the latest checkpoint, if there is one: the step it was saved at and the best evaluation then."""
        latest = latest_checkpoint(self.folder) if self.folder is not None else None
        if latest is None:
            return None
        progress = read_json(latest / PROGRESS)
        if progress["processes"] != self.accelerator.num_processes:
            raise LotteryError(
                f"{latest} was saved by {progress['processes']} processes: resume the run on as many, or remove it "
                "to train the level from its start"
            )
        self.accelerator.print(f"resuming from {latest}")
        self.accelerator.load_state(str(latest))
        self._epoch_start = load_tensors(latest / f"generators_{self.accelerator.process_index}.safetensors")
        self._replay = progress["batches"]
        best = progress["best"]
        if best is not None:
            best = (best["value"], best["metrics"], load_tensors(latest / BEST_WEIGHTS))
        return progress["step"], best

    def batches(self, loader: Iterable) -> Iterator:
        """One epoch of ``loader``; right after a restore, the rest of the epoch the checkpoint was saved in."""
        if self._replay:
            self._set_generators(self._epoch_start)
        else:
            self._epoch_start = self._generator_states()
        replay, self._replay = self._replay, 0
        for used, batch in enumerate(loader, 1):
            self._used = used
            if used > replay:
                yield batch

    def save(self, step: int, best: Best | None) -> None:
        """Save the training state after optimizer step ``step`` (on every process) and keep only it."""
        if self.folder is None:
            return
        accelerator = self.accelerator
        tmp = self.folder / f".step_{step}.tmp-save"
        accelerator.save_state(str(tmp))
        save_tensors(tmp / f"generators_{accelerator.process_index}.safetensors", self._epoch_start)
        if accelerator.is_main_process:
            if best is not None:
                save_tensors(tmp / BEST_WEIGHTS, best[2])
            write_json(tmp / PROGRESS, {
                "step": step, "batches": self._used, "processes": accelerator.num_processes,
                "best": None if best is None else {"value": best[0], "metrics": best[1]},
            })  # fmt: skip
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            follow_umask(tmp)  # Accelerate's safetensors files are 0600
            publish(tmp, self.folder / f"step_{step}")

    def _generator_states(self) -> dict[str, torch.Tensor]:
        states = {"order": self.order.get_state()}
        masking = getattr(self.collator, "generator", None)
        if isinstance(masking, torch.Generator):
            states["collator"] = masking.get_state()
        return states

    def _set_generators(self, states: dict[str, torch.Tensor]) -> None:
        self.order.set_state(states["order"])
        if "collator" in states:
            if not isinstance(getattr(self.collator, "generator", None), torch.Generator):
                self.collator.create_rng("pt")  # transformers' collators make their generator on first use
            self.collator.generator.set_state(states["collator"])


def latest_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint of the highest step in ``folder`` (temporary folders are never complete)."""
    steps = [(int(path.name.removeprefix("step_")), path) for path in folder.glob("step_*")]
    return max(steps)[1] if steps else None


def publish(tmp: Path, final: Path) -> None:
    """Rename a written checkpoint into place, then remove the older ones: a kill at any moment leaves one whole."""
    for file in tmp.iterdir():  # on disk before the rename makes it the checkpoint, as ``atomic_path`` does
        if file.is_file():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())
    tmp.rename(final)
    for old in final.parent.glob("step_*"):
        if old != final:
            shutil.rmtree(old)
