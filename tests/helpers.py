"""Helpers the tests import (conftest.py holds the fixtures and must not be imported twice)."""

from pathlib import Path

import pytest

from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.foundations.storage import read_json, write_json
from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.paths import LevelPaths

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
GLUE = SHARED / "data" / "glue"
EOS = "<|endoftext|>"
SENTENCES = [line.split("\t")[0] for line in (DEMO_DATA / "train.tsv").read_text().splitlines()[1:61]]
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue is absent (see ../shared/README.md)")


def make_config(model: Path, output_dir: Path, **overrides) -> RunConfig:
    """A config that trains the tiny BERT on 64 toy rows: a level takes well under a second."""
    values = dict(
        model_name_or_path=str(model),
        train_file=str(DEMO_DATA / "train.tsv"),
        validation_file=str(DEMO_DATA / "dev.tsv"),
        max_train_samples=64,
        max_eval_samples=32,
        max_length=32,
        levels=2,
        prune_fraction=0.5,
        learning_rate=1e-3,
        batch_size=16,
        epochs=1,
        seed=0,
        output_dir=None if output_dir is None else str(output_dir),
    )
    values.update(overrides)
    return RunConfig.build("prune", **values)


def fails_cleanly(capsys, args: list[str], message: str, out: Path) -> None:
    """``hf-lottery prune ARGS --output-dir OUT`` fails as a user should see it: one line naming ``message``."""
    from hf_lottery.commands.cli import main

    code = main(["prune", *args, "--output-dir", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("hf-lottery: error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err


def kill_9_then_rerun(args: list[str], killed: Path, whole: Path, *, when: Path, before: Path) -> None:
    """Run ``args --output-dir killed`` and kill -9 it once ``when`` exists, which must be before ``before``
    exists; then finish it, and run ``whole`` uninterrupted, so a test can compare the two directories."""
    import os
    import signal
    import subprocess
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([*args, "--output-dir", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while not when.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert when.exists() and not before.exists(), "killed too early or too late to test anything"
    for out in (killed, whole):
        subprocess.run([*args, "--output-dir", str(out)], env=env, check=True, capture_output=True, timeout=300)


def rescore(level: LevelPaths, value: float) -> None:
    """Record another validation score for a finished level in its ``metrics.json``, as if its training had ended
    there: how a test gets a run whose pruned levels all fall short of dense, which a tiny run gives by chance only."""
    metrics = read_json(level.metrics)
    write_json(level.metrics, {**metrics, metrics["metric"]: value})


def saved_weights(level: LevelPaths) -> dict:
    """A finished level's weights by name: its own file, or, for a level that wrote none (scored untrained), the
    rewind point under its mask, as hf-lottery reads it back."""
    from safetensors.torch import load_file

    if level.weights.exists():
        return load_file(level.weights)
    mask, rewind = load_file(level.mask), load_file(level.rewind_point)
    return {name: value * mask[name] if name in mask else value for name, value in rewind.items()}
