from pathlib import Path

import pytest

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.lottery.config import DataArguments
from hf_lottery.training.tasks import get_task_kind
from tests.helpers import GLUE, needs_glue


def load(train: Path, dev: Path | None = None, **kw):
    args = DataArguments(train_file=str(train), validation_file=str(dev or train), **kw)
    return get_task_kind("sequence-classification").load_data(args)


@needs_glue
@pytest.mark.parametrize(
    ("folder", "kw", "rows", "metric"),
    [
        ("SST-2", {"task": "sst2"}, (67349, 872), "accuracy"),
        ("RTE", {"task": "rte"}, (2490, 277), "accuracy"),
        (
            "MRPC",
            {"task": "mrpc", "text_columns": ["#1 String", "#2 String"], "label_column": "Quality"},
            (3668, 408),
            "f1",
        ),
        ("CoLA", {"task": "cola", "text_columns": ["x"], "label_column": "y"}, (8551, 527), "matthews_correlation"),
    ],
)
def test_real_glue_files_read_with_glue_row_counts(folder, kw, rows, metric):
    data = load(GLUE / folder / "train.tsv", GLUE / folder / "dev.tsv", **kw)
    assert (len(data.train.labels), len(data.validation.labels)) == rows
    assert data.metric.name == metric and data.num_labels == 2
    assert set(data.train.labels) == {0, 1}


@needs_glue
def test_quoted_tsv_fields_are_unquoted_and_stray_quotes_kept():
    rte = load(GLUE / "RTE" / "train.tsv", task="rte")
    valero = next(s for s in rte.train.texts[0] if s.startswith("Valero Energy"))
    assert 'said it found "extensive" additional' in valero
    mrpc = load(GLUE / "MRPC" / "dev.tsv", task="mrpc", text_columns=["#1 String", "#2 String"], label_column="Quality")
    assert mrpc.validation.texts[1][0].startswith('"The foodservice pie business')  # an unmatched quote, as written


def test_string_labels_become_ids_and_bom_is_ignored(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text('\ufefftext,label\nnice,positive\nawful,negative\n"fine, really",positive\n', encoding="utf-8")
    data = load(train)
    assert data.label_names == ["negative", "positive"]
    assert data.train.labels == [1, 0, 1]
    assert data.train.texts == [["nice", "awful", "fine, really"]]


def test_jsonl_files(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"sentence": "good", "label": 1}\n{"sentence": "bad", "label": 0}\n')
    data = load(train)
    assert data.train.texts == [["good", "bad"]] and data.train.labels == [1, 0] and data.num_labels == 2


@pytest.mark.parametrize(
    ("content", "kw", "message"),
    [
        ("", {}, "the file is empty"),
        ("sentence\tlabel\n", {}, "no data rows, only a header"),
        ("sentence\tlabel\ngood\t1\n", {"text_columns": ["text"]}, "no column 'text' .*set --text-columns"),
        ("sentence\tlabel\ngood\t1\n", {"label_column": "y"}, "no column 'y' .*set --label-column"),
        ("sentence\tlabel\ngood\t2\nbad\t0\n", {"task": "sst2"}, "label 2 is outside 0..1 for task sst2"),
        ("sentence\tlabel\ngood\t1\tx\n", {}, "row 2 has 3 fields, the header 2"),
        ("words\tlabel\ngood\t1\n", {}, "set --text-columns"),
        ("sentence\tlabel\ngood\t1\n", {"task": "glue-nope"}, "unknown task 'glue-nope'"),
    ],
)
def test_bad_files_get_one_clear_error(tmp_path, content, kw, message):
    path = tmp_path / "train.tsv"
    path.write_text(content)
    with pytest.raises(LotteryError, match=message):
        load(path, **kw)


def test_missing_file_and_unknown_validation_label(tmp_path):
    with pytest.raises(LotteryError, match="no such file"):
        load(tmp_path / "nope.tsv")
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train.write_text("sentence\tlabel\ngood\tpos\nbad\tneg\n")
    dev.write_text("sentence\tlabel\nmeh\tneutral\n")
    with pytest.raises(LotteryError, match="label 'neutral' does not occur in the training file"):
        load(train, dev)
