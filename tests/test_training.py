"""Training options keep the mask: mixed precision, gradient accumulation, weight decay, best-of evaluation."""

import io
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.training.metrics import compute_metrics
from tests.helpers import make_config


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_pruned_weights_stay_zero_under_every_training_option(tiny_bert, tmp_path, precision):
    config = make_config(
        tiny_bert, tmp_path / "run", levels=1, epochs=2, mixed_precision=precision, gradient_accumulation_steps=2,
        weight_decay=0.1, eval_steps=1,
    )  # fmt: skip
    rows = run_lottery(config)
    assert rows[1].steps == 4  # 64 rows / batch 16 / 2 accumulated = 2 optimizer steps per epoch
    level = RunPaths(tmp_path / "run").level("imp", 1)
    mask, weights = load_file(level.mask), load_file(level.weights)
    for name, m in mask.items():
        assert (weights[name][~m] == 0).all()


def test_regression_task_uses_pearson(tiny_bert, tmp_path):
    rows = ["sentence1\tsentence2\tlabel"] + [f"good film\tfine plot {i}\t{i % 5}.{i % 10}" for i in range(40)]
    data = tmp_path / "stsb.tsv"
    data.write_text("\n".join(rows) + "\n")
    config = make_config(tiny_bert, tmp_path / "run", task="stsb", train_file=str(data), validation_file=str(data),
                         levels=1)  # fmt: skip
    results = run_lottery(config)
    assert results[0].metric == "pearson" and "spearmanr" in results[0].scores


def test_glue_metrics():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([1, 0, 0, 0])
    assert compute_metrics("accuracy", logits, labels) == {"accuracy": 0.75}
    assert compute_metrics("f1", logits, labels)["f1"] == pytest.approx(2 / 3)
    assert compute_metrics("matthews_correlation", logits, labels)["matthews_correlation"] == pytest.approx(
        1 / np.sqrt(3)
    )
    scores = compute_metrics("pearson", np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 2.0, 3.0]))
    assert scores["spearmanr"] == pytest.approx(1.0) and 0.9 < scores["pearson"] < 1.0


@pytest.mark.parametrize(
    ("large", "warned", "not_warned"),
    [(0, "removed every weight of", "left under 1%"), (4, "left under 1% of the weights of", "removed every weight")],
)
def test_a_tensor_emptied_or_nearly_emptied_by_global_pruning_is_reported(
    tiny_bert, tmp_path, capsys, large, warned, not_warned
):
    """A tensor whose weights are far smaller than the rest (an untrained pooler) is pruned away whole, or down
    to the few of its weights that are not (``large`` of its 1,024)."""
    from safetensors.torch import save_file
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(tiny_bert)
    folder = tmp_path / "small-pooler"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    # BertForMaskedLM drops the pooler; give the classifier one far below the encoder's magnitudes.
    pooler = torch.full((32, 32), 1e-6)
    pooler[0, :large] = 1.0
    state["bert.pooler.dense.weight"] = pooler
    state["bert.pooler.dense.bias"] = torch.zeros(32)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    run_lottery(make_config(folder, tmp_path / "run", levels=1, prune_fraction=0.2, max_steps=1))
    out = capsys.readouterr().out
    assert f"warning: level 1 {warned} bert.pooler.dense.weight" in out and not_warned not in out
    kept = load_file(RunPaths(tmp_path / "run").level("imp", 1).mask)["bert.pooler.dense.weight"]
    assert int(kept.sum()) == large


class Terminal(io.StringIO):
    """A stderr that is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_a_few_plain_lines_in_a_log(tiny_bert, tmp_path, capsys, monkeypatch):
    """A bar in a log file is a carriage-return line per step; there, each level gets a line per tenth of it."""
    args = ["prune", str(tiny_bert), "--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file",
            str(DEMO_DATA / "dev.tsv"), "--levels", "1", "--max-train-samples", "16", "--max-eval-samples", "8",
            "--batch-size", "2"]  # fmt: skip
    capsys.readouterr()  # what the fixtures printed
    assert main([*args, "--max-steps", "15", "--output-dir", str(tmp_path / "logged")]) == 0
    logged = capsys.readouterr().err
    lines = [line for line in logged.splitlines() if line.strip()]
    assert "\r" not in logged
    assert 2 <= len(lines) <= 2 * 11  # two trainings of 15 steps: at most one line per tenth, and the last step
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([*args, "--max-steps", "2", "--output-dir", str(tmp_path / "watched")]) == 0
    assert "\r" in terminal.getvalue()
