"""Sequence classification (GLUE and any labelled text): one or two text columns and a label per example.

Data: a GLUE task by name (``--task``), a Hub data set (``--dataset-name`` with ``--label-column``), or
local .csv/.tsv/.jsonl files. Labels are integers 0..K-1 or names (sorted names become ids, saved as the
model's ``id2label``); STS-B is a regression (one output). Metrics as GLUE reports them (``metrics.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from hf_lottery.foundations.arguments import DataArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.training.data import check_columns, check_hub_dataset, load_hub_splits, read_table
from hf_lottery.training.metrics import compute_metrics

from .base import ClassifierKind, Metric, PreparedData, TaskData

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


@dataclass(frozen=True)
class GlueTask:
    text_columns: tuple[str, ...]
    num_labels: int  # 1 means regression
    metric: str  # the metric levels are compared by; see metrics.py
    validation_split: str = "validation"


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(("sentence",), 2, "matthews_correlation"),
    "sst2": GlueTask(("sentence",), 2, "accuracy"),
    "mrpc": GlueTask(("sentence1", "sentence2"), 2, "f1"),
    "qqp": GlueTask(("question1", "question2"), 2, "f1"),
    "stsb": GlueTask(("sentence1", "sentence2"), 1, "pearson"),
    "mnli": GlueTask(("premise", "hypothesis"), 3, "accuracy", "validation_matched"),
    "qnli": GlueTask(("question", "sentence"), 2, "accuracy"),
    "rte": GlueTask(("sentence1", "sentence2"), 2, "accuracy"),
    "wnli": GlueTask(("sentence1", "sentence2"), 2, "accuracy"),
}


@dataclass
class RawSplit:
    """Texts and labels of one split, before tokenisation."""

    texts: list[list[str]]  # one list per text column
    labels: list


class SequenceClassification(ClassifierKind):
    name = "sequence-classification"
    auto_model = AutoModelForSequenceClassification
    mapping_names = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    head_name = "sequence-classification head"
    pipeline_tag = "text-classification"
    finetune_data = "a GLUE task"
    finetune_flags = "--task rte"

    def claims(self, data: DataArguments) -> bool:
        if data.task is not None:
            return True
        if data.train_file is not None:
            suffix = Path(data.train_file).suffix.lower()
            return suffix in TABLE_SUFFIXES or (suffix == ".txt" and data.label_column is not None)
        return data.dataset_name is not None and data.label_column is not None

    def dataset_ref(self, data: DataArguments) -> tuple[str | None, str | None]:
        if data.task is not None and data.train_file is None and data.dataset_name is None:
            return "nyu-mll/glue", data.task
        return super().dataset_ref(data)

    def load_data(self, data: DataArguments) -> TaskData:
        """Read and check the splits; nothing is tokenised yet (that needs the model's tokenizer)."""
        spec = None
        if data.task is not None:
            spec = GLUE_TASKS.get(data.task.lower())
            if spec is None:
                raise LotteryError(f"unknown task {data.task!r}; GLUE tasks are: {', '.join(GLUE_TASKS)}")
        if data.train_file is not None:
            return _load_files(data, spec)
        if data.dataset_name is not None:
            return _load_hub(data, spec)
        assert spec is not None
        return _load_glue(data.task.lower(), spec, data)

    def keeps_head(self, model: PreTrainedModel, data: TaskData) -> bool:
        return super().keeps_head(model, data) and model.config.num_labels == data.num_labels and not data.label_names

    def prepare(self, data: TaskData, tokenizer, args: DataArguments, accelerator: Accelerator) -> PreparedData:
        regression = data.num_labels == 1
        with accelerator.main_process_first():
            train, validation, test = (
                tokenize(split, tokenizer, args.max_length, regression) if split is not None else None
                for split in (data.train, data.validation, data.test)
            )
        collator = DataCollatorWithPadding(tokenizer)
        metric = data.metric.name

        @torch.no_grad()
        def evaluate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator) -> dict[str, float]:
            model.eval()
            predictions, labels = [], []
            for batch in loader:
                logits = model(**batch).logits
                logits, batch_labels = accelerator.gather_for_metrics((logits, batch["labels"]))
                predictions.append(logits.float().cpu().numpy())
                labels.append(batch_labels.cpu().numpy())
            return compute_metrics(metric, np.concatenate(predictions), np.concatenate(labels))

        return PreparedData(train, validation, lambda seed: collator, collator, data.metric, evaluate, test)


def _load_glue(task: str, spec: GlueTask, args: DataArguments) -> TaskData:
    from datasets import load_dataset

    instead = "pass local files with --train-file/--validation-file"
    check_hub_dataset("glue", what=f"GLUE task {task!r}", instead=instead)
    try:
        glue = load_dataset("glue", task)
    except Exception as err:  # network, cache and hub errors all end here
        raise LotteryError(
            f"could not load GLUE task {task!r} from the Hugging Face Hub ({type(err).__name__}); offline? {instead}"
        ) from err
    splits = []
    for split_name, limit in (("train", args.max_train_samples), (spec.validation_split, args.max_eval_samples)):
        split = glue[split_name]
        if limit is not None:
            split = split.select(range(min(limit, len(split))))
        splits.append(RawSplit([list(split[c]) for c in spec.text_columns], list(split["label"])))
    return TaskData(splits[0], splits[1], Metric(spec.metric), f"GLUE {task}", spec.num_labels)


def _load_hub(args: DataArguments, spec: GlueTask | None) -> TaskData:
    train, validation, test = load_hub_splits(args.dataset_name, args.dataset_config, args)
    text_columns = args.text_columns or (list(spec.text_columns) if spec else _guess_text_columns(train.column_names))
    label_column = args.label_column or "label"
    names = None
    feature = train.features.get(label_column)
    if feature is not None and hasattr(feature, "names"):  # a ClassLabel: its names are the id2label
        names = list(feature.names)
    splits = []
    for split_name, split in (("train", train), ("validation", validation), (args.test_split, test)):
        if split is None:
            continue
        source = f"{args.dataset_name} ({split_name})"
        check_columns(split, [*text_columns, label_column], source)
        labels = list(split[label_column])
        if names is not None:  # a test split without labels has -1 (GLUE's, copied to the Hub)
            bad = next((v for v in labels if not 0 <= v < len(names)), None)
            if bad is not None:
                raise LotteryError(f"{source}: label {bad} is outside 0..{len(names) - 1}, its label names")
        splits.append(RawSplit([[str(t) for t in split[c]] for c in text_columns], labels))
    return _with_labels(splits, [args.dataset_name] * len(splits), spec, args, names)


def _load_files(args: DataArguments, spec: GlueTask | None) -> TaskData:
    files = [(args.train_file, args.max_train_samples), (args.validation_file, args.max_eval_samples)]
    if args.test_file is not None:
        files.append((args.test_file, args.max_test_samples))
    tables = []
    for path, limit in files:
        header, rows = read_table(Path(path))
        tables.append((path, header, rows[:limit] if limit is not None else rows))
    train_header = tables[0][1]
    text_columns = args.text_columns or (list(spec.text_columns) if spec else _guess_text_columns(train_header))
    label_column = args.label_column or "label"
    splits = []
    for path, header, rows in tables:
        for column in [*text_columns, label_column]:
            if column not in header:
                flag = "--label-column" if column == label_column else "--text-columns"
                raise LotteryError(f"{path}: no column {column!r} (its columns: {', '.join(header)}); set {flag}")
        texts = [[row[c] for row in rows] for c in text_columns]
        splits.append(RawSplit(texts, [row[label_column] for row in rows]))
    return _with_labels(splits, [path for path, _ in files], spec, args, None)


def _with_labels(
    splits: list[RawSplit], sources: list[str], spec: GlueTask | None, args: DataArguments, names: list[str] | None
) -> TaskData:
    """The task data of the training, validation and (when given) test splits, their labels as ids."""
    train, validation = splits[:2]
    test = splits[2] if len(splits) > 2 else None
    source = Path(sources[0]).name if args.train_file else sources[0]
    metric = Metric(spec.metric if spec else "accuracy")
    if spec is not None and spec.num_labels == 1:
        for path, split in zip(sources, splits, strict=True):
            split.labels = [_to_float(v, path) for v in split.labels]
        return TaskData(train, validation, metric, source, 1, test=test)
    if names is not None:  # Hub ClassLabel ids: already 0..K-1
        return TaskData(train, validation, metric, source, len(names), names, test)
    labels, num_labels, names = _encode_labels([split.labels for split in splits], spec, args, sources)
    for split, ids in zip(splits, labels, strict=True):
        split.labels = ids
    return TaskData(train, validation, metric, source, num_labels, names, test)


def _guess_text_columns(header: list[str]) -> list[str]:
    for candidate in (["sentence1", "sentence2"], ["sentence"], ["text"]):
        if all(c in header for c in candidate):
            return candidate
    raise LotteryError(f"set --text-columns (the data's columns: {', '.join(header)})")


def _to_float(value: str, path: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise LotteryError(f"{path}: label {value!r} is not a number (the task is a regression)") from None


def _encode_labels(
    splits: list[list], spec: GlueTask | None, args: DataArguments, sources: list[str]
) -> tuple[list[list[int]], int, list[str] | None]:
    """Integer labels 0..K-1 stay as they are; label names become ids in sorted order (the training split's:
    a label of a later split that training never saw is refused).
    """
    values = [[str(v).strip() for v in split] for split in splits]
    if all(_is_int(v) for split in values for v in split):
        ids = [[int(v) for v in split] for split in values]
        num_labels = spec.num_labels if spec else max(ids[0]) + 1
        for path, split_ids in zip(sources, ids, strict=True):
            bad = next((i for i in split_ids if not 0 <= i < num_labels), None)
            if bad is not None:
                raise LotteryError(
                    f"{path}: label {bad} is outside 0..{num_labels - 1}" + (f" for task {args.task}" if spec else "")
                )
        return ids, num_labels, None
    names = sorted(set(values[0]))
    if spec and len(names) != spec.num_labels:
        raise LotteryError(
            f"{sources[0]}: {len(names)} label names ({', '.join(names[:5])}) "
            f"but task {args.task} has {spec.num_labels} labels"
        )
    for path, split in zip(sources[1:], values[1:], strict=True):
        unknown = next((v for v in split if v not in names), None)
        if unknown is not None:
            raise LotteryError(f"{path}: label {unknown!r} does not occur in the training file")
    index = {name: i for i, name in enumerate(names)}
    return [[index[v] for v in split] for split in values], len(names), names


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def tokenize(split: RawSplit, tokenizer, max_length: int, regression: bool) -> Dataset:
    """A ``datasets.Dataset`` of token ids and labels, ready for ``DataCollatorWithPadding``."""
    columns = {f"text_{i}": texts for i, texts in enumerate(split.texts)}
    dataset = Dataset.from_dict({**columns, "labels": [float(v) for v in split.labels] if regression else split.labels})

    def encode(batch: dict) -> dict:
        texts = [batch[c] for c in columns]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    return dataset.map(encode, batched=True, remove_columns=list(columns))
