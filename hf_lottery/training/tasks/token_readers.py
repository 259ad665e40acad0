"""Readers of tagged data for token classification: CoNLL-U and CoNLL files and Hub data sets with a tokens
column and a tag column.

A module of its own so that reading and checking raw data is apart from the task kind's model, tokenizer and
evaluation wiring: it needs neither, and every problem it finds in the data is one ``LotteryError`` line
naming the file (or split), the line (or row) and what is wrong. Tag names become ids here: their index in
the sorted tag set of the training split (a Hub ``ClassLabel``'s own ids are kept).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hf_lottery.foundations.arguments import DataArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.training.data import check_columns, load_hub_splits

SUFFIXES = (".conll", ".conllu")
CONLLU_TAG_COLUMNS = {"upos": 3, "xpos": 4}  # 0-based columns of ID FORM LEMMA UPOS XPOS FEATS HEAD ...
HUB_TAG_COLUMNS = ("ner_tags", "pos_tags", "tags")


@dataclass
class TaggedSplit:
    """Sentences of one split, before tokenisation: their words and one tag id per word."""

    tokens: list[list[str]]
    tags: list[list[int]]


@dataclass
class TaggedCorpus:
    """Checked splits of a tagged data set: where they come from, the tag names (id -> name) and the splits
    [training, validation] or [training, validation, test], their tags as ids.
    """

    source: str
    names: list[str]
    splits: list[TaggedSplit]


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

    def token(number: int, line: str) -> tuple[str, str] | None:
        if line.startswith("#"):
            return None
        fields = line.split("\t")
        if len(fields) != 10:
            raise LotteryError(f"{path}: line {number} has {len(fields)} tab-separated columns; CoNLL-U has 10")
        word_id = fields[0]
        if "-" in word_id or "." in word_id:
            return None  # a multiword token or an empty node: not a word of its own
        if not word_id.isdigit():
            raise LotteryError(f"{path}: line {number} has ID {word_id!r}, not a number")
        return fields[1], _check_tag(fields[column], known, path, number)

    return _sentences(path, limit, breaks=lambda line: not line.strip(), token=token)


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

    def token(number: int, line: str) -> tuple[str, str]:
        nonlocal width
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) < 2:
            raise LotteryError(f"{path}: line {number} has no tag column (a token line is: token ... tag)")
        width = width or len(fields)
        if len(fields) != width:
            raise LotteryError(f"{path}: line {number} has {len(fields)} columns, the first token line {width}")
        if column >= width:
            raise LotteryError(f"{path}: --label-column {label_column} but the file has {width} columns")
        return fields[0], _check_tag(fields[column], known, path, number)

    def breaks(line: str) -> bool:
        return not line.strip() or line.startswith("-DOCSTART-")

    return _sentences(path, limit, breaks=breaks, token=token)


def _sentences(
    path: Path, limit: int | None, *, breaks: Callable[[str], bool], token: Callable[[int, str], tuple[str, str] | None]
) -> tuple[list[list[str]], list[list[str]]]:
    """The words and tags of the first ``limit`` sentences of ``path`` (all without one), for every line format: a
    line that ``breaks`` ends a sentence, and ``token`` reads any other line as a word and its tag (None: a line
    that is not a word, such as a comment)."""
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in _lines(path):
        if limit is not None and len(sentences) >= limit:
            break
        if breaks(line):
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        found = token(number, line)
        if found is not None:
            words.append(found[0])
            tags.append(found[1])
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


def read_files(args: DataArguments) -> TaggedCorpus:
    """The ``--train-file``, ``--validation-file`` and (when given) ``--test-file`` splits; tags that do not
    occur in the training file fail in the held-out ones.
    """
    train_path = Path(args.train_file)
    train = read_tagged_file(train_path, args.label_column, args.max_train_samples)
    names = sorted({t for sentence in train[1] for t in sentence})
    known = set(names)
    held = [
        read_tagged_file(Path(path), args.label_column, limit, known)
        for path, limit in ((args.validation_file, args.max_eval_samples), (args.test_file, args.max_test_samples))
        if path is not None
    ]
    return _to_ids(train_path.name, names, [train, *held])


def read_hub(args: DataArguments) -> TaggedCorpus:
    """The splits of ``--dataset-name``: tokens from ``--text-columns`` (default ``tokens``), tags from
    ``--label-column`` or the first of ``HUB_TAG_COLUMNS`` there is.
    """
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
        return TaggedCorpus(source, names, [TaggedSplit(words, tags) for words, tags in splits])
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
    return _to_ids(source, names, splits)


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


def _to_ids(source: str, names: list[str], splits: list[tuple[list[list[str]], list[list[str]]]]) -> TaggedCorpus:
    """The splits with tag names -> ids (their index in the sorted training tag set ``names``)."""
    index = {name: i for i, name in enumerate(names)}
    tagged = [TaggedSplit(words, [[index[t] for t in s] for s in tags]) for words, tags in splits]
    return TaggedCorpus(source, names, tagged)
