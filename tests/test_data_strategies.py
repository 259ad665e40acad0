"""Unit scores from data: first-order Taylor (|w x dL/dw| summed over training examples) and Block Influence
(1 - the cosine of a block's input and output), each against a direct computation on a tiny model, and the runs
and input they refuse."""

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from hf_lottery import find_ticket
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.pruning.masks import dense_mask, prunable_weights, select_prunable
from hf_lottery.pruning.strategies import STRATEGIES, ScoringContext
from hf_lottery.pruning.strategies.activation import activations
from hf_lottery.pruning.strategies.block_influence import block_influence
from hf_lottery.pruning.units import find_units
from tests.helpers import fails_cleanly
from tests.test_cli import files_args


def tiny_classifier(layers: int) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=32, num_labels=2)  # fmt: skip
    return BertForSequenceClassification(config)


def examples(count: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        {"input_ids": torch.randint(0, 50, (1, 5 + i), generator=generator), "labels": torch.tensor([i % 2])}
        for i in range(count)
    ]


def context_of(model, unit: str, density: float, batches) -> ScoringContext:
    names = select_prunable(model)
    return ScoringContext(
        weights=prunable_weights(model, names), previous=dense_mask(model, names), density=density,
        units=find_units(unit, model, names), model=model, examples=lambda samples: batches[:samples],
    )  # fmt: skip


def test_taylor_scores_are_weight_times_the_summed_loss_gradient():
    model, batches = tiny_classifier(2), examples(3)
    model.train()
    reference = copy.deepcopy(model).eval()
    for batch in batches:
        reference(**batch).loss.backward()
    expected = {name: (p.detach() * p.grad).abs() for name, p in reference.named_parameters()}
    strategy = STRATEGIES["taylor"](STRATEGIES["taylor"].arguments(taylor_samples=3))
    context = context_of(model, "element", 0.5, batches)
    scores = strategy.scores(context)
    assert scores.keys() == context.weights.keys()
    for name, score in scores.items():
        torch.testing.assert_close(score, expected[name], rtol=1e-5, atol=1e-9)
    assert model.training and all(p.grad is None for p in model.parameters())  # the model is left as it was
    again = strategy.scores(context)
    assert all(torch.equal(again[k], v) for k, v in scores.items())  # deterministic: no dropout, a fixed subset
    mask = strategy.prune(context)
    threshold = torch.cat([s.flatten() for s in scores.values()]).sort(descending=True).values
    kept = sum(int(m.sum()) for m in mask.values())
    assert all(bool((scores[k][m] >= threshold[kept - 1]).all()) for k, m in mask.items())


def test_a_taylor_neuron_scores_the_summed_weight_times_gradient_of_its_weights():
    """A neuron's first-order estimate is |Σ w x dL/dw| over its row of the FFN input and its column of the FFN
    output, where the terms may cancel: not the norm of the elements' scores."""
    model, batches = tiny_classifier(2), examples(3)
    reference = copy.deepcopy(model).eval()
    for batch in batches:
        reference(**batch).loss.backward()
    change = {name: p.detach() * p.grad for name, p in reference.named_parameters()}
    expected = torch.cat([
        (change[f"bert.encoder.layer.{i}.intermediate.dense.weight"].sum(1)
         + change[f"bert.encoder.layer.{i}.output.dense.weight"].sum(0)).abs()
        for i in range(2)
    ])  # fmt: skip
    strategy = STRATEGIES["taylor"](STRATEGIES["taylor"].arguments(taylor_samples=3))
    context = context_of(model, "neuron", 0.25, batches)
    mask = strategy.prune(context)
    kept = torch.cat([mask[f"bert.encoder.layer.{i}.intermediate.dense.weight"].any(1) for i in range(2)])
    assert int(kept.sum()) == 12 and torch.equal(kept, expected >= expected.sort(descending=True).values[11])
    norms = torch.cat([
        (change[f"bert.encoder.layer.{i}.intermediate.dense.weight"].square().sum(1)
         + change[f"bert.encoder.layer.{i}.output.dense.weight"].square().sum(0)).sqrt()
        for i in range(2)
    ])  # fmt: skip
    assert not torch.equal(kept, norms >= norms.sort(descending=True).values[11])  # the norm would keep others


def test_block_influence_is_one_minus_the_mean_cosine_of_each_blocks_input_and_output():
    model, batches = tiny_classifier(3), examples(4)
    model.eval()
    totals, tokens = torch.zeros(3), 0
    with torch.no_grad():
        for batch in batches:
            hidden = model(input_ids=batch["input_ids"], output_hidden_states=True).hidden_states
            for i in range(3):
                totals[i] += F.cosine_similarity(hidden[i], hidden[i + 1], dim=-1).sum()
            tokens += batch["input_ids"].numel()
    expected = 1 - totals / tokens
    strategy = STRATEGIES["block-influence"](STRATEGIES["block-influence"].arguments(influence_samples=4))
    context = context_of(model, "layer", 2 / 3, batches)
    torch.testing.assert_close(block_influence(context, 4), expected, rtol=1e-5, atol=1e-6)
    mask = strategy.prune(context)
    removed = context.units.removed(mask)
    assert removed == [int(expected.argmin())]  # the block that turns its hidden states least goes


def test_block_influence_needs_layer_units(tiny_bert, tmp_path, capsys):
    args = [str(tiny_bert), *files_args(), "--levels", "1", "--strategy", "block-influence", "--unit", "neuron"]
    fails_cleanly(capsys, args, "--strategy block-influence scores layer units only: add --unit layer", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_taylor_needs_training_data(tiny_bert, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    with pytest.raises(LotteryError, match="--strategy taylor scores from calibration data"):
        find_ticket(model, lambda m, mask, level: 0.5, run_config={}, output_dir=tmp_path / "o", levels=1,
                    strategy="taylor")  # fmt: skip
    assert not (tmp_path / "o").exists()


def test_activation_scores_are_each_neurons_and_blocks_mean_absolute_output():
    model, batches = tiny_classifier(2), examples(3)
    model.eval()
    seen: dict[str, list[torch.Tensor]] = {"neurons 0": [], "neurons 1": [], "blocks": []}
    hooks = [model.bert.encoder.layer[i].output.dense.register_forward_pre_hook(
        lambda module, args, i=i: seen[f"neurons {i}"].append(args[0][0].abs())) for i in range(2)]  # fmt: skip
    with torch.no_grad():
        for batch in batches:
            hidden = model(input_ids=batch["input_ids"], output_hidden_states=True).hidden_states
            seen["blocks"].append(torch.stack([(hidden[i + 1] - hidden[i]).abs().mean(-1).sum() for i in (0, 1)]))
    for hook in hooks:
        hook.remove()
    tokens = sum(b["input_ids"].numel() for b in batches)
    strategy = STRATEGIES["activation"](STRATEGIES["activation"].arguments(activation_samples=3))
    neurons = activations(context_of(model, "neuron", 0.5, batches), 3)
    for i in (0, 1):
        torch.testing.assert_close(neurons[f"layer {i}"], torch.cat(seen[f"neurons {i}"]).mean(0), rtol=1e-5, atol=1e-6)
    layers = activations(context_of(model, "layer", 0.5, batches), 3)
    torch.testing.assert_close(layers["layers"], torch.stack(seen["blocks"]).sum(0) / tokens, rtol=1e-5, atol=1e-6)
    context = context_of(model, "neuron", 0.5, batches)
    mask = strategy.prune(context)
    alive = context.units.alive(mask)  # one global ranking of the 48 neurons: the 24 loudest stay
    kept = torch.cat([alive["layer 0"], alive["layer 1"]])
    scores = torch.cat([neurons["layer 0"], neurons["layer 1"]])
    assert kept.sum() == 24 and bool(scores[kept].min() >= scores[~kept].max())


@pytest.mark.parametrize(("strategy", "unit"), [("taylor", "element"), ("activation", "neuron"),
                                                 ("block-influence", "layer")])  # fmt: skip
def test_a_post_training_mask_is_not_drawn_with_a_whole_model_score(tiny_bert, tmp_path, capsys, strategy, unit):
    """Post-training masks are drawn one block at a time from that block's inputs; a score that runs the whole
    model is refused before level 0 is trained, not at the draw after it."""
    args = [str(tiny_bert), *files_args(), "--post-training", "0.5", "--strategy", strategy, "--unit", unit,
            "--scope", "layer" if unit != "layer" else "global"]  # fmt: skip
    fails_cleanly(capsys, args, f"--strategy {strategy} scores by running the whole model on training examples, "
                  "and post-training draws its mask one block at a time", tmp_path / "o")  # fmt: skip
    assert not (tmp_path / "o").exists()
