import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    DebertaV2Config,
    DistilBertConfig,
    GPT2Config,
    RobertaConfig,
)

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.pruning.masks import apply_mask, check_mask, dense_mask, select_prunable, sparsity_report

SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=50)
ARCHITECTURES = {
    # config, prunable weights per layer, weights outside the layers (pooler)
    "bert": (BertConfig(**SMALL), 6, 1),
    "roberta": (RobertaConfig(**SMALL), 6, 0),  # no pooler: its head has its own dense layer
    "deberta-v2": (DebertaV2Config(**SMALL), 6, 0),  # the ContextPooler belongs to the head
    "distilbert": (DistilBertConfig(dim=16, n_layers=2, n_heads=2, hidden_dim=32, vocab_size=50), 6, 0),
    "gpt2": (GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=50, pad_token_id=0), 4, 0),
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_default_prunable_is_the_linear_weights_of_the_body(arch):
    config, per_layer, extra = ARCHITECTURES[arch]
    model = AutoModelForSequenceClassification.from_config(config)
    names = select_prunable(model)
    assert len(names) == 2 * per_layer + extra
    assert all(name.endswith("weight") for name in names)
    assert not any(part in name for name in names for part in ("embed", "LayerNorm", "layer_norm", "ln_", "wte"))
    body = model.base_model_prefix
    assert all(name.startswith(body + ".") for name in names)  # the task head stays dense
    params = dict(model.named_parameters())
    assert all(params[name].dim() == 2 for name in names)


def test_include_replaces_and_exclude_removes():
    model = AutoModelForSequenceClassification.from_config(BertConfig(**SMALL))
    only_qkv = select_prunable(model, include=[r"attention\.self\.(query|key|value)\.weight$"])
    assert len(only_qkv) == 6
    no_pooler = select_prunable(model, exclude=["pooler"])
    assert len(no_pooler) == 12 and not any("pooler" in n for n in no_pooler)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"include": ["no_such_layer"]}, "--include 'no_such_layer' matches no parameter"),
        ({"exclude": ["embeddings"]}, "--exclude 'embeddings' matches no prunable weight"),
        ({"exclude": ["."]}, "no prunable weights are left"),
    ],
)
def test_patterns_that_match_nothing_are_errors(kwargs, message):
    model = AutoModelForSequenceClassification.from_config(BertConfig(**SMALL))
    with pytest.raises(LotteryError, match=message):
        select_prunable(model, **kwargs)


def test_tied_weights_are_pruned_once():
    model = BertForMaskedLM(BertConfig(**SMALL))
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    names = select_prunable(model, include=["word_embeddings"])
    assert names == ["bert.embeddings.word_embeddings.weight"]
    mask = dense_mask(model, names)
    mask[names[0]][:10] = False
    apply_mask(model, mask)
    assert (model.cls.predictions.decoder.weight[:10] == 0).all()


def test_sparsity_report_and_mask_checks():
    model = AutoModelForSequenceClassification.from_config(BertConfig(**SMALL))
    mask = dense_mask(model, select_prunable(model))
    first = next(iter(mask))
    mask[first][:, :8] = False  # half of a 16x16 tensor
    report = sparsity_report(mask)
    assert report["tensors"][first]["sparsity"] == 0.5
    assert report["total"]["alive"] == report["total"]["numel"] - 128
    check_mask(mask, model, "mask.safetensors")
    with pytest.raises(LotteryError, match="has shape"):
        check_mask({first: torch.ones(3, 3, dtype=torch.bool)}, model, "mask.safetensors")
    with pytest.raises(LotteryError, match="which the model does not have"):
        check_mask({"nope.weight": torch.ones(3, dtype=torch.bool)}, model, "mask.safetensors")
