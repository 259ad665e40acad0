"""The masked-LM and causal-LM task kinds: perplexity by hand, fixed evaluation masks, causal blocks, bad input,
and IMP end to end on a tiny BERT and a tiny GPT-2 built from configs (no download).
"""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, BertConfig, BertModel

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.config import DataArguments, ModelArguments, RunConfig
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.rows import LevelResult
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.training.tasks import TaskData, resolve_task_kind
from hf_lottery.training.tasks.causal_lm import CausalLM
from hf_lottery.training.tasks.masked_lm import MaskedLM
from hf_lottery.training.tasks.text import PERPLEXITY, evaluate_perplexity, load_text
from tests.helpers import SENTENCES


def data_args(text_files, **values) -> DataArguments:
    train, valid = text_files
    return DataArguments(train_file=str(train), validation_file=str(valid), **values)


# --- perplexity by hand ---------------------------------------------------------------------------------------


class FixedLogits(torch.nn.Module):
    """A stand-in model: logits from a function of the batch's input ids."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=self.fn(input_ids))


def one_hot_logits(target: torch.Tensor, vocab: int, value: float) -> torch.Tensor:
    return torch.nn.functional.one_hot(target, vocab).float() * value


def test_uniform_logits_give_perplexity_equal_to_the_vocabulary_size():
    vocab = 7
    model = FixedLogits(lambda ids: torch.zeros(*ids.shape, vocab))
    labels = torch.tensor([[1, 2, -100, -100], [3, -100, 4, 5]])
    batches = [{"input_ids": torch.zeros(2, 4, dtype=torch.long), "labels": labels}]
    for shift in (False, True):
        metrics = evaluate_perplexity(model, batches, Accelerator(cpu=True), shift=shift)
        assert metrics["perplexity"] == pytest.approx(vocab, rel=1e-6)
        assert metrics["loss"] == pytest.approx(math.log(vocab), rel=1e-6)


def test_ignored_labels_do_not_count_and_tokens_are_weighted_across_batches():
    vocab, confident = 5, 3.0
    # Logit 3 on the input token: a label equal to the input costs `right`, any other `wrong`.
    right = -math.log(math.exp(confident) / (math.exp(confident) + vocab - 1))
    model = FixedLogits(lambda ids: one_hot_logits(ids, vocab, confident))
    batches = [
        {"input_ids": torch.tensor([[1, 2, 0]]), "labels": torch.tensor([[1, 2, -100]])},
        {"input_ids": torch.tensor([[4, 0], [3, 3]]), "labels": torch.tensor([[4, -100], [3, 0]])},
    ]
    metrics = evaluate_perplexity(model, batches, Accelerator(cpu=True), shift=False)
    wrong = -math.log(1 / (math.exp(confident) + vocab - 1))
    expected = (4 * right + wrong) / 5  # five scored tokens over two batches, not a mean of batch means
    assert metrics["loss"] == pytest.approx(expected, rel=1e-6)
    assert metrics["perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)


def test_causal_evaluation_shifts_by_one():
    vocab, confident = 6, 2.0
    # Position t puts its mass on token t+1: perfect under the causal shift, wrong without it.
    model = FixedLogits(lambda ids: one_hot_logits(torch.roll(ids, -1, dims=1), vocab, confident))
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    metrics = evaluate_perplexity(model, [{"input_ids": ids, "labels": ids}], Accelerator(cpu=True), shift=True)
    right = -math.log(math.exp(confident) / (math.exp(confident) + vocab - 1))
    assert metrics["loss"] == pytest.approx(right, rel=1e-6)  # four predicted tokens, all right
    unshifted = evaluate_perplexity(model, [{"input_ids": ids, "labels": ids}], Accelerator(cpu=True), shift=False)
    assert unshifted["loss"] == pytest.approx(math.log(math.exp(confident) + vocab - 1), rel=1e-6)


# --- data preparation -----------------------------------------------------------------------------------------


def test_masked_validation_set_is_the_same_every_time(tiny_bert, text_files):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    args = data_args(text_files, max_length=32)
    data = load_text(args)
    assert len(data.train) == 40 and len(data.validation) == 20  # blank lines skipped
    first = MaskedLM().prepare(data, tokenizer, args, Accelerator(cpu=True))
    again = MaskedLM().prepare(data, tokenizer, args, Accelerator(cpu=True))
    assert first.validation["input_ids"] == again.validation["input_ids"]
    assert first.validation["labels"] == again.validation["labels"]
    plain = tokenizer(data.validation, truncation=True, max_length=32)["input_ids"]
    assert first.validation["input_ids"] != plain
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    for ids, masked, labels in zip(plain, first.validation["input_ids"], first.validation["labels"], strict=True):
        assert any(label != -100 for label in labels), "an example with nothing to predict"
        for token, shown, label in zip(ids, masked, labels, strict=True):
            assert label in (-100, token)
            if label == -100 or token in special:
                assert shown == token and label == -100
    assert any(tokenizer.mask_token_id in ids for ids in first.validation["input_ids"])
    # Training masks afresh from the level's seed: the same seed gives the same batch.
    features = [first.train[i] for i in range(8)]
    a, b = first.train_collator(3)(features), first.train_collator(3)(features)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["labels"], first.train_collator(4)(features)["labels"])


def test_a_data_set_folder_gives_documents_and_the_limits_count_documents(tmp_path):
    (tmp_path / "train.txt").write_text("\n\n".join(SENTENCES[:10]) + "\n")  # a blank row between documents
    (tmp_path / "validation.txt").write_text("\n".join(SENTENCES[10:20]) + "\n")
    data = load_text(DataArguments(dataset_name=str(tmp_path), max_train_samples=6, max_eval_samples=3))
    assert data.train == SENTENCES[:6] and data.validation == SENTENCES[10:13]
    assert data.metric == PERPLEXITY and not data.metric.greater_is_better


def test_causal_blocks_are_full_and_keep_the_end_of_text_tokens(tiny_gpt2, text_files):
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    args = data_args(text_files, max_length=16)
    data = load_text(args)
    prepared = CausalLM().prepare(data, tokenizer, args, Accelerator(cpu=True))
    eos = tokenizer.eos_token_id
    stream = [t for doc in data.train for t in tokenizer(doc, add_special_tokens=False)["input_ids"] + [eos]]
    blocks = prepared.train["input_ids"]
    assert len(blocks) == len(stream) // 16
    assert all(len(block) == 16 for block in blocks)
    assert [t for block in blocks for t in block] == stream[: len(blocks) * 16]
    assert prepared.train["labels"] == blocks
    assert sum(t == eos for block in prepared.train["labels"] for t in block) == stream[: len(blocks) * 16].count(eos)
    batch = prepared.eval_collator([prepared.validation[i] for i in range(2)])
    assert batch["input_ids"].shape == (2, 16) and (batch["labels"] == batch["input_ids"]).all()


def test_causal_validation_shorter_than_a_block_is_refused(tiny_gpt2, text_files, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("a short line\n")
    args = DataArguments(train_file=str(text_files[0]), validation_file=str(short), max_length=32)
    with pytest.raises(LotteryError, match=r"validation text is 4 tokens.*smaller --max-length") as err:
        CausalLM().prepare(load_text(args), AutoTokenizer.from_pretrained(tiny_gpt2), args, Accelerator(cpu=True))
    assert "\n" not in str(err.value)


# --- bad input: one line each ---------------------------------------------------------------------------------


def test_a_text_file_of_blank_lines_is_refused(text_files, tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    with pytest.raises(LotteryError, match="blank.txt: no text") as err:
        load_text(DataArguments(train_file=str(blank), validation_file=str(text_files[1])))
    assert "\n" not in str(err.value)


def test_a_table_is_refused_for_a_language_model(text_files, tmp_path):
    table = tmp_path / "train.csv"
    table.write_text("text\nhello\n")
    with pytest.raises(LotteryError, match=r"train.csv: .*\.txt file") as err:
        load_text(DataArguments(train_file=str(table), validation_file=str(text_files[1])))
    assert "\n" not in str(err.value)


def test_the_default_corpus_offline_says_how_to_pass_local_text():
    with pytest.raises(LotteryError) as err:
        load_text(DataArguments())
    message = str(err.value)
    assert "Salesforce/wikitext" in message and "--train-file" in message and "\n" not in message
    assert MaskedLM().describe_data(DataArguments()).startswith("the default corpus Salesforce/wikitext")


def test_the_task_kind_follows_the_model_and_a_missing_head_is_one_line(tiny_bert, tiny_gpt2, text_files):
    for model, kind in ((tiny_bert, "masked-lm"), (tiny_gpt2, "causal-lm")):
        config = AutoConfig.from_pretrained(model)
        assert resolve_task_kind(ModelArguments(str(model)), DataArguments(), config).name == kind
        assert resolve_task_kind(ModelArguments(str(model)), data_args(text_files), config).name == kind
    asked = ModelArguments(model_name_or_path=str(tiny_gpt2), task_kind="masked-lm")
    with pytest.raises(LotteryError, match="has no masked-LM head") as err:
        resolve_task_kind(asked, data_args(text_files), AutoConfig.from_pretrained(tiny_gpt2))
    assert "\n" not in str(err.value)


def test_a_bare_encoder_gets_a_new_tied_head_and_says_so(tiny_bert, tmp_path):
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(tmp_path)
    data = TaskData([], [], PERPLEXITY, "none")
    lines: list[str] = []
    model = MaskedLM().load_model(str(tmp_path), revision=None, data=data, model_config=config, log=lines.append)
    assert len(lines) == 1 and "has no masked-LM head" in lines[0] and "tied to the word embeddings" in lines[0]
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    lines.clear()
    own = MaskedLM().load_model(
        str(tiny_bert), revision=None, data=data, model_config=AutoConfig.from_pretrained(tiny_bert), log=lines.append
    )
    assert lines == [] and MaskedLM().keeps_head(own, data)


# --- IMP end to end -------------------------------------------------------------------------------------------


def run_one_level(model: Path, text_files, output_dir: Path) -> list[dict]:
    train, valid = text_files
    config = RunConfig.build(
        "prune",
        model_name_or_path=str(model),
        train_file=str(train),
        validation_file=str(valid),
        levels=1,
        prune_fraction=0.5,
        max_steps=3,
        batch_size=8,
        max_length=32,
        seed=0,
        output_dir=str(output_dir),
    )
    return run_lottery(config)


def check_run(paths: RunPaths, rows: list[LevelResult], kind: str) -> dict:
    assert read_json(paths.config)["model"]["task_kind"] == kind
    assert [r.metric for r in rows] == ["perplexity", "perplexity"]
    assert math.isfinite(rows[0].value) and rows[0].value > 1
    assert rows[1].sparsity == pytest.approx(0.5, abs=1e-3)
    return load_file(paths.level("imp", 1).mask)


def test_imp_on_a_tiny_bert_finds_a_masked_lm_ticket(tiny_bert, text_files, tmp_path):
    paths = RunPaths(tmp_path / "run")
    mask = check_run(paths, run_one_level(tiny_bert, text_files, paths.root), "masked-lm")
    assert "bert.embeddings.word_embeddings.weight" not in mask
    assert "bert.encoder.layer.0.attention.self.query.weight" in mask
    config = AutoConfig.from_pretrained(tiny_bert)
    model = MaskedLM().load_model(
        str(tiny_bert), revision=None, data=load_text(data_args(text_files)), model_config=config, log=print
    )
    decoder, embeddings = model.cls.predictions.decoder.weight, model.bert.embeddings.word_embeddings.weight
    assert decoder.data_ptr() == embeddings.data_ptr()


def test_imp_on_a_tiny_gpt2_finds_a_causal_lm_ticket(tiny_gpt2, text_files, tmp_path):
    paths = RunPaths(tmp_path / "run")
    mask = check_run(paths, run_one_level(tiny_gpt2, text_files, paths.root), "causal-lm")
    assert "transformer.h.0.attn.c_attn.weight" in mask  # a Conv1D
    assert "transformer.wte.weight" not in mask
