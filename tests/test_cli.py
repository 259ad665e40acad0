"""The command line as a user meets it: bad input gets one line, exit code 1, and nothing written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, ViTConfig

from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from tests.helpers import fails_cleanly, kill_9_then_rerun

TRAIN, DEV = str(DEMO_DATA / "train.tsv"), str(DEMO_DATA / "dev.tsv")
QUICK = ["--max-train-samples", "32", "--max-eval-samples", "16", "--batch-size", "16", "--max-steps", "2"]


def files_args(train=TRAIN, dev=DEV):
    return ["--train-file", str(train), "--validation-file", str(dev)]


@pytest.fixture
def vit_folder(tmp_path) -> Path:
    ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16).save_pretrained(
        tmp_path / "vit"
    )
    return tmp_path / "vit"


@pytest.fixture
def two_label_classifier(tiny_bert, tmp_path) -> Path:
    config = BertConfig.from_pretrained(tiny_bert, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "clf")
    return tmp_path / "clf"


def test_bad_input_gets_one_line_and_writes_nothing(
    capsys, tmp_path, tiny_bert, vit_folder, two_label_classifier, monkeypatch
):
    from huggingface_hub import constants

    # an unreachable Hub, whether or not another test started the loopback one
    closed = "http://127.0.0.1:9"  # nothing listens on the discard port
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed + "/{repo_id}/resolve/{revision}/{filename}")
    capsys.readouterr()  # what the fixtures printed
    out = tmp_path / "out"
    model = str(tiny_bert)
    good = [*files_args(), "--levels", "1", *QUICK]
    empty, three = tmp_path / "empty.tsv", tmp_path / "three.tsv"
    empty.write_text("")
    three.write_text("sentence\tlabel\na\t0\nb\t1\nc\t2\n")
    cases = [
        (["no-such-org/no-such-model", "--task", "sst2", "--levels", "1"], "Hugging Face Hub could not be reached"),
        (["./no-such-folder", *good], "model folder './no-such-folder' does not exist"),
        ([str(vit_folder), *good], "has no sequence-classification head"),
        ([model, *files_args(), "--target-sparsity", "1.5"], "--target-sparsity must be in [0, 1), got 1.5"),
        ([model, *files_args(), "--levels", "1", "--prune-fraction", "1"], "--prune-fraction must be in (0, 1)"),
        ([model, "--task", "sst3", "--levels", "1"], "unknown task 'sst3'"),
        ([model, "--task", "sst2", "--levels", "1"], "could not load GLUE task 'sst2' from the Hugging Face Hub"),
        ([model, *good, "--text-columns", "review"], "no column 'review'"),
        ([model, *files_args(train=empty), "--levels", "1"], "empty.tsv: the file is empty"),
        ([model, *files_args(three, three), "--task", "sst2", "--levels", "1"], "label 2 is outside 0..1"),
        ([str(two_label_classifier), *files_args(three, three), "--levels", "1"], "head for 2 labels"),
        ([model, *good, "--include", "attention.nope"], "--include 'attention.nope' matches no parameter"),
        ([model, *good, "--rewind-to", "step:999"], "past the end of level 0, which has 2 steps"),
        ([model, *good, "--one-shot", "1.0"], "--one-shot sparsities must be in (0, 1), got 1.0"),
        (
            [model, *good, "--early-bird", "0.5", "--early-bird-threshold", "0"],
            "--early-bird-threshold must be in (0, 1)",
        ),
        (
            [model, *good, "--early-bird", "0.5", "--early-bird-threshold", "1"],
            "--early-bird-threshold must be in (0, 1)",
        ),
        ([model, *good, "--early-bird", "0.5", "--early-bird-every", "0"], "--early-bird-every must be >= 1"),
        ([model, *good, "--early-bird", "0.5", "--early-bird-window", "0"], "--early-bird-window must be >= 1"),
        (
            [model, *good, "--early-bird", "0.5"],
            "--early-bird-every x --early-bird-window = 50 steps per level, but --max-steps is 2",
        ),
        ([model, *good, "--keep-weights", "some"], "--keep-weights"),
    ]
    for args, message in cases:
        fails_cleanly(capsys, args, message, out)
        assert not out.exists(), f"{args} wrote {out}"


def test_output_dir_holding_another_run_is_refused(capsys, tmp_path, tiny_bert):
    capsys.readouterr()
    out = tmp_path / "run"
    args = [str(tiny_bert), *files_args(), "--levels", "1", *QUICK, "--output-dir", str(out)]
    assert main(["prune", *args]) == 0
    table = capsys.readouterr().out
    assert "| 0 | dense | 0.0% |" in table and "| 1 | imp | 20.0% |" in table
    before = sorted(p.name for p in out.rglob("*"))
    fails_cleanly(capsys, [*args[:-2], "--prune-fraction", "0.5"], "holds a different run (prune_fraction", out)
    assert sorted(p.name for p in out.rglob("*")) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    fails_cleanly(capsys, args[:-2], "is not empty and holds no hf-lottery run", tmp_path / "other")
    assert main(["prune", *args]) == 0  # the same command again: everything is done, nothing retrained
    assert "| 1 | imp | 20.0% |" in capsys.readouterr().out


def test_debug_shows_the_traceback(tiny_bert, tmp_path):
    from hf_lottery.foundations.errors import LotteryError

    with pytest.raises(LotteryError, match="--prune-fraction"):
        main(["prune", str(tiny_bert), *files_args(), "--levels", "1", "--prune-fraction", "2", "--debug"])


def test_python_dash_m_runs_the_cli_with_clean_output(tiny_bert, tmp_path):
    """``python -m hf_lottery`` is what ``accelerate launch -m hf_lottery`` runs."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run(
        [sys.executable, "-m", "hf_lottery", "prune", str(tiny_bert), *files_args(), "--levels", "2", *QUICK,
         "--control", "random-prune", "--output-dir", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "| 2 | random-prune | 36.0% |" in ok.stdout
    assert (tmp_path / "run" / "sparsity_vs_metric.png").exists()
    offline = subprocess.run(
        [sys.executable, "-m", "hf_lottery", "prune", "bert-base-uncased", "--task", "sst2", "--target-sparsity",
         "0.9", "--output-dir", str(tmp_path / "bert")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert offline.returncode == 1
    assert offline.stderr.strip().count("\n") == 0, offline.stderr
    assert "pass the path of a local folder" in offline.stderr


def test_kill_9_then_rerun_gives_the_uninterrupted_result(tiny_bert, tmp_path):
    from safetensors.torch import load_file

    args = [sys.executable, "-m", "hf_lottery", "prune", str(tiny_bert), *files_args(), "--levels", "3",
            "--max-train-samples", "64", "--max-eval-samples", "16", "--batch-size", "8",
            "--max-steps", "40"]  # fmt: skip
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    level = killed / "imp"
    kill_9_then_rerun(
        args, killed, whole, when=level / "level_1" / "metrics.json", before=level / "level_2" / "metrics.json"
    )
    assert not list(killed.rglob(".*.tmp-*")), "a temporary file from the killed run was left behind"
    for level in (1, 2, 3):
        for name in ("mask.safetensors", "weights.safetensors"):
            a = load_file(killed / "imp" / f"level_{level}" / name)
            b = load_file(whole / "imp" / f"level_{level}" / name)
            assert all(torch.equal(a[k], b[k]) for k in b), f"level {level} {name} differs"
    assert (killed / "results.json").read_text() == (whole / "results.json").read_text()
