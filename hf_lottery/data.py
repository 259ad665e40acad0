"""Task data: GLUE by name from the Hub, or local CSV/TSV/JSON-lines files as real users have them.

Real files are messy: a UTF-8 byte-order mark, CSV-quoted fields in a TSV next to TSVs (MRPC) whose
stray quotes must not be read as quoting, labels written as words. Local files are read with the
standard ``csv`` module and checked row by row; every problem is one ``LotteryError`` line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset

from .config import LotteryConfig
from .errors import LotteryError


@dataclass(frozen=True)
class TaskSpec:
    text_columns: tuple[str, ...]
    num_labels: int  # 1 means regression
    metric: str  # the metric levels are compared by; see metrics.py
    validation_split: str = "validation"


GLUE_TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec(("sentence",), 2, "matthews_correlation"),
    "sst2": TaskSpec(("sentence",), 2, "accuracy"),
    "mrpc": TaskSpec(("sentence1", "sentence2"), 2, "f1"),
    "qqp": TaskSpec(("question1", "question2"), 2, "f1"),
    "stsb": TaskSpec(("sentence1", "sentence2"), 1, "pearson"),
    "mnli": TaskSpec(("premise", "hypothesis"), 3, "accuracy", "validation_matched"),
    "qnli": TaskSpec(("question", "sentence"), 2, "accuracy"),
    "rte": TaskSpec(("sentence1", "sentence2"), 2, "accuracy"),
    "wnli": TaskSpec(("sentence1", "sentence2"), 2, "accuracy"),
}


@dataclass
class RawSplit:
    """Texts and labels of one split, before tokenisation."""

    texts: list[list[str]]  # one list per text column
    labels: list


@dataclass
class TaskData:
    train: RawSplit
    validation: RawSplit
    num_labels: int
    metric: str
    label_names: list[str] | None = field(default=None)  # id -> name, when the labels are names

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


def load_task_data(config: LotteryConfig) -> TaskData:
    """Read and check both splits; nothing is tokenised yet (that needs the model's tokenizer)."""
    spec = None
    if config.task is not None:
        spec = GLUE_TASKS.get(config.task.lower())
        if spec is None:
            raise LotteryError(f"unknown task {config.task!r}; GLUE tasks are: {', '.join(GLUE_TASKS)}")
    if config.train_file is None:
        assert spec is not None
        return _load_glue(config.task.lower(), spec, config)
    return _load_files(config, spec)


def _load_glue(task: str, spec: TaskSpec, config: LotteryConfig) -> TaskData:
    from datasets import load_dataset

    try:
        glue = load_dataset("glue", task)
    except Exception as err:  # network, cache and hub errors all end here
        raise LotteryError(
            f"could not load GLUE task {task!r} from the Hugging Face Hub ({type(err).__name__}); "
            "offline? pass local files with --train-file/--validation-file"
        ) from err
    splits = []
    for split_name, limit in (("train", config.max_train_samples), (spec.validation_split, config.max_eval_samples)):
        split = glue[split_name]
        if limit is not None:
            split = split.select(range(min(limit, len(split))))
        splits.append(RawSplit([list(split[c]) for c in spec.text_columns], list(split["label"])))
    return TaskData(splits[0], splits[1], spec.num_labels, spec.metric)


def _load_files(config: LotteryConfig, spec: TaskSpec | None) -> TaskData:
    files = [(config.train_file, config.max_train_samples), (config.validation_file, config.max_eval_samples)]
    tables = []
    for path, limit in files:
        header, rows = read_table(Path(path))
        tables.append((path, header, rows[:limit] if limit is not None else rows))
    train_header = tables[0][1]
    text_columns = config.text_columns or (list(spec.text_columns) if spec else _guess_text_columns(train_header))
    label_column = config.label_column or "label"
    splits = []
    for path, header, rows in tables:
        for column in [*text_columns, label_column]:
            if column not in header:
                flag = "--label-column" if column == label_column else "--text-columns"
                raise LotteryError(f"{path}: no column {column!r} (its columns: {', '.join(header)}); set {flag}")
        texts = [[row[c] for row in rows] for c in text_columns]
        splits.append(RawSplit(texts, [row[label_column] for row in rows]))
    train, validation = splits
    if spec is not None and spec.num_labels == 1:
        for (path, _, _), split in zip(tables, splits, strict=True):
            split.labels = [_to_float(v, path) for v in split.labels]
        return TaskData(train, validation, 1, spec.metric)
    labels, num_labels, names = _encode_labels(train.labels, validation.labels, spec, config)
    train.labels, validation.labels = labels
    metric = spec.metric if spec else "accuracy"
    return TaskData(train, validation, num_labels, metric, names)


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a .csv, .tsv/.txt or .jsonl/.json file; every row must have every column."""
    if not path.is_file():
        raise LotteryError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    if suffix not in (".csv", ".tsv", ".txt"):
        raise LotteryError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv or .jsonl")
    delimiter = "," if suffix == ".csv" else "\t"
    # Quoted fields first (RTE); if that merges lines or breaks rows, the quotes are plain text (MRPC).
    for quoting in (csv.QUOTE_MINIMAL, csv.QUOTE_NONE):
        with open(path, encoding="utf-8-sig", newline="") as fh:
            try:
                table = [row for row in csv.reader(fh, delimiter=delimiter, quoting=quoting) if row]
            except (csv.Error, UnicodeDecodeError) as err:
                raise LotteryError(f"{path}: cannot be read as UTF-8 {suffix[1:].upper()}: {err}") from None
        if not table:
            raise LotteryError(f"{path}: the file is empty")
        header, body = table[0], table[1:]
        broken = [i for i, row in enumerate(body) if len(row) != len(header) or any("\n" in c for c in row)]
        if not broken:
            break
    if broken:
        line = broken[0] + 2
        raise LotteryError(f"{path}: row {line} has {len(body[broken[0]])} fields, the header {len(header)}")
    if not body:
        raise LotteryError(f"{path}: no data rows, only a header")
    header = [h.strip() for h in header]
    return header, [dict(zip(header, row, strict=True)) for row in body]


def _read_jsonl(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    rows = []
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise LotteryError(f"{path}: line {number} is not JSON: {err.msg}") from None
    if not rows:
        raise LotteryError(f"{path}: the file is empty")
    header = list(rows[0])
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or set(row) != set(header):
            raise LotteryError(f"{path}: record {number} does not have the keys of record 1 ({', '.join(header)})")
    return header, [{k: str(v) for k, v in row.items()} for row in rows]


def _guess_text_columns(header: list[str]) -> list[str]:
    for candidate in (["sentence1", "sentence2"], ["sentence"], ["text"]):
        if all(c in header for c in candidate):
            return candidate
    raise LotteryError(f"set --text-columns (the file's columns: {', '.join(header)})")


def _to_float(value: str, path: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise LotteryError(f"{path}: label {value!r} is not a number (the task is a regression)") from None


def _encode_labels(
    train: list, validation: list, spec: TaskSpec | None, config: LotteryConfig
) -> tuple[tuple[list[int], list[int]], int, list[str] | None]:
    """Integer labels 0..K-1 stay as they are; label names become ids in sorted order."""
    values = [str(v).strip() for v in train]
    val_values = [str(v).strip() for v in validation]
    if all(_is_int(v) for v in values + val_values):
        train_ids, val_ids = [int(v) for v in values], [int(v) for v in val_values]
        num_labels = spec.num_labels if spec else max(train_ids) + 1
        for path, ids in ((config.train_file, train_ids), (config.validation_file, val_ids)):
            bad = next((i for i in ids if not 0 <= i < num_labels), None)
            if bad is not None:
                raise LotteryError(
                    f"{path}: label {bad} is outside 0..{num_labels - 1}" + (f" for task {config.task}" if spec else "")
                )
        return (train_ids, val_ids), num_labels, None
    names = sorted(set(values))
    if spec and len(names) != spec.num_labels:
        raise LotteryError(
            f"{config.train_file}: {len(names)} label names ({', '.join(names[:5])}) "
            f"but task {config.task} has {spec.num_labels} labels"
        )
    unknown = next((v for v in val_values if v not in names), None)
    if unknown is not None:
        raise LotteryError(f"{config.validation_file}: label {unknown!r} does not occur in the training file")
    index = {name: i for i, name in enumerate(names)}
    return ([index[v] for v in values], [index[v] for v in val_values]), len(names), names


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
