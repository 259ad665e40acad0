"""Bad input of the release checklist: one line on stderr and nothing written, or a one-line note where the input
is valid but does something the user may not expect (a transfer, a ticket's own code left unrun)."""

import logging
import shlex

import pytest

from hf_lottery import load_ticket
from hf_lottery.commands.cli import main, parse_command
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.paths import RunPaths
from tests.helpers import fails_cleanly, make_config
from tests.test_finetune import finetune_args, ticket  # noqa: F401  (the fixture)
from tests.test_safe_loading import with_config

TRAIN, DEV = str(DEMO_DATA / "train.tsv"), str(DEMO_DATA / "dev.tsv")


def test_an_unknown_option_is_named_with_the_nearest_known_one(capsys, tmp_path):
    out = tmp_path / "out"
    fails_cleanly(capsys, ["m", "--schedule", "one-shot"], "unrecognized arguments: --schedule", out)
    fails_cleanly(capsys, ["m", "--levles", "2"], "unrecognized arguments: --levles (did you mean --levels?)", out)
    # refused before validation: the misspelt flag, not the missing validation file it causes, is the error
    fails_cleanly(capsys, ["m", "--train-file", TRAIN, "--validaton-file", DEV, "--levels", "1"],
                  "unrecognized arguments: --validaton-file (did you mean --validation-file?)", out)  # fmt: skip
    assert not out.exists()
    assert parse_command("prune", ["m", "--max_steps", "3", "--levels", "1"]).train.max_steps == 3


FINETUNE = dict(model_name_or_path="some/ticket", train_file=TRAIN, validation_file=DEV)
CARDS = {  # configs with non-default values of every kind: lists, switches, a plug-in's, a three-state switch
    "prune": lambda: make_config(
        "some/model", None, control=["random-prune"], scope="layer", rewind_to="step:1", include=[r"attention\..*"],
        text_columns=["sentence"], mixed_precision="bf16", one_shot=[0.5, 0.7], mlm_probability=0.2,
    ),
    "finetune-trained": lambda: RunConfig.build("finetune", **FINETUNE, from_init=False),
    "finetune-from-init": lambda: RunConfig.build("finetune", **FINETUNE, from_init=True, no_mask=True),
}  # fmt: skip


@pytest.mark.parametrize("name", CARDS)
def test_the_command_a_card_records_parses_to_the_same_run(name):
    config = CARDS[name]()
    command = config.to_command()
    again = parse_command(config.command, shlex.split(command)[2:])
    assert again.identity() == config.identity() and again.reach() == config.reach(), command


def test_dataset_config_without_dataset_name_is_refused(capsys, tmp_path):
    out = tmp_path / "out"
    fails_cleanly(capsys, ["m", "--dataset-config", "sst2", "--levels", "1"], "--dataset-config needs --dataset-name",
                  out)  # fmt: skip
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--train-file", "--validation-file", "--test-file"])
def test_a_directory_given_as_a_file_is_named(capsys, tmp_path, flag):
    folder, out = tmp_path / "data", tmp_path / "out"
    folder.mkdir()
    files = {"--train-file": TRAIN, "--validation-file": DEV, "--test-file": DEV, flag: str(folder)}
    args = ["m", *(arg for pair in files.items() for arg in pair), "--levels", "1"]
    fails_cleanly(capsys, args, f"{flag} {folder} is a directory; give a file", out)
    assert not out.exists()


def test_a_classification_ticket_on_a_text_corpus_says_it_transfers(ticket, text_files, tmp_path, capsys):  # noqa: F811
    train, _ = text_files
    out = tmp_path / "ft"
    capsys.readouterr()
    assert main(finetune_args(str(ticket), train, out, "--max-length", "32", "--max-steps", "2")) == 0
    lines = capsys.readouterr().out.splitlines()
    note = "note: transfer: this sequence-classification ticket trains as masked-lm, under a new head"
    assert note in lines, lines
    assert lines.index(note) < next(i for i, line in enumerate(lines) if line.startswith("| level"))
    assert RunPaths(out).level("imp", 0).is_done()


def test_a_ticket_naming_its_own_code_loads_as_the_stock_class_with_one_warning(ticket, tmp_path, caplog):  # noqa: F811
    auto_map = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForSequenceClassification": "modeling_evil.E"}
    folder = with_config(ticket, tmp_path, auto_map=auto_map)
    with caplog.at_level(logging.WARNING, logger="hf_lottery.tickets.load"):
        model, masks = load_ticket(folder)
        load_ticket(folder, weights="rewind")  # once per ticket, as finetune loads both
    assert type(model).__name__ == "BertForSequenceClassification" and masks
    warned = [r.getMessage() for r in caplog.records if r.name == "hf_lottery.tickets.load"]
    assert len(warned) == 1 and "\n" not in warned[0], warned
    assert "auto_map" in warned[0] and "ignored" in warned[0] and "trust_remote_code=False" in warned[0]
