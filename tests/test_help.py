"""``--help`` as a user meets it: exit 0, no torch imported (so it answers at once), one spelling per option, the
positional argument shown as one, switches without a value; and the spellings help hides still parse."""

import dataclasses
import json
import re
import subprocess
import sys

import pytest

from hf_lottery.commands.cli import main, parse_command
from hf_lottery.foundations.registry import Registry
from hf_lottery.lottery.config import sections
from hf_lottery.lottery.controls import CONTROLS
from hf_lottery.lottery.methods import METHODS
from hf_lottery.pruning.strategies import STRATEGIES
from hf_lottery.training.tasks import TASK_KINDS

COMMANDS = ["prune", "demo", "export", "push", "finetune", "env"]
HEAVY = ["torch", "transformers", "accelerate", "datasets"]

# Every --help in one fresh interpreter: the exit codes, the texts, and which heavy libraries it imported.
EVERY_HELP = f"""
import contextlib, io, json, sys
from hf_lottery.commands.cli import main
codes, texts = {{}}, {{}}
for args in [["--help"], ["-h"], *([c, "--help"] for c in {COMMANDS!r})]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            codes[" ".join(args)] = main(args)
        except SystemExit as exit_:
            codes[" ".join(args)] = exit_.code
    texts[" ".join(args)] = out.getvalue()
print(json.dumps({{"codes": codes, "texts": texts, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


@pytest.fixture(scope="module")
def every_help() -> dict:
    done = subprocess.run([sys.executable, "-c", EVERY_HELP], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def test_every_help_exits_0_without_importing_torch(every_help):
    assert set(every_help["codes"].values()) == {0}, every_help["codes"]
    assert every_help["loaded"] == []
    assert every_help["texts"]["--help"].startswith("usage: hf-lottery COMMAND")
    assert every_help["texts"]["-h"] == every_help["texts"]["--help"]
    for command in COMMANDS:
        assert every_help["texts"][f"{command} --help"].startswith(f"usage: hf-lottery {command}"), command


def test_python_dash_m_help_exits_0():
    for args in (["--help"], ["prune", "--help"]):
        done = subprocess.run([sys.executable, "-m", "hf_lottery", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.startswith("usage: hf-lottery"), (args, done.stderr)


def test_no_command_prints_the_usage_and_an_unknown_one_is_an_error(capsys):
    assert main([]) == 0 and capsys.readouterr().out.startswith("usage: hf-lottery COMMAND")
    assert main(["prnue"]) == 2 and capsys.readouterr().err.startswith("usage: hf-lottery COMMAND")


def options_shown(text: str) -> list[str]:
    """The option column of a --help text: what each option's line starts with, as a user reads it."""
    return [line.strip().split("  ")[0] for line in text.splitlines() if line.startswith("  -")]


@pytest.mark.parametrize("command, positional", [("prune", "MODEL"), ("finetune", "TICKET")])
def test_run_help_shows_each_option_once_with_dashes(every_help, command, positional):
    text = every_help["texts"][f"{command} --help"]
    assert text.startswith(f"usage: hf-lottery {command} {positional} [options]\n")
    assert re.search(rf"^positional arguments:\n  {positional}  ", text, re.MULTILINE), text
    assert not re.findall(r"--\w*_", text), "an underscore spelling is shown"
    shown = [invocation.split(" ")[0].rstrip(",") for invocation in options_shown(text)]
    fields = [f.name for part in sections(command).values() for f in dataclasses.fields(part)]
    expected = ["-h", *("--" + name.replace("_", "-") for name in fields if name != "model_name_or_path")]
    assert shown == expected


def test_switches_take_no_value_in_help(every_help):
    prune = options_shown(every_help["texts"]["prune --help"])
    finetune = options_shown(every_help["texts"]["finetune --help"])
    assert {"--dry-run", "--hub-private"} <= set(prune), prune
    assert {"--from-init", "--no-mask", "--hub-private"} <= set(finetune), finetune
    assert "--max-steps MAX_STEPS" in prune and "--mixed-precision {no,fp16,bf16}" in prune


def test_every_registered_plug_in_option_is_in_help(every_help):
    """A built-in plug-in's registry line names its options, so help lists them without importing it: a line that
    forgets them leaves them out of help, and is refused once the plug-in loads."""
    shown = set(options_shown(every_help["texts"]["prune --help"]))
    for registry in (TASK_KINDS, STRATEGIES, CONTROLS, METHODS):
        for name in registry:
            arguments = registry[name].arguments
            for f in dataclasses.fields(arguments) if arguments else []:
                flag = "--" + f.name.replace("_", "-")
                assert any(option.split(" ")[0] == flag for option in shown), (name, flag)


def test_a_registry_line_naming_other_options_than_its_class_is_refused():
    entry = ("hf_lottery.pruning.strategies.wanda:Wanda", "hf_lottery.lottery.methods.arguments:OneShotArguments")
    wrong = Registry("strategy", "--strategy", {"wanda": entry})
    with pytest.raises(TypeError, match="names hf_lottery.lottery.methods.arguments:OneShotArguments, but Wanda"):
        wrong["wanda"]


def test_the_spellings_help_hides_parse_to_the_same_run():
    shown = ["m", "--max-steps", "3", "--levels", "1", "--dry-run", "--hub-private", "--one-shot", "0.5",
             "--mixed-precision", "bf16", "--include", "a", "b"]  # fmt: skip
    hidden = ["m", "--max_steps=3", "--levels", "1", "--dry_run", "true", "--hub_private", "yes", "--one_shot", "0.5",
              "--mixed_precision", "bf16", "--include", "a", "b"]  # fmt: skip
    config = parse_command("prune", shown)
    assert parse_command("prune", hidden).to_dict() == config.to_dict()
    assert config.train.max_steps == 3 and config.prune.dry_run and config.hub.hub_private
    assert config.prune.include == ["a", "b"] and config.plugin("one-shot").one_shot == [0.5]
    assert not parse_command("prune", ["m", "--levels", "1", "--dry-run", "false"]).prune.dry_run


def test_a_three_state_switch_parses_as_cards_record_it():
    files = ["--train-file", "train.tsv", "--validation-file", "dev.tsv"]
    assert parse_command("finetune", ["t", *files]).finetune.from_init is None
    assert parse_command("finetune", ["t", *files, "--from-init"]).finetune.from_init is True
    assert parse_command("finetune", ["t", *files, "--from-init", "false"]).finetune.from_init is False
