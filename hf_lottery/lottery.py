"""The IMP driver: level 0 trains the dense model, each later level prunes, rewinds and retrains.

Every step of a run skips itself when its output exists, which is all that resuming needs: a
level is complete once its ``metrics.json`` is written (last, atomically), and a level killed
halfway is trained again from its start. All randomness of a level is seeded from the run's seed
and the level, so a resumed run ends bit-for-bit where an uninterrupted one does.

Rewinding: the whole model, task head included, goes back to the rewind point, so a level differs
from level 0 by its mask alone. With ``--rewind-to pretrained`` the rewind point is the pretrained
body plus the head's seeded random initialisation, exactly what level 0 started from.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from safetensors.torch import load_model as load_weights_into
from transformers import PreTrainedModel

from .config import PruneArguments, RunConfig
from .controls import CONTROLS
from .errors import LotteryError
from .masks import Mask, apply_mask, dense_mask, select_prunable
from .paths import IMP, LevelPaths, RunPaths
from .pruning import last_level_clipped, level_densities
from .report import write_results
from .runs import default_output_dir, finish_trackers, load_task, make_accelerator, save_level, start_run_dir
from .sparse import pack_mask, unpack_mask
from .storage import load_tensors, save_weights
from .strategies import get_strategy
from .tasks import Metric
from .training import total_optimizer_steps, train


class TrainLevel(Protocol):
    """Train ``model`` in place with ``mask`` fixed and return its validation metrics (the run's metric among them).

    ``on_step(step, model)``, when given, must be called before the first step (step 0) and after every
    optimizer step: level 0 saves the rewind point through it. ``checkpoint`` is the level's folder for
    checkpoints inside it, where the training keeps any (a level resumed from one calls ``on_step`` only for
    the steps after it).
    """

    def __call__(
        self, model: PreTrainedModel, mask: Mask, *, level: int, desc: str, tag: str, on_step=None, checkpoint=None
    ) -> dict: ...


@dataclass
class Run:
    """Everything a level needs, loaded and checked once before anything is written.

    The CLI and the Python API (``find_ticket``) differ only in ``train_level``: hf-lottery's own loop on a
    task's data, or the user's training function.
    """

    config: RunConfig
    paths: RunPaths
    accelerator: Accelerator
    model: PreTrainedModel  # the rewind point once it exists; before that, the pretrained weights
    prunable: list[str]
    densities: list[float]
    metric: Metric
    train_level: TrainLevel

    @property
    def prune(self) -> PruneArguments:
        return self.config.prune

    def branches(self) -> list[str]:
        return [IMP, *self.prune.control]

    def level_paths(self, branch: str, level: int) -> LevelPaths:
        """Where a level of this invocation lives: on the trunk, or off it when it is clipped to the target."""
        clipped = level == len(self.densities) - 1 and last_level_clipped(self.densities, self.prune)
        return self.paths.level(branch, level, self.prune.target_sparsity if clipped else None)


def prepare_run(config: RunConfig) -> Run:
    """Check the config, model, run directory and data; write the config only when all of them are good."""
    config.train.output_dir = config.train.output_dir or str(default_output_dir(config))  # named as given
    accelerator = make_accelerator(config.train)
    densities = level_densities(config.prune)
    task = load_task(config, accelerator, plan=f"schedule: {describe_schedule(densities, config.prune)}")
    prunable = select_prunable(task.model, config.prune.include, config.prune.exclude)
    data = task.kind.prepare(task.data, task.tokenizer, config.data, accelerator)
    steps = total_optimizer_steps(config.train, len(data.train), accelerator.num_processes)
    rewind_step = config.prune.rewind_step
    if rewind_step is not None and rewind_step > steps:
        raise LotteryError(f"--rewind-to {config.prune.rewind_to} is past the end of level 0, which has {steps} steps")
    if config.prune.dry_run:
        accelerator.print(plan_table(densities, config.prune, steps, task.model, prunable))
        raise DryRun
    start_run_dir(task.paths, config, task.model, task.tokenizer, accelerator)
    accelerator.init_trackers("hf-lottery", config=_tracker_config(config))

    def train_level(
        model: PreTrainedModel, mask: Mask, *, level: int, desc: str, tag: str, on_step=None, checkpoint=None
    ) -> dict:
        seed = config.train.seed + level
        set_seed(seed, device_specific=True)  # each process draws its own dropout; the data order has its own seed
        return train(
            model, mask, data, config.train, accelerator, seed=seed, desc=desc, tag=tag, on_step=on_step,
            checkpoint=checkpoint,
        )  # fmt: skip

    return Run(config, task.paths, accelerator, task.model, prunable, densities, data.metric, train_level)


def _tracker_config(config: RunConfig) -> dict:
    """The run's values as trackers take them (scalars; lists as text)."""
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in config.flat().items()}


class DryRun(Exception):
    """``--dry-run``: the plan is printed; nothing is trained or written."""


def plan_table(densities: list[float], prune: PruneArguments, steps: int, model: PreTrainedModel, prunable) -> str:
    """The levels a run will train, their optimizer steps and the bytes it will write (weights and masks)."""
    params = dict(model.named_parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    mask_bytes = sum(params[name].numel() for name in prunable)  # a bool per prunable weight
    branches = 1 + len(prune.control)
    trainings = 1 + branches * (len(densities) - 1)
    lines = ["| level | sparsity | runs | optimizer steps |", "|---|---|---|---|", f"| 0 | 0.0% | dense | {steps} |"]
    for level, density in enumerate(densities[1:], 1):
        runs = ", ".join(["imp", *prune.control])
        lines.append(f"| {level} | {1 - density:.1%} | {runs} | {branches * steps} |")
    disk = trainings * (weight_bytes + mask_bytes) + weight_bytes  # every level's files, and the rewind point
    lines.append(
        f"{trainings} trainings, {trainings * steps} optimizer steps in all; about {disk / 1e9:.2f} GB of weights "
        "and masks on disk"
    )
    return "\n".join(lines)


def describe_schedule(densities: list[float], prune: PruneArguments) -> str:
    levels = len(densities) - 1
    return (
        f"{levels} pruning level{'s' if levels != 1 else ''} of {prune.prune_fraction:.0%} of the surviving weights, "
        f"to {1 - densities[-1]:.1%} sparsity ({prune.scope} magnitude, rewind to {prune.rewind_to})"
    )


def run_lottery(config: RunConfig) -> list[dict]:
    """Run (or resume) every level of IMP and its controls; return one result row per level (none for a dry run)."""
    try:
        run = prepare_run(config)
    except DryRun:
        return []
    return run_levels(run)


def run_levels(run: Run) -> list[dict]:
    """Every level of IMP and its controls, each skipped when its files exist; one result row per level."""
    print_ = run.accelerator.print
    print_(f"run directory: {run.paths.root}")
    _train_level_0(run)
    for level in range(1, len(run.densities)):
        for branch in run.branches():
            _train_level(run, branch, level)
    finish_trackers(run.accelerator)
    rows = []
    if run.accelerator.is_main_process:
        rows = write_results(run.paths, run.metric.name)
    run.accelerator.wait_for_everyone()
    return rows


def _train_level_0(run: Run) -> None:
    paths = run.paths.level(IMP, 0)
    if paths.is_done():
        load_weights_into(run.model, str(run.paths.rewind_point))
        return
    rewind_step = run.prune.rewind_step or 0
    model = copy.deepcopy(run.model)

    def save_rewind_point(step: int, trained: PreTrainedModel) -> None:
        if step == rewind_step and run.accelerator.is_main_process:
            save_weights(run.paths.rewind_point, trained)

    mask = dense_mask(model, run.prunable)
    metrics = run.train_level(
        model, mask, level=0, desc="level 0 (dense)", tag=paths.name, on_step=save_rewind_point,
        checkpoint=paths.checkpoint,
    )  # fmt: skip
    save_level(run.accelerator, paths, model, mask, {**metrics, "command": run.config.to_command()}, run.metric)
    load_weights_into(run.model, str(run.paths.rewind_point))


def _train_level(run: Run, branch: str, level: int) -> None:
    paths = run.level_paths(branch, level)
    if paths.is_done():
        return
    mask = _mask_for(run, branch, level)
    model = copy.deepcopy(run.model)  # the rewind point
    if branch != IMP:
        CONTROLS[branch]().start(model, run.prunable, seed=run.config.train.seed)
    apply_mask(model, mask)
    sparsity = 1.0 - run.densities[level]
    desc = f"level {level} ({branch}, sparsity {sparsity:.1%})"
    metrics = run.train_level(model, mask, level=level, desc=desc, tag=paths.name, checkpoint=paths.checkpoint)
    save_level(run.accelerator, paths, model, mask, {**metrics, "command": run.config.to_command()}, run.metric)


def _mask_for(run: Run, branch: str, level: int) -> Mask:
    """The level's mask: computed once, on the main process, and broadcast, so every rank holds the same."""
    mask = _compute_mask(run, branch, level) if run.accelerator.is_main_process else None
    if run.accelerator.num_processes == 1:
        return mask
    shapes = {name: tuple(m.shape) for name, m in mask.items()} if mask is not None else None
    payload = [shapes, {name: pack_mask(m) for name, m in mask.items()} if mask is not None else None]
    broadcast_object_list(payload, from_process=0)
    shapes, packed = payload
    return {name: unpack_mask(packed[name].cpu(), shape) for name, shape in shapes.items()}


def _compute_mask(run: Run, branch: str, level: int) -> Mask:
    """The level's mask, from files on disk only, so that a resumed run computes the same one."""
    if branch == IMP:  # pruned from the trunk level before, never from a clipped one
        previous = load_tensors(run.paths.level(IMP, level - 1).mask)
        trained = copy.deepcopy(run.model)
        load_weights_into(trained, str(run.paths.level(IMP, level - 1).weights))
        weights = {name: p for name, p in trained.named_parameters() if name in previous}
        mask = get_strategy(run.prune.scope).prune(weights, previous, run.densities[level])
        emptied = [name for name, m in mask.items() if not m.any() and previous[name].any()]
        if emptied:
            run.accelerator.print(
                f"warning: level {level} removed every weight of {', '.join(emptied[:3])}"
                f"{' and more' if len(emptied) > 3 else ''}: their magnitudes are far below the rest "
                "(an untrained pooler, say); --scope layer or --exclude keeps them"
            )
        return mask
    ticket = load_tensors(run.level_paths(IMP, level).mask)
    previous = load_tensors((run.paths.level(branch, level - 1) if level > 1 else run.paths.level(IMP, 0)).mask)
    return CONTROLS[branch]().mask(ticket=ticket, previous=previous, level=level, seed=run.config.train.seed)
