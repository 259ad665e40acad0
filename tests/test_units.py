"""Structured pruning units: a unit is kept or removed whole in every tensor it spans, counts are of units, and a
structured run does everything an element run does (controls, resume)."""

import json
import math
import sys

import pytest
import torch
from safetensors.torch import load_file, load_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertTokenizerFast,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from hf_lottery import export_ticket
from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.foundations.arguments import PruneArguments
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.run import run_units
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.pruning.masks import prunable_weights, select_prunable, transposed_weights
from hf_lottery.pruning.strategies import STRATEGIES, ScoringContext
from tests.helpers import fails_cleanly, kill_9_then_rerun, make_config
from tests.test_cli import files_args


def tiny(kind: str):
    torch.manual_seed(0)
    if kind == "bert":
        config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        return BertForSequenceClassification(config)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, bos_token_id=0,
                                          eos_token_id=0))  # fmt: skip
    config = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, vocab_size=64)  # fmt: skip
    return LlamaForCausalLM(config)


def draw(model, unit: str, density: float, block_size: int | None = None):
    prunable = select_prunable(model)
    units = run_units(model, prunable, PruneArguments(unit=unit, block_size=block_size), [1.0, density])
    weights = prunable_weights(model, prunable)
    dense = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    context = ScoringContext(weights, dense, density, units=units, transposed=transposed_weights(model, prunable))
    return STRATEGIES["magnitude"]().prune(context)


def kept(mask: torch.Tensor, dim: int, width: int = 1) -> torch.Tensor:
    """Which units along ``dim`` (``width`` indices each) are kept, asserting each is kept or removed whole."""
    units = mask.movedim(dim, 0).reshape(mask.shape[dim] // width, -1)
    assert torch.equal(units.all(1), units.any(1)), "a unit is partly pruned"
    return units.all(1)


# Per model: the tensors of layer 0's FFN as (name, dim a neuron indexes).
FFN = {
    "bert": [("bert.encoder.layer.{}.intermediate.dense.weight", 0), ("bert.encoder.layer.{}.output.dense.weight", 1)],
    "gpt2": [("transformer.h.{}.mlp.c_fc.weight", 1), ("transformer.h.{}.mlp.c_proj.weight", 0)],
    "llama": [("model.layers.{}.mlp.gate_proj.weight", 0), ("model.layers.{}.mlp.up_proj.weight", 0),
              ("model.layers.{}.mlp.down_proj.weight", 1)],
}  # fmt: skip


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_a_neuron_is_removed_whole_from_every_tensor_it_spans(kind):
    mask = draw(tiny(kind), "neuron", 0.25)
    total = kept_count = 0
    for layer in (0, 1):
        per_tensor = [kept(mask[name.format(layer)], dim) for name, dim in FFN[kind]]
        assert all(torch.equal(per_tensor[0], other) for other in per_tensor[1:]), "the FFN's tensors disagree"
        total, kept_count = total + len(per_tensor[0]), kept_count + int(per_tensor[0].sum())
    assert kept_count == round(total * 0.25)
    ffn = {name.format(layer) for name, _ in FFN[kind] for layer in (0, 1)}
    assert all(m.all() for name, m in mask.items() if name not in ffn), "a tensor no neuron spans was pruned"


def test_a_head_is_a_kv_group_in_q_k_v_and_o():
    mask = draw(tiny("llama"), "head", 0.5)
    for layer in (0, 1):
        prefix = f"model.layers.{layer}.self_attn."
        groups = [kept(mask[prefix + "q_proj.weight"], 0, 16), kept(mask[prefix + "k_proj.weight"], 0, 8),
                  kept(mask[prefix + "v_proj.weight"], 0, 8), kept(mask[prefix + "o_proj.weight"], 1, 16)]  # fmt: skip
        assert all(torch.equal(groups[0], g) for g in groups[1:]) and len(groups[0]) == 2
    assert all(mask[f"model.layers.{layer}.mlp.up_proj.weight"].all() for layer in (0, 1))


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_blocks_are_whole_square_tiles(kind):
    mask = draw(tiny(kind), "block", 0.5, block_size=8)
    tiles = [
        m.reshape(m.shape[0] // 8, 8, m.shape[1] // 8, 8).permute(0, 2, 1, 3).reshape(-1, 64) for m in mask.values()
    ]
    tiles = torch.cat(tiles)
    assert torch.equal(tiles.all(1), tiles.any(1)), "a block is partly pruned"
    assert int(tiles.all(1).sum()) == round(len(tiles) * 0.5)


def test_a_neuron_run_with_its_control(tiny_bert, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["prune", str(tiny_bert), *files_args(), "--max-train-samples", "64", "--max-eval-samples", "16",
            "--batch-size", "16", "--levels", "2", "--prune-fraction", "0.5", "--unit", "neuron",
            "--control", "random-prune", "--output-dir", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "of the surviving FFN neurons, to 75.0% of them removed" in capsys.readouterr().out
    ffn = FFN["bert"]
    for branch in ("imp", "random-prune"):
        mask = load_file(out / branch / "level_2" / "mask.safetensors")
        per_layer = [int(kept(mask[ffn[0][0].format(layer)], 0).sum()) for layer in (0, 1)]
        if branch == "imp":
            ticket_per_layer = per_layer
            assert sum(per_layer) == 32  # 25% of the 2 x 64 neurons
        assert per_layer == ticket_per_layer, "the control keeps the ticket's neurons per layer"
        metrics = json.loads((out / branch / "level_2" / "metrics.json").read_text())
        assert metrics["unit"] == "neuron" and metrics["unit_sparsity"] == pytest.approx(0.75)
    assert "neurons removed" in (out / "results.md").read_text()


def test_a_structured_run_resumes_bit_identically_after_kill_9(tiny_bert, tmp_path):
    args = [sys.executable, "-m", "hf_lottery", "prune", str(tiny_bert), *files_args(), "--levels", "3",
            "--max-train-samples", "64", "--max-eval-samples", "16", "--batch-size", "8", "--max-steps", "40",
            "--unit", "neuron", "--prune-fraction", "0.3"]  # fmt: skip
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    level = killed / "imp"
    kill_9_then_rerun(
        args, killed, whole, when=level / "level_1" / "metrics.json", before=level / "level_2" / "metrics.json"
    )
    for number in (1, 2, 3):
        for name in ("mask.safetensors", "weights.safetensors"):
            a, b = (load_file(run / "imp" / f"level_{number}" / name) for run in (killed, whole))
            assert all(torch.equal(a[k], b[k]) for k in b), f"level {number} {name} differs"


@pytest.mark.parametrize("unit, warned", [("element", True), ("neuron", False)])
def test_a_tensor_emptied_is_warned_of_unless_removing_a_blocks_neurons_emptied_it(
    tiny_bert, tmp_path, capsys, unit, warned
):
    """Layer 0's FFN, far smaller than the rest, is pruned away whole either way: single weights scored far below
    the rest (the warning's case: an untrained pooler), or all of a block's neurons, which is what --unit neuron
    removes."""
    ffn = [name.format(0) for name, _ in FFN["bert"]]
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert)
    with torch.no_grad():
        for name in ffn:
            model.get_parameter(name).mul_(1e-4)
    folder = tmp_path / "small-ffn"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    run_lottery(make_config(folder, tmp_path / "run", levels=1, prune_fraction=0.5, max_steps=1, unit=unit))
    out = capsys.readouterr().out
    mask = load_file(RunPaths(tmp_path / "run").level("imp", 1).mask)
    assert not any(mask[name].any() for name in ffn)
    assert (f"warning: level 1 removed every weight of {', '.join(ffn)}" in out) == warned
    assert warned or "warning: " not in out  # nor that it left them thin


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--unit", "head"], "model type 'bert' ties the head size to hidden_size / num_attention_heads"),
        (["--unit", "block", "--block-size", "5"], "--block-size 5 does not tile"),
        (["--block-size", "16"], "--block-size sets the side of --unit block blocks"),
        (["--unit", "neuron", "--scope", "row"], "--scope row compares single weights within a row"),
        (["--unit", "block", "--block-size", "32", "--scope", "layer", "--prune-fraction", "0.2"],
         "level 1 would remove no whole block"),
        (["--unit", "neuron", "--exclude", "intermediate"], "which --include/--exclude leave out"),
    ],
)  # fmt: skip
def test_bad_unit_input_gets_one_line_and_writes_nothing(tiny_bert, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    fails_cleanly(capsys, [str(tiny_bert), *files_args(), "--levels", "2", *extra], message, out)
    assert not out.exists()


# --- compact export ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tiny_gpt2, tmp_path_factory):
    """A 2-layer Llama with grouped-query attention (4 heads, 2 KV heads) and the tiny GPT-2's tokenizer."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    config = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, vocab_size=len(tokenizer), max_position_embeddings=64,
                         bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


STOCK_LOGITS = """
import sys, torch
sys.modules["hf_lottery"] = None  # the compact model needs nothing from hf-lottery
from transformers import {auto}
model = {auto}.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    logits = model(input_ids=torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])).logits
torch.save({{"logits": logits, "parameters": model.num_parameters()}}, sys.argv[2])
"""


def stock(folder, auto: str, tmp_path) -> dict:
    import subprocess

    out = tmp_path / f"{folder.name}.pt"
    code = STOCK_LOGITS.format(auto=auto)
    subprocess.run([sys.executable, "-c", code, str(folder), str(out)], check=True, capture_output=True, timeout=120)
    return torch.load(out)


@pytest.mark.parametrize(
    "model, unit, auto, field",
    [
        ("tiny_bert", "neuron", "AutoModelForSequenceClassification", "intermediate_size"),
        ("tiny_gpt2", "neuron", "AutoModelForCausalLM", "n_inner"),
        ("tiny_llama", "head", "AutoModelForCausalLM", "num_key_value_heads"),
    ],
)
def test_a_compact_ticket_is_a_smaller_stock_model_with_the_same_outputs(
    model, unit, auto, field, request, text_files, tmp_path, capsys
):
    from hf_lottery import load_ticket

    folder = request.getfixturevalue(model)
    data = files_args() if model == "tiny_bert" else ["--train-file", str(text_files[0]), "--validation-file",
                                                      str(text_files[1]), "--max-length", "16"]  # fmt: skip
    run = tmp_path / "run"
    args = ["prune", str(folder), *data, "--max-train-samples", "64", "--max-eval-samples", "16", "--batch-size",
            "16", "--levels", "1", "--prune-fraction", "0.5", "--unit", unit, "--scope", "layer",
            "--output-dir", str(run)]  # fmt: skip
    assert main(args) == 0
    full, small = tmp_path / "full", tmp_path / "small"
    assert main(["export", str(run), str(full), "--level", "1"]) == 0
    assert main(["export", str(run), str(small), "--level", "1", "--compact"]) == 0
    assert f"compact: {field}" in capsys.readouterr().out
    a, b = stock(full, auto, tmp_path), stock(small, auto, tmp_path)
    assert torch.allclose(a["logits"], b["logits"], atol=1e-5)
    assert b["parameters"] < a["parameters"]
    assert (small / "model.safetensors").stat().st_size < (full / "model.safetensors").stat().st_size
    facts = json.loads((small / "ticket.json").read_text())["compact"]
    before, after = facts["config_changes"][field]
    assert after == before // 2 and facts["compact_parameters"] == b["parameters"] and not facts["padded"]
    kept = json.loads(RunPaths(run).level("imp", 1).metrics.read_text())["kept_parameters"]
    assert kept == b["parameters"], "a removed neuron's bias is counted as removed, as compact export drops it"
    assert "It is **compact**" in (small / "README.md").read_text()
    # hf-lottery reads it as any ticket: the masks, cut the same way, fit the compact model and keep it as trained
    ticket, masks = load_ticket(small)
    params = dict(ticket.named_parameters())
    assert all(params[name].shape == m.shape for name, m in masks.items())
    rewound, _ = load_ticket(small, weights="rewind")
    assert dict(rewound.named_parameters()).keys() == params.keys()


NEURON_FIELD = {"roberta": "intermediate_size", "distilbert": "hidden_dim"}  # what a compact export cuts


@pytest.fixture(scope="module", params=list(NEURON_FIELD))
def neuron_run(request, tmp_path_factory):
    """A finished one-level neuron ticket (``--scope layer``) of a tiny RoBERTa or DistilBERT classifier, built from
    a config with the demo vocabulary and saved with its tokenizer, as a Hub checkpoint is."""
    kind, root = request.param, tmp_path_factory.mktemp(f"neuron-{request.param}")
    vocab = str(DEMO_DATA / "vocab.txt")
    torch.manual_seed(0)
    if kind == "roberta":  # positions start after the padding index
        tokenizer = BertTokenizerFast(vocab=vocab)
        model = RobertaForSequenceClassification(RobertaConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=66, pad_token_id=tokenizer.pad_token_id, num_labels=2,
        ))  # fmt: skip
    else:  # DistilBERT takes no token_type_ids, which its tokenizer does not make
        tokenizer = DistilBertTokenizerFast(vocab=vocab)
        model = DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id, num_labels=2,
        ))  # fmt: skip
    model.save_pretrained(root / kind)
    tokenizer.save_pretrained(root / kind)
    run = root / "run"
    run_lottery(make_config(root / kind, run, levels=1, unit="neuron", scope="layer", max_train_samples=32,
                            max_eval_samples=16))  # fmt: skip
    return run, NEURON_FIELD[kind]


def test_compact_roberta_and_distilbert_are_smaller_stock_models_with_the_masked_models_logits(neuron_run, tmp_path):
    run, field = neuron_run
    small = tmp_path / "small"
    compact = export_ticket(run, small, level=1, compact=True)["compact"]
    stock = AutoModelForSequenceClassification.from_pretrained(small).eval()
    paths = RunPaths(run)
    masked = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(paths.model_files)).eval()
    load_model(masked, str(paths.level("imp", 1).weights))  # the level as trained, its pruned weights zero
    assert type(stock) is type(masked)
    ids = torch.randint(5, masked.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(ids)
    attention[1, 8:] = 0  # a padded row
    with torch.no_grad():
        expected, got = (m(input_ids=ids, attention_mask=attention).logits for m in (masked, stock))
    assert torch.allclose(got, expected, atol=1e-5)
    assert stock.num_parameters() == compact["compact_parameters"] < compact["dense_parameters"]
    assert compact["dense_parameters"] == masked.num_parameters()
    assert compact["config_changes"][field] == [64, 32] and getattr(stock.config, field) == 32
    # without --measure-latency nothing is timed: the card is the same on every export
    assert "latency" not in compact and "Timed at export" not in (small / "README.md").read_text()


@pytest.mark.parametrize("neuron_run", ["distilbert"], indirect=True)
def test_measure_latency_times_the_compact_model_against_the_dense_one_and_the_card_gives_sizes(
    neuron_run, tmp_path, capsys
):
    run, _ = neuron_run
    timed = tmp_path / "timed"
    assert main(["export", str(run), str(timed), "--level", "1", "--compact", "--measure-latency"]) == 0
    assert "x dense (cpu, " in capsys.readouterr().out
    compact = json.loads((timed / "ticket.json").read_text())["compact"]
    latency = compact["latency"]
    assert 0 < latency["ratio"] < math.inf
    assert latency["ratio"] == pytest.approx(latency["compact_ms"] / latency["dense_ms"])
    assert (latency["device"], latency["batch"], latency["sequence_length"]) == ("cpu", 1, 32)  # the run's length
    card = (timed / "README.md").read_text()
    assert f"Timed at export on CPU ({latency['threads']} threads, batch 1, 32 tokens," in card
    assert f"it takes {latency['ratio']:.2f}× the dense masked model's time" in card
    # the sizes: the exported weights file against the level's dense one
    assert compact["compact_bytes"] == (timed / "model.safetensors").stat().st_size < compact["dense_bytes"]
    assert compact["dense_bytes"] == (run / "imp" / "level_1" / "weights.safetensors").stat().st_size
    assert f"{compact['dense_bytes'] / 1e3:.1f} kB dense, {compact['compact_bytes'] / 1e3:.1f} kB here" in card
    # there is no pair to time without --compact: one line, nothing written
    out = tmp_path / "out"
    assert main(["export", str(run), str(out), "--level", "1", "--measure-latency"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and not out.exists()
    assert err.endswith("--measure-latency times the compact model (or the ONNX files) against the dense one: add "
                        "--compact or --onnx")  # fmt: skip


def test_compact_export_of_an_element_ticket_is_refused(tiny_bert, tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "out"
    assert main(["prune", str(tiny_bert), *files_args(), "--max-train-samples", "32", "--max-eval-samples", "16",
                 "--levels", "1", "--output-dir", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["export", str(run), str(out), "--level", "1", "--compact"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "only neuron, head and layer tickets become smaller models" in err
    assert not out.exists()


# --- block inference --------------------------------------------------------------------------------------------


def test_block_tickets_run_on_bsr_with_the_dense_outputs():
    from hf_lottery.pruning.masks import apply_mask
    from hf_lottery.tickets.inference import (
        DEFAULT_MIN_BLOCK_SPARSITY,
        BlockSparseLinear,
        SparseLinear,
        plan_inference,
        sparsify_for_inference,
    )

    model = tiny("bert").eval()
    masks = draw(model, "block", 0.1, block_size=16)
    apply_mask(model, masks)
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        dense = model(input_ids=ids).logits
    plan = {d.name: d for d in plan_inference(model, masks=masks)}
    sparsify_for_inference(model, masks=masks)
    with torch.inference_mode():
        assert torch.allclose(model(input_ids=ids).logits, dense, atol=1e-5)
    layers = dict(model.named_modules())
    for name in (n.removesuffix(".weight") for n in masks):
        sparse = plan[name].sparsity >= DEFAULT_MIN_BLOCK_SPARSITY
        assert isinstance(layers[name], BlockSparseLinear) == sparse, (name, plan[name].reason)
        assert (plan[name].block in (16, 32)) == sparse  # a tensor pruned whole is also in 32x32 blocks
    assert any(isinstance(m, BlockSparseLinear) for m in model.modules())
    # the same sparsity without whole blocks is not block-structured: CSR's rule (0.93) keeps those layers dense
    model = tiny("bert")
    element = draw(model, "element", 0.1)
    assert not any(d.block or d.swapped for d in plan_inference(model, masks=element))
    assert not any(isinstance(m, SparseLinear) for m in sparsify_for_inference(model, masks=element).modules())


# --- layer units -------------------------------------------------------------------------------------------------

BLOCKS = {"bert": "bert.encoder.layer", "gpt2": "transformer.h", "llama": "model.layers"}


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_a_layer_is_removed_whole_and_nothing_outside_the_blocks(kind):
    model = tiny(kind)
    mask = draw(model, "layer", 0.5)
    blocks = {i: [n for n in mask if n.startswith(f"{BLOCKS[kind]}.{i}.")] for i in (0, 1)}
    kept = {i: [bool(mask[n].all()) for n in names] for i, names in blocks.items()}
    removed = {i: [not mask[n].any() for n in names] for i, names in blocks.items()}
    assert sorted(all(k) for k in kept.values()) == [False, True], "one block kept whole"
    assert sorted(all(r) for r in removed.values()) == [False, True], "the other removed whole"
    outside = [n for n in mask if not n.startswith(BLOCKS[kind])]
    assert all(mask[n].all() for n in outside)  # the pooler (BERT) is no block's: it stays dense


def deeper(folder, tmp_path, layers: int = 4):
    """``folder``'s model with ``layers`` blocks, randomly initialised, saved with its tokenizer."""
    config = AutoConfig.from_pretrained(folder)
    setattr(config, "n_layer" if config.model_type == "gpt2" else "num_hidden_layers", layers)
    out = tmp_path / f"deep-{config.model_type}"
    torch.manual_seed(0)
    auto = AutoModelForMaskedLM if config.model_type == "bert" else AutoModelForCausalLM
    auto.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    return out


def without_blocks(model, path: str, kept: list[int]):
    """The reference the test writes: ``model`` with only the ``kept`` blocks, in order, in its block list."""
    parent, name = path.rsplit(".", 1)
    blocks = model.get_submodule(path)
    setattr(model.get_submodule(parent), name, torch.nn.ModuleList(blocks[i] for i in kept))
    model.config.num_hidden_layers = len(kept)
    return model


@pytest.mark.parametrize(
    "model, auto",
    [("tiny_bert", "AutoModelForSequenceClassification"), ("tiny_gpt2", "AutoModelForCausalLM"),
     ("tiny_llama", "AutoModelForCausalLM")],
)  # fmt: skip
def test_a_layer_ticket_skips_its_removed_blocks_and_compacts_to_a_shallower_stock_model(
    model, auto, request, text_files, tmp_path, capsys
):
    import transformers

    folder = deeper(request.getfixturevalue(model), tmp_path)
    kind = AutoConfig.from_pretrained(folder).model_type
    data = files_args() if kind == "bert" else ["--train-file", str(text_files[0]), "--validation-file",
                                                str(text_files[1]), "--max-length", "16"]  # fmt: skip
    run = tmp_path / "run"
    control = ["--control", "random-prune"] if kind == "bert" else []
    args = ["prune", str(folder), *data, "--max-train-samples", "64", "--max-eval-samples", "16", "--batch-size",
            "16", "--levels", "1", "--prune-fraction", "0.5", "--unit", "layer", *control,
            "--output-dir", str(run)]  # fmt: skip
    assert main(args) == 0
    level = RunPaths(run).level("imp", 1)
    mask, trained, rewind = (load_file(p) for p in (level.mask, level.weights, RunPaths(run).rewind_point))
    prefix = BLOCKS[kind]
    removed = [i for i in range(4) if not any(m.any() for n, m in mask.items() if n.startswith(f"{prefix}.{i}."))]
    kept = [i for i in range(4) if i not in removed]
    assert len(removed) == 2
    # skipped while training, not zeroed: a removed block's biases and norms got no gradient, a kept one's did
    state = {n: t for n, t in trained.items() if n not in mask}
    for i, moved in [(removed[0], False), (kept[0], True)]:
        own = [n for n in state if n.startswith(f"{prefix}.{i}.")]
        assert any(not torch.equal(state[n], rewind[n]) for n in own) == moved
    if control:
        control_mask = load_file(RunPaths(run).level("random-prune", 1).mask)
        blocks_kept = [
            any(m.any() for n, m in control_mask.items() if n.startswith(f"{prefix}.{i}.")) for i in range(4)
        ]
        assert sum(blocks_kept) == 2, "the control keeps as many blocks as the ticket"
    assert main(["export", str(run), str(tmp_path / "full"), "--level", "1"]) == 1
    assert "export it with --compact" in capsys.readouterr().err
    small = tmp_path / "small"
    assert main(["export", str(run), str(small), "--level", "1", "--compact"]) == 0
    compact = stock(small, auto, tmp_path)
    reference = getattr(transformers, auto).from_pretrained(folder)  # the head: loaded from the level below
    reference.load_state_dict(trained, strict=False)
    reference = without_blocks(reference.eval(), prefix, kept)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]), use_cache=False).logits
    assert torch.allclose(compact["logits"], expected, atol=1e-5)
    facts = json.loads((small / "ticket.json").read_text())["compact"]
    field = "n_layer" if kind == "gpt2" else "num_hidden_layers"
    assert facts["config_changes"] == {field: [4, 2]}
    assert facts["compact_parameters"] == compact["parameters"] < facts["dense_parameters"]
    # what the level says it keeps is the compact model: the removed blocks' biases and norms count as removed
    assert json.loads(level.metrics.read_text())["kept_parameters"] == compact["parameters"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--unit", "layer", "--scope", "layer"], "--unit layer ranks the transformer blocks against each other"),
        (["--unit", "layer", "--exclude", "attention"], "--unit layer removes whole blocks, and --include/--exclude"),
        (["--unit", "layer", "--levels", "3"], "level 2 would remove every layer (the model has 2)"),
    ],
)
def test_bad_layer_input_gets_one_line_and_writes_nothing(tiny_bert, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    fails_cleanly(capsys, [str(tiny_bert), *files_args(), "--prune-fraction", "0.5", "--levels", "2", *extra],
                  message, out)  # fmt: skip
    assert not out.exists()
