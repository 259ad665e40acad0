"""``hf-lottery finetune``: train a downloaded ticket on a task with its mask fixed.

The result is a run directory with one level (``imp/level_0``), so ``export`` and ``push`` ship it like a
pruned run; its card names the ticket it came from as ``base_model``. The rewind point saved with it is the
ticket's own (its winning initialisation), so the exported ticket stays a lottery ticket.
"""

from __future__ import annotations

from accelerate.utils import set_seed
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from .config import FinetuneConfig
from .data import TaskData, load_task_data
from .errors import LotteryError
from .hub import load_ticket
from .masks import dense_mask, density, select_prunable
from .model import load_model, load_tokenizer
from .paths import IMP
from .report import write_results
from .runs import make_accelerator, open_run_dir, save_level, start_run_dir, tokenize_splits
from .storage import save_weights
from .training import train


def fit_head(model: PreTrainedModel, data: TaskData, seed: int) -> PreTrainedModel:
    """The model with a new classification head when the task's labels differ from the ticket's.

    The head is drawn from ``seed``, so the trained and the rewind-point weights get the same one.
    """
    labels = data.label_names or [str(i) for i in range(data.num_labels)]
    if model.config.num_labels == data.num_labels and not data.label_names:
        return model
    set_seed(seed)
    config = model.config
    config.num_labels = data.num_labels
    config.id2label, config.label2id = dict(enumerate(labels)), {n: i for i, n in enumerate(labels)}
    fresh = AutoModelForSequenceClassification.from_config(config)
    body = {name for name, _ in model.base_model.named_parameters(prefix=model.base_model_prefix)}
    kept = {k: v for k, v in model.state_dict().items() if k in body or k not in dict(model.named_parameters())}
    fresh.load_state_dict(kept, strict=False)  # the head keeps its fresh initialisation
    return fresh


def run_finetune(config: FinetuneConfig) -> list[dict]:
    accelerator = make_accelerator(config)
    paths = open_run_dir(config)
    data = load_task_data(config)
    name, revision = config.model_name_or_path, config.revision
    set_seed(config.seed)  # the new head of a plain model
    if config.no_mask:
        model = load_model(name, data.num_labels, data.label_names, revision)
        rewind = model
        mask = dense_mask(model, select_prunable(model))
    else:
        rewind, mask = _load_ticket(name, "rewind", revision, data, config.seed)
        model = rewind if config.from_init else _load_ticket(name, "trained", revision, data, config.seed)[0]
    tokenizer = load_tokenizer(name, model, revision)
    train_data, eval_data = tokenize_splits(data, tokenizer, config, accelerator)
    start_run_dir(paths, config, model, tokenizer, accelerator)
    level = paths.level(IMP, 0)
    if not level.is_done():
        if accelerator.is_main_process:
            save_weights(paths.rewind_point, rewind)
        before = density(mask)
        metrics = train(model, mask, train_data, eval_data, tokenizer, config, data.metric, accelerator,
                        config.seed, f"finetune ({1 - before:.1%} sparse)")  # fmt: skip
        save_level(accelerator, level, model, mask, metrics, data.metric)
    rows = write_results(paths, [IMP], 0, data.metric) if accelerator.is_main_process else []
    accelerator.wait_for_everyone()
    return rows


def _load_ticket(
    name: str, weights: str, revision: str | None, data: TaskData, seed: int
) -> tuple[PreTrainedModel, dict]:
    try:
        model, mask = load_ticket(name, weights=weights, revision=revision)
    except LotteryError as err:
        if "is not an hf-lottery ticket" in str(err):
            raise LotteryError(f"{err} (--no-mask fine-tunes it as a plain, dense model)") from None
        raise
    return fit_head(model, data, seed), mask
