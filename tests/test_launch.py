"""How many processes train a run: said in its first lines, recorded with every level and in the card, and warned
about when the launcher asked for more than started. Two processes are checked in tests/test_multiprocess.py."""

import json

import pytest

from hf_lottery import export_ticket
from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.rundir import finished_levels

ARGS = ["--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file", str(DEMO_DATA / "dev.tsv"), "--levels",
        "1", "--max-train-samples", "32", "--max-eval-samples", "16", "--batch-size", "8",
        "--gradient-accumulation-steps", "2", "--max-steps", "2"]  # fmt: skip
LAUNCHER = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE")


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCHER:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_one_process_run_says_and_records_its_process(tiny_bert, tmp_path, capsys, no_launcher):
    out = tmp_path / "run"
    assert main(["prune", str(tiny_bert), *ARGS, "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "processes: 1 (global batch 16 = --batch-size 8 x 1 process x 2 accumulation steps)" in printed[:4]
    assert not [line for line in printed if line.startswith("warning:")]
    paths = RunPaths(out)
    levels = finished_levels(paths)
    assert len(levels) == 2 and all(read_json(level.metrics)["processes"] == 1 for level in levels)
    assert all(row["processes"] == 1 for row in read_json(paths.results_json))
    (invocation,) = [json.loads(line) for line in paths.run_log.read_text().splitlines()]
    assert invocation["processes"] == 1
    facts = export_ticket(out, tmp_path / "ticket", level=1)
    assert facts["processes"] == 1
    assert ", trained on 1 process;" in (tmp_path / "ticket" / "README.md").read_text()


def test_a_launch_that_asked_for_more_processes_than_started_is_warned_about(tiny_bert, tmp_path, capsys, no_launcher):
    """``accelerate launch --num_processes 2`` on CPU: MASTER_ADDR and MASTER_PORT set, one process, no WORLD_SIZE."""
    no_launcher.setenv("MASTER_ADDR", "127.0.0.1")
    no_launcher.setenv("MASTER_PORT", "29500")
    args = ["prune", str(tiny_bert), *ARGS, "--dry-run", "--output-dir", str(tmp_path / "run")]
    assert main(args) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "only this one started" in warnings[0] and "torchrun" in warnings[0]
    no_launcher.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1: one process, as asked
    assert main(args) == 0
    assert "warning:" not in capsys.readouterr().out
    assert not (tmp_path / "run").exists()
