"""Reading data as real users have it: local tables and Hub data sets, every problem one ``LotteryError`` line.

Real files are messy: a UTF-8 byte-order mark, CSV-quoted fields in a TSV next to TSVs (MRPC) whose
stray quotes must not be read as quoting, labels written as words. Local tables are read with the
standard ``csv`` module and checked row by row. What the rows mean is the task kind's business
(``hf_lottery.training.tasks``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from datasets import Dataset, DatasetDict

from hf_lottery.foundations.arguments import DataArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.hub import check_reachable

VALIDATION_SPLITS = ("validation", "valid", "dev", "test")


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


def load_hub_splits(name: str, config_name: str | None, args: DataArguments) -> tuple[Dataset, Dataset, Dataset | None]:
    """Training, validation (the first of validation/valid/dev/test) and test splits of a Hub data set; the
    test split is ``--test-split``'s, None without one, and is neither the training nor the validation split.
    """
    from datasets import load_dataset

    label = name + (f" ({config_name})" if config_name else "")
    instead = "pass local files with --train-file/--validation-file instead of --dataset-name"
    check_hub_dataset(name, what=f"the data set {label}", instead=instead)
    try:
        loaded = load_dataset(name, config_name)
    except Exception as err:  # network, cache, hub and missing-config errors all end here
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LotteryError(
            f"could not load the data set {label} with datasets.load_dataset ({type(err).__name__}: {reason[:200]}); "
            f"offline? {instead}"
        ) from None
    if not isinstance(loaded, DatasetDict) or "train" not in loaded:
        raise LotteryError(f"{label} has no 'train' split")
    validation = next((s for s in VALIDATION_SPLITS if s in loaded), None)
    if validation is None:
        raise LotteryError(f"{label} has no validation split (looked for {', '.join(VALIDATION_SPLITS)})")
    test = None
    if args.test_split is not None:
        if args.test_split in ("train", validation):
            use = "training" if args.test_split == "train" else "validation"
            raise LotteryError(
                f"--test-split {args.test_split} is the {use} split of {label}; held-out scores need another split"
            )
        if args.test_split not in loaded:
            raise LotteryError(f"{label} has no split {args.test_split!r} (its splits: {', '.join(loaded)})")
        test = first(loaded[args.test_split], args.max_test_samples)
    return first(loaded["train"], args.max_train_samples), first(loaded[validation], args.max_eval_samples), test


def check_hub_dataset(name: str, *, what: str, instead: str) -> None:
    """Before ``datasets.load_dataset`` of a Hub data set: one line at once, naming ``what`` and ``instead``, when the
    Hub does not answer (``hub.check_reachable``). With datasets offline (``HF_HUB_OFFLINE`` or
    ``HF_DATASETS_OFFLINE``) nothing is asked: it reads its cache only."""
    from datasets import config

    if not config.HF_HUB_OFFLINE:  # the first file load_dataset fetches is the data set's card
        check_reachable(name, what=what, instead=instead, repo_type="dataset", filename="README.md")


def first(split: Dataset, limit: int | None) -> Dataset:
    return split if limit is None else split.select(range(min(limit, len(split))))


def check_columns(split: Dataset, columns: list[str], source: str) -> None:
    for column in columns:
        if column not in split.column_names:
            raise LotteryError(
                f"{source}: no column {column!r} (its columns: {', '.join(split.column_names)}); "
                "set --text-columns / --label-column"
            )
