"""What a task kind is: the one place that knows a head class, a data format, a metric, a card's task and its
fine-tuning example.

The IMP driver, the trainer, export, ``load_ticket`` and ``finetune`` talk to a ``TaskKind`` only; none of
them names a head class. A new task kind is one module with a subclass of ``TaskKind`` plus one line in
``hf_lottery.training.tasks.TASK_KINDS``. A subclass sets the class attributes and implements:

- ``claims(data)``: whether the data flags point at this kind (``--task``, a file suffix, ...), so that
  ``--task-kind`` can be left out;
- ``load_data(data)``: the raw splits, checked, with every problem one ``LotteryError`` line;
- ``prepare(data, tokenizer, args, accelerator)``: tokenised splits, collators and the evaluation;
- optionally ``load_model`` (checks on the checkpoint's own head) and ``transfer`` (the model of this kind
  built from a ticket of any kind, for ``finetune``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import PretrainedConfig, PreTrainedModel

from hf_lottery.foundations.arguments import DataArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.registry import Plugin


@dataclass(frozen=True)
class Metric:
    """The metric levels are compared by, and which way is better."""

    name: str
    greater_is_better: bool = True

    def better(self, a: float, b: float) -> bool:
        return a > b if self.greater_is_better else a < b


# Prefix of a level's scores on the test split (``test_accuracy``): its other keys are validation scores.
TEST_PREFIX = "test_"


@dataclass
class TaskData:
    """A task's raw splits before tokenisation (their type is the task kind's own), and how it is scored.

    ``test`` is the held-out split (``--test-file``/``--test-split``), None without one: a task kind reads and
    checks it exactly as it does the validation split, against the training split's columns and labels.
    """

    train: Any
    validation: Any
    metric: Metric
    source: str  # for people: "GLUE sst2", "train.tsv", "Salesforce/wikitext (wikitext-2-raw-v1)"
    num_labels: int | None = None  # None for language modelling
    label_names: list[str] | None = field(default=None)  # id -> name, when the labels are names
    test: Any = None


Evaluate = Callable[[torch.nn.Module, DataLoader, Accelerator], dict[str, float]]


@dataclass
class PreparedData:
    """Everything the training loop needs from a task: tokenised splits, collators and the evaluation.

    ``train_collator(seed)`` builds the training collator of one level: a collator that draws random
    numbers (masked-LM masking) takes them from its own generator seeded here, so a level is reproducible.
    ``evaluate`` returns a dict that holds ``metric.name``; it gathers across processes itself. ``test`` is
    tokenised as ``validation`` is, and scored by ``evaluate_test`` only.
    """

    train: Dataset
    validation: Dataset
    train_collator: Callable[[int], Callable]
    eval_collator: Callable
    metric: Metric
    evaluate: Evaluate
    test: Dataset | None = None

    def evaluate_test(self, model: torch.nn.Module, accelerator: Accelerator, batch_size: int) -> dict[str, float]:
        """The trained model's scores on the test split, keys prefixed ``test_``; nothing without a test split.

        Scored once a level is trained, never during training nor when a level is chosen, so the scores are
        an estimate that choosing the best level on validation has not flattered. The model is the one
        training left on the accelerator's device, scored under its mixed precision like the validation split.
        """
        if self.test is None:
            return {}
        loader = DataLoader(self.test, batch_size=batch_size, collate_fn=self.eval_collator)
        with accelerator.autocast():
            metrics = self.evaluate(model, accelerator.prepare_data_loader(loader), accelerator)
        accelerator.free_memory()  # the prepared loader
        return {TEST_PREFIX + name: value for name, value in metrics.items()}


class TaskKind(Plugin):
    name: ClassVar[str]  # the registry key and the value of --task-kind
    auto_model: ClassVar[type]  # the transformers Auto class of the head, e.g. AutoModelForMaskedLM
    mapping_names: ClassVar[dict[str, str]]  # model_type -> class name of that Auto class
    head_name: ClassVar[str]  # for messages: "sequence-classification head"
    pipeline_tag: ClassVar[str]  # the card's pipeline tag and model-index task type
    # The card's example of fine-tuning a ticket of this kind: data that fits it, in words and as finetune's flags.
    finetune_data: ClassVar[str]  # "a GLUE task"
    finetune_flags: ClassVar[str]  # "--task rte"
    language_model: ClassVar[bool] = False  # trains on plain text; the default corpus applies

    def claims(self, data: DataArguments) -> bool:
        raise NotImplementedError

    def fits(self, model_config: PretrainedConfig) -> bool:
        """Whether transformers has this kind's head for the model's architecture."""
        return model_config.model_type in self.mapping_names

    def prefers(self, model_config: PretrainedConfig) -> bool:
        """Among the kinds the data allows, whether this is the model's natural one (an encoder's masked-LM)."""
        return True

    def check_fits(self, model_config: PretrainedConfig, name: str) -> None:
        if not self.fits(model_config):
            raise LotteryError(
                f"model {name!r} is a {model_config.model_type!r} model, which has no {self.head_name} "
                f"in transformers ({self.auto_model.__name__}); --task-kind {self.name} does not fit it"
            )

    def new_head(self, model_config: PretrainedConfig) -> bool:
        """Whether this kind's head is new to the checkpoint (drawn at random, so the model scores chance until
        trained): the checkpoint is not of this kind's model class."""
        return self.mapping_names.get(model_config.model_type) not in (model_config.architectures or [])

    def load_data(self, data: DataArguments) -> TaskData:
        raise NotImplementedError

    def describe_data(self, data: DataArguments) -> str:
        """The data a run will use, for its first lines (before anything is downloaded)."""
        if data.train_file is not None:
            glue = f"GLUE {data.task}'s labels and metric on " if data.task else ""
            return f"{glue}{data.train_file} and {data.validation_file}"
        if data.task is not None:
            return f"GLUE {data.task}"
        if data.dataset_name is not None:
            return data.dataset_name + (f" ({data.dataset_config})" if data.dataset_config else "")
        raise LotteryError(f"task kind {self.name} needs data: give --train-file/--validation-file or --dataset-name")

    def dataset_ref(self, data: DataArguments) -> tuple[str | None, str | None]:
        """The Hub id and configuration of the data, for the card's metadata; None for local files."""
        return data.dataset_name, data.dataset_config

    def load_model(
        self, name: str, *, revision: str | None, data: TaskData, model_config: PretrainedConfig, log: Callable
    ) -> PreTrainedModel:
        """The pretrained body with this kind's head (the checkpoint's own where it has one)."""
        return self.auto_model.from_pretrained(name, revision=revision)

    def prepare(self, data: TaskData, tokenizer, args: DataArguments, accelerator: Accelerator) -> PreparedData:
        raise NotImplementedError

    def head_config(self, config: PretrainedConfig, data: TaskData) -> PretrainedConfig:
        """The model config of this kind's head for ``data`` (labels, for the classifiers)."""
        return config

    def transfer(self, model: PreTrainedModel, data: TaskData, seed: int) -> PreTrainedModel:
        """A model of this kind carrying ``model``'s body, for ``finetune``: the model itself when its head
        fits ``data``, else the body under a new head drawn from ``seed`` (the same seed gives the same head,
        so the trained and the rewind-point weights of a ticket get the same one).
        """
        if self.keeps_head(model, data):
            return model
        set_seed(seed)
        fresh = self.auto_model.from_config(self.head_config(copy.deepcopy(model.config), data))
        body = {name for name, _ in model.base_model.named_parameters(prefix=model.base_model_prefix)}
        params = {name for name, _ in model.named_parameters()}
        fresh.load_state_dict(
            {k: v for k, v in model.state_dict().items() if k in body or k not in params}, strict=False
        )
        return fresh

    def keeps_head(self, model: PreTrainedModel, data: TaskData) -> bool:
        """Whether ``model`` already is this kind's model with the head ``data`` needs."""
        return type(model).__name__ == self.mapping_names.get(model.config.model_type)


class ClassifierKind(TaskKind):
    """A task kind whose head scores labels: one output per label, named in the model config's ``id2label``."""

    labels_noun: ClassVar[str] = "labels"  # for messages: "tags" for token classification

    def load_model(
        self, name: str, *, revision: str | None, data: TaskData, model_config: PretrainedConfig, log: Callable
    ) -> PreTrainedModel:
        """The pretrained body with a head for the data's labels (a new one unless the checkpoint has this kind's)."""
        trained_head = self.mapping_names.get(model_config.model_type) in (model_config.architectures or [])
        if trained_head and model_config.num_labels != data.num_labels:
            raise LotteryError(
                f"model {name!r} already has a {self.head_name} for {model_config.num_labels} labels, "
                f"but the data has {data.num_labels} {self.labels_noun}; start from the base model instead"
            )
        config = self.head_config(copy.deepcopy(model_config), data)
        kwargs = {"num_labels": config.num_labels}
        if data.label_names:
            kwargs |= {"id2label": config.id2label, "label2id": config.label2id}
        return self.auto_model.from_pretrained(name, revision=revision, **kwargs)

    def head_config(self, config: PretrainedConfig, data: TaskData) -> PretrainedConfig:
        labels = data.label_names or [str(i) for i in range(data.num_labels)]
        config.num_labels = data.num_labels
        config.id2label, config.label2id = dict(enumerate(labels)), {n: i for i, n in enumerate(labels)}
        return config
