"""Exporting a level of a finished run: what stock transformers and load_ticket get back, and the card."""

import json
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from hf_lottery import export_ticket, load_ticket
from hf_lottery.commands.cli import main, parse_command
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.report import format_table
from hf_lottery.lottery.rows import LevelResult
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    rows = run_lottery(make_config(tiny_bert, out, levels=3, prune_fraction=0.5, control=["random-prune"]))
    return RunPaths(out), rows


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    paths, _ = run
    folder = tmp_path_factory.mktemp("repo") / "me--ticket"
    facts = export_ticket(paths.root, folder, level=2, repo_id="me/ticket")
    return folder, facts


def card_commands(card: str) -> list[list[str]]:
    """The commands of a card's "How it was made", each as the shell splits it."""
    section = card.split("## How it was made")[1].split("```bash\n")[1].split("```")[0]
    return [shlex.split(command) for command in section.replace("\\\n", " ").split("\n\n")]


def logits(model, seed=0):
    model.eval()
    ids = torch.randint(6, 60, (3, 10), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_stock_transformers_and_load_ticket_give_the_trained_level(run, exported):
    paths, _ = run
    folder, _ = exported
    trained = load_file(paths.level("imp", 2).weights)
    stock = AutoModelForSequenceClassification.from_pretrained(folder)
    ours, masks = load_ticket(folder)
    reference = AutoModelForSequenceClassification.from_pretrained(folder)
    reference.load_state_dict(trained, strict=False)
    assert torch.equal(logits(stock), logits(reference))
    assert torch.equal(logits(ours), logits(stock))
    run_masks = load_file(paths.level("imp", 2).mask)
    assert set(masks) == set(run_masks) and all(torch.equal(masks[k], run_masks[k]) for k in masks)
    params = dict(ours.named_parameters())
    assert all((params[k][~m] == 0).all() for k, m in masks.items())


def test_rewind_weights_are_the_ticket(run, exported):
    paths, _ = run
    folder, _ = exported
    init, masks = load_ticket(folder, weights="rewind")
    rewind = load_file(paths.rewind_point)
    state = init.state_dict()
    for name, value in rewind.items():
        assert torch.equal(state[name], value * masks[name] if name in masks else value), name


def test_repository_files_and_facts(exported):
    folder, facts = exported
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "model.sparse.safetensors", "masks.safetensors",
            "ticket.safetensors", "ticket.json", "README.md", "sparsity_vs_metric.png",
            "tokenizer.json"} <= names  # fmt: skip
    saved = read_json(folder / "ticket.json")
    assert saved == facts
    assert saved["level"] == 2 and saved["sparsity"] == pytest.approx(0.75, abs=1e-4)
    assert saved["rewind_to"] == "pretrained" and saved["prune_fraction"] == 0.5
    assert saved["command"].startswith("hf-lottery prune ") and "--prune-fraction 0.5" in saved["command"]
    assert len(saved["levels"]) == 1 + 3 * 2


def test_each_level_counts_the_models_parameters_and_those_its_mask_keeps(run, exported):
    """The whole model's, embeddings and head included, which a sparsity of the prunable weights does not say."""
    paths, rows = run
    folder, _ = exported
    parameters = AutoModelForSequenceClassification.from_pretrained(folder).num_parameters()
    assert 1e3 <= parameters < 1e6
    for row in rows:
        pruned = sum(int((~m).sum()) for m in load_file(paths.root / row.path / "mask.safetensors").values())
        assert (row.parameters, row.kept_parameters) == (parameters, parameters - pruned)
        assert pruned > 0 or row.level == 0
    table = paths.results_table.read_text()
    assert table.splitlines()[0].endswith("| total steps | parameters kept |")
    kept = rows[-1].kept_parameters
    assert table.splitlines()[-1].endswith(f" | {kept / 1e3:.1f}k of {parameters / 1e3:.1f}k |")
    assert f"{kept / 1e3:.1f}k of {parameters / 1e3:.1f}k" in (folder / "README.md").read_text()
    # the rows of an earlier version's metrics.json, which counted none, still read, and get no column
    old = [{k: v for k, v in r.to_dict().items() if k not in ("parameters", "kept_parameters")} for r in rows]
    older = [LevelResult.from_dict(row) for row in old]
    assert older[0].parameters is None and "parameters" not in older[0].scores
    assert "parameters kept" not in format_table(older, "accuracy")


def test_model_card(exported, tiny_bert):
    folder, facts = exported
    text = (folder / "README.md").read_text()
    metadata = yaml.safe_load(text.split("---")[1])
    # a local base model is named as one: no Hub link, and no base_model (which is a Hub id by definition)
    # level 2 chosen by hand: a pruned level at its distance from dense, not called a winning ticket
    assert "A pruned level, chosen by hand (" in text and f"), of the local model `{tiny_bert.name}`, found" in text
    assert "base_model" not in metadata and f"[{tiny_bert}]" not in text
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "text-classification"
    assert {"pruned", "sparse", "lottery-ticket"} <= set(metadata["tags"])
    result = metadata["model-index"][0]["results"][0]["metrics"][0]
    assert result["type"] == "accuracy" and result["value"] == round(facts["metric_value"], 4)
    summary = f"**75% of encoder weights removed, validation accuracy {100 * facts['metric_value']:.1f} vs"
    assert summary in text
    assert "![sparsity vs accuracy](sparsity_vs_metric.png)" in text
    assert "| 2 | random-prune | 75.0% |" in text
    assert card_commands(text) == [shlex.split(facts["command"])] and 'load_ticket("me/ticket")' in text
    assert "\n# ticket\n" in text  # named by its repository
    assert "on a GLUE task" in text and "finetune me/ticket --task rte --output-dir ft/" in text
    assert "Frankle" in text and "chen2020lottery" in text


def test_the_cards_command_reproduces_the_run(tiny_bert, tmp_path):
    """Every option that makes the run what it is, a plug-in's included, is in the card, spelt as --help spells it;
    a run extended by a second command shows both, in order."""
    args = [str(tiny_bert), "--task-kind", "sequence-classification", "--train-file", str(DEMO_DATA / "train.tsv"),
            "--validation-file", str(DEMO_DATA / "dev.tsv"), "--max-train-samples", "32", "--max-eval-samples", "16",
            "--max-length", "32", "--learning-rate", "3e-4", "--batch-size", "8", "--max-steps", "2", "--seed", "1",
            "--levels", "1", "--prune-fraction", "0.3", "--strategy", "wanda",
            "--calibration-samples", "4"]  # fmt: skip
    run = tmp_path / "run"
    assert main(["prune", *args, "--output-dir", str(run)]) == 0
    export_ticket(run, tmp_path / "one", level=1)
    card = (tmp_path / "one" / "README.md").read_text()
    [command] = card_commands(card)
    assert command[:2] == ["hf-lottery", "prune"]
    lines = card.split("## How it was made")[1].split("```bash\n")[1].split("\n```")[0].splitlines()
    assert all(line.startswith("  --") for line in lines[1:])  # one option a line: no viewer cuts one off
    assert not [word for word in command if word.startswith("--") and "_" in word]
    # local paths are named by their last part (a card is published), so it is the run on files of those names
    named = [Path(arg).name if arg.startswith("/") else arg for arg in args]
    given, shown = parse_command("prune", named), parse_command("prune", command[2:])
    assert shown.identity() == given.identity() and shown.run_hash() == given.run_hash()
    assert shown.reach() == given.reach() and shown.train.learning_rate == 3e-4
    assert shown.plugin("wanda").calibration_samples == 4

    longer = [*args, "--levels", "2"]
    assert main(["prune", *longer, "--output-dir", str(run)]) == 0
    export_ticket(run, tmp_path / "two", level=2)
    first, second = card_commands((tmp_path / "two" / "README.md").read_text())
    assert first == command and parse_command("prune", second[2:]).reach() == parse_command("prune", longer).reach()


def test_a_card_exported_without_a_repository_names_the_ticket_by_what_it_is(run, tiny_bert, tmp_path):
    paths, _ = run
    out = tmp_path / "out"
    export_ticket(paths.root, out, level=1)
    text = (out / "README.md").read_text()
    name = f"{tiny_bert.name}-train-50-sparse"  # the base model, the data (train.tsv) and the sparsity, not "out"
    assert f"# {name}\n" in text and yaml.safe_load(text.split("---")[1])["model-index"][0]["name"] == name
    assert f'load_ticket("{out}")' in text and f'from_pretrained("{out}")' in text  # loads what was written


def test_best_level_is_the_sparsest_within_tolerance(run, tmp_path):
    paths, rows = run
    dense = rows[0].value
    facts = export_ticket(paths.root, tmp_path / "best", tolerance=0.05)
    imp = [r for r in rows if r.branch == "imp" and r.value >= dense - 0.05]
    assert facts["level"] == max(imp, key=lambda r: r.sparsity).level
    assert "sparsest level" in facts["level_reason"]


def test_best_is_refused_when_no_pruned_level_is_within_tolerance(run, tmp_path, capsys):
    paths, rows = run
    out = tmp_path / "x"
    # No accuracy is a whole point above dense: with --tolerance -1 no pruned level can be within it.
    assert main(["export", str(paths.root), str(out), "--tolerance", "-1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    dense = rows[0].value
    closest = max((r for r in rows if r.branch == "imp" and r.level > 0), key=lambda r: (r.value, r.sparsity))
    gap = closest.value - dense
    assert "no pruned level is within the tolerance (-1) of the dense model's validation accuracy" in err
    assert f"the best, {closest.path} ({closest.sparsity:.1%} sparse, {closest.value:.4f})" in err
    assert f"is {abs(gap):.4f} {'below' if gap < 0 else 'above'} it" in err
    assert f"`--level {closest.level}` ships it anyway" in err
    assert not out.exists()
    assert main(["export", str(paths.root), str(out), "--level", str(closest.level), "--tolerance", "-1"]) == 0
    assert read_json(out / "ticket.json")["level"] == closest.level


def test_an_existing_card_is_updated_not_overwritten(run, tmp_path):
    paths, _ = run
    existing = "---\nlicense: mit\nlanguage: en\ntags:\n- mine\n---\n# My notes\n\nKeep this paragraph.\n"
    export_ticket(paths.root, tmp_path / "a", level=1, repo_id="me/ticket", existing_card=existing)
    first = (tmp_path / "a" / "README.md").read_text()
    metadata = yaml.safe_load(first.split("---")[1])
    assert metadata["license"] == "mit" and metadata["language"] == "en"
    assert {"mine", "lottery-ticket"} <= set(metadata["tags"])
    assert "Keep this paragraph." in first and "level 1" in first
    export_ticket(paths.root, tmp_path / "b", level=2, repo_id="me/ticket", existing_card=first)
    second = (tmp_path / "b" / "README.md").read_text()
    assert second.count("<!-- hf-lottery:start") == 1 and "**level 2**" in second and "**level 1**" not in second
    assert "Keep this paragraph." in second


def test_export_errors_are_one_line_and_write_nothing(run, tmp_path, capsys):
    paths, _ = run
    assert main(["export", str(paths.root), str(tmp_path / "x"), "--level", "9"]) == 1
    assert "the run has no level 9; its levels are 0..3" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("mine")
    with pytest.raises(LotteryError, match="exists and is not empty"):
        export_ticket(paths.root, tmp_path / "full")
    with pytest.raises(LotteryError, match="not an hf-lottery run directory"):
        export_ticket(tmp_path / "full", tmp_path / "y")
    assert main(["export", str(paths.root), str(tmp_path / "z"), "--level", "one"]) == 2
    assert not (tmp_path / "z").exists()


def test_load_ticket_refuses_a_file_that_does_not_match_its_config(exported, tmp_path):
    import shutil

    from hf_lottery.tickets.sparse import load_sparse, save_sparse

    folder, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    state, masks = load_sparse(copy / "model.sparse.safetensors")
    state["bert.extra.weight"] = torch.zeros(2)
    save_sparse(copy / "model.sparse.safetensors", state, masks)
    with pytest.raises(LotteryError, match="has bert.extra.weight, which the model does not"):
        load_ticket(copy)
    (copy / "model.sparse.safetensors").unlink()
    with pytest.raises(LotteryError, match="is not an hf-lottery ticket: it has no model.sparse.safetensors"):
        load_ticket(copy)


def test_the_base_models_license_is_carried_to_the_card(run, tmp_path):
    from hf_lottery.tickets.push import base_model_license

    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A base model\n")
    assert base_model_license(str(base)) == "apache-2.0"
    assert base_model_license(str(tmp_path / "no-card")) is None  # unknown: no license line, no failure
    paths, _ = run
    export_ticket(paths.root, tmp_path / "out", level=1, license=base_model_license(str(base)))
    assert yaml.safe_load((tmp_path / "out" / "README.md").read_text().split("---")[1])["license"] == "apache-2.0"


def test_load_ticket_for_sparse_inference_gives_the_same_logits(exported):
    folder, _ = exported
    dense, _ = load_ticket(folder)
    fast, _ = load_ticket(folder, sparse_inference=True)
    assert torch.allclose(logits(fast), logits(dense), atol=1e-5)
    assert not any(p.requires_grad for p in fast.parameters())  # inference only


def test_a_run_written_by_hf_lottery_0_1_resumes_and_exports(tiny_bert, tmp_path):
    """config.json of 0.1 was flat, with no format version or task kind; its rows carried no metric direction."""
    config = make_config(tiny_bert, tmp_path / "run", levels=1)
    run_lottery(config)
    paths = RunPaths(tmp_path / "run")
    new_fields = {"task_kind", "dataset_name", "dataset_config", "mlm_probability"}
    saved = RunConfig.from_dict(read_json(paths.config)).flat()  # as it ran: the launcher's settings filled in
    flat = {k: v for k, v in saved.items() if k not in new_fields}
    paths.config.write_text(json.dumps({**flat, "hf_lottery_command": "prune"}))
    for metrics in [paths.level("imp", 0).metrics, paths.level("imp", 1).metrics]:
        metrics.write_text(json.dumps({k: v for k, v in read_json(metrics).items() if k != "greater_is_better"}))
    weights = paths.level("imp", 1).weights
    before = weights.stat().st_mtime_ns

    rows = run_lottery(make_config(tiny_bert, tmp_path / "run", levels=1))  # the same command again
    assert weights.stat().st_mtime_ns == before  # nothing was trained again
    assert [r.level for r in rows] == [0, 1]
    facts = export_ticket(tmp_path / "run", tmp_path / "ticket", level=1)
    assert facts["task_kind"] == "sequence-classification" and facts["greater_is_better"] is True
    ticket_json = tmp_path / "ticket" / "ticket.json"  # a 0.1 ticket's facts name no task kind
    ticket_json.write_text(json.dumps({k: v for k, v in read_json(ticket_json).items() if k != "task_kind"}))
    model, masks = load_ticket(tmp_path / "ticket")
    assert type(model).__name__ == "BertForSequenceClassification" and masks
