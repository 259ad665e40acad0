"""On one GPU, at most about ten minutes: MiniLM neuron IMP with a teacher in bf16 on all of SST-2, its training
speed against the same loop without the teacher, and the masks of a small run on the GPU against the CPU.

1. Two runs of all-MiniLM-L6-v2 on the 67,349 SST-2 training sentences, ``--mixed-precision bf16``, neuron IMP
   (one level, 20% of the neurons per block), ``--max-steps`` optimizer steps per level, batch 32: one with
   ``--distill`` (the dense level 0's logits cached for every sentence, then level 1 against them), one without.
   The steps per second of level 1 in each (timed between its first and last optimizer step), and the time the
   teacher's logits took.
2. A small float32 run (the first 512 sentences, 2 levels, 20 steps each, magnitude neurons) on the GPU and, in a
   subprocess with ``CUDA_VISIBLE_DEVICES=``, on the CPU, same seed: how many mask entries differ per level.
   Equal masks are not expected everywhere: the GPU's kernels round differently, so trained weights differ in
   their last bits and a neuron near the threshold may change sides; the script prints how many and how close.

    python scripts/gpu_distill_check.py --output-dir runs/gpu-check     # prints its findings, writes gpu.json
    python scripts/gpu_distill_check.py --cpu-part --output-dir DIR      # (the subprocess of part 2)

Never run by the tests or CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from reproduce_sst2 import minilm_folder, sst2_folder  # scripts/ is on the path of a script run from it
from safetensors.torch import load_file

from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.run import RunEvents
from hf_lottery.lottery.runner import run_lottery


class StepClock(RunEvents):
    """When each training's first and last optimizer steps ended, by its tag."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}

    def step_ended(self, tag: str, step: int, model) -> None:
        if step >= 1:
            self.times.setdefault(tag, []).append(time.perf_counter())

    def steps_per_second(self, tag: str) -> float:
        times = self.times[tag]
        return (len(times) - 1) / (times[-1] - times[0])


def config(out: Path, glue: Path, **options) -> RunConfig:
    return RunConfig.build(
        "prune", model_name_or_path=str(minilm_folder()), task="sst2", train_file=str(glue / "train.tsv"),
        validation_file=str(glue / "dev.tsv"), max_length=64, prune_fraction=0.2, exclude=["pooler"], unit="neuron",
        scope="layer", learning_rate=1e-4, batch_size=32, eval_batch_size=256, seed=0, output_dir=str(out),
        **options,
    )  # fmt: skip


def speed(glue: Path, out: Path, steps: int) -> dict:
    found = {}
    for name, extra in (("teacher", {"distill": True}), ("plain", {})):
        clock, start = StepClock(), time.perf_counter()
        run_lottery(config(out / name, glue, levels=1, max_steps=steps, mixed_precision="bf16", **extra), clock)
        found[name] = {"level_1_steps_per_second": clock.steps_per_second("imp/level_1"),
                       "run_seconds": time.perf_counter() - start}  # fmt: skip
    cache = out / "teacher" / "teacher_logits.safetensors"
    found["teacher_cache_written_after_level_0_seconds"] = (
        cache.stat().st_mtime - (out / "teacher" / "imp" / "level_0" / "metrics.json").stat().st_mtime
    )
    return found


def small(glue: Path, out: Path) -> None:
    run_lottery(config(out, glue, levels=2, max_steps=20, max_train_samples=512, mixed_precision="no"))


def mask_differences(gpu: Path, cpu: Path) -> dict:
    found = {}
    for level in (1, 2):
        a = load_file(gpu / "imp" / f"level_{level}" / "mask.safetensors")
        b = load_file(cpu / "imp" / f"level_{level}" / "mask.safetensors")
        differ = sum(int((a[k] != b[k]).sum()) for k in a)
        found[f"level_{level}"] = {"entries_differing": differ, "entries": sum(m.numel() for m in a.values())}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/glue/SST-2"))
    parser.add_argument("--output-dir", default="runs/gpu-check")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per level of part 1")
    parser.add_argument("--cpu-part", action="store_true", help="run part 2 on the CPU only (the subprocess)")
    args = parser.parse_args()
    glue, out = sst2_folder(args.glue_dir), Path(args.output_dir)
    if args.cpu_part:
        small(glue, out / "small-cpu")
        return
    if not torch.cuda.is_available():
        sys.exit("no GPU: this script measures one")
    report = {"device": torch.cuda.get_device_name(), "speed": speed(glue, out / "speed", args.steps)}
    small(glue, out / "small-gpu")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, __file__, "--cpu-part", "--output-dir", str(out), "--glue-dir", str(glue)],
                   env=env, check=True)  # fmt: skip
    report["masks_gpu_vs_cpu"] = mask_differences(out / "small-gpu", out / "small-cpu")
    (out / "gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
