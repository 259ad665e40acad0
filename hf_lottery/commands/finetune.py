"""``hf-lottery finetune``: train a downloaded ticket on a task with its mask fixed.

The result is a run directory with one level (``imp/level_0``), so ``export`` and ``push`` ship it like a
pruned run; its card names the ticket it came from as ``base_model``. The rewind point saved with it is the
ticket's own (its winning initialisation), so the exported ticket stays a lottery ticket.

The task kind of the fine-tuning is the data's (``--task sst2`` is sequence classification whatever the
ticket was found on); the task kind decides the head: the ticket's own where it fits the data, else a new,
seeded one on the ticket's body (a masked-LM ticket transferred to SST-2).
"""

from __future__ import annotations

from contextlib import ExitStack

from accelerate.utils import set_seed
from transformers import PreTrainedModel

from hf_lottery.foundations.errors import NotATicketError
from hf_lottery.foundations.storage import save_weights
from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.opening import open_run
from hf_lottery.lottery.paths import IMP
from hf_lottery.lottery.report import write_results
from hf_lottery.lottery.rows import LevelResult
from hf_lottery.lottery.rundir import lock_run_dir, save_level, start_run_dir
from hf_lottery.lottery.teacher import run_teacher
from hf_lottery.pruning.masks import Mask, dense_mask, density, select_prunable
from hf_lottery.tickets.load import load_ticket
from hf_lottery.training.launch import finish_trackers
from hf_lottery.training.loop import train
from hf_lottery.training.model import load_tokenizer
from hf_lottery.training.tasks import kind_of_model


def run_finetune(config: RunConfig) -> list[LevelResult]:
    """Fine-tune (or resume) the ticket; return the run's result row. The run directory stays locked from its
    first write to the results, errors included."""
    with ExitStack() as held:
        return _finetune(config, held)


def _finetune(config: RunConfig, held: ExitStack) -> list[LevelResult]:
    opened = open_run(config)
    config, accelerator, kind, paths, data = opened.config, opened.accelerator, opened.kind, opened.paths, opened.data
    name, revision, seed = config.model.model_name_or_path, config.model.revision, config.train.seed
    base: dict = {}
    if config.finetune.no_mask:
        set_seed(seed)  # the new head of a plain model
        model = kind.load_model(name, revision=revision, data=data, model_config=opened.model_config,
                                log=accelerator.print)  # fmt: skip
        rewind, mask = model, dense_mask(model, select_prunable(model))
    else:
        rewind, mask = _load_ticket(name, "rewind", revision)
        source = kind_of_model(rewind)
        if source != kind.name:  # another kind than the ticket's (a .txt corpus is language modelling): say so first
            accelerator.print(f"note: transfer: this {source} ticket trains as {kind.name}, under a new head")
        from_init = config.finetune.from_init
        if from_init is None:  # Chen et al.'s transfer: a masked-LM ticket is its mask on the pretrained weights
            from_init = source == "masked-lm" and kind.name != source
        base = {"task_kind": source, "from_init": from_init}
        rewind = kind.transfer(rewind, data, seed)
        model = rewind if from_init else kind.transfer(_load_ticket(name, "trained", revision)[0], data, seed)
        mask = _body_mask(mask, model, accelerator.print)
        accelerator.print(
            f"ticket: a {source} ticket, {1 - density(mask):.1%} sparse; training its "
            f"{'rewind-point' if from_init else 'trained'} weights as {kind.name} with the mask fixed"
        )
    tokenizer = load_tokenizer(name, model, revision)
    prepared = kind.prepare(data, tokenizer, config.data, accelerator)
    teacher = run_teacher(config.train, kind, data, prepared, paths.root, accelerator, model=model,
                          tokenizer=tokenizer, level_0=None, untrained_level_0=False)  # fmt: skip
    held.enter_context(lock_run_dir(paths, config, accelerator))
    start_run_dir(paths, config, model, tokenizer, accelerator, base)
    accelerator.init_trackers("hf-lottery", config={k: str(v) for k, v in config.flat().items()})
    level = paths.level(IMP, 0)
    if not level.is_done():
        if accelerator.is_main_process:
            save_weights(paths.rewind_point, rewind)
        desc = f"finetune ({1 - density(mask):.1%} sparse)"
        metrics = train(
            model, mask, prepared, config.train, accelerator, seed=seed, desc=desc, tag=level.name,
            checkpoint=level.checkpoint, teacher=None if teacher is None else teacher.for_level(0),
        )  # fmt: skip
        metrics |= prepared.evaluate_test(model, accelerator, config.train.eval_batch_size)
        save_level(accelerator, level, model, mask, metrics, prepared.metric)
    finish_trackers(accelerator)
    rows = write_results(paths, prepared.metric.name) if accelerator.is_main_process else []
    accelerator.wait_for_everyone()
    return rows


def _load_ticket(name: str, weights: str, revision: str | None) -> tuple[PreTrainedModel, Mask]:
    try:
        return load_ticket(name, weights=weights, revision=revision)
    except NotATicketError as err:
        raise NotATicketError(f"{err} (--no-mask fine-tunes it as a plain, dense model)") from None


def _body_mask(mask: Mask, model: PreTrainedModel, log) -> Mask:
    """The ticket's mask on the parameters the new model has: a head that was pruned and replaced drops out."""
    params = dict(model.named_parameters())
    kept = {k: v for k, v in mask.items() if k in params and params[k].shape == v.shape}
    if len(kept) < len(mask):
        log(f"note: {len(mask) - len(kept)} masked tensor(s) of the ticket's head are not in the new model")
    return kept
