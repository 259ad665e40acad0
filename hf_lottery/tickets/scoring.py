"""Scoring what an export writes (a trimmed model, its ONNX files) on the run's own validation and test data.

Export is where a ticket changes form, so it is where the changed form is scored: the run's scores belong to the
model it trained, not to one with fewer token ids or 8-bit weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from hf_lottery.lottery.config import RunConfig
from hf_lottery.training.tasks import PreparedData, get_task_kind

BATCH_SIZE = 32


@dataclass
class RunData:
    """The run's splits, tokenised by one tokenizer, and the run's own evaluation."""

    prepared: PreparedData
    accelerator: Accelerator

    def loader(self, split: str) -> DataLoader:
        dataset = getattr(self.prepared, split)
        return DataLoader(dataset, batch_size=BATCH_SIZE, collate_fn=self.prepared.eval_collator)

    @property
    def splits(self) -> list[str]:
        return ["validation"] + (["test"] if self.prepared.test is not None else [])

    def score(self, model: torch.nn.Module) -> dict[str, float]:
        """The run's metric of ``model`` on each split (``validation``, ``test`` where the run has one)."""
        name = self.prepared.metric.name
        return {
            split: self.prepared.evaluate(model, self.loader(split), self.accelerator)[name] for split in self.splits
        }


def run_data(config: RunConfig, tokenizer, with_train: bool = False) -> RunData:
    """The run's data tokenised by ``tokenizer``; without ``with_train`` its training split is not read (the
    validation split stands in for it, as tokenising the training split is what costs)."""
    kind = get_task_kind(config.model.task_kind, config.plugins)
    data = kind.load_data(config.data)
    if not with_train:
        data = dataclasses.replace(data, train=data.validation)
    accelerator = Accelerator()  # on the model's device (CPU): batches are not moved, scores not gathered
    return RunData(kind.prepare(data, tokenizer, config.data, accelerator), accelerator)
