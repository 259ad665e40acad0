"""The IMP driver: level 0 trains the dense model, each later level prunes, rewinds and retrains; then the
cheaper ticket methods (``hf_lottery.lottery.methods``) train their levels over the same level 0.

Every step of a run skips itself when its output exists, which is all that resuming needs: a
level is complete once its ``metrics.json`` is written (last, atomically), and a level killed
halfway is trained again from its start, or from its last checkpoint with ``--save-steps``. All
randomness of a level is seeded from the run's seed and the level, so a resumed run ends bit-for-bit
where an uninterrupted one does.

Rewinding: the whole model, task head included, goes back to the rewind point, so a level differs
from level 0 by its mask alone. With ``--rewind-to pretrained`` the rewind point is the pretrained
body plus the head's seeded random initialisation, exactly what level 0 started from.
"""

from __future__ import annotations

import copy
import json
import math
from contextlib import ExitStack
from dataclasses import dataclass, replace

import torch
from accelerate.utils import set_seed
from transformers import PreTrainedModel

from hf_lottery.foundations.arguments import UNITS, PruneArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import load_tensors, load_weights, save_weights
from hf_lottery.pruning.calibration import check_blocks, unreached
from hf_lottery.pruning.masks import Mask, dense_mask, prunable_weights, select_prunable
from hf_lottery.pruning.units import Units
from hf_lottery.training.launch import finish_trackers
from hf_lottery.training.loop import total_optimizer_steps, train
from hf_lottery.training.model import load_tokenizer
from hf_lottery.training.tasks import TaskKind

from .config import RunConfig
from .finished import refuse_writes_if_finished
from .methods import asked_methods
from .opening import OpenedRun, open_run
from .paths import IMP, RunPaths
from .retention import drop_unneeded_weights
from .run import Run, RunEvents, observed, run_units
from .rundir import lock_run_dir, save_level, start_run_dir
from .teacher import run_teacher


@dataclass
class LoadedTask:
    """An opened run with its model (the kind's head on the pretrained body) and tokenizer."""

    opened: OpenedRun
    model: PreTrainedModel
    tokenizer: object
    new_head: bool  # the kind's head is not the checkpoint's: drawn at random, untrained

    @property
    def config(self) -> RunConfig:
        return self.opened.config

    @property
    def kind(self) -> TaskKind:
        return self.opened.kind

    @property
    def paths(self) -> RunPaths:
        return self.opened.paths


def load_task(config: RunConfig, *, plan: str | None) -> LoadedTask:
    """The opened run (``open_run``), then the model with the kind's head, seeded, and its tokenizer."""
    opened = open_run(config, plan=plan)
    name, revision = config.model.model_name_or_path, config.model.revision
    set_seed(opened.config.train.seed)  # a new task head's initialisation is part of the rewind point
    model = opened.kind.load_model(name, revision=revision, data=opened.data, model_config=opened.model_config,
                                   log=opened.accelerator.print)  # fmt: skip
    tokenizer = load_tokenizer(name, model, revision)
    return LoadedTask(opened, model, tokenizer, opened.kind.new_head(opened.model_config))


def prepare_run(config: RunConfig, events: RunEvents | None = None, held: ExitStack | None = None) -> Run:
    """Check the config, model, run directory and data; write the config only when all of them are good.

    The run reads the config as resolved (``Resolved``); ``config.json`` records that. The run directory's lock
    is taken on ``held`` before the first write and kept until the caller closes it; without ``held`` none is
    taken (a replicate runs inside its run directory, under that directory's lock)."""
    densities = config.prune.level_densities()
    task = load_task(config, plan=f"schedule: {describe_schedule(densities, config.prune)}")
    config, accelerator = task.config, task.opened.accelerator
    prunable = select_prunable(task.model, config.prune.include, config.prune.exclude)
    data = task.kind.prepare(task.opened.data, task.tokenizer, config.data, accelerator)
    steps = total_optimizer_steps(config.train, len(data.train), accelerator.num_processes)
    rewind_step = config.prune.rewind_step
    if rewind_step is not None and rewind_step > steps:
        raise LotteryError(f"--rewind-to {config.prune.rewind_to} is past the end of level 0, which has {steps} steps")

    def calibration(samples: int) -> list[dict]:
        """The first ``samples`` training examples of a permutation seeded by the run's seed, one per batch."""
        if samples > len(data.train):
            raise LotteryError(f"calibration needs {samples} training examples; the data has {len(data.train)}")
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(config.train.seed))
        return [data.eval_collator([data.train[int(i)]]) for i in order[:samples]]

    units = _refuse_what_cannot_run(config, task, prunable, densities, len(data.train), calibration)
    teacher = run_teacher(
        config.train, task.kind, task.opened.data, data, task.paths.root, accelerator, model=task.model,
        tokenizer=task.tokenizer, level_0=task.paths.level(IMP, 0).weights,
        untrained_level_0=not config.prune.train_dense and task.new_head,
    )  # fmt: skip
    if config.prune.dry_run:
        accelerator.print(plan_table(densities, config, steps, task.model, prunable))
        raise DryRun
    if held is not None:
        refuse_writes_if_finished(config, task.paths)
        held.enter_context(lock_run_dir(task.paths, config, accelerator))
    for method in asked_methods(config.plugins):
        method.check(task.paths)
    start_run_dir(task.paths, config, task.model, task.tokenizer, accelerator)
    accelerator.init_trackers("hf-lottery", config=_tracker_config(config))

    def train_or_score(
        model: PreTrainedModel, mask: Mask, *, level: int, desc: str, tag: str, on_step=None, checkpoint=None,
        steps: int | None = None, learning_rate: float | None = None,
    ) -> dict:  # fmt: skip
        seed = config.train.seed + level
        set_seed(seed, device_specific=True)  # each process draws its own dropout; the data order has its own seed
        if level == 0 and not config.prune.train_dense:
            steps = 0
        args = config.train if learning_rate is None else replace(config.train, learning_rate=learning_rate)
        taught = teacher.for_level(level) if teacher is not None and steps != 0 else None
        with units.skipping(model, mask):
            metrics = train(
                model, mask, data, args, accelerator, seed=seed, desc=desc, tag=tag, on_step=on_step,
                checkpoint=checkpoint, steps=steps, teacher=taught,
            )  # fmt: skip
            if data.metric.name not in metrics:  # stopped early (an early-bird search level): nothing to score
                return metrics
            return {**metrics, **data.evaluate_test(model, accelerator, config.train.eval_batch_size)}

    def evaluate(model: PreTrainedModel, mask: Mask, *, desc: str, tag: str) -> dict:
        return train_or_score(model, mask, level=1, desc=desc, tag=tag, steps=0)

    train_level = train_or_score if events is None else observed(train_or_score, events)
    return Run(
        config=config, paths=task.paths, accelerator=accelerator, model=task.model, prunable=prunable,
        densities=densities, units=units, metric=data.metric, train_level=train_level, calibration=calibration,
        evaluate=evaluate, new_head=task.new_head,
    )  # fmt: skip


def _refuse_what_cannot_run(
    config: RunConfig, task: LoadedTask, prunable: list[str], densities: list[float], examples: int, calibration
) -> Units:
    """Refuse, in one line and before anything is written, a run its strategy, units or methods cannot do on this
    model and data (``examples`` training examples, ``calibration`` the run's calibration examples); return the
    run's units, found on the plain model before anything (an adapter) renames its weights."""
    methods = asked_methods(config.plugins)
    strategy = config.strategy()
    strategy.check(examples)
    units = run_units(task.model, prunable, config.prune, densities)
    for method in methods:
        method.check_model(task.model, prunable)
    if strategy.calibrated:
        missed = unreached(task.model, prunable, calibration(1)[0])
        if missed:
            raise LotteryError(
                f"--strategy {config.prune.strategy}: the calibration examples never reach {missed[0]}, so it has "
                "no input to score by; --exclude it or use --strategy magnitude"
            )
        if any(method.by_block for method in methods):
            check_blocks(task.model, prunable)
    if not config.prune.train_dense and task.new_head and not any(method.trains for method in methods):
        raise LotteryError(
            f"--train-dense false: the {task.kind.head_name} is new to {config.model.model_name_or_path}, so the "
            "pruned model scores chance until trained: add --recover or --recover-adapter RANK"
        )
    return units


def _tracker_config(config: RunConfig) -> dict:
    """The run's values as trackers take them (scalars; lists as text)."""
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in config.flat().items()}


class DryRun(Exception):
    """``--dry-run``: the plan is printed; nothing is trained or written."""


def plan_table(densities: list[float], config: RunConfig, steps: int, model: PreTrainedModel, prunable) -> str:
    """The levels a run will train, their optimizer steps and the bytes it will write (weights and masks)."""
    prune = config.prune
    params = dict(model.named_parameters())
    saved: dict[tuple[int, int], tuple[str, torch.Tensor]] = {}
    for name, tensor in model.state_dict().items():  # a tied tensor is saved once
        saved.setdefault((tensor.data_ptr(), tensor.numel()), (name, tensor))
    weight_bytes = safetensors_size([(n, t.dtype, t.shape) for n, t in saved.values()], {"format": "pt"})
    mask_bytes = safetensors_size([(name, torch.bool, params[name].shape) for name in prunable])  # a byte a weight
    branches = 1 + len(prune.control)
    dense_steps = steps if prune.train_dense else 0
    dense_run = "dense" if prune.train_dense else "pretrained, scored untrained"
    lines = [
        "| level | sparsity | runs | optimizer steps |",
        "|---|---|---|---|",
        f"| 0 | 0.0% | {dense_run} | {dense_steps} |",
    ]
    planned = [dense_steps]  # the optimizer steps of each training
    for level, density in enumerate(densities[1:], 1):
        runs = ", ".join(["imp", *prune.control])
        lines.append(f"| {level} | {1 - density:.1%} | {runs} | {branches * steps} |")
        planned += [steps] * branches
    methods = asked_methods(config.plugins)
    for level, sparsity, method_steps, name in (row for m in methods for row in m.plan(prune, steps, config.plugins)):
        lines.append(f"| {level} | {sparsity:.1%} | {name} | {method_steps} |")
        planned.append(method_steps)
    written = len(planned) * prune.replicates  # levels, trained or scored untrained
    trainings = sum(1 for n in planned if n) * prune.replicates
    # a level scored untrained from the rewind point writes no weights (``rundir.AT_REWIND``): with --train-dense
    # false, level 0 and the post-training masks of it
    weighted = written if prune.train_dense else trainings
    kept = weighted if prune.keep_weights == "all" else min(weighted, 3 * prune.replicates)  # level 0, trunk, best
    disk = kept * weight_bytes + written * mask_bytes + prune.replicates * weight_bytes  # levels, rewind points
    search = ""
    levels = sum(method.search_levels(prune) for method in methods) * prune.replicates
    if levels:
        search = f", plus at most {levels * steps} in {levels} search levels (stopped once masks settle)"
    replicates = f" ({prune.replicates} replicates of the levels above)" if prune.replicates > 1 else ""
    untrained = f" and {written - trainings} levels scored untrained" if written > trainings else ""
    total = sum(planned) * prune.replicates
    lines.append(
        f"{trainings} trainings{untrained}{replicates}, {total} optimizer steps in all{search}; about "
        f"{_size(disk)} of weights and masks on disk"
    )
    return "\n".join(lines)


def safetensors_size(tensors: list[tuple[str, torch.dtype, torch.Size]], metadata: dict | None = None) -> int:
    """The bytes of a safetensors file of ``tensors`` (name, dtype, shape): its JSON header, padded to 8 bytes
    after its 8-byte length, then the data."""
    header, offset = {}, 0
    for name, dtype, shape in tensors:
        size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES.get(dtype, "F32"), "shape": list(shape),
                        "data_offsets": [offset, offset + size]}  # fmt: skip
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    length = len(json.dumps(header, separators=(",", ":")))
    return 8 + length + (-length % 8) + offset


_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                       torch.bool: "BOOL", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}  # fmt: skip


def _size(count: float) -> str:
    """A number of bytes as people read it (decimal units, as disks are sold): 412.3 kB, 87.6 MB, 1.34 GB."""
    for unit, suffix, digits in ((1e9, "GB", 2), (1e6, "MB", 1), (1e3, "kB", 1)):
        if count >= unit:
            return f"{count / unit:.{digits}f} {suffix}"
    return f"{count:.0f} B"


def describe_schedule(densities: list[float], prune: PruneArguments) -> str:
    levels = len(densities) - 1
    if not levels:
        dense = "the dense model fine-tuned" if prune.train_dense else "the pretrained model scored as it is"
        return f"no IMP levels; level 0 is {dense} ({prune.scope} {prune.strategy})"
    what, reached = ("weights", "sparsity") if prune.unit == "element" else (UNITS[prune.unit], "of them removed")
    return (
        f"{levels} pruning level{'s' if levels != 1 else ''} of {prune.prune_fraction:.0%} of the surviving {what}, "
        f"to {1 - densities[-1]:.1%} {reached} ({prune.scope} {prune.strategy}, rewind to {prune.rewind_to})"
    )


def run_levels(run: Run) -> None:
    """Every level of IMP, its controls and the asked methods, each skipped when its files exist."""
    print_ = run.accelerator.print
    print_(f"run directory: {run.paths.root}")
    _train_level_0(run)
    for level in range(1, len(run.densities)):
        for branch in run.branches():
            _train_level(run, branch, level)
        _drop_unneeded_weights(run)
    for method in run.methods():
        method.train(run)
    _drop_unneeded_weights(run)
    finish_trackers(run.accelerator)
    run.accelerator.wait_for_everyone()


def _drop_unneeded_weights(run: Run) -> None:
    if run.prune.keep_weights == "needed" and run.accelerator.is_main_process:
        drop_unneeded_weights(run.paths, run.prune.replicates)
    run.accelerator.wait_for_everyone()


def _train_level_0(run: Run) -> None:
    paths = run.paths.level(IMP, 0)
    if paths.is_done():
        load_weights(run.model, run.paths.rewind_point)
        return
    rewind_step = run.prune.rewind_step or 0
    # an untrained level 0 is scored as it is: no copy of a model that may be too big to hold twice
    model = copy.deepcopy(run.model) if run.prune.train_dense else run.model

    def save_rewind_point(step: int, trained: PreTrainedModel) -> None:
        if step == rewind_step and run.accelerator.is_main_process:
            save_weights(run.paths.rewind_point, trained)

    mask = dense_mask(model, run.prunable)
    metrics = run.train_level(
        model, mask, level=0, desc="level 0 (dense)", tag=run.tag(paths.name), on_step=save_rewind_point,
        checkpoint=paths.checkpoint,
    )  # fmt: skip
    record = run.record(metrics, mask)
    if not run.prune.train_dense and run.new_head:
        record["untrained_head"] = True
    save_level(run.accelerator, paths, model, mask, record, run.metric)
    load_weights(run.model, run.paths.rewind_point)


def _train_level(run: Run, branch: str, level: int) -> None:
    paths = run.level_paths(branch, level)
    if paths.is_done():
        return
    mask = run.shared_mask(lambda: _compute_mask(run, branch, level))
    start = None
    if branch == IMP and run.prune.rewinds_learning_rate:  # the survivors keep their trained weights

        def start(model: PreTrainedModel) -> None:
            load_weights(model, run.paths.level(IMP, level - 1).weights)

    elif branch != IMP:
        control = run.config.control(branch)

        def start(model: PreTrainedModel) -> None:
            control.start(model, run.prunable, seed=run.config.train.seed)

    desc = f"level {level} ({branch}, sparsity {1.0 - run.densities[level]:.1%})"
    run.train_from_rewind(paths, mask, level=level, desc=desc, start=start)


def _compute_mask(run: Run, branch: str, level: int) -> Mask:
    """The level's mask, from files on disk only, so that a resumed run computes the same one."""
    if branch == IMP:  # pruned from the trunk level before, never from a clipped one
        previous = load_tensors(run.paths.level(IMP, level - 1).mask)
        model = run.trained_model(run.paths.level(IMP, level - 1))
        weights = prunable_weights(model, run.prunable)
        return run.draw_mask(model, weights, previous, run.densities[level], what=f"level {level}")
    ticket = load_tensors(run.level_paths(IMP, level).mask)
    previous = load_tensors((run.paths.level(branch, level - 1) if level > 1 else run.paths.level(IMP, 0)).mask)
    control = run.config.control(branch)
    return control.mask(ticket=ticket, previous=previous, level=level, seed=run.config.train.seed, units=run.units)
