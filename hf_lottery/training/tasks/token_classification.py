"""Token classification (NER, POS tagging): one tag per word of a sentence.

Data: local CoNLL-U (``.conllu``: UPOS tags, or XPOS with ``--label-column xpos``) or CoNLL (``.conll``:
token first, tag last) files, or a Hub data set (``--dataset-name`` with ``--task-kind
token-classification``) with a tokens column and a tag column. Tag ids index the sorted tag set of the
training split, saved as the model's ``id2label``.

Words are split into sub-tokens by the model's (fast) tokenizer; a word's tag goes to its first sub-token
and the others are ignored (-100), as in transformers' ``run_ner``. A BIO tag set is scored by entity-level
micro F1 with conlleval's rules, any other tag set (POS) by token accuracy; both are computed in this
package, so nothing is downloaded to score a level.

This module is the task kind itself: its model head, tokenisation and evaluation wiring. The readers and
checks of raw data are in ``token_readers.py``, the scores in ``token_metrics.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES

from hf_lottery.foundations.arguments import DataArguments
from hf_lottery.foundations.errors import LotteryError

from .base import ClassifierKind, PreparedData, TaskData
from .token_metrics import tag_metric, tag_metrics
from .token_readers import SUFFIXES, TaggedCorpus, TaggedSplit, read_files, read_hub

IGNORE = -100  # the label of sub-tokens and special tokens: no loss, not scored


class TokenClassification(ClassifierKind):
    name = "token-classification"
    auto_model = AutoModelForTokenClassification
    mapping_names = MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES
    head_name = "token-classification head"
    pipeline_tag = "token-classification"
    finetune_data = "your own tagged sentences (CoNLL-U or CoNLL files)"
    finetune_flags = "--train-file train.conllu --validation-file dev.conllu"
    labels_noun = "tags"

    def claims(self, data: DataArguments) -> bool:
        """Only CoNLL files say "tags" by themselves; a Hub data set needs ``--task-kind token-classification``."""
        return data.train_file is not None and Path(data.train_file).suffix.lower() in SUFFIXES

    def load_data(self, data: DataArguments) -> TaskData:
        """Read and check the splits (tag names become ids there), and decide the metric by the tag set."""
        if data.train_file is not None:
            return _task_data(read_files(data))
        if data.dataset_name is not None:
            return _task_data(read_hub(data))
        raise LotteryError(
            f"task kind {self.name} needs tagged data: give --train-file/--validation-file (.conll or .conllu) "
            "or --dataset-name"
        )

    def keeps_head(self, model: PreTrainedModel, data: TaskData) -> bool:
        """A token classifier keeps its head only for the same tags in the same order (ids mean names)."""
        config = model.config
        names = [config.id2label.get(i) for i in range(config.num_labels)]
        return super().keeps_head(model, data) and names == data.label_names

    def prepare(self, data: TaskData, tokenizer, args: DataArguments, accelerator: Accelerator) -> PreparedData:
        if not getattr(tokenizer, "is_fast", False):
            raise LotteryError(
                f"token classification needs a fast tokenizer (it maps sub-tokens to words with word_ids()); "
                f"{type(tokenizer).__name__} is a slow one"
            )
        with accelerator.main_process_first():
            train, validation, test = (
                tokenize_and_align(split, tokenizer, args.max_length) if split is not None else None
                for split in (data.train, data.validation, data.test)
            )
        collator = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)
        names = list(data.label_names)
        entity_level = data.metric.name == "f1"

        @torch.no_grad()
        def evaluate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator) -> dict[str, float]:
            """Tags of the scored positions only, batch by batch: the logits of the whole set are never held."""
            model.eval()
            gold: list[list[str]] = []
            pred: list[list[str]] = []
            for batch in loader:
                predictions = model(**batch).logits.argmax(dim=-1)
                # Processes pad their batches to different lengths; gathering needs one length.
                predictions = accelerator.pad_across_processes(predictions, dim=1, pad_index=IGNORE)
                labels = accelerator.pad_across_processes(batch["labels"], dim=1, pad_index=IGNORE)
                predictions, labels = accelerator.gather_for_metrics((predictions, labels))
                for p_row, l_row in zip(predictions.cpu().tolist(), labels.cpu().tolist(), strict=True):
                    scored = [(label, p) for p, label in zip(p_row, l_row, strict=True) if label != IGNORE]
                    gold.append([names[label] for label, _ in scored])
                    pred.append([names[p] for _, p in scored])
            return tag_metrics(gold, pred, entity_level=entity_level)

        return PreparedData(train, validation, lambda seed: collator, collator, data.metric, evaluate, test)


def _task_data(corpus: TaggedCorpus) -> TaskData:
    """The training, validation and (when given) test splits, scored by the metric their tag set calls for."""
    names, splits = corpus.names, corpus.splits
    test = splits[2] if len(splits) > 2 else None
    return TaskData(splits[0], splits[1], tag_metric(names), corpus.source, len(names), names, test=test)


# --- tokenising --------------------------------------------------------------------------------------------------


def tokenize_and_align(split: TaggedSplit, tokenizer, max_length: int) -> Dataset:
    """A ``datasets.Dataset`` of token ids with one label per sub-token, for ``DataCollatorForTokenClassification``."""
    dataset = Dataset.from_dict({"tokens": split.tokens, "tags": split.tags})

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        encoded["labels"] = [align_labels(encoded.word_ids(i), tags) for i, tags in enumerate(batch["tags"])]
        return encoded

    return dataset.map(encode, batched=True, remove_columns=["tokens", "tags"])


def align_labels(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """A word's tag on its first sub-token; later sub-tokens and special tokens (word id None) get -100."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE if word is None or word == previous else tags[word])
        previous = word
    return labels
