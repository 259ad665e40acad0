"""IMP from Python, with your own training function: the same levels, controls, run directory and resuming as
``hf-lottery prune``, so ``export``, ``push`` and ``load_ticket`` work on the result.

    from hf_lottery import find_ticket

    def train_fn(model, mask, level):          # train `model` in place; return its validation metric
        ...                                    # any loop: Trainer (with MaskedTrainingCallback), accelerate, plain
        return accuracy

    rows = find_ticket(model, train_fn, run_config={"lr": 2e-5, "data": "sst2-v3"}, output_dir="runs/mine",
                       target_sparsity=0.7, control=["random-prune"], tokenizer=tokenizer)

A Python function cannot be hashed, so ``run_config`` stands for it: a JSON mapping of whatever decides what
``train_fn`` computes. It is saved in the run's ``config.json`` and compared like the CLI's config when the
run resumes: the same directory with another ``run_config`` is refused.

While ``train_fn`` runs, gradient hooks zero the gradients of pruned weights (before clipping, on every
micro-batch, before DDP's reduction), and afterwards every pruned weight must still be exactly zero: an
optimizer carried over from a dense run (momentum) or weight decay of an unmasked copy would revive them,
and a level trained on a different network than its mask says is refused rather than recorded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import PreTrainedModel

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.lottery.config import RunConfig, sections
from hf_lottery.lottery.imp import describe_schedule
from hf_lottery.lottery.methods import asked_methods
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.rows import LevelResult
from hf_lottery.lottery.run import Run, run_units
from hf_lottery.lottery.rundir import FACT_KEYS, check_run_dir, start_run_dir
from hf_lottery.lottery.runner import train_and_report
from hf_lottery.pruning.masks import Mask, MaskEnforcer, apply_mask, select_prunable
from hf_lottery.pruning.units import UNIT_TYPES
from hf_lottery.training.tasks import Metric, kind_of_model

TrainFn = Callable[[PreTrainedModel, Mask, int], "float | Mapping[str, float]"]


def find_ticket(
    model: PreTrainedModel,
    train_fn: TrainFn,
    *,
    run_config: Mapping[str, Any],
    output_dir: str | Path,
    metric: str = "score",
    greater_is_better: bool = True,
    tokenizer=None,
    accelerator: Accelerator | None = None,
    seed: int = 42,
    **prune: Any,
) -> list[LevelResult]:
    """Run (or resume) IMP with rewinding on ``model``, training each level with ``train_fn(model, mask, level)``.

    ``train_fn`` trains the model it is given in place, with ``mask`` fixed, and returns the validation
    ``metric`` (a number, or a mapping that holds ``metric`` and any other scores). ``prune`` takes the
    pruning options of ``hf-lottery prune`` by their Python names (``target_sparsity``, ``levels``,
    ``prune_fraction``, ``scope``, ``include``, ``exclude``, ``control``, ``one_shot``). The rewind point is
    ``model`` as given (``rewind_to="pretrained"``). Returns one result row per level, dense first.
    """
    try:
        json.dumps(dict(run_config))
    except (TypeError, ValueError) as err:
        raise LotteryError(f"run_config must be a JSON mapping (numbers, strings, lists): {err}") from None
    options = {f.name for name, part in sections("api").items() if name not in ("model", "train") for f in fields(part)}
    unknown = sorted(set(prune) - options)
    if unknown:
        raise TypeError(f"find_ticket() got unexpected pruning option(s): {', '.join(unknown)}")
    if metric in FACT_KEYS:
        raise LotteryError(f"metric={metric!r} names a fact every level records; call the metric otherwise")
    name = getattr(model, "name_or_path", None) or type(model).__name__
    config = RunConfig.build("api", model_name_or_path=name, seed=seed, output_dir=str(output_dir), **prune)
    prune_args = config.prune
    methods = asked_methods(config.plugins)
    stopping = [m for m in methods if m.stops_levels]
    if stopping:
        option = fields(stopping[0].arguments)[0].name
        raise LotteryError(f"{option} stops levels mid-training, which train_fn cannot do: use `hf-lottery prune`")
    untrained = [m for m in methods if m.scores_untrained]
    if untrained or not prune_args.train_dense:
        option = fields(untrained[0].arguments)[0].name if untrained else "train_dense"
        raise LotteryError(
            f"{option} scores a model without training it, which train_fn cannot do: use `hf-lottery prune`"
        )
    if config.strategy().calibrated:
        raise LotteryError(
            f"--strategy {prune_args.strategy} scores from calibration data, which train_fn keeps to itself: use "
            "`hf-lottery prune`"
        )
    if UNIT_TYPES[prune_args.unit].skips_removed:
        raise LotteryError(
            f"--unit {prune_args.unit} skips the removed units while training, which train_fn cannot know: use "
            "`hf-lottery prune`"
        )
    if prune_args.replicates > 1:
        raise LotteryError(
            "find_ticket runs one replicate: its model is one initialisation and train_fn's seeds are yours; "
            "call it once per seed with another output_dir, or use `hf-lottery prune --replicates`"
        )
    if prune_args.target_sparsity is None and prune_args.levels is None:  # levels 0 when only methods are asked
        raise LotteryError("give target_sparsity (e.g. 0.7), levels or one_shot")
    if prune_args.rewind_step is not None:
        raise LotteryError("find_ticket rewinds to the model it is given; rewind_to='step:K' needs hf-lottery's loop")
    model_args = dataclasses.replace(config.model, task_kind=_kind(model))
    config = dataclasses.replace(config, model=model_args, run_config=dict(run_config))
    accelerator = accelerator or Accelerator(cpu=not torch.accelerator.is_available())
    paths = RunPaths(Path(output_dir))
    check_run_dir(paths, config)
    densities = prune_args.level_densities()
    accelerator.print(f"schedule: {describe_schedule(densities, prune_args)}")
    prunable = select_prunable(model, prune_args.include, prune_args.exclude)
    units = run_units(model, prunable, prune_args, densities)
    set_seed(seed)
    start_run_dir(paths, config, model, tokenizer, accelerator)
    target = Metric(metric, greater_is_better)

    def train_level(
        trained: PreTrainedModel, mask: Mask, *, level: int, desc: str, tag: str, on_step=None, checkpoint=None
    ) -> dict:  # the user's function keeps no checkpoints inside a level
        accelerator.print(desc)
        set_seed(seed + level, device_specific=True)
        if on_step is not None:
            on_step(0, trained)  # the rewind point: the weights before any training
        apply_mask(trained, mask)
        enforcer = MaskEnforcer(trained, mask)
        enforcer.hook_gradients()
        try:
            result = train_fn(trained, mask, level)
        finally:
            enforcer.unhook()
        revived = enforcer.revived()
        if revived:
            name, count = next(iter(revived.items()))
            raise LotteryError(
                f"{desc}: train_fn revived {sum(revived.values())} pruned weights ({count} of {name}); keep them at "
                "zero (a fresh optimizer per level, or MaskedTrainingCallback with a Trainer)"
            )
        scores = dict(result) if isinstance(result, Mapping) else {metric: result}
        if metric not in scores:
            raise LotteryError(f"train_fn returned {sorted(scores)}, without the metric {metric!r}")
        return {k: float(v) for k, v in scores.items()}

    run = Run(
        config=config, paths=paths, accelerator=accelerator, model=model, prunable=prunable, densities=densities,
        units=units, metric=target, train_level=train_level,
    )  # fmt: skip
    return train_and_report(run)


def _kind(model: PreTrainedModel) -> str | None:
    """The task kind of the model's head, so that export and load_ticket can rebuild it (None: not exportable)."""
    try:
        return kind_of_model(model)
    except LotteryError:
        return None
