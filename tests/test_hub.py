"""The Hub round trip against the local Hub-protocol server of tests/hub_server.py (the real client code)."""

import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, constants, hf_hub_download
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification

from hf_lottery import load_ticket
from hf_lottery.commands.cli import main
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config, rescore
from tests.test_export import logits


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "run"
    run_lottery(make_config(tiny_bert, out, levels=3, prune_fraction=0.5, control=["random-prune"]))
    return RunPaths(out)


@pytest.fixture
def alice(hub_server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    return hub_server


def clean_cache() -> Path:
    shutil.rmtree(constants.HF_HUB_CACHE, ignore_errors=True)
    return Path(constants.HF_HUB_CACHE)


def level_model(run: RunPaths, level: int):
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(run.root / "model"))
    model.load_state_dict(load_file(run.level("imp", level).weights), strict=False)
    return model


def test_push_then_load_from_a_clean_cache(run, alice, capsys):
    assert main(["push", str(run.root), "alice/ticket", "--level", "2"]) == 0
    assert "pushed: " in capsys.readouterr().out
    expected = logits(level_model(run, 2))

    cache = clean_cache()
    ours, masks = load_ticket("alice/ticket")
    downloaded = {p.name for p in cache.rglob("*") if p.is_file() and "snapshots" in p.parts}
    assert "model.sparse.safetensors" in downloaded and "model.safetensors" not in downloaded  # sparse only
    assert torch.equal(logits(ours), expected)
    run_masks = load_file(run.level("imp", 2).mask)
    assert set(masks) == set(run_masks) and all(torch.equal(masks[k], run_masks[k]) for k in masks)

    clean_cache()
    stock = AutoModelForSequenceClassification.from_pretrained("alice/ticket")  # no hf-lottery involved
    assert torch.equal(logits(stock), expected)


def test_second_push_is_a_new_revision_and_the_old_one_still_loads(run, alice):
    api = HfApi(token=alice.token)
    assert main(["push", str(run.root), "alice/revisions", "--level", "1"]) == 0
    first = api.model_info("alice/revisions").sha
    # The user edits the card outside our section; the next push keeps the edit.
    readme = Path(hf_hub_download("alice/revisions", "README.md")).read_text()
    api.upload_file(path_or_fileobj=(readme + "\n## My notes\n\nKeep me.\n").encode(), path_in_repo="README.md",
                    repo_id="alice/revisions")  # fmt: skip
    assert main(["push", str(run.root), "alice/revisions", "--level", "3"]) == 0
    info = api.model_info("alice/revisions")
    assert info.sha != first
    commits = api.list_repo_commits("alice/revisions") if hasattr(api, "list_repo_commits") else None
    assert commits is None or commits[0].title.startswith("Lottery ticket: level 3, 87.5% sparse")
    clean_cache()
    _, old = load_ticket("alice/revisions", revision=first)
    _, new = load_ticket("alice/revisions")
    assert sum(int(m.sum()) for m in old.values()) == 4 * sum(int(m.sum()) for m in new.values())  # 1/2 vs 1/8
    card = Path(hf_hub_download("alice/revisions", "README.md")).read_text()
    assert "Keep me." in card and "**level 3**" in card and card.count("hf-lottery:start") == 1


def test_private_repositories_are_invisible_to_others(run, hub_server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert main(["push", str(run.root), "alice/secret", "--private"]) == 0
    clean_cache()
    with pytest.raises(LotteryError, match="no such repository, or it is private"):
        load_ticket("alice/secret", token=hub_server.other_token)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(LotteryError, match="no such repository, or it is private"):
        load_ticket("alice/secret")
    model, _ = load_ticket("alice/secret", token=hub_server.token)
    assert model is not None


def test_push_errors_are_one_line(run, hub_server, monkeypatch, capsys):
    def fails(message: str, *args: str) -> None:
        assert main(["push", str(run.root), *args]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err

    monkeypatch.delenv("HF_TOKEN", raising=False)
    fails("no Hugging Face token: set HF_TOKEN or run `hf auth login`", "alice/x")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    fails("the Hub rejected your token", "alice/x")
    HfApi(token=hub_server.other_token).create_repo("bob/mine")
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    fails("bob/mine: your token may not write there", "bob/mine")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    fails("could not reach the Hub", "alice/x")


def test_prune_push_to_hub(tiny_bert, tmp_path, alice, capsys):
    args = ["prune", str(tiny_bert), "--train-file", str(make_config(tiny_bert, tmp_path).data.train_file),
            "--validation-file", str(make_config(tiny_bert, tmp_path).data.validation_file), "--levels", "1",
            "--max-train-samples", "32", "--max-eval-samples", "16", "--max-steps", "2",
            "--output-dir", str(tmp_path / "run"), "--push-to-hub", "alice/from-prune"]  # fmt: skip
    assert main(args) == 0
    assert "pushed: " in capsys.readouterr().out
    assert "ticket.json" in HfApi(token=alice.token).list_repo_files("alice/from-prune")


def test_a_push_of_best_without_a_winning_ticket_is_refused_before_the_hub_is_touched(run, alice, capsys):
    assert main(["push", str(run.root), "alice/no-winner", "--tolerance", "-1"]) == 1  # nothing is 1 above dense
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no pruned level is within the tolerance (-1)" in err, err
    assert "ships it anyway" in err
    assert not HfApi(token=alice.token).repo_exists("alice/no-winner")


def test_prune_push_to_hub_without_a_winning_ticket_keeps_the_run_and_says_how_to_push(tiny_bert, tmp_path, alice,
                                                                                     capsys):  # fmt: skip
    out = tmp_path / "run"
    args = ["prune", str(tiny_bert), "--train-file", str(make_config(tiny_bert, tmp_path).data.train_file),
            "--validation-file", str(make_config(tiny_bert, tmp_path).data.validation_file), "--levels", "1",
            "--max-train-samples", "32", "--max-eval-samples", "16", "--max-steps", "2",
            "--output-dir", str(out)]  # fmt: skip
    assert main(args) == 0
    rescore(RunPaths(out).level("imp", 1), 0.0)  # the pruned level got every example wrong
    capsys.readouterr()

    assert main([*args, "--push-to-hub", "alice/no-ticket"]) == 1  # the same run, finished: it only pushes
    captured = capsys.readouterr()
    assert "| 1 | imp | " in captured.out and " | 0.0000 | " in captured.out  # the results: printed and written
    assert (out / "results.json").exists() and RunPaths(out).level("imp", 1).weights.exists()
    err = captured.err
    assert err.count("\n") == 1 and err.startswith("hf-lottery: error: not pushed: no pruned level is within"), err
    assert f"`hf-lottery push {out} alice/no-ticket --level 1` pushes that level anyway" in err
    assert not HfApi(token=alice.token).repo_exists("alice/no-ticket")
    assert main(["push", str(out), "alice/no-ticket", "--level", "1"]) == 0


def test_push_to_hub_without_a_token_fails_before_training(tiny_bert, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = ["prune", str(tiny_bert), "--train-file", str(make_config(tiny_bert, tmp_path).data.train_file),
            "--validation-file", str(make_config(tiny_bert, tmp_path).data.validation_file), "--levels", "1",
            "--output-dir", str(tmp_path / "run"), "--push-to-hub", "alice/never"]  # fmt: skip
    assert main(args) == 1
    assert "no Hugging Face token" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
