"""The architecture table: a model type hf-lottery does not know prunes by neurons and exports compact once one
entry describes it, with no other change."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer, GemmaConfig, GemmaForCausalLM

from hf_lottery.commands.cli import main
from hf_lottery.pruning.architectures import ARCHITECTURES, Architecture

# Gemma, as a user would add it: where its blocks, FFN and attention lie (Llama's layout, under other numbers).
GEMMA = Architecture(
    layers=r"^((?:.*\.)?layers)\.(\d+)\.",
    ffn=(("layers.{i}.mlp.gate_proj.weight", "out"), ("layers.{i}.mlp.up_proj.weight", "out"),
         ("layers.{i}.mlp.down_proj.weight", "in")),
    attention=(
        ("layers.{i}.self_attn.q_proj.weight", "out", True),
        ("layers.{i}.self_attn.k_proj.weight", "out", False),
        ("layers.{i}.self_attn.v_proj.weight", "out", False),
        ("layers.{i}.self_attn.o_proj.weight", "in", True),
    ),
    embeddings="embed_tokens.weight",
    tied_heads=("lm_head.weight",),
)  # fmt: skip

STOCK_LOGITS = """
import sys, torch
sys.modules["hf_lottery"] = None  # the compact model needs nothing from hf-lottery
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    logits = model(input_ids=torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])).logits
torch.save({"logits": logits, "config": model.config.to_dict()}, sys.argv[2])
"""


@pytest.fixture(scope="module")
def tiny_gemma(tiny_gpt2, tmp_path_factory):
    """A 2-layer Gemma (a model type the table leaves out) with the tiny GPT-2's tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-gemma")
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    config = GemmaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, vocab_size=len(tokenizer), max_position_embeddings=64,
                         bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    GemmaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def stock(folder, tmp_path) -> dict:
    out = tmp_path / f"{folder.name}.pt"
    subprocess.run([sys.executable, "-c", STOCK_LOGITS, str(folder), str(out)], check=True, capture_output=True,
                   timeout=120)  # fmt: skip
    return torch.load(out)


def test_a_new_model_type_is_one_table_entry(tiny_gemma, text_files, tmp_path, capsys, monkeypatch):
    prune = ["prune", str(tiny_gemma), "--train-file", str(text_files[0]), "--validation-file", str(text_files[1]),
             "--max-length", "16", "--max-train-samples", "32", "--max-eval-samples", "8", "--batch-size", "16",
             "--levels", "1", "--prune-fraction", "0.5", "--unit", "neuron", "--scope", "layer"]  # fmt: skip
    assert main([*prune, "--output-dir", str(tmp_path / "unknown")]) == 1
    assert "--unit neuron knows the model types" in capsys.readouterr().err
    assert not (tmp_path / "unknown").exists()

    monkeypatch.setitem(ARCHITECTURES, "gemma", GEMMA)
    run = tmp_path / "run"
    assert main([*prune, "--output-dir", str(run)]) == 0
    full, small = tmp_path / "full", tmp_path / "small"
    assert main(["export", str(run), str(full), "--level", "1"]) == 0
    assert main(["export", str(run), str(small), "--level", "1", "--compact"]) == 0
    a, b = stock(full, tmp_path), stock(small, tmp_path)
    assert torch.allclose(a["logits"], b["logits"], atol=1e-5)
    assert (a["config"]["intermediate_size"], b["config"]["intermediate_size"]) == (48, 24)
    assert json.loads((small / "ticket.json").read_text())["compact"]["config_changes"] == {
        "intermediate_size": [48, 24]
    }
