"""The launcher's settings and the Accelerator every training command runs on, with its trackers.

``accelerate launch`` and ``accelerate config`` speak through environment variables; a flag beats them, and
the values a run resolves are passed to Accelerate explicitly, so the run and Accelerate never disagree.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, GradientAccumulationPlugin, is_tensorboard_available, is_wandb_available

from hf_lottery.foundations.arguments import LAUNCHER_DEFAULTS, TrainArguments
from hf_lottery.foundations.errors import LotteryError

# The Accelerator settings hf-lottery exposes: each flag's environment variable as `accelerate launch` and
# `accelerate config` set it, and the value when neither the flag nor the launcher says anything.
LAUNCHER_SETTINGS = {
    "mixed_precision": "ACCELERATE_MIXED_PRECISION",
    "gradient_accumulation_steps": "ACCELERATE_GRADIENT_ACCUMULATION_STEPS",
}


def launcher_settings(args: TrainArguments) -> dict[str, tuple[str | int, str]]:
    """Each Accelerator setting and where it came from: the flag wins, then the launcher's environment, then the
    default.

    The run records the values (``Resolved``) and passes them to Accelerate explicitly, so an environment variable
    can never make Accelerate and the run's step count disagree. The sources are for ``hf-lottery env``.
    """
    settings: dict[str, tuple[str | int, str]] = {}
    for name, variable in LAUNCHER_SETTINGS.items():
        if getattr(args, name) is not None:
            settings[name] = (getattr(args, name), "flag")
            continue
        raw, default = os.environ.get(variable, "").strip().lower(), LAUNCHER_DEFAULTS[name]
        try:
            value = (int(raw) if isinstance(default, int) else raw) if raw else default
        except ValueError:
            raise LotteryError(f"{variable}={raw!r} in the environment is not a number") from None
        settings[name] = (value, variable if raw else "default")
    dataclasses.replace(args, **{name: value for name, (value, _) in settings.items()})  # checked like flags
    return settings


TRACKER_PACKAGES = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}


def make_accelerator(args: TrainArguments) -> Accelerator:
    """The Accelerator of a run whose training arguments hold the resolved launcher settings (``Resolved``)."""
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


def describe_processes(accelerator: Accelerator, args: TrainArguments) -> list[str]:
    """The run's line on how many processes train it (the global batch grows with them), and a warning when the
    launcher asked for more than started.

    On CPU, ``accelerate launch --num_processes N`` sets ``MASTER_ADDR`` and ``MASTER_PORT`` but starts a single
    process with no ``WORLD_SIZE``, which would train alone without a word. ``args`` holds the resolved settings.
    """
    processes, batch, steps = accelerator.num_processes, args.batch_size, args.gradient_accumulation_steps
    lines = [
        f"processes: {processes} (global batch {batch * processes * steps} = --batch-size {batch} x {processes} "
        f"process{'es' if processes > 1 else ''} x {steps} accumulation step{'s' if steps > 1 else ''})"
    ]
    asked = "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ and "WORLD_SIZE" not in os.environ
    if processes == 1 and asked:
        lines.append(
            "warning: MASTER_ADDR and MASTER_PORT are set for several processes, but only this one started (no "
            "WORLD_SIZE): `accelerate launch` starts several CPU processes only through mpirun; on CPU use "
            "`torchrun --nproc_per_node N -m hf_lottery ...`"
        )
    return lines


def finish_trackers(accelerator: Accelerator) -> None:
    """Close the trackers' files (``Accelerator.end_training`` would also tear down the process group)."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []
