"""Sparse inference: CSR layers give the dense model's outputs, only where sparse enough, and refuse training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.pruning.masks import apply_mask, default_prunable
from hf_lottery.tickets import inference
from hf_lottery.tickets.inference import SparseLinear, plan_inference, sparse_layers, sparsify_for_inference

ATOL = 1e-5


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    return BertModel(config).eval()


@torch.no_grad()
def prune(model: nn.Module, sparsity: float, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Magnitude-prune the named (default: all prunable) weights to ``sparsity`` per tensor; return the masks."""
    params = dict(model.named_parameters())
    masks = {}
    for name in names or default_prunable(model):
        weight = params[name]
        alive = torch.zeros(weight.numel(), dtype=torch.bool)
        alive[weight.abs().flatten().topk(round(weight.numel() * (1.0 - sparsity))).indices] = True
        masks[name] = alive.view_as(weight)
    apply_mask(model, masks)
    return masks


def clone(model: nn.Module) -> nn.Module:
    copy = type(model)(model.config).eval()
    copy.load_state_dict(model.state_dict())
    return copy


@pytest.mark.parametrize("batch", [1, 3])
def test_bert_at_90_percent_matches_dense(batch: int) -> None:
    dense = tiny_bert()
    prune(dense, 0.9)
    sparse = sparsify_for_inference(clone(dense), min_sparsity=0.89)  # below the default, as for one-thread serving
    assert set(sparse_layers(sparse)) == {n.removesuffix(".weight") for n in default_prunable(dense)}
    assert all(abs(s - 0.9) < 0.01 for s in sparse_layers(sparse).values())
    ids = torch.randint(0, 100, (batch, 11), generator=torch.Generator().manual_seed(batch))
    attention_mask = torch.ones_like(ids)
    attention_mask[0, -3:] = 0
    with torch.inference_mode():
        want, got = dense(ids, attention_mask=attention_mask), sparse(ids, attention_mask=attention_mask)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=ATOL, rtol=0)


def test_layers_below_the_threshold_stay_dense() -> None:
    model = tiny_bert()
    ffn = [n for n in default_prunable(model) if ".intermediate." in n or ".output.dense" in n]
    prune(model, 0.5)
    prune(model, 0.95, ffn)
    plan = {d.name: d for d in plan_inference(model)}
    sparsify_for_inference(model)
    for name, module in model.named_modules():
        if name + ".weight" in ffn:
            assert isinstance(module, SparseLinear), name
            assert plan[name].swapped
        elif name in plan:
            assert type(module) is nn.Linear, name
            assert not plan[name].swapped and "<" in plan[name].reason
    # A lower threshold swaps the 50% layers too.
    model = tiny_bert()
    masks = prune(model, 0.5)
    sparsify_for_inference(model, min_sparsity=0.4)
    assert set(sparse_layers(model)) == {n.removesuffix(".weight") for n in masks}


def test_gpt2_conv1d_is_transposed_correctly() -> None:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    dense = GPT2LMHeadModel(config).eval()
    prune(dense, 0.95, [n for n in default_prunable(dense) if n.startswith("transformer.h.")])
    sparse = sparsify_for_inference(clone(dense))
    swapped = sparse_layers(sparse)
    assert {n.rpartition(".")[2] for n in swapped} == {"c_attn", "c_proj", "c_fc"}
    assert not any(isinstance(m, Conv1D) for m in sparse.transformer.h.modules())
    assert type(sparse.lm_head) is nn.Linear  # tied to the (dense) embeddings
    c_attn = sparse.transformer.h[0].attn.c_attn
    assert (c_attn.out_features, c_attn.in_features) == (96, 32)
    torch.testing.assert_close(c_attn.to_dense(), dense.transformer.h[0].attn.c_attn.weight.detach().T)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(sparse(ids).logits, dense(ids).logits, atol=ATOL, rtol=0)


def test_the_mask_is_the_truth() -> None:
    dense = tiny_bert()
    masks = prune(dense, 0.95)
    name = "encoder.layer.0.intermediate.dense.weight"
    weight = dict(dense.named_parameters())[name]
    alive = masks[name].nonzero()
    with torch.no_grad():
        weight[tuple(alive[0])] = 0.0  # a survivor that happens to be 0.0
    model = clone(dense)
    dead = (~masks[name]).nonzero()[0]
    with torch.no_grad():
        dict(model.named_parameters())[name][tuple(dead)] = 5.0  # a pruned weight that was not re-masked
    sparsify_for_inference(model, masks=masks)
    layer = model.encoder.layer[0].intermediate.dense
    assert isinstance(layer, SparseLinear)
    assert layer.nnz == int(masks[name].sum())  # the 0.0 survivor is stored
    assert (torch.cat([block.values() for block in layer.blocks()]) == 0).sum() == 1
    torch.testing.assert_close(layer.to_dense(), weight.detach(), atol=0, rtol=0)
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).last_hidden_state, dense(ids).last_hidden_state, atol=ATOL, rtol=0)


@pytest.mark.parametrize("k_tile", [768, 5])
def test_sparse_linear_matches_f_linear_on_any_shape(k_tile: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "K_TILE", k_tile)  # 5: the 16 inputs as 4 column blocks of 4
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(24, 16, generator=generator) * (torch.rand(24, 16, generator=generator) > 0.9)
    bias = torch.randn(24, generator=generator)
    for b in (bias, None):
        layer = SparseLinear(weight, b)
        assert len(layer.blocks()) == (1 if k_tile == 768 else 4)
        torch.testing.assert_close(layer.to_dense(), weight, atol=0, rtol=0)
        for shape in [(16,), (1, 16), (5, 16), (2, 3, 16), (1, 1, 4, 16), (0, 16)]:
            x = torch.randn(*shape, generator=generator)
            y = layer(x)
            assert y.shape == (*shape[:-1], 24) and y.is_contiguous()
            torch.testing.assert_close(y, F.linear(x, weight, b), atol=ATOL, rtol=0)
    # A non-contiguous input, a fully pruned weight, float64.
    x = torch.randn(16, 6, generator=generator).T
    torch.testing.assert_close(layer(x), F.linear(x, weight), atol=ATOL, rtol=0)
    empty = SparseLinear(torch.zeros(24, 16), bias)
    torch.testing.assert_close(empty(x), bias.expand(6, 24))
    double = SparseLinear(weight.double(), bias.double())
    torch.testing.assert_close(double(x.double()), F.linear(x.double(), weight.double(), bias.double()))


def test_training_is_refused() -> None:
    model = tiny_bert()
    prune(model, 0.95)
    sparsify_for_inference(model)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(b.requires_grad for b in model.buffers())
    layer = model.encoder.layer[0].intermediate.dense
    assert isinstance(layer, SparseLinear) and not layer.training and not list(layer.parameters())
    x = torch.randn(2, 5, 32, requires_grad=True)
    with pytest.raises(LotteryError, match="inference-only.*no_grad"):
        layer(x)
    with torch.no_grad():
        assert layer(x).shape == (2, 5, 64)
    # Grad mode on but nothing requires grad: no graph is built, so it runs.
    ids = torch.randint(0, 100, (1, 5))
    assert model(ids).last_hidden_state.shape == (1, 5, 32)
    with pytest.raises(LotteryError, match="float32"):
        layer(torch.randn(2, 32, dtype=torch.float64))


def test_bad_input_is_one_clear_error() -> None:
    model = tiny_bert()
    with pytest.raises(LotteryError, match="min_sparsity"):
        sparsify_for_inference(model, min_sparsity=1.5)
    with pytest.raises(LotteryError, match="masks: mask names 'nope'"):
        sparsify_for_inference(model, masks={"nope": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(LotteryError, match="float32 and float64"):
        SparseLinear(torch.zeros(4, 4, dtype=torch.bfloat16))
    with pytest.raises(LotteryError, match="dense 2-D"):
        SparseLinear(torch.zeros(4, 4).to_sparse_csr())
    with pytest.raises(LotteryError, match="does not fit"):
        SparseLinear(torch.zeros(4, 4), mask=torch.ones(4, 5, dtype=torch.bool))


def test_half_precision_layers_stay_dense(caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_bert()
    prune(model, 0.95)
    model.to(torch.bfloat16)
    plan = plan_inference(model)
    assert not any(d.swapped for d in plan)
    assert any("bfloat16" in d.reason for d in plan)
    with caplog.at_level("INFO", logger="hf_lottery.tickets.inference"):
        sparsify_for_inference(model)
    assert sparse_layers(model) == {}
    assert "0 of 13 Linear/Conv1D layers now sparse" in caplog.text
    assert "stay dense: torch.bfloat16" in caplog.text
