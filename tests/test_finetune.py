"""``hf-lottery finetune``: a ticket trains on a new task with its mask fixed, from a folder or the Hub."""

import pytest
import torch
import yaml
from huggingface_hub import HfApi, hf_hub_download
from safetensors.torch import load_file

from hf_lottery import export_ticket, load_ticket
from hf_lottery.commands.cli import main
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config


@pytest.fixture(scope="module")
def ticket(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    run_lottery(make_config(tiny_bert, root / "run", levels=2, prune_fraction=0.5))
    export_ticket(root / "run", root / "ticket", level=2)
    return root / "ticket"


@pytest.fixture(scope="module")
def three_labels(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "three.tsv"
    words = ["good", "bad", "film", "plot", "fine", "dull"]
    rows = [f"{' '.join(words[(i * k) % 6] for k in range(1, 7))}\t{['neg', 'mid', 'pos'][i % 3]}" for i in range(48)]
    path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return path


def finetune_args(source: str, data, out, *extra: str) -> list[str]:
    return ["finetune", source, "--train-file", str(data), "--validation-file", str(data), "--batch-size", "16",
            "--epochs", "1", "--learning-rate", "1e-3", "--output-dir", str(out), *extra]  # fmt: skip


@pytest.mark.parametrize("from_init", [False, True])
def test_the_mask_holds_and_a_new_head_is_fitted(ticket, three_labels, tmp_path, from_init, capsys):
    out = tmp_path / "ft"
    capsys.readouterr()
    assert main(finetune_args(str(ticket), three_labels, out, *(["--from-init"] if from_init else []))) == 0
    printed = capsys.readouterr().out
    # one row and no dense run: the log line and the table name it alike, and nothing is compared with dense
    assert "level 0 (fine-tuned ticket): sparsity 75.00%" in printed
    table = RunPaths(out).results_table.read_text()
    assert table.splitlines()[0] == "| level | run | sparsity | accuracy | total steps | parameters kept |"
    assert table.splitlines()[2].startswith("| 0 | fine-tuned ticket | 75.0% | ")
    assert table in printed and "dense" not in table
    _, masks = load_ticket(ticket)
    start, _ = load_ticket(ticket, weights="rewind" if from_init else "trained")
    paths = RunPaths(out)
    level = paths.level("imp", 0)
    assert torch.equal(load_file(level.mask)["bert.pooler.dense.weight"], masks["bert.pooler.dense.weight"])
    before = 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert read_json(level.metrics)["sparsity"] == before  # exactly: the mask held through training
    weights = load_file(level.weights)
    assert all((weights[k][~m] == 0).all() for k, m in masks.items())
    assert weights["classifier.weight"].shape[0] == 3  # the 2-label head was replaced
    first = dict(start.named_parameters())
    rewind = load_file(paths.rewind_point)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    init, _ = load_ticket(ticket, weights="rewind")
    assert torch.equal(rewind[name], dict(init.named_parameters())[name])  # the ticket's own rewind point
    assert not torch.equal(weights[name], first[name])  # and it did train


def test_finetune_from_the_hub_then_push_names_the_ticket(ticket, three_labels, tmp_path, hub_server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    HfApi().create_repo("alice/ft-source", exist_ok=True)
    HfApi().upload_folder(repo_id="alice/ft-source", folder_path=ticket)
    out = tmp_path / "ft"
    assert main(finetune_args("alice/ft-source", three_labels, out)) == 0
    assert main(["push", str(out), "alice/ft-result", "--level", "0"]) == 0
    text = open(hf_hub_download("alice/ft-result", "README.md")).read()
    assert yaml.safe_load(text.split("---")[1])["base_model"] == "alice/ft-source"
    assert "Fine-tuned from the lottery ticket alice/ft-source" in text
    assert "lottery ticket of [alice/ft-source](https://huggingface.co/alice/ft-source)" in text


def test_a_plain_model_needs_no_mask(tiny_bert, three_labels, tmp_path, capsys):
    assert main(finetune_args(str(tiny_bert), three_labels, tmp_path / "a")) == 1
    err = capsys.readouterr().err
    assert "is not an hf-lottery ticket" in err and "--no-mask" in err and err.count("\n") == 1
    assert not (tmp_path / "a").exists()
    assert main(finetune_args(str(tiny_bert), three_labels, tmp_path / "b", "--no-mask")) == 0
    assert read_json(RunPaths(tmp_path / "b").level("imp", 0).metrics)["sparsity"] == 0.0


def test_env_prints_versions(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} " in out for name in ("torch", "transformers", "accelerate", "huggingface_hub", "datasets"))
    assert "accelerate config" in out


def test_the_example_script_trains_a_ticket_sparse(ticket, three_labels):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "finetune_ticket.py"
    done = subprocess.run(
        [sys.executable, str(script), "--ticket", str(ticket), "--train-file", str(three_labels),
         "--validation-file", str(three_labels), "--epochs", "1", "--batch-size", "16"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "density of the pruned tensors: 0.2500" in done.stdout


def test_prune_and_finetune_resolve_max_length_alike(tiny_bert, ticket, three_labels, tmp_path, capsys):
    """Both open their runs through one function: a --max-length past the model's 64 positions is refused with
    the same line, and the default is cut to them, in both."""
    prune = ["prune", str(tiny_bert), "--train-file", str(three_labels), "--validation-file", str(three_labels),
             "--levels", "1", "--max-train-samples", "16", "--batch-size", "16"]  # fmt: skip
    refused = [[*prune, "--output-dir", str(tmp_path / "p")], finetune_args(str(ticket), three_labels, tmp_path / "f")]
    errors = []
    for args in refused:
        assert main([*args, "--max-length", "65"]) == 1
        errors.append(capsys.readouterr().err.strip())
    assert errors[0] == f"hf-lottery: error: --max-length 65 is too long: model {str(tiny_bert)!r} has 64 positions"
    assert errors[1] == f"hf-lottery: error: --max-length 65 is too long: model {str(ticket)!r} has 64 positions"
    assert not (tmp_path / "p").exists() and not (tmp_path / "f").exists()
    assert main([*prune, "--output-dir", str(tmp_path / "p")]) == 0
    assert main(finetune_args(str(ticket), three_labels, tmp_path / "f")) == 0
    for run in ("p", "f"):
        assert read_json(RunPaths(tmp_path / run).config)["data"]["max_length"] == 64
