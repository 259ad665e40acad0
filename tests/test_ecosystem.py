"""hf-lottery as a citizen of the ecosystem: the launcher's settings, honest packaging and cards, first errors first."""

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState
from packaging.requirements import Requirement

from hf_lottery import export_ticket
from hf_lottery.commands.cli import main
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config

ROOT = Path(__file__).resolve().parent.parent


def only_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hf-lottery: error: "), err
    return lines[0]


def test_the_launchers_settings_are_used_and_recorded(tiny_bert, tmp_path, monkeypatch):
    # What `accelerate launch --mixed_precision bf16 --gradient_accumulation_steps 2` puts in the environment.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "2")
    rows = run_lottery(make_config(tiny_bert, tmp_path / "run", levels=0, epochs=1))
    assert AcceleratorState().mixed_precision == "bf16"
    assert rows[0].steps == 2  # 64 rows / batch 16 / 2 accumulated: Accelerate and the step count agree
    saved = read_json(RunPaths(tmp_path / "run").config)["train"]
    assert (saved["mixed_precision"], saved["gradient_accumulation_steps"]) == ("bf16", 2)


def test_an_explicit_flag_beats_the_launcher(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "2")
    config = make_config(tiny_bert, tmp_path / "run", levels=0, epochs=1, mixed_precision="no",
                         gradient_accumulation_steps=4)  # fmt: skip
    rows = run_lottery(config)
    assert AcceleratorState().mixed_precision == "no" and rows[0].steps == 1


def test_env_shows_the_effective_settings(capsys, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "mixed_precision: fp16 (ACCELERATE_MIXED_PRECISION)" in out
    assert "gradient_accumulation_steps: 1 (default)" in out


def test_unset_launcher_settings_keep_old_run_names():
    # 0.1 had "no" and 1 as plain defaults; a run that leaves them unset keeps its directory name.
    base = dict(model_name_or_path="bert-base-uncased", task="sst2", target_sparsity=0.9)
    named = make_config("bert-base-uncased", "out", **base).run_hash()
    resolved = make_config("bert-base-uncased", "out", **base, mixed_precision="no", gradient_accumulation_steps=1)
    assert resolved.run_hash() == named
    bf16 = make_config("bert-base-uncased", "out", **base, mixed_precision="bf16")
    assert bf16.run_hash() != named and "--mixed-precision bf16" in bf16.to_command()


def test_values_are_checked_before_anything_is_written(capsys, tiny_bert, tmp_path, monkeypatch):
    out = tmp_path / "out"
    train = str(Path(__file__).resolve().parent.parent / "hf_lottery" / "demo_data" / "train.tsv")
    files = ["--train-file", train, "--validation-file", train, "--levels", "1", "--output-dir", str(out)]
    for flag, value, message in [
        ("--learning-rate", "-1", "--learning-rate must be > 0, got -1.0"),
        ("--weight-decay", "-0.1", "--weight-decay must be >= 0"),
        ("--max-grad-norm", "nan", "--max-grad-norm must be >= 0"),
    ]:
        assert main(["prune", str(tiny_bert), *files, flag, value]) == 1
        assert message in only_error_line(capsys)
        assert not out.exists()
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "two")
    assert main(["prune", str(tiny_bert), *files]) == 1
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS='two'" in only_error_line(capsys)
    assert not out.exists()


def test_the_first_error_is_the_real_one(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no cached token either
    assert main(["finetune", str(tmp_path / "no-such-ticket"), "--task", "sst2"]) == 1
    assert "no-such-ticket' does not exist" in only_error_line(capsys)  # not a failed GLUE download
    assert main(["push", str(tmp_path / "no-such-run"), "me/repo"]) == 1
    assert "is not an hf-lottery run directory" in only_error_line(capsys)  # not the missing token


@pytest.mark.parametrize("installed", ["2.6.0+cu124", "2.9.1+cu128", "2.13.0+cpu", "2.13.0"])
def test_no_dependency_replaces_a_users_torch(installed):
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = {Requirement(d).name.lower().replace("_", "-"): Requirement(d) for d in dependencies}
    assert requirements["torch"].specifier.contains(installed)
    for name, requirement in requirements.items():
        assert not any(spec.operator in ("==", "===") for spec in requirement.specifier), f"{name} is pinned"


def test_every_imported_library_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [d for name, deps in project["optional-dependencies"].items() if name != "test" for d in deps]
    # a library of an optional feature (the onnx extra) is declared by its extra, and imported only when used
    declared = {Requirement(d).name.lower().replace("-", "_") for d in [*project["dependencies"], *extras]}
    imported = set()
    for source in (ROOT / "hf_lottery").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    aliases = {"sklearn": "scikit_learn", "yaml": "pyyaml"}
    third_party = imported - set(sys.stdlib_module_names) - {"hf_lottery", "__future__"}
    missing = {m for m in third_party if aliases.get(m, m) not in declared}
    assert not missing, f"imported but not in pyproject.toml: {sorted(missing)}"


def test_a_card_links_only_to_what_the_project_knows(tiny_bert, tmp_path):
    run_lottery(make_config(tiny_bert, tmp_path / "run", levels=1))
    export_ticket(tmp_path / "run", tmp_path / "ticket", level=1, repo_id="me/ticket")
    card = (tmp_path / "ticket" / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", card) + re.findall(r"https?://[^\s)\"'>]+", card)
    files = {p.name for p in (tmp_path / "ticket").iterdir()}
    for link in links:
        assert link in files or link == str(tiny_bert), f"unknown link in the card: {link}"
    assert "pip install hf-lottery" not in card and "arrives with" not in card
