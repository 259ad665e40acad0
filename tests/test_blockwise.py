"""Block-by-block calibration (``blockwise_masks``): each block is pruned by Wanda from the inputs the blocks
before it give once pruned, the same mask as pruning block after block with whole-model forwards, on Llama, GPT-2
and BERT; one block at a time, in the caller's model; across two processes, the same mask as one."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.pytorch_utils import Conv1D

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.pruning.calibration import blockwise_masks, input_norms
from hf_lottery.pruning.strategies import STRATEGIES, ScoringContext

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
VOCAB = 101


def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    return LlamaForCausalLM(config)


def gpt2(**overrides) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=64, **overrides))


def bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    return BertForSequenceClassification(config)


BLOCKS = {LlamaForCausalLM: "model.layers", GPT2LMHeadModel: "transformer.h", BertForSequenceClassification:
          "bert.encoder.layer"}  # fmt: skip


def block_weights(model: nn.Module) -> list[str]:
    """The Linear / Conv1D weights inside the model's blocks: what a user prunes with the heads excluded."""
    inside = BLOCKS[type(model)] + "."
    return [f"{name}.weight" for name, m in model.named_modules()
            if isinstance(m, (nn.Linear, Conv1D)) and name.startswith(inside)]  # fmt: skip


def batches(seed: int, count: int = 3, padded: bool = True) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of two 10-token rows, the second padded after 6 tokens."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(1, VOCAB, (2, 10), generator=generator)
        attention = torch.ones(2, 10, dtype=torch.long)
        if padded:
            attention[1, 6:] = 0
        out.append({"input_ids": ids, "attention_mask": attention})
    return out


def wanda(model: nn.Module):
    """A ``draw``: Wanda per output row at density 0.5, through the strategy a run uses."""
    transposed = frozenset(f"{n}.weight" for n, m in model.named_modules() if isinstance(m, Conv1D))
    strategy = STRATEGIES["wanda"](STRATEGIES["wanda"].arguments(calibration_samples=1))

    def draw(weights: dict[str, torch.Tensor], norms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        previous = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
        context = ScoringContext(weights, previous, 0.5, scope="row", transposed=transposed,
                                 inputs=lambda samples: norms)  # fmt: skip
        return strategy.prune(context)

    return draw


def sequential(model: nn.Module, data: list[dict]) -> dict[str, torch.Tensor]:
    """The reference: for each block in order, whole-model forwards over all batches observing that block only,
    the blocks before it already pruned; draw; prune."""
    draw, prunable, params = wanda(model), block_weights(model), dict(model.named_parameters())
    mask = {}
    for i in range(model.config.num_hidden_layers):
        names = [n for n in prunable if n.startswith(f"{BLOCKS[type(model)]}.{i}.")]
        drawn = draw({n: params[n] for n in names}, input_norms(model, names, data, CPU))
        with torch.no_grad():
            for n in names:
                params[n][~drawn[n]] = 0
        mask.update(drawn)
    return mask


def one_pass(model: nn.Module, data: list[dict]) -> dict[str, torch.Tensor]:
    """Wanda from one whole-model pass over the unpruned model."""
    prunable, params = block_weights(model), dict(model.named_parameters())
    return wanda(model)({n: params[n] for n in prunable}, input_norms(model, prunable, data, CPU))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("build", [llama, gpt2, bert], ids=["llama", "gpt2", "bert"])
def test_each_block_is_pruned_from_the_pruned_blocks_outputs(build):
    model, data = build(), batches(0)
    reference_model = copy.deepcopy(model)
    unpruned = copy.deepcopy(model)
    mask = blockwise_masks(model, block_weights(model), data, CPU, draw=wanda(model))
    assert same(mask, sequential(reference_model, data))
    assert set(mask) == set(block_weights(model))
    assert all(m.float().mean() == 0.5 for m in mask.values())
    reference_params = dict(reference_model.named_parameters())
    assert all(torch.equal(p, reference_params[n]) for n, p in model.named_parameters())  # pruned in place
    first = f"{BLOCKS[type(model)]}.0."
    plain = one_pass(unpruned, data)
    assert all(torch.equal(mask[n], plain[n]) for n in mask if n.startswith(first))
    assert not same(mask, plain)  # later blocks see the pruned blocks' outputs


def test_padding_reaches_the_blocks_through_the_attention_mask():
    unpadded = [{**b, "attention_mask": torch.ones_like(b["attention_mask"])} for b in batches(0)]
    padded_mask = blockwise_masks(bert(), block_weights(bert()), batches(0), CPU, draw=wanda(bert()))
    unpadded_mask = blockwise_masks(bert(), block_weights(bert()), unpadded, CPU, draw=wanda(bert()))
    assert not same(padded_mask, unpadded_mask)
    assert same(padded_mask, sequential(bert(), batches(0)))


def test_the_callers_model_is_pruned_in_place_and_nothing_else_changes():
    model = llama()
    model.train()
    before = {n: (p, p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}
    mask = blockwise_masks(model, block_weights(model), batches(1), CPU, draw=wanda(model))
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    for name, (param, pointer, values) in before.items():
        assert after[name] is param and param.data_ptr() == pointer and param.device == CPU
        if name in mask:
            assert torch.equal(param, values * mask[name])
        else:
            assert torch.equal(param, values)  # embeddings, norms, head: untouched
    assert model.training  # its mode restored


def test_a_weight_the_examples_never_reach_is_refused():
    model = gpt2(add_cross_attention=True)  # cross-attention runs only with encoder states, which a batch lacks
    with pytest.raises(LotteryError, match=r"^the calibration examples never reach transformer\.h\.0\.crossattention"):
        blockwise_masks(model, block_weights(model), batches(0), CPU, draw=wanda(model))


def test_weights_outside_the_blocks_are_drawn_last_from_the_whole_pruned_model():
    model, data = bert(), batches(0)
    pooler = "bert.pooler.dense.weight"
    mask = blockwise_masks(model, [*block_weights(model), pooler], data, CPU, draw=wanda(model))
    norms = input_norms(model, [pooler], data, CPU)  # the pooler's inputs come from the pruned encoder
    assert torch.equal(mask[pooler], wanda(model)({pooler: model.get_parameter(pooler)}, norms)[pooler])
    assert mask[pooler].float().mean() == 0.5 and model.get_parameter(pooler)[~mask[pooler]].eq(0).all()


def test_models_without_blocks_or_with_blocks_of_different_kinds_are_refused():
    model = bert()
    with pytest.raises(LotteryError, match="repeated blocks .* BertForSequenceClassification has none"):
        blockwise_masks(model, ["classifier.weight"], batches(0), CPU, draw=wanda(model))
    torch.manual_seed(0)
    sliding = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                           num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
                                           sliding_window=4, max_window_layers=1))  # fmt: skip
    prunable = [f"{n}.weight" for n, m in sliding.named_modules() if isinstance(m, nn.Linear) and ".layers." in n]
    with pytest.raises(LotteryError, match=r"blocks of Qwen2ForCausalLM differ \(full_attention, sliding_attention\)"):
        blockwise_masks(sliding, prunable, batches(0), CPU, draw=wanda(sliding))
    assert all(p.abs().sum() > 0 for p in model.parameters() if p.dim() == 2)  # refused before pruning anything


@pytest.mark.multiprocess
def test_two_processes_with_half_the_batches_each_draw_the_one_process_mask(tmp_path):
    model, data = llama(), batches(2, count=4)
    model.save_pretrained(tmp_path / "model")
    torch.save(data, tmp_path / "batches.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m",
               "tests.blockwise_worker", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    norms: dict[str, torch.Tensor] = {}

    def recording(weights, block_norms):
        norms.update(block_norms)
        return wanda(model)(weights, block_norms)

    alone = blockwise_masks(model, block_weights(model), data, CPU, draw=recording)
    for rank in (0, 1):
        ranked = load_file(tmp_path / f"rank{rank}.safetensors")
        assert same({n[5:]: m for n, m in ranked.items() if n.startswith("mask:")}, alone)
        shared = {n[6:]: v for n, v in ranked.items() if n.startswith("norms:")}
        assert shared.keys() == norms.keys()
        assert all(torch.allclose(shared[n], norms[n], rtol=1e-5) for n in norms)
