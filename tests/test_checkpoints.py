"""Checkpoints inside a level (``--save-steps``): a level killed mid-way resumes from its latest checkpoint and
ends bit for bit where an uninterrupted run does, on one process or two; a kill during a save leaves the
previous checkpoint usable; the checkpoints are gone once the level is complete.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file

from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.training import checkpoint
from hf_lottery.training.checkpoint import LevelCheckpoints, latest_checkpoint
from tests.helpers import make_config
from tests.test_cli import fails_cleanly, files_args

REPO = Path(__file__).resolve().parent.parent


class Killed(Exception):
    """Stands for a kill: the run stops here and keeps nothing in memory."""


def fresh_process() -> None:
    """Forget the Accelerate state a killed run held, as a new process would."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def assert_same_run(resumed: Path, whole: Path, levels: list[str]) -> None:
    """Every level's tensors equal, bit for bit, and its metrics.json but for the step a level resumed from."""
    files = ["rewind_point.safetensors"] + [
        f"{level}/{name}" for level in levels for name in ("mask.safetensors", "weights.safetensors")
    ]
    for name in files:
        a, b = load_file(resumed / name), load_file(whole / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b), f"{name} differs"
    for level in levels:
        metrics = read_json(resumed / level / "metrics.json")
        metrics.pop("resumed_from_step", None)
        assert metrics == read_json(whole / level / "metrics.json"), level
    assert (resumed / "results.md").read_text() == (whole / "results.md").read_text()  # no column for the resume
    assert not list(resumed.rglob("checkpoint")), "a checkpoint outlived its level"
    assert not list(resumed.rglob(".*.tmp-*")), "a temporary file of the killed run was left behind"


# fmt: off
CASES = {  # options, the level killed, the step of its checkpoint; 64 rows in batches of 16: 4 batches per epoch
    "mid-epoch": (dict(max_steps=10, save_steps=3), "imp/level_1", 6),  # and a level after the resumed one
    "at the end of an epoch": (dict(max_steps=10, save_steps=4, levels=1), "imp/level_1", 8),
    "gradient accumulation": (dict(max_steps=5, save_steps=1, gradient_accumulation_steps=2, levels=1),
                              "imp/level_1", 3),
    # A high learning rate: an evaluation before the kill stays the best, so the kept weights are restored ones.
    "best-so-far evaluation": (dict(max_steps=10, save_steps=3, eval_steps=2, learning_rate=0.05, levels=1),
                               "imp/level_1", 6),
    "level 0 past the rewind point": (dict(max_steps=10, save_steps=3, rewind_to="step:2", levels=1),
                                      "imp/level_0", 6),
}
# fmt: on


@pytest.mark.parametrize("case", CASES)
def test_a_level_stopped_after_a_checkpoint_resumes_to_the_uninterrupted_result(tiny_bert, tmp_path, monkeypatch, case):
    options, killed_level, kill_step = CASES[case]
    _stop_and_resume(lambda out: make_config(tiny_bert, out, **options), tmp_path, monkeypatch, killed_level, kill_step)


def test_masked_lm_resumes_with_the_collators_generator(tiny_bert, text_files, tmp_path, monkeypatch):
    train, valid = text_files  # 40 documents in batches of 16: 3 batches per epoch, step 4 is inside epoch 2

    def config(out: Path):
        return make_config(tiny_bert, out, task_kind="masked-lm", train_file=str(train), validation_file=str(valid),
                           max_steps=7, save_steps=2, levels=1)  # fmt: skip

    _stop_and_resume(config, tmp_path, monkeypatch, "imp/level_1", 4)


def _stop_and_resume(config, tmp_path: Path, monkeypatch, killed_level: str, kill_step: int) -> None:
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_lottery(config(whole))
    fresh_process()
    real_save = LevelCheckpoints.save

    def save_then_die(self, step, best):
        real_save(self, step, best)
        if self.folder == resumed / killed_level / "checkpoint" and step == kill_step:
            raise Killed

    monkeypatch.setattr(LevelCheckpoints, "save", save_then_die)
    with pytest.raises(Killed):
        run_lottery(config(resumed))
    assert latest_checkpoint(resumed / killed_level / "checkpoint").name == f"step_{kill_step}"
    monkeypatch.undo()
    fresh_process()
    run_lottery(config(resumed))
    assert read_json(resumed / killed_level / "metrics.json")["resumed_from_step"] == kill_step
    levels = sorted(str(p.parent.relative_to(resumed)) for p in resumed.glob("imp/level_*/metrics.json"))
    assert killed_level in levels and len(levels) >= 2
    assert_same_run(resumed, whole, levels)


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_usable(tiny_bert, tmp_path, monkeypatch):
    """Killed after every process wrote the new checkpoint but before it was renamed into place: the run resumes
    from the one before, and the half-made one is removed."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    options = dict(max_steps=10, save_steps=3, levels=1)
    run_lottery(make_config(tiny_bert, whole, **options))
    fresh_process()
    real_publish = checkpoint.publish

    def publish_or_die(tmp: Path, final: Path) -> None:
        if "level_1" in str(final) and final.name == "step_6":
            raise Killed
        real_publish(tmp, final)

    monkeypatch.setattr(checkpoint, "publish", publish_or_die)
    with pytest.raises(Killed):
        run_lottery(make_config(tiny_bert, resumed, **options))
    folder = resumed / "imp" / "level_1" / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == [".step_6.tmp-save", "step_3"]
    monkeypatch.undo()
    fresh_process()
    run_lottery(make_config(tiny_bert, resumed, **options))
    assert read_json(resumed / "imp" / "level_1" / "metrics.json")["resumed_from_step"] == 3
    assert_same_run(resumed, whole, ["imp/level_0", "imp/level_1"])


def test_the_latest_complete_checkpoint_is_the_highest_step(tmp_path):
    folder = tmp_path / "checkpoint"
    assert latest_checkpoint(folder) is None
    for name in ("step_3", "step_12", ".step_15.tmp-save"):  # a kill before step 12's older ones were removed
        (folder / name).mkdir(parents=True)
    assert latest_checkpoint(folder) == folder / "step_12"
    (folder / ".step_15.tmp-save" / "progress.json").write_text("{}")
    checkpoint.publish(folder / ".step_15.tmp-save", folder / "step_15")
    assert sorted(p.name for p in folder.iterdir()) == ["step_15"]


def test_save_steps_0_is_one_line_and_writes_nothing(capsys, tmp_path, tiny_bert):
    out = tmp_path / "out"
    fails_cleanly(capsys, [str(tiny_bert), *files_args(), "--levels", "1", "--save-steps", "0"], "--save-steps", out)
    assert not out.exists()


# --- kill -9 of real processes ------------------------------------------------------------------------------------

KILL_ARGS = ["prune", *files_args(), "--levels", "2", "--max-train-samples", "64", "--max-eval-samples", "16",
             "--batch-size", "8", "--max-steps", "40", "--learning-rate", "1e-3", "--seed", "0"]  # fmt: skip


def _kill_9_mid_level(command: list[str], out: Path) -> None:
    """Start ``command``, kill -9 it and every process it started once level 1 has a checkpoint (torchrun's
    workers have process groups of their own)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*command, "--output-dir", str(out), "--save-steps", "4"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    folder, deadline = out / "imp" / "level_1" / "checkpoint", time.monotonic() + 400
    while not (folder.is_dir() and any(folder.glob("step_*"))) and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = psutil.Process(proc.pid).children(recursive=True)
    for pid in [*(worker.pid for worker in workers), proc.pid]:
        os.kill(pid, signal.SIGKILL)
    psutil.wait_procs(workers, timeout=60)
    proc.wait()
    assert not (out / "imp" / "level_1" / "metrics.json").exists(), "killed too late to test anything"
    assert latest_checkpoint(folder) is not None, "killed before level 1 had a checkpoint"


def _run(command: list[str], out: Path, *extra: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, "--output-dir", str(out), *extra], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def _check_resumed(killed: Path, whole: Path) -> None:
    assert read_json(killed / "imp" / "level_1" / "metrics.json")["resumed_from_step"] > 0
    assert_same_run(killed, whole, ["imp/level_0", "imp/level_1", "imp/level_2"])


def test_kill_9_mid_level_resumes_from_the_checkpoint(tiny_bert, tmp_path):
    command = [sys.executable, "-m", "hf_lottery", KILL_ARGS[0], str(tiny_bert), *KILL_ARGS[1:]]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    _kill_9_mid_level(command, killed)
    _run(command, killed, "--save-steps", "4")
    _run(command, whole)  # no checkpoints: the same result
    _check_resumed(killed, whole)


@pytest.mark.multiprocess
def test_kill_9_of_two_processes_mid_level_resumes_from_the_checkpoint(tiny_bert, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m",
               "hf_lottery", KILL_ARGS[0], str(tiny_bert), *KILL_ARGS[1:]]  # fmt: skip
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    _kill_9_mid_level(command, killed)
    _run(command, killed, "--save-steps", "4")
    _run(command, whole)
    _check_resumed(killed, whole)
