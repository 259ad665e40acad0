"""Token classification (NER, POS tagging): one tag per word of a sentence.

Data: local CoNLL-U (``.conllu``: UPOS tags, or XPOS with ``--label-column xpos``) or CoNLL (``.conll``:
token first, tag last) files, or a Hub data set (``--dataset-name`` with ``--task-kind
token-classification``) with a tokens column and a tag column. Tag ids index the sorted tag set of the
training split, saved as the model's ``id2label``.

Words are split into sub-tokens by the model's (fast) tokenizer; a word's tag goes to its first sub-token
and the others are ignored (-100), as in transformers' ``run_ner``. A BIO tag set is scored by entity-level
micro F1 with conlleval's rules, any other tag set (POS) by token accuracy; both are computed here, so
nothing is downloaded to score a level.
"""

from __future__ import annotations

from dataclasses import dataclass
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

from ..arguments import DataArguments
from ..data import check_columns, load_hub_splits
from ..errors import LotteryError
from .base import ClassifierKind, Metric, PreparedData, TaskData

SUFFIXES = (".conll", ".conllu")
CONLLU_TAG_COLUMNS = {"upos": 3, "xpos": 4}  # 0-based columns of ID FORM LEMMA UPOS XPOS FEATS HEAD ...
HUB_TAG_COLUMNS = ("ner_tags", "pos_tags", "tags")
IGNORE = -100  # the label of sub-tokens and special tokens: no loss, not scored


@dataclass
class TaggedSplit:
    """Sentences of one split, before tokenisation: their words and one tag id per word."""

    tokens: list[list[str]]
    tags: list[list[int]]


class TokenClassification(ClassifierKind):
    name = "token-classification"
    auto_model = AutoModelForTokenClassification
    mapping_names = MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES
    head_name = "token-classification head"
    pipeline_tag = "token-classification"
    labels_noun = "tags"

    def claims(self, data: DataArguments) -> bool:
        """Only CoNLL files say "tags" by themselves; a Hub data set needs ``--task-kind token-classification``."""
        return data.train_file is not None and Path(data.train_file).suffix.lower() in SUFFIXES

    def load_data(self, data: DataArguments) -> TaskData:
        """Read and check the splits; tag names become ids here, and decide the metric."""
        if data.train_file is not None:
            return _load_files(data)
        if data.dataset_name is not None:
            return _load_hub(data)
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


def read_tagged_file(
    path: Path, label_column: str | None = None, limit: int | None = None, known: set[str] | None = None
) -> tuple[list[list[str]], list[list[str]]]:
    """Words and tag names of a ``.conllu`` or ``.conll`` file, by its suffix; see ``read_conllu``/``read_conll``."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise LotteryError(f"{path}: unknown file type {suffix!r}; token classification reads .conll or .conllu")
    if not path.is_file():
        raise LotteryError(f"{path}: no such file")
    reader = read_conllu if suffix == ".conllu" else read_conll
    return reader(path, label_column, limit, known)


def read_conllu(
    path: Path, label_column: str | None = None, limit: int | None = None, known: set[str] | None = None
) -> tuple[list[list[str]], list[list[str]]]:
    """Words (FORM) and tags (UPOS, or XPOS with ``label_column="xpos"``) of a CoNLL-U file.

    Only word lines (integer IDs) are read: multiword-token lines (``1-2``) and empty nodes (``8.1``) would
    count a word twice or add words that are not in the text. ``limit`` counts sentences; ``known`` is the
    training tag set, so a validation tag the model cannot predict fails at its line.
    """
    key = (label_column or "upos").lower()
    if key not in CONLLU_TAG_COLUMNS:
        raise LotteryError(f"{path}: --label-column of a CoNLL-U file is upos or xpos, got {label_column!r}")
    column = CONLLU_TAG_COLUMNS[key]
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in _lines(path):
        if limit is not None and len(sentences) >= limit:
            break
        if not line.strip():
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise LotteryError(f"{path}: line {number} has {len(fields)} tab-separated columns; CoNLL-U has 10")
        word_id = fields[0]
        if "-" in word_id or "." in word_id:
            continue  # a multiword token or an empty node: not a word of its own
        if not word_id.isdigit():
            raise LotteryError(f"{path}: line {number} has ID {word_id!r}, not a number")
        words.append(fields[1])
        tags.append(_check_tag(fields[column], known, path, number))
    if words and (limit is None or len(sentences) < limit):
        sentences.append((words, tags))
    return _unzip(sentences, path)


def read_conll(
    path: Path, label_column: str | None = None, limit: int | None = None, known: set[str] | None = None
) -> tuple[list[list[str]], list[list[str]]]:
    """Words and tags of a CoNLL file (CoNLL-2003 style): the token first, the tag last (or the 1-based column
    ``label_column``), tab- or whitespace-separated; every token line has as many columns as the first.
    """
    column = -1
    if label_column is not None:
        if not label_column.isdigit() or int(label_column) < 2:
            raise LotteryError(
                f"{path}: --label-column of a CoNLL file is a column number (2 or more; the token is column 1), "
                f"got {label_column!r}"
            )
        column = int(label_column) - 1
    width: int | None = None
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in _lines(path):
        if limit is not None and len(sentences) >= limit:
            break
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) < 2:
            raise LotteryError(f"{path}: line {number} has no tag column (a token line is: token ... tag)")
        width = width or len(fields)
        if len(fields) != width:
            raise LotteryError(f"{path}: line {number} has {len(fields)} columns, the first token line {width}")
        if column >= width:
            raise LotteryError(f"{path}: --label-column {label_column} but the file has {width} columns")
        words.append(fields[0])
        tags.append(_check_tag(fields[column], known, path, number))
    if words and (limit is None or len(sentences) < limit):
        sentences.append((words, tags))
    return _unzip(sentences, path)


def _lines(path: Path):
    """(line number, line without its newline); a file that is not UTF-8 is one error line."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for number, line in enumerate(fh, 1):
                yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise LotteryError(f"{path}: cannot be read as UTF-8: {err}") from None


def _check_tag(tag: str, known: set[str] | None, path: Path, number: int) -> str:
    if known is not None and tag not in known:
        raise LotteryError(f"{path}: line {number}: tag {tag!r} does not occur in the training data")
    return tag


def _unzip(sentences: list[tuple[list[str], list[str]]], path: Path) -> tuple[list[list[str]], list[list[str]]]:
    if not sentences:
        raise LotteryError(f"{path}: no sentences (the file is empty or holds only comments)")
    return [w for w, _ in sentences], [t for _, t in sentences]


def _load_files(args: DataArguments) -> TaskData:
    train_path = Path(args.train_file)
    train = read_tagged_file(train_path, args.label_column, args.max_train_samples)
    names = sorted({t for sentence in train[1] for t in sentence})
    known = set(names)
    held = [
        read_tagged_file(Path(path), args.label_column, args.max_eval_samples, known)
        for path in (args.validation_file, args.test_file)
        if path is not None
    ]
    return _task_data(train_path.name, names, [train, *held])


def _load_hub(args: DataArguments) -> TaskData:
    train, validation, test = load_hub_splits(args.dataset_name, args.dataset_config, args)
    source = args.dataset_name
    tokens_column = args.text_columns[0] if args.text_columns else "tokens"
    tag_column = args.label_column or next((c for c in HUB_TAG_COLUMNS if c in train.column_names), None)
    if tag_column is None:
        raise LotteryError(
            f"{source}: no tag column ({', '.join(HUB_TAG_COLUMNS)}; its columns: {', '.join(train.column_names)}); "
            "set --label-column"
        )
    feature = train.features.get(tag_column)
    class_label = getattr(feature, "feature", None)  # Sequence(ClassLabel): the ids are already the model's
    names = list(class_label.names) if hasattr(class_label, "names") else None
    named = [
        (n, s) for n, s in (("train", train), ("validation", validation), (args.test_split, test)) if s is not None
    ]
    splits = []
    for split_name, split in named:
        check_columns(split, [tokens_column, tag_column], source)
        splits.append(check_rows(split[tokens_column], split[tag_column], f"{source} ({split_name})"))
    if names is not None:
        for (split_name, _), (_, tags) in zip(named, splits, strict=True):
            bad = next(((i, t) for i, row in enumerate(tags) for t in row if not 0 <= t < len(names)), None)
            if bad is not None:
                raise LotteryError(f"{source} ({split_name}): row {bad[0]} has tag id {bad[1]}, outside its names")
        tagged = [TaggedSplit(words, tags) for words, tags in splits]
        return TaskData(*tagged[:2], tag_metric(names), source, len(names), names, test=_third(tagged))
    # Names (or numbers without names) sort into ids.
    splits = [(words, [[str(t) for t in row] for row in tags]) for words, tags in splits]
    names = sorted({t for row in splits[0][1] for t in row})
    known = set(names)
    for (split_name, _), (_, tags) in zip(named[1:], splits[1:], strict=True):
        unknown = next(((i, t) for i, row in enumerate(tags) for t in row if t not in known), None)
        if unknown is not None:
            raise LotteryError(
                f"{source} ({split_name}): row {unknown[0]}: tag {unknown[1]!r} does not occur in training"
            )
    return _task_data(source, names, splits)


def check_rows(tokens: list, tags: list, source: str) -> tuple[list[list[str]], list]:
    """Rows of a Hub split with as many tags as tokens; empty sentences are dropped (nothing to learn or score)."""
    words_out, tags_out = [], []
    for i, (words, row_tags) in enumerate(zip(tokens, tags, strict=True)):
        if not isinstance(words, list) or not isinstance(row_tags, list):
            raise LotteryError(f"{source}: row {i} is not a list of tokens with a list of tags")
        if len(words) != len(row_tags):
            raise LotteryError(f"{source}: row {i} has {len(words)} tokens but {len(row_tags)} tags")
        if words:
            words_out.append([str(w) for w in words])
            tags_out.append(row_tags)
    if not words_out:
        raise LotteryError(f"{source}: no sentences")
    return words_out, tags_out


def _task_data(source: str, names: list[str], splits: list[tuple[list[list[str]], list[list[str]]]]) -> TaskData:
    """The training, validation and (when given) test splits, tag names -> ids (their index in the sorted
    training tag set).
    """
    index = {name: i for i, name in enumerate(names)}
    tagged = [TaggedSplit(words, [[index[t] for t in s] for s in tags]) for words, tags in splits]
    return TaskData(tagged[0], tagged[1], tag_metric(names), source, len(names), names, test=_third(tagged))


def _third(splits: list[TaggedSplit]) -> TaggedSplit | None:
    """The test split of [training, validation, test], None when there is none."""
    return splits[2] if len(splits) > 2 else None


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


# --- scoring -------------------------------------------------------------------------------------------------------


def is_bio(names: list[str]) -> bool:
    """Whether tags are BIO/IOB entity tags (each ``O``, ``B-X`` or ``I-X``, and at least one entity tag)."""
    return all(n == "O" or n.startswith(("B-", "I-")) for n in names) and any(n != "O" for n in names)


def tag_metric(names: list[str]) -> Metric:
    """Entity F1 for entity tags, token accuracy for any other tag set (POS)."""
    return Metric("f1" if is_bio(names) else "accuracy")


def entities(tags: list[str]) -> set[tuple[int, int, str]]:
    """The (start, end, type) spans of one BIO sentence with conlleval's rules: ``B-X`` starts an entity, and
    so does an ``I-X`` after ``O`` or after another type; ``I-X`` after ``X`` continues it.
    """
    spans = set()
    start, kind = 0, None
    for i, tag in enumerate([*tags, "O"]):  # the final O closes an entity at the sentence end
        prefix, label = (tag[0], tag[2:]) if tag.startswith(("B-", "I-")) else ("O", "")
        continues = prefix == "I" and label == kind
        if kind is not None and not continues:
            spans.add((start, i, kind))
            kind = None
        if prefix != "O" and not continues:
            start, kind = i, label
    return spans


def entity_f1(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 over exact entity matches (span and type), as conlleval reports them."""
    gold_spans = {(s, *span) for s, tags in enumerate(gold) for span in entities(tags)}
    pred_spans = {(s, *span) for s, tags in enumerate(pred) for span in entities(tags)}
    correct = len(gold_spans & pred_spans)
    precision = correct / len(pred_spans) if pred_spans else 0.0
    recall = correct / len(gold_spans) if gold_spans else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def token_accuracy(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Share of words whose tag is right."""
    pairs = [(g, p) for g_row, p_row in zip(gold, pred, strict=True) for g, p in zip(g_row, p_row, strict=True)]
    return {"accuracy": sum(g == p for g, p in pairs) / len(pairs) if pairs else 0.0}


def tag_metrics(gold: list[list[str]], pred: list[list[str]], *, entity_level: bool) -> dict[str, float]:
    """A level's metrics: token accuracy always, entity precision/recall/F1 for entity tags."""
    return {**entity_f1(gold, pred), **token_accuracy(gold, pred)} if entity_level else token_accuracy(gold, pred)
