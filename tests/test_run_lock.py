"""One invocation per directory: a second run (or export) into a folder in use is refused in one line and writes
nothing; a lock left by a killed run never blocks the rerun; a dry run takes no lock."""

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from filelock import FileLock

from hf_lottery import export_ticket
from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.lottery.run import RunEvents
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config

LOCK, PID = ".hf-lottery.lock", ".hf-lottery.lock.pid"  # as docs/run-directory.md names them
REPO = Path(__file__).resolve().parent.parent
FILES = ["--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file", str(DEMO_DATA / "dev.tsv")]
QUICK = ["--levels", "1", "--max-train-samples", "32", "--max-eval-samples", "16", "--batch-size", "16",
         "--max-steps", "2"]  # fmt: skip


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and time, the lock file's aside (older filelocks truncate it, empty, on every try)."""
    files = (p for p in folder.rglob("*") if p.name != LOCK)
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hf-lottery: error: "), err
    assert "Traceback" not in err
    return lines[0]


@contextmanager
def held(lock_file: Path):
    """Hold a lock as a running hf-lottery process does: the lock, and its holder's PID beside it."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    pid = lock_file.with_name(lock_file.name + ".pid")
    with FileLock(str(lock_file)):
        pid.write_text(f"{os.getpid()}\n")
        yield
        pid.unlink()


class Paused(RunEvents):
    """Stops the run before its first training until ``go`` is set."""

    def __init__(self) -> None:
        self.paused, self.go = threading.Event(), threading.Event()

    def level_started(self, tag, model, mask):
        self.paused.set()
        assert self.go.wait(120), "never let go"


@pytest.fixture(scope="module")
def finished_run(tiny_bert, tmp_path_factory):
    """A finished run, started in a directory holding only the lock files a killed run left (so: empty)."""
    out = tmp_path_factory.mktemp("lock") / "run"
    out.mkdir()
    (out / LOCK).touch()
    (out / PID).write_text("999999999\n")  # no such process
    rows = run_lottery(make_config(tiny_bert, out, levels=1))
    return out, rows


def test_a_directory_holding_only_a_stale_lock_counts_as_empty(finished_run):
    out, rows = finished_run
    assert len(rows) == 2 and (out / "results.json").exists()
    assert (out / LOCK).exists() and not (out / PID).exists()  # the lock stays; its holder's PID goes with it


def test_a_second_prune_on_the_same_directory_exits_with_one_line_and_writes_nothing(tiny_bert, tmp_path):
    out = tmp_path / "run"
    events = Paused()
    first = threading.Thread(target=run_lottery, args=(make_config(tiny_bert, out, levels=1), events))
    first.start()
    try:
        assert events.paused.wait(120), "the first run never started training"
        before = snapshot(out)
        # the same run as the first, one level further: it would resume, were it alone
        second = subprocess.run(
            [sys.executable, "-m", "hf_lottery", "prune", str(tiny_bert), *FILES, "--max-train-samples", "64",
             "--max-eval-samples", "32", "--max-length", "32", "--levels", "2", "--prune-fraction", "0.5",
             "--learning-rate", "1e-3", "--batch-size", "16", "--epochs", "1", "--seed", "0", "--output-dir", str(out)],
            capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO,
        )  # fmt: skip
        assert snapshot(out) == before
    finally:
        events.go.set()
        first.join(120)
    assert second.returncode == 1, second.stderr
    line = one_error_line(second.stderr)
    assert str(out) in line and f"(PID {os.getpid()})" in line and "in use by another hf-lottery process" in line
    assert (out / "results.json").exists() and not (out / "imp" / "level_2").exists()  # the first trained alone
    assert (out / LOCK).exists() and not (out / PID).exists()


def test_a_run_killed_with_9_leaves_a_lock_that_does_not_block_the_rerun(tiny_bert, tmp_path):
    out = tmp_path / "run"
    args = ["prune", str(tiny_bert), *FILES, "--levels", "1", "--max-train-samples", "64", "--max-eval-samples",
            "16", "--batch-size", "8", "--max-steps", "8", "--output-dir", str(out)]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "hf_lottery", *args], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    done = out / "imp" / "level_0" / "metrics.json"
    deadline = time.monotonic() + 120
    while not done.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done.exists() and not (out / "results.json").exists(), "killed too early or too late to test anything"
    assert (out / PID).read_text().strip() == str(proc.pid)  # the dead holder's, left behind
    trained = []

    class Trained(RunEvents):
        def level_started(self, tag, model, mask):
            trained.append(tag)

    level_0 = done.stat().st_mtime_ns
    assert main(args, events=Trained()) == 0
    assert trained == ["imp/level_1"]  # resumed after the finished level
    assert done.stat().st_mtime_ns == level_0 and (out / "results.json").exists()
    assert (out / LOCK).exists() and not (out / PID).exists()


def test_a_dry_run_takes_no_lock(tiny_bert, tmp_path, capsys):
    out = tmp_path / "run"
    with held(out / LOCK):
        assert main(["prune", str(tiny_bert), *FILES, *QUICK, "--dry-run", "--output-dir", str(out)]) == 0
        assert (out / PID).read_text().strip() == str(os.getpid())
    assert "| 0 | 0.0% | dense | 2 |" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [LOCK]
    fresh = tmp_path / "fresh"
    assert main(["prune", str(tiny_bert), *FILES, *QUICK, "--dry-run", "--output-dir", str(fresh)]) == 0
    assert not fresh.exists()


def test_an_export_into_a_folder_another_export_writes_is_refused(finished_run, tmp_path, capsys):
    run, _ = finished_run
    ticket = tmp_path / "ticket"
    with held(tmp_path / ".ticket.lock"):
        assert main(["export", str(run), str(ticket), "--level", "1"]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert str(ticket) in line and f"(PID {os.getpid()})" in line
        assert not ticket.exists()
    export_ticket(run, ticket, level=1)
    assert (tmp_path / ".ticket.lock").exists() and not list(ticket.glob("*lock*"))


def test_finetune_into_a_directory_in_use_is_refused_and_writes_nothing(finished_run, tmp_path, capsys):
    run, _ = finished_run
    export_ticket(run, tmp_path / "ticket", level=1)
    out = tmp_path / "ft"
    args = ["finetune", str(tmp_path / "ticket"), *FILES, "--max-train-samples", "32", "--max-eval-samples", "16",
            "--max-steps", "2", "--output-dir", str(out)]  # fmt: skip
    with held(out / LOCK):
        assert main(args) == 1
        line = one_error_line(capsys.readouterr().err)
        assert str(out) in line and f"(PID {os.getpid()})" in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK, PID]
    assert main(args) == 0 and (out / "results.json").exists()


@pytest.mark.multiprocess
def test_every_process_of_a_refused_launch_exits_with_the_same_line(tiny_bert, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m",
               "hf_lottery", "prune", str(tiny_bert), *FILES, *QUICK, "--output-dir", str(out)]  # fmt: skip
    with held(out / LOCK):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
        assert sorted(p.name for p in out.iterdir()) == [LOCK, PID]
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("hf-lottery: error: ")]
    assert len(lines) == 2 and lines[0] == lines[1], done.stderr[-3000:]  # one per rank, none left waiting
    assert str(out) in lines[0] and f"(PID {os.getpid()})" in lines[0]
