"""Layers and neurons in one run (``--unit layer+neuron --scope layer``): a level removes a share of the blocks and
the same share of each kept block's FFN neurons; the ticket exports compact as one shallower, narrower stock model
with the masked model's logits."""

import json

import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from hf_lottery.commands.cli import main
from hf_lottery.lottery.paths import RunPaths
from tests.helpers import fails_cleanly
from tests.test_cli import files_args
from tests.test_units import deeper, stock, without_blocks

BLOCKS = "bert.encoder.layer"


def test_a_layer_and_neuron_ticket_is_one_smaller_shallower_stock_model(tiny_bert, tmp_path, capsys):
    folder = deeper(tiny_bert, tmp_path)  # 4 blocks of 64 neurons
    run = tmp_path / "run"
    args = ["prune", str(folder), *files_args(), "--max-train-samples", "64", "--max-eval-samples", "16",
            "--batch-size", "16", "--levels", "1", "--prune-fraction", "0.5", "--unit", "layer+neuron",
            "--scope", "layer", "--output-dir", str(run)]  # fmt: skip
    assert main(args) == 0
    level = RunPaths(run).level("imp", 1)
    mask, trained = load_file(level.mask), load_file(level.weights)
    ffn = {i: mask[f"{BLOCKS}.{i}.intermediate.dense.weight"].any(1) for i in range(4)}
    kept = [i for i in range(4) if mask[f"{BLOCKS}.{i}.attention.self.query.weight"].any()]
    assert len(kept) == 2, "half the blocks go"
    assert all(int(ffn[i].sum()) == 32 for i in kept), "each kept block keeps half its neurons"
    assert all(not ffn[i].any() for i in range(4) if i not in kept), "a removed block's neurons go with it"
    small = tmp_path / "small"
    assert main(["export", str(run), str(small), "--level", "1", "--compact"]) == 0
    compact = stock(small, "AutoModelForSequenceClassification", tmp_path)
    reference = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    reference.load_state_dict(trained, strict=False)
    reference = without_blocks(reference.eval(), BLOCKS, kept)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])).logits
    torch.testing.assert_close(compact["logits"], expected, atol=1e-5, rtol=0)
    facts = json.loads((small / "ticket.json").read_text())["compact"]
    assert facts["config_changes"] == {"num_hidden_layers": [4, 2], "intermediate_size": [64, 32]}
    assert facts["compact_parameters"] == compact["parameters"] < facts["dense_parameters"]
    assert json.loads(level.metrics.read_text())["kept_parameters"] == compact["parameters"]
    assert main(["export", str(run), str(tmp_path / "dense"), "--level", "1"]) == 1  # removed blocks: compact only
    assert main(["export", str(run), str(tmp_path / "dense"), "--level", "0"]) == 0  # the dense level removes none
    assert (
        stock(tmp_path / "dense", "AutoModelForSequenceClassification", tmp_path)["parameters"] > compact["parameters"]
    )


def test_taylor_scores_go_on_after_a_block_is_removed(tiny_bert, tmp_path):
    """A removed block is skipped while the next level scores, so its weights get no gradient: Taylor ranks what
    is left and the run goes on to remove a second block."""
    folder = deeper(tiny_bert, tmp_path)  # 4 blocks of 64 neurons
    run = tmp_path / "run"
    args = ["prune", str(folder), *files_args(), "--max-train-samples", "32", "--max-eval-samples", "16",
            "--batch-size", "16", "--levels", "2", "--prune-fraction", "0.25", "--unit", "layer+neuron",
            "--scope", "layer", "--strategy", "taylor", "--taylor-samples", "8",
            "--output-dir", str(run)]  # fmt: skip
    assert main(args) == 0
    for level, blocks in ((1, 3), (2, 2)):
        mask = load_file(RunPaths(run).level("imp", level).mask)
        assert sum(bool(mask[f"{BLOCKS}.{i}.attention.self.query.weight"].any()) for i in range(4)) == blocks


def test_layers_and_neurons_need_their_own_share_per_kind(tiny_bert, tmp_path, capsys):
    args = [str(tiny_bert), *files_args(), "--levels", "1", "--unit", "layer+neuron"]
    fails_cleanly(capsys, args, "--unit layer+neuron removes the same share of each kind of unit", tmp_path / "o")
    assert not (tmp_path / "o").exists()
