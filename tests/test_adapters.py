"""Masked adapters: training moves the kept weights only, and the merged model is a stock, still-sparse model."""

import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    default_data_collator,
)

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.pruning.masks import apply_mask, default_prunable, transposed_weights
from hf_lottery.training.adapters import add_masked_adapters

VOCAB = 64
LAYERS = dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64)
# Each architecture's tiny model and the Auto class that loads its checkpoint; BERT without dropout, so that its
# loss goes down within a few steps.
ARCHITECTURES = {
    "llama": (
        lambda: LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, num_key_value_heads=2, **LAYERS)),
        AutoModelForCausalLM,
    ),
    "gpt2": (
        lambda: GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2)),
        AutoModelForCausalLM,
    ),
    "bert": (
        lambda: BertForMaskedLM(
            BertConfig(vocab_size=VOCAB, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **LAYERS)
        ),
        AutoModelForMaskedLM,
    ),
}


def pruned(architecture: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A tiny model of ``architecture`` with half of each prunable weight pruned at random, and its mask."""
    torch.manual_seed(0)
    model = ARCHITECTURES[architecture][0]()
    generator = torch.Generator().manual_seed(1)
    params = dict(model.named_parameters())
    mask = {name: torch.rand(params[name].shape, generator=generator) < 0.5 for name in default_prunable(model)}
    apply_mask(model, mask)
    return model, mask


def tokens(rows: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (rows, 16), generator=torch.Generator().manual_seed(seed))


def outputs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def stock_name(name: str) -> str:
    return name.replace(".parametrizations.weight.original", ".weight")


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_trained_adapters_merge_into_a_stock_model_that_keeps_every_pruned_weight_zero(architecture, tmp_path):
    model, mask = pruned(architecture)
    if architecture == "gpt2":
        assert transposed_weights(model, list(mask))  # Conv1D weights, stored (in, out), are among those adapted
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    adapters = add_masked_adapters(model, mask, rank=4, seed=0)
    assert adapters.names == list(mask)
    optimizer = torch.optim.AdamW(adapters.parameters(), lr=3e-2, weight_decay=0.1)
    batch = tokens(8, seed=2)
    losses = []
    model.train()
    for _ in range(8):
        optimizer.zero_grad()  # before the step, so that the last step's gradients are left to look at
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.02, losses
    trained = {id(p) for p in model.parameters() if p.grad is not None and p.grad.count_nonzero()}
    assert trained == {id(p) for p in adapters.parameters()}  # gradients reach A and B, and nothing else

    frozen = {stock_name(n): p for n, p in model.named_parameters() if "parametrizations.weight.0" not in n}
    assert frozen.keys() == before.keys()
    for name, p in frozen.items():
        assert torch.equal(p, before[name]), name
    probe = tokens(4, seed=3)
    adapted = outputs(model, probe)

    adapters.merge()
    merged = dict(model.named_parameters())
    assert merged.keys() == before.keys()
    assert all(p.requires_grad for p in merged.values())
    for name, kept in mask.items():
        weight = merged[name].detach()
        assert (weight[~kept] == 0.0).all(), name
        moved = weight[kept] != before[name][kept]
        assert moved.float().mean() > 0.9, name
    for name in before.keys() - mask.keys():
        assert torch.equal(merged[name], before[name]), name
    assert torch.allclose(outputs(model, probe), adapted, atol=1e-6)

    model.save_pretrained(tmp_path / "merged")
    auto = ARCHITECTURES[architecture][1]
    loaded, info = auto.from_pretrained(tmp_path / "merged", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert torch.allclose(outputs(loaded, probe), adapted, atol=1e-6)
    reloaded = dict(loaded.named_parameters())
    for name, kept in mask.items():
        assert (reloaded[name][~kept] == 0.0).all(), name


def test_the_same_seed_draws_the_same_adapters():
    def drawn(seed: int) -> list[torch.Tensor]:
        model, mask = pruned("llama")
        return [p.detach().clone() for p in add_masked_adapters(model, mask, rank=2, seed=seed).parameters()]

    first, again, other = drawn(0), drawn(0), drawn(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert all(not p.any() for p in first[1::2])  # every B starts at zero: the adapted model starts as the ticket


def test_the_pruned_weights_are_zeroed_when_the_mask_is_not_applied_yet():
    torch.manual_seed(0)
    model = ARCHITECTURES["llama"][0]()
    name = "model.layers.0.mlp.up_proj.weight"
    kept = torch.rand(model.get_parameter(name).shape, generator=torch.Generator().manual_seed(0)) < 0.5
    add_masked_adapters(model, {name: kept}, rank=2, seed=0).merge()
    assert (model.get_parameter(name)[~kept] == 0.0).all() and model.get_parameter(name)[kept].count_nonzero()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(rank=0), "rank must be 1 or more, got 0"),
        (dict(alpha=0.0), "alpha must be > 0, got 0.0"),
        (dict(mask={}), "the mask names no weight to adapt"),
        (dict(mask={"model.embed_tokens.weight": None}), "'model.embed_tokens.weight' is not the weight of a Linear"),
        (dict(mask={"model.norm.weight": None}), "'model.norm.weight' is not the weight of a Linear"),
        (dict(mask={"model.layers.0.mlp.up_proj.bias": None}), "is not the weight of a Linear or Conv1D layer"),
        (dict(mask={"model.layers.0.mlp.up_proj.weight": torch.ones(3, 3, dtype=torch.bool)}), "has shape (3, 3)"),
        (dict(mask={"model.layers.0.mlp.up_proj.weight": torch.ones(64, 32)}), "expected bool"),
    ],
)
def test_bad_input_is_one_line(change, message):
    model, mask = pruned("llama")
    arguments = dict(mask=mask, rank=4, seed=0) | change
    with pytest.raises(LotteryError) as err:
        add_masked_adapters(model, **arguments)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_weight_is_adapted_once_and_merged_once():
    model, mask = pruned("gpt2")
    adapters = add_masked_adapters(model, mask, rank=2, seed=0)
    with pytest.raises(LotteryError, match="has an adapter already; merge it first"):
        add_masked_adapters(model, mask, rank=2, seed=0)
    adapters.merge()
    with pytest.raises(LotteryError, match="merged already"):
        adapters.merge()
    add_masked_adapters(model, mask, rank=2, seed=0).merge()  # a merged model takes new adapters


def language_data():
    """hf-lottery's training data for causal-LM: random token blocks, scored by perplexity."""
    from functools import partial

    from hf_lottery.training.tasks.base import Metric, PreparedData
    from hf_lottery.training.tasks.text import evaluate_perplexity

    def blocks(rows: int, seed: int) -> Dataset:
        ids = tokens(rows, seed).tolist()
        return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * 16] * rows, "labels": ids})

    return PreparedData(
        blocks(16, seed=4), blocks(8, seed=5), lambda seed: default_data_collator, default_data_collator,
        Metric("perplexity", greater_is_better=False), partial(evaluate_perplexity, shift=True),
    )  # fmt: skip


def train_adapted(data, checkpoint, *, stop_at: int | None = None) -> tuple[torch.nn.Module, dict, dict]:
    """A pruned GPT-2 with adapters trained by hf-lottery's own loop (with an empty mask), then merged."""
    from accelerate import Accelerator

    from hf_lottery.foundations.arguments import TrainArguments
    from hf_lottery.training.loop import train

    model, mask = pruned("gpt2")
    adapters = add_masked_adapters(model, mask, rank=4, seed=0)
    args = TrainArguments(
        learning_rate=1e-2, weight_decay=0.1, warmup_ratio=0.0, batch_size=4, eval_batch_size=8, max_steps=6,
        gradient_accumulation_steps=1, mixed_precision="no", eval_steps=2, save_steps=3,
    )  # fmt: skip
    accelerator = Accelerator(cpu=True)
    on_step = None if stop_at is None else (lambda step, _: step == stop_at)
    metrics = train(model, {}, data, args, accelerator, seed=0, desc="recovery", checkpoint=checkpoint,
                    on_step=on_step)  # fmt: skip
    if stop_at is None:
        adapters.merge()
    return model, mask, metrics


def test_hf_lotterys_training_loop_trains_the_adapters_and_resumes_from_its_checkpoint(tmp_path):
    data = language_data()
    model, mask, metrics = train_adapted(data, tmp_path / "whole")
    assert metrics["steps"] == 6
    ticket, _ = pruned("gpt2")
    weights, start = dict(model.named_parameters()), dict(ticket.named_parameters())
    for name, kept in mask.items():
        assert (weights[name][~kept] == 0.0).all(), name
        assert not torch.equal(weights[name], start[name]), name
    for name in start.keys() - mask.keys():  # frozen, weight decay included: fused AdamW skips them
        assert torch.equal(weights[name], start[name]), name

    train_adapted(data, tmp_path / "killed", stop_at=4)  # stops after step 4, its checkpoint of step 3 kept
    resumed, _, metrics = train_adapted(data, tmp_path / "killed")
    assert metrics["resumed_from_step"] == 3
    for name, p in resumed.named_parameters():
        assert torch.equal(p, weights[name]), name
