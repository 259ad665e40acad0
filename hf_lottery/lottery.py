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

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from safetensors.torch import load_model as load_weights_into
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from .config import LotteryConfig
from .data import load_task_data
from .errors import LotteryError
from .masks import Mask, apply_mask, dense_mask, select_prunable
from .model import load_model, load_model_config, load_tokenizer
from .paths import IMP, RunPaths
from .pruning import keep_counts, level_densities, magnitude_prune, random_prune
from .report import write_results
from .runs import make_accelerator, open_run_dir, save_level, start_run_dir, tokenize_splits
from .sparse import pack_mask, unpack_mask
from .storage import load_tensors, save_weights
from .training import total_optimizer_steps, train


@dataclass
class Run:
    """Everything a level needs, loaded and checked once before anything is written."""

    config: LotteryConfig
    paths: RunPaths
    accelerator: Accelerator
    model: PreTrainedModel  # the rewind point once it exists; before that, the pretrained weights
    tokenizer: object
    train_data: object
    eval_data: object
    metric: str
    prunable: list[str]
    densities: list[float]

    def branches(self) -> list[str]:
        return [IMP, *self.config.control]


def prepare_run(config: LotteryConfig) -> Run:
    """Check the config, run directory, model and data; write the config only when all of them are good."""
    accelerator = make_accelerator(config)
    paths = open_run_dir(config)
    load_model_config(config.model_name_or_path, config.revision)  # a bad model id fails before data loading
    data = load_task_data(config)
    set_seed(config.seed)  # the new task head's initialisation is part of the rewind point
    model = load_model(config.model_name_or_path, data.num_labels, data.label_names, config.revision)
    tokenizer = load_tokenizer(config.model_name_or_path, model, config.revision)
    prunable = select_prunable(model, config.include, config.exclude)
    train_data, eval_data = tokenize_splits(data, tokenizer, config, accelerator)
    steps = total_optimizer_steps(config, len(train_data), accelerator.num_processes)
    if config.rewind_step is not None and config.rewind_step > steps:
        raise LotteryError(f"--rewind-to {config.rewind_to} is past the end of level 0, which has {steps} steps")
    start_run_dir(paths, config, model, tokenizer, accelerator)
    return Run(
        config,
        paths,
        accelerator,
        model,
        tokenizer,
        train_data,
        eval_data,
        data.metric,
        prunable,
        level_densities(config),
    )


def run_lottery(config: LotteryConfig) -> list[dict]:
    """Run (or resume) every level of IMP and its controls; return one result row per level."""
    run = prepare_run(config)
    print_ = run.accelerator.print
    print_(f"run directory: {run.paths.root}")
    _train_level_0(run)
    for level in range(1, len(run.densities)):
        for branch in run.branches():
            _train_level(run, branch, level)
    rows = []
    if run.accelerator.is_main_process:
        rows = write_results(run.paths, run.branches(), len(run.densities) - 1, run.metric)
    run.accelerator.wait_for_everyone()
    return rows


def _train_level_0(run: Run) -> None:
    paths, config = run.paths.level(IMP, 0), run.config
    if paths.is_done():
        load_weights_into(run.model, str(run.paths.rewind_point))
        return
    rewind_step = config.rewind_step or 0
    model = copy.deepcopy(run.model)

    def save_rewind_point(step: int, trained: PreTrainedModel) -> None:
        if step == rewind_step and run.accelerator.is_main_process:
            save_weights(run.paths.rewind_point, trained)

    mask = dense_mask(model, run.prunable)
    metrics = _train(run, model, mask, 0, "level 0 (dense)", save_rewind_point)
    save_level(run.accelerator, paths, model, mask, metrics, run.metric)
    load_weights_into(run.model, str(run.paths.rewind_point))


def _train_level(run: Run, branch: str, level: int) -> None:
    paths = run.paths.level(branch, level)
    if paths.is_done():
        return
    mask = _mask_for(run, branch, level)
    model = copy.deepcopy(run.model)  # the rewind point
    if branch == "reinit":
        _reinitialise(run, model)
    apply_mask(model, mask)
    sparsity = 1.0 - run.densities[level]
    metrics = _train(run, model, mask, level, f"level {level} ({branch}, sparsity {sparsity:.1%})")
    save_level(run.accelerator, paths, model, mask, metrics, run.metric)


def _train(run: Run, model, mask: Mask, level: int, desc: str, on_step=None) -> dict[str, float]:
    seed = run.config.seed + level
    set_seed(seed, device_specific=True)  # each process draws its own dropout; the data order has its own seed
    return train(
        model,
        mask,
        run.train_data,
        run.eval_data,
        run.tokenizer,
        run.config,
        run.metric,
        run.accelerator,
        seed,
        desc,
        on_step,
    )


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
    config = run.config
    if branch == IMP:
        previous = load_tensors(run.paths.level(IMP, level - 1).mask)
        trained = copy.deepcopy(run.model)
        load_weights_into(trained, str(run.paths.level(IMP, level - 1).weights))
        weights = {name: p for name, p in trained.named_parameters() if name in previous}
        mask = magnitude_prune(weights, previous, keep_counts(previous, run.densities[level], config.scope))
        emptied = [name for name, m in mask.items() if not m.any() and previous[name].any()]
        if emptied:
            run.accelerator.print(
                f"warning: level {level} removed every weight of {', '.join(emptied[:3])}"
                f"{' and more' if len(emptied) > 3 else ''}: their magnitudes are far below the rest "
                "(an untrained pooler, say); --scope layer or --exclude keeps them"
            )
        return mask
    ticket = load_tensors(run.paths.level(IMP, level).mask)
    if branch == "reinit":
        return ticket
    # random-prune: the ticket's per-tensor survivor counts, drawn at random inside the previous random mask.
    previous_paths = run.paths.level(branch, level - 1) if level > 1 else run.paths.level(IMP, 0)
    previous = load_tensors(previous_paths.mask)
    counts = {name: int(m.sum()) for name, m in ticket.items()}
    return random_prune(previous, counts, torch.Generator().manual_seed(config.seed * 1000 + level))


def _reinitialise(run: Run, model: PreTrainedModel) -> None:
    """Replace the prunable weights by a fresh random initialisation (same for every level)."""
    with torch.random.fork_rng():
        torch.manual_seed(run.config.seed + 1)
        fresh = AutoModelForSequenceClassification.from_config(model.config)
    fresh_params = dict(fresh.named_parameters())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in run.prunable:
                param.copy_(fresh_params[name])
