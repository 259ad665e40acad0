"""The teacher of a run's trainings (``--distill``): which model it is, checked before anything is written, and
its logits cached in the run directory when the task kind allows.

- ``--teacher NAME``: that model, which must be a trained model of the run's task kind with the run's tokenizer
  and label count; it teaches every training, level 0 included.
- Otherwise, for the kinds with a new head (sequence and token classification): the run's trained dense level 0,
  which teaches every training after it.
- Otherwise, for the language-model kinds: the pretrained model, which teaches every training after level 0.

A classifier's teacher logits are computed once per training example, by the main process, and kept in
``teacher_logits.safetensors`` (written atomically): every level, control and method of the run, resumed or
extended, reads the same numbers. A language model's teacher runs beside the student on each batch.
"""

from __future__ import annotations

import copy
from pathlib import Path

from accelerate import Accelerator
from transformers import PreTrainedModel

from hf_lottery.foundations.arguments import TrainArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import load_tensors, load_weights, save_tensors
from hf_lottery.training.distill import CachedTeacher, LiveTeacher, Teacher, teacher_logits
from hf_lottery.training.model import load_model_config, load_tokenizer
from hf_lottery.training.tasks import PreparedData, TaskData, TaskKind

TEACHER_LOGITS = "teacher_logits.safetensors"  # in the run directory (each replicate's own)


class RunTeacher:
    """The teacher of one run directory's trainings, built when a training first needs it."""

    def __init__(
        self,
        args: TrainArguments,
        kind: TaskKind,
        data: PreparedData,
        root: Path,
        accelerator: Accelerator,
        *,
        external: PreTrainedModel | None,
        pretrained: PreTrainedModel | None,
        level_0: tuple[PreTrainedModel, Path] | None,
    ) -> None:
        self.args, self.kind, self.data, self.accelerator = args, kind, data, accelerator
        self.path = root / TEACHER_LOGITS
        self.external, self.pretrained, self.level_0 = external, pretrained, level_0
        self._teacher: Teacher | None = None

    def for_level(self, level: int) -> Teacher | None:
        """The teacher of a training of ``level`` (0: the dense model), None where it has none."""
        if level == 0 and self.external is None:
            return None  # level 0 is, or starts from, the teacher itself
        if self._teacher is None:
            self._teacher = self._live() if self.kind.language_model else self._cached()
        return self._teacher

    def _live(self) -> Teacher:
        model = self.external if self.external is not None else self.pretrained
        return LiveTeacher(self.args.distill_alpha, self.args.distill_temperature, model=model)

    def _cached(self) -> Teacher:
        accelerator = self.accelerator
        if accelerator.is_main_process and not self.path.is_file():
            model = self.external
            if model is None:
                template, weights = self.level_0
                model = copy.deepcopy(template)
                load_weights(model, weights)
            batch_size = self.args.eval_batch_size
            tensors = teacher_logits(model, self.data.train, self.data.eval_collator, accelerator.device, batch_size)
            save_tensors(self.path, tensors)
            del model
        accelerator.wait_for_everyone()
        tensors = load_tensors(self.path)
        if len(tensors["offsets"]) != len(self.data.train) + 1:
            raise LotteryError(
                f"{self.path} holds teacher logits of {len(tensors['offsets']) - 1} training examples, the data has "
                f"{len(self.data.train)}: remove it to compute them again"
            )
        return CachedTeacher(
            self.args.distill_alpha, self.args.distill_temperature, logits=tensors["logits"], offsets=tensors["offsets"]
        )


def run_teacher(
    args: TrainArguments,
    kind: TaskKind,
    task_data: TaskData,
    data: PreparedData,
    root: Path,
    accelerator: Accelerator,
    *,
    model: PreTrainedModel,
    tokenizer,
    level_0: Path | None,
    untrained_level_0: bool,
) -> RunTeacher | None:
    """The teacher of a run with ``--distill`` (None without), refused in one line before anything is written when
    it cannot teach: ``model`` is the run's model as loaded (pretrained), ``level_0`` the weights file its trained
    dense level 0 will have (None where the command trains none: ``finetune``), ``untrained_level_0`` whether that
    level is scored untrained under a new head."""
    if not args.distill:
        return None
    external = None
    if args.teacher is not None:
        external = load_teacher(args.teacher, kind, task_data, tokenizer)
    elif level_0 is None:
        raise LotteryError(
            f"--distill: finetune trains no dense model to teach it; name a trained {kind.head_name} model with "
            "--teacher"
        )
    elif not kind.language_model and untrained_level_0:
        raise LotteryError(
            f"--distill: --train-dense false leaves level 0 untrained under a new {kind.head_name}, so it cannot "
            "teach; name a trained model with --teacher"
        )
    pretrained = copy.deepcopy(model) if kind.language_model and external is None else None
    return RunTeacher(
        args, kind, data, root, accelerator, external=external, pretrained=pretrained,
        level_0=None if level_0 is None else (model, level_0),
    )  # fmt: skip


def load_teacher(name: str, kind: TaskKind, task_data: TaskData, tokenizer) -> PreTrainedModel:
    """The ``--teacher`` model, refused in one line unless it is a trained model of ``kind`` with the run's label
    count and tokenizer: its logits must mean what the student's mean, row for row."""
    config = load_model_config(name, None)
    trained = kind.mapping_names.get(config.model_type)
    if trained is None or trained not in (config.architectures or []):
        raise LotteryError(f"--teacher {name!r} is not a trained {kind.head_name} model ({trained or 'none'} needed)")
    if task_data.num_labels is not None and config.num_labels != task_data.num_labels:
        raise LotteryError(
            f"--teacher {name!r} has {config.num_labels} labels, the data has {task_data.num_labels}: its logits "
            "would not be the student's"
        )
    teacher = kind.auto_model.from_pretrained(name)
    if load_tokenizer(name, teacher).get_vocab() != tokenizer.get_vocab():
        raise LotteryError(f"--teacher {name!r} has another vocabulary than the model's tokenizer")
    return teacher
