"""Knowledge distillation: a training against a teacher's logits as well as the task's labels.

The loss is ``alpha * T^2 * KL(teacher || student)`` over both softmaxes at temperature T, plus
``(1 - alpha) *`` the task loss (Hinton et al. 2015; the T^2 keeps the term's gradients on the task loss's
scale whatever T is). The KL is averaged over the rows a task scores: one per example for sequence
classification, one per labelled token (``labels != -100``) for token classification and the language models.

A teacher hands the loop its logits at those rows, either from a cache computed once per training example
(``CachedTeacher``: a classifier's teacher is fixed for the whole run, so every level and control reads the
same numbers and costs what it costs without a teacher) or by running the teacher on the batch
(``LiveTeacher``: a language model's rows change with every masking draw, and its logits, vocabulary-wide at
every token, are too big to keep).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import Dataset
from transformers import PreTrainedModel

IGNORE = -100  # the label of positions no loss counts (padding, sub-tokens, unmasked tokens)
INDEX = "teacher_index"  # the batch key holding its examples' positions in the training split, for a cached teacher


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, task_loss: torch.Tensor, *, alpha: float, temperature: float
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher || student) + (1 - alpha) * task_loss`` for logits of shape (rows, classes), the
    KL summed over the classes and averaged over the rows, in float32 whatever the autocast precision."""
    t = temperature
    student_log = F.log_softmax(student.float() / t, dim=-1)
    teacher_log = F.log_softmax(teacher.float() / t, dim=-1)
    kl = F.kl_div(student_log, teacher_log, log_target=True, reduction="batchmean")
    return alpha * t * t * kl + (1.0 - alpha) * task_loss


def scored_rows(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The rows of ``logits`` the task scores, in batch order: every row of (batch, classes) logits; the labelled
    positions of (batch, length, classes) ones, example by example."""
    if logits.dim() == 2:
        return logits
    return logits[labels != IGNORE]


@dataclass
class Teacher:
    """What the training loop asks of a teacher: the distillation settings and, for a batch, its logits at the
    rows the task scores."""

    alpha: float
    temperature: float
    indexed = False  # whether a batch must carry its examples' positions in the training split (``INDEX``)

    def to(self, accelerator: Accelerator) -> None:
        """Put what the teacher computes with on ``accelerator``'s device."""

    def rows(self, batch: dict, index: torch.Tensor | None, accelerator: Accelerator) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, task_loss: torch.Tensor, batch: dict, index, accelerator) -> torch.Tensor:
        """The distillation loss of the student's ``logits`` on ``batch``."""
        student = scored_rows(logits, batch.get("labels"))
        teacher = self.rows(batch, index, accelerator).to(student.device)
        return distillation_loss(student, teacher, task_loss, alpha=self.alpha, temperature=self.temperature)


@dataclass
class CachedTeacher(Teacher):
    """Logits computed once per training example: ``logits`` holds every example's scored rows one after the other,
    example ``i``'s at ``offsets[i]:offsets[i + 1]``."""

    logits: torch.Tensor | None = None
    offsets: torch.Tensor | None = None
    indexed = True

    def rows(self, batch: dict, index: torch.Tensor | None, accelerator: Accelerator) -> torch.Tensor:
        bounds = self.offsets.tolist()
        return torch.cat([self.logits[bounds[i] : bounds[i + 1]] for i in index.tolist()])


@dataclass
class LiveTeacher(Teacher):
    """A teacher model run on each batch, in eval mode and without gradients, under the run's autocast."""

    model: PreTrainedModel | None = None

    def to(self, accelerator: Accelerator) -> None:
        self.model.to(accelerator.device).eval()

    @torch.no_grad()
    def rows(self, batch: dict, index: torch.Tensor | None, accelerator: Accelerator) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with accelerator.autocast():
            logits = self.model(**inputs).logits
        return scored_rows(logits, batch.get("labels"))


@torch.no_grad()
def teacher_logits(
    model: PreTrainedModel, examples: Dataset, collator, device: torch.device, batch_size: int
) -> dict[str, torch.Tensor]:
    """``model``'s logits at the scored rows of every example of ``examples`` (tokenised, in order), in eval mode:
    the ``logits`` and ``offsets`` of a ``CachedTeacher``, in float32 on the CPU."""
    model.to(device).eval()
    rows, counts = [], []
    for start in range(0, len(examples), batch_size):
        batch = collator([examples[i] for i in range(start, min(start + batch_size, len(examples)))])
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels", None)
        logits = model(**batch).logits
        rows.append(scored_rows(logits, labels).float().cpu())
        per_example = [1] * logits.shape[0] if logits.dim() == 2 else (labels != IGNORE).sum(dim=1).tolist()
        counts += per_example
    offsets = torch.zeros(len(counts) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(torch.tensor(counts, dtype=torch.long), 0)
    return {"logits": torch.cat(rows), "offsets": offsets}


class Indexed(Dataset):
    """A training split whose items carry their position, so that a batch can name its examples to a cached
    teacher; the order a sampler draws is the split's own, since only the length is read."""

    def __init__(self, examples: Dataset) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        return i, self.examples[i]


def indexed_collator(collator):
    """``collator`` over ``Indexed`` items: the same batch, plus the examples' positions under ``INDEX``."""

    def collate(items: list) -> dict:
        batch = collator([example for _, example in items])
        batch[INDEX] = torch.tensor([i for i, _ in items], dtype=torch.long)
        return batch

    return collate
