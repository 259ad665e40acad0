"""What every training command shares: the Accelerator, the run directory, the task's model and data.

A run directory is checked before anything is loaded and written only once the model and data are good, so
bad input leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DistributedType,
    GradientAccumulationPlugin,
    is_tensorboard_available,
    is_wandb_available,
    set_seed,
)
from transformers import PreTrainedModel

from .config import LAUNCHER_DEFAULTS, REACH_FIELDS, DataArguments, RunConfig, TrainArguments
from .controls import CONTROLS
from .errors import LotteryError
from .masks import Mask, sparsity_report
from .model import load_model_config, load_tokenizer
from .paths import IMP, LevelPaths, RunPaths
from .pruning import last_level_clipped, level_densities
from .storage import read_json, remove_folder, save_tensors, save_weights, write_folder, write_json, write_text
from .tasks import TEST_PREFIX, Metric, TaskData, TaskKind, resolve_task_kind


@dataclass
class LoadedTask:
    """A run's task kind, run directory, raw data, model and tokenizer, each checked as it was loaded."""

    kind: TaskKind
    paths: RunPaths
    data: TaskData
    model: PreTrainedModel
    tokenizer: object


def load_task(config: RunConfig, accelerator: Accelerator, *, plan: str | None = None) -> LoadedTask:
    """The model's config first (a bad model id fails before anything else), the task kind, the run
    directory (checked, not yet written), the data, and then the model with the kind's head.

    The run's first lines say what it will do (the task kind, its data and ``plan``) before any download.
    """
    name, revision = config.model.model_name_or_path, config.model.revision
    model_config = load_model_config(name, revision)
    kind = resolve_task_kind(config.model, config.data, model_config)
    positions = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    if positions and config.data.max_length > positions:
        if config.data.max_length != DataArguments.max_length:
            limit = f"model {name!r} has {positions} positions"
            raise LotteryError(f"--max-length {config.data.max_length} is too long: {limit}")
        config.data.max_length = positions  # the default fits every model: as long as it allows
    paths = open_run_dir(config, kind)
    accelerator.print(f"task: {kind.name} on {kind.describe_data(config.data)}")
    if plan:
        accelerator.print(plan)
    data = kind.load_data(config.data)
    set_seed(config.train.seed)  # a new task head's initialisation is part of the rewind point
    model = kind.load_model(name, revision=revision, data=data, model_config=model_config, log=accelerator.print)
    tokenizer = load_tokenizer(name, model, revision)
    return LoadedTask(kind, paths, data, model, tokenizer)


# The Accelerator settings hf-lottery exposes: each flag's environment variable as `accelerate launch` and
# `accelerate config` set it, and the value when neither the flag nor the launcher says anything.
LAUNCHER_SETTINGS = {
    "mixed_precision": "ACCELERATE_MIXED_PRECISION",
    "gradient_accumulation_steps": "ACCELERATE_GRADIENT_ACCUMULATION_STEPS",
}


def finish_trackers(accelerator: Accelerator) -> None:
    """Close the trackers' files (``Accelerator.end_training`` would also tear down the process group)."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []


def resolve_launcher_settings(args: TrainArguments) -> dict[str, str]:
    """Fill each Accelerator setting left unset: the flag wins, then the launcher's environment, then the default.

    The resolved values are written into ``args`` (so the run's config records what ran) and passed to
    Accelerate explicitly, so an environment variable can never make Accelerate and the run's step count
    disagree. Returns where each value came from, for ``hf-lottery env``.
    """
    sources = {}
    for name, variable in LAUNCHER_SETTINGS.items():
        if getattr(args, name) is not None:
            sources[name] = "flag"
            continue
        raw, default = os.environ.get(variable, "").strip().lower(), LAUNCHER_DEFAULTS[name]
        sources[name] = variable if raw else "default"
        try:
            setattr(args, name, (int(raw) if isinstance(default, int) else raw) if raw else default)
        except ValueError:
            raise LotteryError(f"{variable}={raw!r} in the environment is not a number") from None
    TrainArguments.__post_init__(args)  # the launcher's values are checked like flags
    return sources


TRACKER_PACKAGES = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}


def make_accelerator(args: TrainArguments) -> Accelerator:
    resolve_launcher_settings(args)
    available = TRACKER_PACKAGES.get(args.report_to)
    if available is not None and not available():
        raise LotteryError(
            f"--report-to {args.report_to} needs the {args.report_to} package: pip install {args.report_to}"
        )
    accelerator = Accelerator(
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=args.output_dir,  # TensorBoard's event files go to the run directory
        mixed_precision=args.mixed_precision,
        # A plugin, not the number: Accelerate lets its environment variable override a plain number.
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=args.gradient_accumulation_steps),
        cpu=not torch.accelerator.is_available(),  # so torchrun on a CPU machine means gloo processes, not copies
    )
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise LotteryError(
            f"{accelerator.distributed_type.value} shards the parameters, so masks cannot hold on to them; "
            "run with plain data parallelism (accelerate launch --multi_gpu)"
        )
    return accelerator


def default_output_dir(config: RunConfig) -> Path:
    model = Path(config.model.model_name_or_path.rstrip("/")).name
    data = config.data
    if data.task or data.train_file:
        name = data.task or Path(data.train_file).stem
    else:
        name = Path(data.dataset_name).name if data.dataset_name else "default-corpus"
    folder = Path("runs") / f"{model}-{name}-{config.run_hash()}"
    legacy = folder.with_name(f"{model}-{name}-{config.legacy_run_hash()}")  # named by hf-lottery 0.1
    return legacy if not folder.exists() and legacy.is_dir() else folder


def check_run_dir(paths: RunPaths, config: RunConfig) -> None:
    """Refuse a directory that holds another run, or anything that is not a run."""
    if paths.config.exists():
        saved = json.loads(json.dumps(RunConfig.from_dict(read_json(paths.config)).identity()))
        wanted = json.loads(json.dumps(config.identity()))
        changed = [k for k in sorted(wanted) if saved.get(k) != wanted[k]]
        if changed:
            diff = ", ".join(f"{k}: {saved.get(k)!r} there, {wanted[k]!r} now" for k in changed[:3])
            raise LotteryError(f"{paths.root} holds a different run ({diff}); choose another --output-dir or remove it")
    elif paths.root.exists() and any(paths.root.iterdir()):
        raise LotteryError(f"{paths.root} is not empty and holds no hf-lottery run (no config.json)")


def open_run_dir(config: RunConfig, kind: TaskKind) -> RunPaths:
    """The run directory, refused if it holds something else; the config records the resolved task kind.

    Without ``--output-dir`` the directory is named by the hash of the config as given (before the task kind
    is inferred), so the same command finds the same directory.
    """
    if config.train.output_dir is None:
        config.train.output_dir = str(default_output_dir(config))
    config.model.task_kind = kind.name
    paths = RunPaths(Path(config.train.output_dir))
    check_run_dir(paths, config)
    return paths


def start_run_dir(
    paths: RunPaths,
    config: RunConfig,
    model: PreTrainedModel,
    tokenizer,
    accelerator: Accelerator,
    base_facts: dict | None = None,
) -> None:
    """Write the config and the model's config and tokenizer files (main process), once everything is checked.

    ``base_facts`` joins the base model's name in ``model/base_model.json`` (for a fine-tuned ticket: the task
    kind it was found for, and which of its weights the fine-tuning started from).
    """
    if accelerator.is_main_process:
        if paths.config.exists() and read_json(paths.config).get("format_version", 1) == 1:
            _migrate_version_1(paths, RunConfig.from_dict(read_json(paths.config)))
        if not paths.config.exists():
            write_text(paths.config, config.to_json())
        if config.prune is not None:  # each invocation's reach: how far it went and how
            reach = {k: getattr(config.prune, k) for k in sorted(REACH_FIELDS)}
            with open(paths.run_log, "a", encoding="utf-8") as log:
                log.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **reach,
                                      "command": config.to_command()}) + "\n")  # fmt: skip
        if not paths.model_files.exists():
            base = {"name": config.model.model_name_or_path, "revision": config.model.revision,
                    "commit": getattr(model.config, "_commit_hash", None), **(base_facts or {})}  # fmt: skip

            def save_model_files(folder: Path) -> None:
                model.config.save_pretrained(folder)
                if tokenizer is not None:
                    tokenizer.save_pretrained(folder)
                write_json(folder / "base_model.json", base)

            write_folder(paths.model_files, save_model_files)
        for stale in paths.root.rglob(".*.tmp-*"):  # left by a killed run; never mistaken for a result
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        for level in paths.finished_levels():  # killed between its metrics.json and the removal of its checkpoints
            remove_folder(level.checkpoint)
    accelerator.wait_for_everyone()


def _migrate_version_1(paths: RunPaths, old: RunConfig) -> None:
    """A run directory of hf-lottery 0.1 in today's layout: its clipped last level moves off the trunk.

    0.1 stored a level clipped to hit --target-sparsity as an ordinary level, which an extended run would
    prune from. Folders are renamed before config.json is rewritten, so a kill in between repeats the move.
    """
    densities = level_densities(old.prune) if old.prune is not None else [1.0]
    if old.prune is not None and last_level_clipped(densities, old.prune):
        last = len(densities) - 1
        for branch in (IMP, *CONTROLS):
            trunk, clipped = paths.level(branch, last), paths.level(branch, last, old.prune.target_sparsity)
            if trunk.root.exists() and not clipped.root.exists():
                trunk.root.rename(clipped.root)
    write_text(paths.config, old.to_json())


def save_level(
    accelerator: Accelerator, paths: LevelPaths, model: PreTrainedModel, mask: Mask, metrics: dict, metric: Metric
) -> None:
    """A level's files, ``metrics.json`` last: its presence means the level is complete; then its checkpoints go."""
    if accelerator.is_main_process:
        report = sparsity_report(mask)
        save_tensors(paths.mask, mask)
        save_weights(paths.weights, model)
        write_json(paths.sparsity, report)
        sparsity = report["total"]["sparsity"]
        info = {"sparsity": sparsity, "branch": paths.branch, "level": paths.number, "metric": metric.name,
                "greater_is_better": metric.greater_is_better}  # fmt: skip
        write_json(paths.metrics, {**metrics, **info})
        remove_folder(paths.checkpoint)
        line = (
            f"level {paths.number} ({paths.branch}): sparsity {sparsity:.2%}, {metric.name} {metrics[metric.name]:.4f}"
        )
        if TEST_PREFIX + metric.name in metrics:
            line += f", test {metric.name} {metrics[TEST_PREFIX + metric.name]:.4f}"
        accelerator.print(line)
        with open(paths.root.parent.parent / "training.log", "a", encoding="utf-8") as log:  # a batch job's record
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}, {metrics.get('steps', 0)} steps\n")
    accelerator.wait_for_everyone()
