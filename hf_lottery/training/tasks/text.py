"""What the language-model task kinds share: plain text in, perplexity out.

Data: local .txt files (one document per line, blank lines skipped), a Hub data set's text column, or, with
no data at all, the default corpus (WikiText-2, raw). Documents are kept as a list of strings; how they become
training examples (masked lines, causal blocks) is each kind's ``prepare``. Every level is scored by the
perplexity of the whole validation set: the token losses are summed over batches and processes, then
divided once, so batch size and the number of processes do not change the number.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import PretrainedConfig, PreTrainedModel

from hf_lottery.foundations.arguments import DataArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.training.data import VALIDATION_SPLITS, check_columns, check_hub_dataset, load_hub_splits

from .base import Metric, TaskData, TaskKind

DEFAULT_CORPUS = ("Salesforce/wikitext", "wikitext-2-raw-v1")
PERPLEXITY = Metric("perplexity", greater_is_better=False)
IGNORE_INDEX = -100  # label of a token the loss skips (unmasked or padding)


class LanguageModelKind(TaskKind):
    """A task kind that trains on plain text with the model's own language-modelling objective.

    A subclass sets the ``TaskKind`` class attributes and implements ``prepare`` (with ``evaluate_perplexity``).
    """

    language_model = True
    finetune_data = "your own text (.txt files, one document per line)"
    finetune_flags = "--train-file train.txt --validation-file valid.txt"

    def claims(self, data: DataArguments) -> bool:
        if data.task is not None or data.label_column is not None:
            return False
        if data.train_file is not None:
            return Path(data.train_file).suffix.lower() == ".txt"
        return data.dataset_name is not None

    def describe_data(self, data: DataArguments) -> str:
        if not data.has_source:
            return f"the default corpus {_corpus_label()}"
        return super().describe_data(data)

    def dataset_ref(self, data: DataArguments) -> tuple[str | None, str | None]:
        return DEFAULT_CORPUS if not data.has_source else super().dataset_ref(data)

    def load_data(self, data: DataArguments) -> TaskData:
        return load_text(data)

    def load_model(
        self, name: str, *, revision: str | None, data: TaskData, model_config: PretrainedConfig, log: Callable
    ) -> PreTrainedModel:
        """The checkpoint's own head where it has one; else a new head, said in one line (a bare encoder)."""
        model, info = self.auto_model.from_pretrained(name, revision=revision, output_loading_info=True)
        body = model.base_model_prefix + "."
        if any(not key.startswith(body) for key in info["missing_keys"]):
            output, input_ = model.get_output_embeddings(), model.get_input_embeddings()
            tied = output is not None and input_ is not None and output.weight is input_.weight
            log(
                f"model {name!r} has no {self.head_name}: a new one is initialised"
                + (", its decoder tied to the word embeddings" if tied else "")
            )
        return model


def _corpus_label() -> str:
    return f"{DEFAULT_CORPUS[0]} ({DEFAULT_CORPUS[1]})"


def load_text(data: DataArguments) -> TaskData:
    """Training, validation and (when given) test documents (lists of non-blank strings), from files, the Hub
    or the default corpus.
    """
    if data.train_file is not None:
        train = read_text_file(data.train_file, data.max_train_samples)
        validation = read_text_file(data.validation_file, data.max_eval_samples)
        test = read_text_file(data.test_file, data.max_test_samples) if data.test_file is not None else None
        return TaskData(train, validation, PERPLEXITY, Path(data.train_file).name, test=test)
    if data.dataset_name is not None:
        column = data.text_columns[0] if data.text_columns else "text"
        # The limits count documents, so they apply after blank rows are dropped.
        unlimited = dataclasses.replace(data, max_train_samples=None, max_eval_samples=None, max_test_samples=None)
        splits = load_hub_splits(data.dataset_name, data.dataset_config, unlimited)
        source = data.dataset_name + (f" ({data.dataset_config})" if data.dataset_config else "")
        limits = (data.max_train_samples, data.max_eval_samples, data.max_test_samples)
        documents = []
        for split, limit, name in zip(splits, limits, ("training", "validation", "test"), strict=True):
            if split is None:
                documents.append(None)
                continue
            check_columns(split, [column], data.dataset_name)
            documents.append(_documents(split[column], limit))
            if not documents[-1]:
                raise LotteryError(f"{source}: the {name} split has no text in column {column!r}")
        return TaskData(documents[0], documents[1], PERPLEXITY, source, test=documents[2])
    return _load_default_corpus(data)


def _load_default_corpus(data: DataArguments) -> TaskData:
    from datasets import load_dataset

    instead = "pass local text, one document per line: --train-file train.txt --validation-file valid.txt"
    check_hub_dataset(DEFAULT_CORPUS[0], what=f"the default corpus {_corpus_label()}", instead=instead)
    try:
        corpus = load_dataset(*DEFAULT_CORPUS)
    except Exception as err:  # network, cache and hub errors all end here
        raise LotteryError(
            f"could not load the default corpus {_corpus_label()} ({type(err).__name__}); offline? {instead}"
        ) from None
    validation = next(s for s in VALIDATION_SPLITS if s in corpus)
    return TaskData(
        _documents(corpus["train"]["text"], data.max_train_samples),
        _documents(corpus[validation]["text"], data.max_eval_samples),
        PERPLEXITY,
        _corpus_label(),
    )


def _documents(texts, limit: int | None) -> list[str]:
    """Non-blank texts, stripped (WikiText has an empty line between paragraphs), the first ``limit`` of them."""
    documents = [str(t).strip() for t in texts if t is not None and str(t).strip()]
    return documents if limit is None else documents[:limit]


def read_text_file(path: str, limit: int | None = None) -> list[str]:
    """The documents of a .txt file, one per line; a file with no text is refused."""
    file = Path(path)
    if file.suffix.lower() != ".txt":
        raise LotteryError(
            f"{path}: a language model trains on plain text; give a .txt file with one document per line"
        )
    if not file.is_file():
        raise LotteryError(f"{path}: no such file")
    try:
        with open(file, encoding="utf-8-sig") as fh:
            documents = _documents(fh, None)
    except UnicodeDecodeError as err:
        raise LotteryError(f"{path}: cannot be read as UTF-8 text: {err}") from None
    if not documents:
        raise LotteryError(f"{path}: no text, every line is blank")
    return documents if limit is None else documents[:limit]


def token_losses(logits: torch.Tensor, labels: torch.Tensor, shift: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: the summed cross-entropy of its scored tokens and how many there are.

    ``shift``: position t predicts token t+1 (causal-LM). Only the scored positions are upcast to float32,
    so a large vocabulary does not double the memory of the logits.
    """
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    scored = labels != IGNORE_INDEX
    losses = F.cross_entropy(logits[scored].float(), labels[scored], reduction="none")
    rows = scored.nonzero(as_tuple=True)[0]
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device).index_add_(0, rows, losses)
    return sums, scored.sum(dim=1)


@torch.no_grad()
def evaluate_perplexity(
    model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, *, shift: bool
) -> dict[str, float]:
    """Mean token loss and perplexity over the whole loader, every process's examples counted once."""
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for batch in loader:
        labels = batch["labels"]
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        sums, counts = accelerator.gather_for_metrics(token_losses(logits, labels, shift))
        total_loss += sums.double().sum().item()
        total_tokens += int(counts.sum())
    if total_tokens == 0:
        raise LotteryError("the validation set has no token to score")
    loss = total_loss / total_tokens
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}  # exp overflows a float past 709


__all__ = [
    "DEFAULT_CORPUS",
    "PERPLEXITY",
    "LanguageModelKind",
    "evaluate_perplexity",
    "load_text",
    "read_text_file",
    "token_losses",
]
