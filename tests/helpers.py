"""Helpers the tests import (conftest.py holds the fixtures and must not be imported twice)."""

from pathlib import Path

import pytest

from hf_lottery.config import RunConfig
from hf_lottery.demo import DEMO_DATA

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
        output_dir=str(output_dir),
    )
    values.update(overrides)
    return RunConfig.build("prune", **values)
