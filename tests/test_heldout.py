"""Held-out scores: every level is also scored on a test split that never chooses a level."""

import dataclasses
import json
import math
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from safetensors.torch import load_model as load_weights_into
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from hf_lottery import export_ticket
from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.config import DataArguments, RunConfig
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.rows import LevelResult, read_results
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.training.tasks import get_task_kind
from tests.helpers import SENTENCES, make_config
from tests.helpers import fails_cleanly as one_line_error

TRAIN, DEV = str(DEMO_DATA / "train.tsv"), str(DEMO_DATA / "dev.tsv")
QUICK = ["--levels", "1", "--max-train-samples", "32", "--max-eval-samples", "16", "--batch-size", "16",
         "--max-steps", "2"]  # fmt: skip


def demo_rows(first: int, count: int) -> list[tuple[str, str]]:
    """(sentence, label) rows of the demo training file that the runs here never train on (they use the first 64)."""
    lines = (DEMO_DATA / "train.tsv").read_text().splitlines()[1 + first : 1 + first + count]
    return [tuple(line.split("\t")) for line in lines]


def write_tsv(path: Path, rows: list[tuple[str, str]], header: str = "sentence\tlabel") -> Path:
    path.write_text(header + "\n" + "".join(f"{s}\t{label}\n" for s, label in rows))
    return path


@pytest.fixture(scope="module")
def test_files(tmp_path_factory) -> tuple[Path, Path]:
    """A test file of 24 unseen rows, and the same rows with every label flipped."""
    folder = tmp_path_factory.mktemp("test-files")
    rows = demo_rows(500, 24)
    flipped = [(s, str(1 - int(label))) for s, label in rows]
    return write_tsv(folder / "test.tsv", rows), write_tsv(folder / "flipped.tsv", flipped)


@pytest.fixture(scope="module")
def runs(tiny_bert, test_files, tmp_path_factory) -> tuple[RunPaths, list[LevelResult], list[LevelResult]]:
    """One level of IMP with the test file, and the same run with the flipped test file."""
    root = tmp_path_factory.mktemp("heldout")
    test, flipped = test_files
    rows = run_lottery(make_config(tiny_bert, root / "run", levels=1, test_file=str(test)))
    flipped_rows = run_lottery(make_config(tiny_bert, root / "flipped", levels=1, test_file=str(flipped)))
    return RunPaths(root / "run"), rows, flipped_rows


def test_every_level_gets_a_test_score_in_results_and_table(runs):
    paths, rows, _ = runs
    assert len(rows) == 2
    assert read_json(paths.results_json) == [row.to_dict() for row in rows] and read_results(paths) == rows
    for row in rows:
        assert 0.0 <= row.test_value <= 1.0
        assert read_json(paths.root / row.path / "metrics.json")["test_accuracy"] == row.test_value
    table = paths.results_table.read_text()
    assert table.splitlines()[0].startswith(
        "| level | run | sparsity | accuracy | vs dense | test accuracy | test vs dense |"
    )
    dense, level_1 = rows
    assert f"| 1 | imp | 50.0% | {level_1.value:.4f} |" in table
    assert f"| {level_1.test_value:.4f} | {level_1.test_value - dense.test_value:+.4f} |" in table
    assert "test accuracy" in (paths.root / "training.log").read_text()


def test_the_test_file_changes_nothing_but_the_test_scores(runs):
    """Flipping every test label flips the test accuracy of a two-label task; training and validation stay."""
    _, rows, flipped_rows = runs
    for row, flipped in zip(rows, flipped_rows, strict=True):
        assert flipped.value == row.value
        assert flipped.test_value == pytest.approx(1.0 - row.test_value)


def test_the_test_score_is_the_saved_weights_scored_on_the_test_file(runs, test_files):
    paths, rows, _ = runs
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(paths.model_files))
    load_weights_into(model, str(paths.level("imp", 1).weights))
    tokenizer = AutoTokenizer.from_pretrained(paths.model_files)
    sentences, labels = zip(*demo_rows(500, 24), strict=True)
    model.eval()
    with torch.no_grad():
        inputs = tokenizer(list(sentences), truncation=True, max_length=32, padding=True, return_tensors="pt")
        predicted = model(**inputs).logits.argmax(dim=-1).numpy()
    assert rows[1].test_value == pytest.approx(float(np.mean(predicted == np.array(labels, dtype=int))))


def test_the_card_shows_both_and_says_the_test_split_chose_nothing(runs, tmp_path):
    paths, rows, _ = runs
    facts = export_ticket(paths.root, tmp_path / "repo", level=1, repo_id="me/ticket")
    assert facts["test_metric_value"] == rows[1].test_value and facts["test_file"].endswith("test.tsv")
    text = (tmp_path / "repo" / "README.md").read_text()
    assert "never used to choose a level" in text and "test file test.tsv" in text
    assert f"held-out test {100 * rows[1].test_value:.1f}" in text
    assert "| test accuracy | test vs dense |" in text
    results = yaml.safe_load(text.split("---")[1])["model-index"][0]["results"]
    splits = {r["dataset"]["split"]: r["metrics"][0]["value"] for r in results}
    assert splits == {"validation": round(rows[1].value, 4), "test": round(rows[1].test_value, 4)}
    best = export_ticket(paths.root, tmp_path / "best")
    assert "validation accuracy" in best["level_reason"]


def test_finetune_scores_the_test_file(runs, test_files, tmp_path):
    paths, _, _ = runs
    export_ticket(paths.root, tmp_path / "ticket", level=1)
    out = tmp_path / "ft"
    args = ["finetune", str(tmp_path / "ticket"), "--train-file", TRAIN, "--validation-file", DEV,
            "--test-file", str(test_files[0]), "--output-dir", str(out), *QUICK[2:]]  # fmt: skip
    assert main(args) == 0
    (row,) = read_results(RunPaths(out))
    assert 0.0 <= row.test_value <= 1.0


def test_a_masked_lm_run_gets_a_test_perplexity(tiny_bert, text_files, tmp_path):
    train, valid = text_files
    test = tmp_path / "test.txt"
    test.write_text("\n".join(SENTENCES[::-1][:10]) + "\n")
    files = {"train_file": str(train), "validation_file": str(valid), "test_file": str(test)}
    quick = {"levels": 1, "prune_fraction": 0.5, "max_steps": 2, "batch_size": 8, "max_length": 32, "seed": 0}
    config = RunConfig.build(
        "prune", model_name_or_path=str(tiny_bert), output_dir=str(tmp_path / "run"), **files, **quick
    )
    rows = run_lottery(config)
    assert all(math.isfinite(r.test_value) and r.test_value > 1 for r in rows)
    assert (
        "| test perplexity | test vs dense | loss | test loss |" in RunPaths(tmp_path / "run").results_table.read_text()
    )


# --- how much of the test split is used ----------------------------------------------------------------------------


def test_max_eval_samples_leaves_the_test_split_whole_and_max_test_samples_caps_it(tmp_path, text_files):
    test_tsv = write_tsv(tmp_path / "test.tsv", demo_rows(500, 24))
    test_txt = tmp_path / "test.txt"
    test_txt.write_text("\n".join(SENTENCES[:12]) + "\n")
    train, dev, test_conll = (tmp_path / f"{name}.conll" for name in ("train", "dev", "test"))
    for path, count in ((train, 6), (dev, 6), (test_conll, 9)):
        path.write_text("".join(f"word{i} B-PER\nsaid O\n\n" for i in range(count)))
    cases = [  # the task kind, its files, and how many test examples it read
        ("sequence-classification", (TRAIN, DEV, test_tsv), lambda data: len(data.test.labels), 24),
        ("masked-lm", (*text_files, test_txt), lambda data: len(data.test), 12),
        ("token-classification", (train, dev, test_conll), lambda data: len(data.test.tags), 9),
    ]
    for kind, (train_file, validation_file, test_file), count, rows in cases:
        files = dict(train_file=str(train_file), validation_file=str(validation_file), test_file=str(test_file))
        data = get_task_kind(kind).load_data(DataArguments(**files, max_eval_samples=3))
        assert count(data) == rows, kind
        data = get_task_kind(kind).load_data(DataArguments(**files, max_eval_samples=3, max_test_samples=5))
        assert count(data) == 5, kind


@pytest.mark.usefixtures("fake_hub")
def test_max_test_samples_caps_a_hub_test_split():
    args = DataArguments(dataset_name="someone/reviews", label_column="label", text_columns=["text"], test_split="test",
                         max_eval_samples=1)  # fmt: skip
    kind = get_task_kind("sequence-classification")
    assert kind.load_data(args).test.labels == [0, 1, 0]
    assert kind.load_data(dataclasses.replace(args, max_test_samples=2)).test.labels == [0, 1]


def test_a_run_from_before_max_test_samples_keeps_capping_its_test_split(tiny_bert, tmp_path):
    """A config.json of format 3 capped the test split with --max-eval-samples: its rerun keeps that cap, so the
    test scores of old and new levels are scored on the same rows. Rows past the cap here hold a label the task
    does not have, so reading them fails the run."""
    test = write_tsv(tmp_path / "test.tsv", [*demo_rows(500, 8), ("a row past the cap", "2")])
    options = dict(levels=1, test_file=str(test), max_eval_samples=8)
    with pytest.raises(LotteryError, match=re.escape("test.tsv: label 2 is outside 0..1")):
        run_lottery(make_config(tiny_bert, tmp_path / "new", **options))  # today: the test split is read whole
    assert not (tmp_path / "new").exists()
    run_lottery(make_config(tiny_bert, tmp_path / "run", **options, max_test_samples=8))
    paths = RunPaths(tmp_path / "run")
    saved = read_json(paths.config)
    del saved["data"]["max_test_samples"]
    paths.config.write_text(json.dumps({**saved, "format_version": 3}))  # as the version before it wrote it
    trained = paths.level("imp", 1).weights.stat().st_mtime_ns

    rows = run_lottery(make_config(tiny_bert, tmp_path / "run", **{**options, "levels": 2}))  # its command, extended
    assert [r.level for r in rows] == [0, 1, 2] and all(0.0 <= r.test_value <= 1.0 for r in rows)
    assert paths.level("imp", 1).weights.stat().st_mtime_ns == trained  # the same run: not retrained
    assert "--max-test-samples 8" in rows[2].command  # what reproduces it today
    with pytest.raises(LotteryError, match="holds a different run.*max_test_samples: 8 there, 4 now"):
        run_lottery(make_config(tiny_bert, tmp_path / "run", **options, max_test_samples=4))


# --- bad values: one line, nothing written --------------------------------------------------------------------------


def fails_cleanly(capsys, args: list[str], message: str, out: Path) -> None:
    one_line_error(capsys, args, message, out)
    assert not out.exists(), f"{args} wrote {out}"


def test_bad_test_files_get_one_line_and_write_nothing(capsys, tiny_bert, tmp_path):
    capsys.readouterr()  # what the fixtures printed
    out = tmp_path / "out"
    other_columns = write_tsv(tmp_path / "other.tsv", demo_rows(500, 4), header="review\tstars")
    three_labels = write_tsv(tmp_path / "three.tsv", [("good film", "0"), ("bad plot", "2")])
    files = ["--train-file", TRAIN, "--validation-file", DEV]
    cases = [
        ([*files, "--test-file", str(other_columns)], f"{other_columns}: no column 'sentence' (its columns: review"),
        ([*files, "--test-file", str(three_labels)], f"{three_labels}: label 2 is outside 0..1"),
        ([*files, "--test-file", str(tmp_path / "missing.tsv")], "missing.tsv: no such file"),
        ([*files, "--test-file", DEV], "--test-file " + DEV + " is also the --validation-file"),
        (["--task", "sst2", "--test-file", str(other_columns)], "--test-file needs --train-file and --validation-file"),
        (["--task", "sst2", "--test-split", "test"], "--test-split needs --dataset-name; GLUE's test splits"),
        ([*files, "--max-test-samples", "8"], "--max-test-samples needs a test split: give --test-file or"),
        ([*files, "--test-file", str(tmp_path / "t.tsv"), "--max-test-samples", "0"], "--max-test-samples must be"),
    ]
    for args, message in cases:
        fails_cleanly(capsys, [str(tiny_bert), *args, *QUICK], message, out)


def test_a_test_file_with_a_tag_training_never_saw_is_refused(tmp_path):
    train, dev, test = (tmp_path / f"{name}.conll" for name in ("train", "dev", "test"))
    train.write_text("John B-PER\nsaid O\n")
    dev.write_text("Ann B-PER\n")
    test.write_text("Paris B-LOC\n")
    args = DataArguments(train_file=str(train), validation_file=str(dev), test_file=str(test))
    with pytest.raises(LotteryError, match=re.escape(f"{test}: line 1: tag 'B-LOC' does not occur in the training")):
        get_task_kind("token-classification").load_data(args)


# --- a Hub data set's test split ------------------------------------------------------------------------------------


@pytest.fixture
def fake_hub(monkeypatch):
    """``datasets.load_dataset`` answered from memory: train, validation and a test split whose labels are hidden."""
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})

    def split(labels: list[int]) -> Dataset:
        return Dataset.from_dict({"text": [f"text {i}" for i in range(len(labels))], "label": labels}, features)

    splits = DatasetDict(train=split([0, 1, 1]), validation=split([1, 0]), test=split([0, 1, 0]), hidden=split([-1]))
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None: splits)


@pytest.mark.usefixtures("fake_hub")
def test_a_hub_test_split_is_loaded_like_the_validation_split():
    kind = get_task_kind("sequence-classification")
    args = DataArguments(dataset_name="someone/reviews", label_column="label", text_columns=["text"], test_split="test")
    data = kind.load_data(args)
    assert data.test.labels == [0, 1, 0] and data.validation.labels == [1, 0]
    assert kind.load_data(DataArguments(dataset_name="someone/reviews", label_column="label")).test is None
    for split, message in [
        ("validation", "--test-split validation is the validation split of someone/reviews"),
        ("train", "--test-split train is the training split of someone/reviews"),
        ("dev", "someone/reviews has no split 'dev' (its splits: train, validation, test, hidden)"),
        ("hidden", "someone/reviews (hidden): label -1 is outside 0..1"),
    ]:
        with pytest.raises(LotteryError, match=re.escape(message)):
            kind.load_data(dataclasses.replace(args, test_split=split))
