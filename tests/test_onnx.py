"""`export --onnx --int8`: ONNX files that onnxruntime runs with PyTorch's logits, scored, listed in the card; and
the bad input of trimming and ONNX export refused in one line with nothing written."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    LongformerConfig,
    LongformerForMaskedLM,
)

from hf_lottery import export_ticket, load_ticket
from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import SENTENCES, make_config

ort = pytest.importorskip("onnxruntime", reason='the onnx extra is not installed: pip install "hf-lottery[onnx]"')

TEXTS = ["the film was good", "a dull and messy story with a very weak ending", "fun"]


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "run"
    test = out.parent / "test.tsv"
    rows = (DEMO_DATA / "dev.tsv").read_text().splitlines(keepends=True)
    test.write_text("".join(rows[:1] + rows[300:340]))
    run_lottery(make_config(tiny_bert, out, levels=1, test_file=str(test)))
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("repo") / "ticket"
    import contextlib
    import io

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        # --tolerance -1: any int8 score, even an equal one, falls short of it, so the warning shows
        assert main(["export", str(run), str(folder), "--level", "1", "--onnx", "--int8", "--measure-latency",
                     "--tolerance", "-1"]) == 0  # fmt: skip
    return folder, output.getvalue()


def onnx_logits(path, tokenizer, texts, padding=True):
    session = ort.InferenceSession(str(path))
    names = [i.name for i in session.get_inputs()]
    inputs = tokenizer(texts, padding=padding, return_tensors="np")
    return torch.from_numpy(session.run(["logits"], {n: inputs[n] for n in names})[0])


def test_onnx_runs_in_onnxruntime_with_pytorchs_logits_at_any_batch_and_length(exported):
    folder, _ = exported
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    for texts in (TEXTS, TEXTS[:1], TEXTS * 3):  # batch and length unlike the export's example
        with torch.no_grad():
            expected = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
        got = onnx_logits(folder / "onnx" / "model.onnx", tokenizer, texts)
        assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4, rtol=0)
        int8 = onnx_logits(folder / "onnx" / "model_quantized.onnx", tokenizer, texts)
        assert int8.shape == expected.shape and torch.allclose(int8, expected, atol=0.1, rtol=0)


def test_artifacts_are_scored_and_listed_in_output_and_card(run, exported):
    folder, printed = exported
    artifacts = json.loads((folder / "ticket.json").read_text())["artifacts"]
    rows = {row["name"]: row for row in artifacts["rows"]}
    assert list(rows) == ["PyTorch float32", "ONNX float32", "ONNX int8"]
    for row in rows.values():
        assert set(row["scores"]) == {"validation", "test"} and row["bytes"] == (folder / row["file"]).stat().st_size
    run_score = json.loads((RunPaths(run).level("imp", 1).metrics).read_text())["accuracy"]
    assert rows["PyTorch float32"]["scores"]["validation"] == pytest.approx(run_score)
    assert rows["ONNX float32"]["scores"] == pytest.approx(rows["PyTorch float32"]["scores"])
    assert artifacts["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert "onnx/model_quantized.onnx: ONNX int8" in printed and "accuracy validation" in printed
    card = (folder / "README.md").read_text()
    assert "| ONNX int8 | `onnx/model_quantized.onnx` |" in card and "| ONNX float32 | `onnx/model.onnx` |" in card
    assert "onnxruntime.InferenceSession" in card and "@huggingface/transformers" in card
    # an int8 drop beyond the tolerance is said, in the output and the card, and not refused
    warning = "int8 costs more than the tolerance (-1): validation accuracy"
    assert f"warning: {warning}" in printed and f"**Note:** {warning}" in card
    # --measure-latency: every artifact timed against the dense PyTorch model, with the conditions
    assert all(row["latency"] > 0 for row in rows.values())
    assert artifacts["latency"]["threads"] == 1 and artifacts["latency"]["sequence_length"] == 64  # the positions
    assert "| latency vs dense PyTorch |" in card and f"| {rows['ONNX int8']['latency']:.2f}× |" in card
    assert (
        "1 thread, batch 1, 64 tokens" in card and "latency against the dense PyTorch model: CPU, 1 thread" in printed
    )


@pytest.mark.slow
def test_push_uploads_the_onnx_folder_and_the_trimmed_ticket_loads(run, hub_server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert main(["push", str(run), "alice/small", "--level", "1", "--trim-vocab", "--onnx", "--int8"]) == 0
    from huggingface_hub import list_repo_files

    files = set(list_repo_files("alice/small"))
    assert {"onnx/model.onnx", "onnx/model_quantized.onnx", "tokenizer.json", "ticket.json"} <= files
    model, masks = load_ticket("alice/small")  # unchanged: the PyTorch files, trimmed
    tokenizer = AutoTokenizer.from_pretrained("alice/small")
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def bpe_run(request, tmp_path_factory, text_files):
    """A tiny GPT-2 or Llama with a byte-level BPE tokenizer, as GPT-2 and Llama 3 ship, after one IMP level."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp(f"bpe-{request.param}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    backend.train_from_iterator(SENTENCES, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    if request.param == "gpt2":
        config, build = (
            GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tokenizer)),
            GPT2LMHeadModel,
        )
    else:
        config = LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=48, max_position_embeddings=64, vocab_size=len(tokenizer))  # fmt: skip
        build = LlamaForCausalLM
    with torch.random.fork_rng():
        torch.manual_seed(0)
        build(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    train, valid = text_files
    out = tmp_path_factory.mktemp(f"run-{request.param}") / "run"
    run_lottery(make_config(folder, out, levels=1, train_file=str(train), validation_file=str(valid), max_length=16))
    return out


@pytest.mark.slow
def test_causal_lm_exports_to_onnx_and_byte_level_bpe_trimming_is_refused(bpe_run, tmp_path, capsys):
    out = tmp_path / "causal"
    facts = export_ticket(bpe_run, out, level=1, onnx=True)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    for texts in (SENTENCES[:1], SENTENCES[5:6] * 3):  # no padding token: rows of one length
        with torch.no_grad():
            expected = model(**tokenizer(texts, return_tensors="pt"), use_cache=False).logits
        got = onnx_logits(out / "onnx" / "model.onnx", tokenizer, texts, padding=False)
        assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4, rtol=0)
    assert facts["artifacts"]["onnx"]["parity_max_abs_diff"] <= 1e-4
    refused = tmp_path / "trimmed"
    capsys.readouterr()
    assert main(["export", str(bpe_run), str(refused), "--level", "1", "--trim-vocab"]) == 1
    one_line(
        capsys, "trims WordPiece (BERT-family) tokenizers only, not BPE: a BPE vocabulary is spelled by its merges"
    )
    assert not refused.exists()


@pytest.mark.slow
def test_masked_lm_exports_with_its_vocabulary_head(tiny_bert, text_files, tmp_path):
    train, valid = text_files
    run = tmp_path / "run"
    run_lottery(make_config(tiny_bert, run, levels=1, train_file=str(train), validation_file=str(valid)))
    out = tmp_path / "mlm"
    facts = export_ticket(run, out, level=1, onnx=True, int8=True)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForMaskedLM.from_pretrained(out).eval()
    texts = ["the [MASK] was good", "a [MASK] story"]
    with torch.no_grad():
        expected = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    got = onnx_logits(out / "onnx" / "model.onnx", tokenizer, texts)
    assert got.shape == expected.shape == (2, expected.shape[1], model.config.vocab_size)
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)
    rows = {row["name"]: row for row in facts["artifacts"]["rows"]}
    assert facts["artifacts"]["metric"] == "perplexity" and rows["ONNX int8"]["scores"]["validation"] > 1


@pytest.mark.slow
def test_token_classification_exports_a_label_per_token(tiny_bert, tmp_path):
    words = [line.split("\t")[0].split() for line in SENTENCES[:24]]
    conllu = "\n".join(
        "".join(f"{i}\t{w}\t{w}\t{'NOUN' if w in ('film', 'story', 'plot') else 'X'}\t_\t_\t0\t_\t_\t_\n"
                for i, w in enumerate(sentence, 1))
        for sentence in words
    )  # fmt: skip
    train, dev = tmp_path / "train.conllu", tmp_path / "dev.conllu"
    train.write_text(conllu)
    dev.write_text(conllu)
    run = tmp_path / "run"
    run_lottery(make_config(tiny_bert, run, levels=1, train_file=str(train), validation_file=str(dev)))
    out = tmp_path / "pos"
    facts = export_ticket(run, out, level=1, onnx=True)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForTokenClassification.from_pretrained(out).eval()
    with torch.no_grad():
        expected = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    got = onnx_logits(out / "onnx" / "model.onnx", tokenizer, TEXTS)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4, rtol=0)
    assert facts["artifacts"]["rows"][1]["scores"] == pytest.approx(facts["artifacts"]["rows"][0]["scores"])


def one_line(capsys, message: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hf-lottery: error: ") and message in lines[0], err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--int8"], "--int8 quantizes the ONNX export: add --onnx"),
        (["--trim-vocab", "missing.txt"], "--trim-vocab missing.txt: no such file"),
        (["--trim-vocab", "EMPTY"], "has no text"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path, capsys, extra, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    out = tmp_path / "out"
    args = [str(empty) if a == "EMPTY" else a for a in extra]
    assert main(["export", str(run), str(out), "--level", "1", *args]) == 1
    one_line(capsys, message)
    assert not out.exists() and {p.name for p in tmp_path.iterdir()} <= {"empty.txt", ".out.lock"}


@pytest.mark.slow
def test_parity_failure_refuses_the_export_and_writes_nothing(run, tmp_path, capsys):
    """Weights whose logits are not finite cannot be checked against PyTorch: the export is refused whole."""
    broken = tmp_path / "run"
    subprocess.run(["cp", "-r", str(run), str(broken)], check=True)
    weights = RunPaths(broken).level("imp", 1).weights
    state = load_file(weights)
    state["classifier.bias"] = torch.full_like(state["classifier.bias"], float("nan"))
    save_file(state, str(weights))
    out = tmp_path / "out"
    assert main(["export", str(broken), str(out), "--level", "1", "--onnx"]) == 1
    one_line(capsys, "differs from PyTorch by nan in its logits on validation batches (at most 0.0001 allowed)")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "run"]  # lock only


def test_without_the_extra_onnx_says_what_to_install(run, tmp_path):
    """A Python where onnxruntime cannot be imported, as without the extra."""
    out = tmp_path / "out"
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from hf_lottery.commands.cli import main\n"
        f"sys.exit(main(['export', {str(run)!r}, {str(out)!r}, '--onnx']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ},
                          timeout=120)  # fmt: skip
    assert done.returncode == 1 and not out.exists()
    assert done.stderr.strip() == (
        'hf-lottery: error: --onnx needs onnxruntime, not installed here: pip install "hf-lottery[onnx]"'
    )


def partly_written(path) -> None:
    """What a full disk leaves: the start of the file, then ENOSPC."""
    Path(path).write_bytes(b"\0" * 64)
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("file", ["model.onnx", "model_quantized.onnx"])
def test_a_full_disk_while_writing_onnx_writes_nothing(run, tmp_path, monkeypatch, capsys, file):
    """The disk fills inside the writers every ONNX file goes through: torch's ``ONNXProgram.save`` for the float
    export, ``onnx.save_model`` for onnxruntime's quantized one."""
    import onnx

    if file == "model.onnx":
        monkeypatch.setattr(torch.onnx.ONNXProgram, "save", lambda self, destination, **kw: partly_written(destination))
    else:
        monkeypatch.setattr(onnx, "save_model", lambda proto, destination, *a, **kw: partly_written(destination))
    out = tmp_path / "out"
    assert main(["export", str(run), str(out), "--level", "1", "--onnx", "--int8"]) == 1
    one_line(capsys, f"no space left on device in {out} (")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == [".out.lock"]


@pytest.mark.slow
def test_a_model_type_the_exporter_cannot_trace_is_named_and_nothing_written(tiny_bert, tmp_path, capsys):
    """Longformer's sliding-window attention pads to a multiple of its window with a data-dependent size, which
    ``torch.export`` cannot trace with a dynamic sequence length: the ticket exports, its ONNX file does not."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    config = LongformerConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, attention_window=4, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = tmp_path / "longformer"
    torch.manual_seed(0)
    LongformerForMaskedLM(config).save_pretrained(model)
    tokenizer.save_pretrained(model)
    run_lottery(make_config(model, tmp_path / "run", levels=1, max_length=32))
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["export", str(tmp_path / "run"), str(out), "--level", "1", "--onnx"]) == 1
    one_line(capsys, "torch.onnx.export cannot trace longformer (LongformerForSequenceClassification): ")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "longformer", "run"]
