"""The task kinds hf-lottery knows, by name: the only table that maps a task to its model class.

Adding a task kind is one module (a ``TaskKind`` subclass, see ``base.py``) and one line here; the line of a task
kind with options names them too, kept in this package's ``arguments.py``, which imports no torch, so that
``--help`` lists them without importing the plug-in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hf_lottery.foundations.arguments import DataArguments, ModelArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.registry import Registry, lazy_exports

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

    from .base import TEST_PREFIX, Metric, PreparedData, TaskData, TaskKind

TASK_KINDS: Registry[TaskKind] = Registry(
    "task kind",
    "task kind",
    {
        "sequence-classification": "hf_lottery.training.tasks.sequence_classification:SequenceClassification",
        "token-classification": "hf_lottery.training.tasks.token_classification:TokenClassification",
        "masked-lm": (
            "hf_lottery.training.tasks.masked_lm:MaskedLM",
            "hf_lottery.training.tasks.arguments:MaskedLMArguments",
        ),
        "causal-lm": "hf_lottery.training.tasks.causal_lm:CausalLM",
    },
)


def get_task_kind(name: str, plugins: Mapping[str, Any] | None = None) -> TaskKind:
    """The task kind ``name`` with its own options from ``plugins`` (each plug-in's options by its name; None: the
    defaults, for what only reads a finished run)."""
    return TASK_KINDS.choose(name)((plugins or {}).get(name))


def kind_of_model(model: PreTrainedModel) -> str:
    """The task kind whose head ``model`` carries (what a downloaded ticket was found for)."""
    for name, kind in TASK_KINDS.items():
        if kind.mapping_names.get(model.config.model_type) == type(model).__name__:
            return name
    raise LotteryError(f"{type(model).__name__} is a model of no task kind hf-lottery knows")


def resolve_task_kind(
    model: ModelArguments,
    data: DataArguments,
    model_config: PretrainedConfig,
    plugins: Mapping[str, Any] | None = None,
) -> TaskKind:
    """The task kind of a run: ``--task-kind`` if given, else the kind the data points at, else the model's
    own language-modelling objective (masked-LM for encoders, causal-LM for decoders). ``plugins``: each plug-in's
    options by its name (None: the defaults).
    """
    name = model.model_name_or_path
    if model.task_kind is not None:
        kind = get_task_kind(model.task_kind, plugins)
        kind.check_fits(model_config, name)
        return kind
    kinds = [get_task_kind(name, plugins) for name in TASK_KINDS]
    claimed = [k for k in kinds if k.claims(data)]
    if not claimed and data.has_source:
        raise LotteryError("cannot tell the task kind from the data; set --task-kind")
    candidates = claimed or [k for k in kinds if k.language_model]
    fitting = [k for k in candidates if k.fits(model_config)]
    if not fitting:
        if not claimed:
            raise LotteryError(
                f"model {name!r} is a {model_config.model_type!r} model with no masked-LM or causal-LM head in "
                "transformers, so it has no default task: give --task or --train-file/--validation-file"
            )
        candidates[0].check_fits(model_config, name)
    return next((k for k in fitting if k.prefers(model_config)), fitting[0])


__getattr__ = lazy_exports(__name__, ".base", ["TEST_PREFIX", "Metric", "PreparedData", "TaskData", "TaskKind"])

__all__ = [
    "TASK_KINDS",
    "TEST_PREFIX",
    "Metric",
    "PreparedData",
    "TaskData",
    "TaskKind",
    "get_task_kind",
    "kind_of_model",
    "resolve_task_kind",
]
