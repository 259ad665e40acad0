"""Every task kind end to end, as a user runs it: prune -> export -> stock ``from_pretrained`` -> ``load_ticket``
-> ``finetune``; a masked-LM ticket transferred to classification; bad input as one line.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForTokenClassification

from hf_lottery import export_ticket, load_ticket
from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.rows import LevelResult, read_results, within_tolerance
from hf_lottery.pruning.masks import density
from hf_lottery.training.tasks import Metric
from tests.helpers import SENTENCES

QUICK = ["--max-steps", "2", "--batch-size", "8", "--max-length", "32", "--seed", "0"]
TAGS = {"good": "B-POS", "great": "B-POS", "bad": "B-NEG", "film": "I-POS"}


def one_line_error(capsys, args: list[str], *fragments: str) -> None:
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("hf-lottery: error: "), err
    assert all(f in lines[0] for f in fragments), lines[0]


def write_conll(path: Path, sentences: list[str]) -> Path:
    """A small BIO-tagged CoNLL file made of the demo sentences."""
    blocks = ["\n".join(f"{w}\t{TAGS.get(w, 'O')}" for w in s.split()) for s in sentences]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def conll_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("conll")
    return write_conll(folder / "train.conll", SENTENCES[:40]), write_conll(folder / "dev.conll", SENTENCES[40:])


def prune(model: Path, train: Path, dev: Path, out: Path, *extra: str) -> list[LevelResult]:
    args = ["prune", str(model), "--train-file", str(train), "--validation-file", str(dev), "--levels", "1"]
    assert main([*args, "--prune-fraction", "0.5", *QUICK, "--output-dir", str(out), *extra]) == 0
    return read_results(RunPaths(out))


# What each kind's card suggests to fine-tune its ticket on: data of that kind.
FINETUNE_DATA = {
    "masked-lm": "--train-file train.txt --validation-file valid.txt",
    "causal-lm": "--train-file train.txt --validation-file valid.txt",
    "token-classification": "--train-file train.conllu --validation-file dev.conllu",
}
KINDS = {
    "masked-lm": ("tiny_bert", "text_files", AutoModelForMaskedLM, "perplexity"),
    "causal-lm": ("tiny_gpt2", "text_files", AutoModelForCausalLM, "perplexity"),
    "token-classification": ("tiny_bert", "conll_files", AutoModelForTokenClassification, "f1"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_prune_export_stock_load_ticket_and_finetune(kind, request, tmp_path, capsys):
    model_fixture, data_fixture, auto_class, metric = KINDS[kind]
    model, (train, dev) = request.getfixturevalue(model_fixture), request.getfixturevalue(data_fixture)
    rows = prune(model, train, dev, tmp_path / "run")
    assert read_json(RunPaths(tmp_path / "run").config)["model"]["task_kind"] == kind
    assert [r.metric for r in rows] == [metric, metric] and rows[1].sparsity == pytest.approx(0.5, abs=1e-3)

    facts = export_ticket(tmp_path / "run", tmp_path / "ticket", level=1)
    assert facts["task_kind"] == kind and facts["greater_is_better"] == (metric == "f1")
    trained = load_file(RunPaths(tmp_path / "run").level("imp", 1).weights)
    stock = auto_class.from_pretrained(tmp_path / "ticket")  # transformers alone
    state = stock.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items())
    if kind == "masked-lm":  # the decoder stays tied to the word embeddings, which were never pruned
        assert stock.get_output_embeddings().weight.data_ptr() == stock.get_input_embeddings().weight.data_ptr()
    card = (tmp_path / "ticket" / "README.md").read_text()
    assert f"{auto_class.__name__}.from_pretrained" in card and f"- {kind}" in card  # the usage snippet, the tags
    assert f"finetune {tmp_path / 'ticket'} {FINETUNE_DATA[kind]} --output-dir ft/" in card and "--task " not in card

    loaded, masks = load_ticket(tmp_path / "ticket")
    assert type(loaded) is type(stock)
    assert density(masks) == pytest.approx(0.5, abs=1e-3)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.items())

    capsys.readouterr()
    ft = tmp_path / "ft"
    args = ["finetune", str(tmp_path / "ticket"), "--train-file", str(train), "--validation-file", str(dev)]
    assert main([*args, *QUICK, "--output-dir", str(ft)]) == 0
    assert f"a {kind} ticket" in capsys.readouterr().out
    ft_mask = load_file(RunPaths(ft).level("imp", 0).mask)
    assert all(torch.equal(ft_mask[k], masks[k]) for k in masks)  # the mask is fixed
    ft_weights = load_file(RunPaths(ft).level("imp", 0).weights)
    assert all((ft_weights[k][~m] == 0).all() for k, m in masks.items())


def test_a_masked_lm_ticket_transfers_to_classification_from_its_rewind_point(tiny_bert, text_files, tmp_path):
    prune(tiny_bert, *text_files, tmp_path / "mlm")
    export_ticket(tmp_path / "mlm", tmp_path / "ticket", level=1)
    rewind, masks = load_ticket(tmp_path / "ticket", weights="rewind")
    train, dev = DEMO_DATA / "train.tsv", DEMO_DATA / "dev.tsv"
    ft = tmp_path / "sst"
    args = ["finetune", str(tmp_path / "ticket"), "--train-file", str(train), "--validation-file", str(dev)]
    assert main([*args, "--max-train-samples", "32", "--max-eval-samples", "16", *QUICK, "--output-dir", str(ft)]) == 0
    assert read_json(RunPaths(ft).config)["model"]["task_kind"] == "sequence-classification"
    # Chen et al.'s transfer: the body starts from the ticket's rewind point (the pretrained weights), masked.
    start = load_file(RunPaths(ft).rewind_point)
    for name, value in rewind.state_dict().items():
        if name.startswith("bert.") and name in start:
            assert torch.equal(start[name], value), name
    assert "classifier.weight" in start
    ft_mask = load_file(RunPaths(ft).level("imp", 0).mask)
    assert density(ft_mask) == pytest.approx(density(masks))

    facts = export_ticket(ft, tmp_path / "shipped")
    # a local folder is named, not located: its path stays in the run directory, off the Hub
    assert facts["finetuned_from"] == "ticket" and facts["transferred_from_task_kind"] == "masked-lm"
    card = (tmp_path / "shipped" / "README.md").read_text()
    assert "found on the masked-lm objective and transferred to sequence-classification" in card
    assert "rewind-point weights" in card


def test_perplexity_tolerance_is_relative_and_lower_is_better():
    perplexity, accuracy = Metric("perplexity", greater_is_better=False), Metric("accuracy")
    assert within_tolerance(20.19, 20.0, perplexity, 0.01) and not within_tolerance(20.21, 20.0, perplexity, 0.01)
    assert within_tolerance(15.0, 20.0, perplexity, 0.01)  # better than dense
    assert within_tolerance(0.795, 0.80, accuracy, 0.01) and not within_tolerance(0.785, 0.80, accuracy, 0.01)


def test_bad_input_for_the_new_task_kinds_is_one_line_and_writes_nothing(
    capsys, tmp_path, tiny_bert, tiny_gpt2, text_files
):
    out = tmp_path / "out"
    train, dev = text_files
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n\n")
    no_tags = tmp_path / "no_tags.conll"
    no_tags.write_text("good\nfilm\n\nbad\n")
    uneven = tmp_path / "uneven.conll"
    uneven.write_text("good\tB-POS\nfilm\n")
    files = ["--validation-file", str(dev), "--levels", "1", "--output-dir", str(out)]
    cases = [
        (["prune", str(tiny_bert), "--output-dir", str(out)], "Salesforce/wikitext", "--train-file"),
        (["prune", str(tiny_bert), "--train-file", str(blank), *files], "blank.txt"),
        (["prune", str(tiny_bert), "--train-file", str(no_tags), *files], "no_tags.conll"),
        (["prune", str(tiny_bert), "--train-file", str(uneven), *files], "uneven.conll"),
        (["prune", str(tiny_gpt2), "--train-file", str(train), *files, "--task-kind", "masked-lm"],
         "no masked-LM head"),
        (["prune", str(tiny_bert), "--dataset-name", "no-such/dataset", "--levels", "1", "--output-dir", str(out)],
         "no-such/dataset"),
        (["prune", str(tiny_gpt2), "--train-file", str(train), *files, "--max-length", "100"], "has 64 positions"),
        (["prune", str(tiny_bert), "--train-file", str(train), *files, "--task-kind", "nope"], "unknown task kind"),
    ]  # fmt: skip
    for args, *fragments in cases:
        one_line_error(capsys, args, *fragments)
        assert not out.exists(), f"{args} wrote {out}"


def test_the_default_job_announces_its_corpus_and_schedule(capsys, tmp_path, tiny_bert):
    main(["prune", str(tiny_bert), "--output-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "task: masked-lm on the default corpus Salesforce/wikitext (wikitext-2-raw-v1)"
    assert out[1].startswith("schedule: 6 pruning levels of 20% of the surviving weights, to 70.0% sparsity")
