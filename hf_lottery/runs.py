"""What every training command shares: the Accelerator, the run directory, tokenised data.

A run directory is checked before anything is loaded and written only once the model and data are good, so
bad input leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from datasets import Dataset
from transformers import PreTrainedModel

from .config import TrainingConfig, load_run_config
from .data import TaskData, tokenize
from .errors import LotteryError
from .masks import Mask, sparsity_report
from .paths import LevelPaths, RunPaths
from .storage import read_json, save_tensors, save_weights, write_folder, write_json, write_text


def make_accelerator(config: TrainingConfig) -> Accelerator:
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        cpu=not torch.accelerator.is_available(),  # so torchrun on a CPU machine means gloo processes, not copies
    )
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise LotteryError(
            f"{accelerator.distributed_type.value} shards the parameters, so masks cannot hold on to them; "
            "run with plain data parallelism (accelerate launch --multi_gpu)"
        )
    return accelerator


def default_output_dir(config: TrainingConfig) -> Path:
    model = Path(config.model_name_or_path.rstrip("/")).name
    data = config.task or Path(config.train_file).stem
    return Path("runs") / f"{model}-{data}-{config.run_hash()}"


def check_run_dir(paths: RunPaths, config: TrainingConfig) -> None:
    """Refuse a directory that holds another run, or anything that is not a run."""
    if paths.config.exists():
        saved = json.loads(json.dumps(load_run_config(read_json(paths.config)).identity()))
        wanted = json.loads(json.dumps(config.identity()))
        changed = [k for k in sorted(wanted) if saved.get(k) != wanted[k]]
        if changed:
            diff = ", ".join(f"{k}: {saved.get(k)!r} there, {wanted[k]!r} now" for k in changed[:3])
            raise LotteryError(f"{paths.root} holds a different run ({diff}); choose another --output-dir or remove it")
    elif paths.root.exists() and any(paths.root.iterdir()):
        raise LotteryError(f"{paths.root} is not empty and holds no hf-lottery run (no config.json)")


def open_run_dir(config: TrainingConfig) -> RunPaths:
    """The run directory (named by the config's hash unless given), refused if it holds something else."""
    if config.output_dir is None:
        config.output_dir = str(default_output_dir(config))
    paths = RunPaths(Path(config.output_dir))
    check_run_dir(paths, config)
    return paths


def tokenize_splits(
    data: TaskData, tokenizer, config: TrainingConfig, accelerator: Accelerator
) -> tuple[Dataset, Dataset]:
    with accelerator.main_process_first():
        train = tokenize(data.train, tokenizer, config.max_length, data.is_regression)
        validation = tokenize(data.validation, tokenizer, config.max_length, data.is_regression)
    return train, validation


def start_run_dir(
    paths: RunPaths, config: TrainingConfig, model: PreTrainedModel, tokenizer, accelerator: Accelerator
) -> None:
    """Write the config and the model's config and tokenizer files (main process), once everything is checked."""
    if accelerator.is_main_process:
        if not paths.config.exists():
            write_text(paths.config, config.to_json())
        if not paths.model_files.exists():
            base = {"name": config.model_name_or_path, "revision": config.revision,
                    "commit": getattr(model.config, "_commit_hash", None)}  # fmt: skip

            def save_model_files(folder: Path) -> None:
                model.config.save_pretrained(folder)
                tokenizer.save_pretrained(folder)
                write_json(folder / "base_model.json", base)

            write_folder(paths.model_files, save_model_files)
        for stale in paths.root.rglob(".*.tmp-*"):  # left by a killed run; never mistaken for a result
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    accelerator.wait_for_everyone()


def save_level(
    accelerator: Accelerator, paths: LevelPaths, model: PreTrainedModel, mask: Mask, metrics: dict, metric: str
) -> None:
    """A level's files, ``metrics.json`` last: its presence means the level is complete."""
    if accelerator.is_main_process:
        report = sparsity_report(mask)
        save_tensors(paths.mask, mask)
        save_weights(paths.weights, model)
        write_json(paths.sparsity, report)
        sparsity = report["total"]["sparsity"]
        info = {"sparsity": sparsity, "branch": paths.branch, "level": paths.number, "metric": metric}
        write_json(paths.metrics, {**metrics, **info})
        accelerator.print(
            f"level {paths.number} ({paths.branch}): sparsity {sparsity:.2%}, {metric} {metrics[metric]:.4f}"
        )
    accelerator.wait_for_everyone()
