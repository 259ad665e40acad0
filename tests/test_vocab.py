"""`export --trim-vocab`: a smaller vocabulary that stock transformers loads, with the same logits on kept text."""

import json

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

from hf_lottery import export_ticket, load_ticket
from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config

KEPT = ["the film was good", "this story is dull and the music is flat"]


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab") / "run"
    test = out.parent / "test.tsv"
    test.write_text("".join((DEMO_DATA / "dev.tsv").read_text().splitlines(keepends=True)[:1] +
                            (DEMO_DATA / "dev.tsv").read_text().splitlines(keepends=True)[300:340]))  # fmt: skip
    run_lottery(make_config(tiny_bert, out, levels=1, test_file=str(test)))
    return out


@pytest.fixture(scope="module")
def untrimmed(run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("full") / "ticket"
    export_ticket(run, folder, level=1)
    return folder


def logits(folder, texts, auto=AutoModelForSequenceClassification):
    tokenizer, model = AutoTokenizer.from_pretrained(folder), auto.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def test_trimmed_folder_loads_in_stock_transformers_with_equal_logits_on_kept_text(run, untrimmed, tmp_path, capsys):
    text = tmp_path / "kept.txt"
    text.write_text("\n".join(KEPT) + "\n")
    out = tmp_path / "trimmed"
    assert main(["export", str(run), str(out), "--level", "1", "--trim-vocab", str(text)]) == 0
    printed = capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(out)
    words = {w for line in KEPT for w in line.split()} | {"a"}  # "a", the vocabulary's one single-character piece
    assert len(tokenizer) == 5 + len(words)  # the special tokens, the words of the text and "a", nothing else
    assert AutoModelForSequenceClassification.from_pretrained(out).config.vocab_size == len(tokenizer)
    assert torch.allclose(logits(out, KEPT), logits(untrimmed, KEPT), atol=1e-5, rtol=0)
    assert tokenizer.tokenize("a superb film") == ["a", "[UNK]", "film"]  # ids that were cut
    facts = json.loads((out / "ticket.json").read_text())["vocabulary"]
    assert facts["kept_ids"] == len(tokenizer) and facts["vocab_size"] == 70
    assert facts["parameters_removed"] == (70 - len(tokenizer)) * 32  # the word embeddings' rows, 32 wide
    unknown = facts["splits"]["validation"]["trimmed_unknown"]
    assert (
        unknown > 0 and facts["splits"]["test"]["trimmed_unknown"] > 0 and facts["splits"]["validation"]["unknown"] == 0
    )
    assert f"{len(tokenizer)} of 70 ids kept" in printed and "unknown tokens" in printed
    assert f"{len(tokenizer)} of the 70 token ids" in (out / "README.md").read_text()
    model, masks = load_ticket(out)  # the rewind point and masks were cut the same way
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    rewind, _ = load_ticket(out, weights="rewind")
    assert rewind.get_input_embeddings().weight.shape == (len(tokenizer), 32)
    finetuned = tmp_path / "finetuned"
    assert main(["finetune", str(out), "--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file",
                 str(DEMO_DATA / "dev.tsv"), "--max-train-samples", "16", "--max-eval-samples", "8", "--max-steps",
                 "1", "--output-dir", str(finetuned)]) == 0  # fmt: skip


def test_run_data_keeps_what_the_run_saw_and_the_cut_rewind_point_matches(run, untrimmed, tmp_path):
    out = tmp_path / "trimmed"
    facts = export_ticket(run, out, level=1, trim_vocab=[])
    assert facts["vocabulary"]["source"] == "the run's training and validation data"
    assert facts["vocabulary"]["splits"]["validation"]["trimmed_unknown"] == 0  # it kept the validation data's ids
    kept = AutoTokenizer.from_pretrained(out).convert_tokens_to_ids
    full = AutoTokenizer.from_pretrained(untrimmed).get_vocab()
    old_ids = sorted(full[t] for t in AutoTokenizer.from_pretrained(out).get_vocab())
    rewind, _ = load_ticket(out, weights="rewind")
    full_rewind, _ = load_ticket(untrimmed, weights="rewind")
    rows = full_rewind.get_input_embeddings().weight[old_ids]
    assert torch.equal(rewind.get_input_embeddings().weight, rows)
    assert kept("[PAD]") == rewind.config.pad_token_id == 0


@pytest.fixture(scope="module")
def masked_lm_run(tiny_bert, text_files, tmp_path_factory):
    train, valid = text_files
    out = tmp_path_factory.mktemp("mlm") / "run"
    run_lottery(make_config(tiny_bert, out, levels=1, train_file=str(train), validation_file=str(valid)))
    return out


def test_masked_lm_head_is_cut_with_its_bias_and_gives_the_kept_columns(masked_lm_run, tmp_path):
    full, trimmed, text = tmp_path / "full", tmp_path / "trimmed", tmp_path / "kept.txt"
    text.write_text("\n".join(KEPT) + "\n")
    export_ticket(masked_lm_run, full, level=1)
    export_ticket(masked_lm_run, trimmed, level=1, trim_vocab=[str(text)])
    model = AutoModelForMaskedLM.from_pretrained(trimmed)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied
    vocab = AutoTokenizer.from_pretrained(full).get_vocab()
    old_ids = sorted(vocab[t] for t in AutoTokenizer.from_pretrained(trimmed).get_vocab())
    got, expected = logits(trimmed, KEPT, AutoModelForMaskedLM), logits(full, KEPT, AutoModelForMaskedLM)
    assert got.shape[-1] == len(old_ids) < expected.shape[-1]
    assert torch.allclose(got, expected[..., old_ids], atol=1e-5, rtol=0)  # the head's bias was cut too


def test_compact_ticket_trims_too(tiny_bert, tmp_path):
    run = tmp_path / "run"
    run_lottery(make_config(tiny_bert, run, levels=1, unit="neuron"))
    text = tmp_path / "kept.txt"
    text.write_text("\n".join(KEPT) + "\n")
    compact, both = tmp_path / "compact", tmp_path / "both"
    export_ticket(run, compact, level=1, compact=True)
    export_ticket(run, both, level=1, compact=True, trim_vocab=[str(text)])
    config = AutoModelForSequenceClassification.from_pretrained(both).config
    assert config.intermediate_size < 64 and config.vocab_size == len(AutoTokenizer.from_pretrained(both)) < 70
    assert torch.allclose(logits(both, KEPT), logits(compact, KEPT), atol=1e-5, rtol=0)
    model, masks = load_ticket(both)
    assert model.config.intermediate_size == config.intermediate_size
