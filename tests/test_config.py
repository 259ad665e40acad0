import json

import pytest

from hf_lottery.commands.cli import parse_command
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.lottery.config import FORMAT_VERSION, RunConfig

BASE = dict(model_name_or_path="bert-base-uncased", task="sst2", target_sparsity=0.9)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"target_sparsity": 1.0}, "--target-sparsity must be in [0, 1)"),
        ({"target_sparsity": -0.1}, "--target-sparsity must be in [0, 1)"),
        ({"prune_fraction": 0.0}, "--prune-fraction must be in (0, 1)"),
        ({"prune_fraction": 1.0}, "--prune-fraction must be in (0, 1)"),
        ({"rewind_to": "step:x"}, "--rewind-to must be 'pretrained', 'step:K' or 'lr'"),
        ({"control": ["shuffle"]}, "unknown --control 'shuffle'"),
        ({"include": ["("]}, "is not a valid regex"),
        ({"target_sparsity": None}, "give --target-sparsity"),
        ({"mlm_probability": 1.0}, "--mlm-probability must be in (0, 1)"),
        ({"dataset_name": "imdb", "train_file": "a", "validation_file": "b"}, "give --dataset-name or --train-file"),
        ({"train_file": "a.tsv", "task": None}, "give both --train-file and --validation-file"),
        ({"batch_size": 0}, "--batch-size must be >= 1"),
        ({"save_steps": 0}, "--save-steps must be >= 1"),
    ],
)
def test_bad_values_are_refused(override, message):
    with pytest.raises(LotteryError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        RunConfig.build("prune", **{**BASE, **override})


def test_rewind_step_parsed():
    assert RunConfig.build(**BASE).prune.rewind_step is None
    assert RunConfig.build(**BASE, rewind_to="step:100").prune.rewind_step == 100


def test_run_hash_is_pinned_and_ignores_output_dir():
    # Pinned: a change here renames every existing run directory.
    config = RunConfig.build(**BASE)
    assert config.run_hash() == "c422d34eec"
    assert config.legacy_run_hash() == "3f52d210f3"  # hf-lottery 0.1's name for it: found as a fallback
    assert RunConfig.build(**BASE, output_dir="elsewhere").run_hash() == config.run_hash()
    with_checkpoints = RunConfig.build(**BASE, save_steps=100)  # saving progress changes no result
    assert with_checkpoints.run_hash() == config.run_hash() and with_checkpoints.to_command() == config.to_command()
    assert RunConfig.build(**BASE, prune_fraction=0.3).run_hash() != config.run_hash()
    # How far a run goes is not part of its identity: a longer run of the same config has the same name.
    longer = RunConfig.build(**{**BASE, "target_sparsity": 0.95}, levels=20, control=["reinit"])
    assert longer.run_hash() == config.run_hash() and longer.identity() == config.identity()


def test_json_round_trip_drops_unknown_keys():
    config = RunConfig.build(**BASE, control=["reinit", "random-prune"])
    values = json.loads(config.to_json())
    assert values["format_version"] == FORMAT_VERSION and values["prune"]["control"] == ["random-prune", "reinit"]
    values["train"]["option_from_a_newer_version"] = 1
    assert RunConfig.from_dict(values) == config
    assert config.prune.control == ["random-prune", "reinit"]  # canonical order: same run, same hash


def test_a_version_1_config_is_read_as_sequence_classification():
    # config.json as hf-lottery 0.1 wrote it: flat, no format_version.
    old = {**BASE, "learning_rate": 3e-5, "control": ["reinit"], "output_dir": "runs/x", "hf_lottery_command": "prune"}
    config = RunConfig.from_dict(old)
    assert config.model.task_kind == "sequence-classification"
    assert (config.data.task, config.train.learning_rate, config.prune.control) == ("sst2", 3e-5, ["reinit"])
    assert config.output_dir == "runs/x"


def test_no_data_and_no_schedule_is_the_default_language_model_job():
    config = RunConfig.build(model_name_or_path="bert-base-uncased")
    assert config.prune.target_sparsity == 0.7 and not config.data.has_source
    assert "--target-sparsity 0.7" in config.to_command()


def test_command_reproduces_the_config():
    config = RunConfig.build(**BASE, text_columns=["a", "b"], hub_private=True, scope="layer")
    assert config.to_command() == (
        "hf-lottery prune bert-base-uncased --task sst2 --text-columns a b --target-sparsity 0.9 --scope layer"
    )


# Four command lines and the run names, 0.1 names and reproducing commands hf-lottery gave them before its
# configuration was split into plug-in arguments: a change here renames existing run directories.
PINNED = {
    "c422d34eec 3f52d210f3": (
        "bert-base-uncased --task sst2 --target-sparsity 0.9",
        "hf-lottery prune bert-base-uncased --task sst2 --target-sparsity 0.9",
    ),
    "323f4da4ec 5289c9a6c6": (
        "./my-model --train-file train.tsv --validation-file dev.tsv --text-columns sentence --label-column label "
        "--levels 3 --scope layer --control reinit random-prune --learning-rate 3e-5 --mixed-precision no "
        "--gradient-accumulation-steps 1",
        "hf-lottery prune ./my-model --train-file train.tsv --validation-file dev.tsv --text-columns sentence "
        "--label-column label --learning-rate 3e-05 --levels 3 --scope layer --control random-prune reinit",
    ),
    "ae9777ffb3 b187ea3518": (
        "bert-base-uncased --mlm-probability 0.2 --max-length 64 --scope layer",
        "hf-lottery prune bert-base-uncased --max-length 64 --mlm-probability 0.2 --target-sparsity 0.7 --scope layer",
    ),
    "3cb61458e9 4174c4372b": (
        "gpt2 --train-file a.txt --validation-file b.txt --task-kind causal-lm --rewind-to step:10 --one-shot 0.5 "
        "--early-bird 0.7 --mixed-precision bf16 --gradient-accumulation-steps 2 --target-sparsity 0.8 --include attn "
        "--seed 3",
        "hf-lottery prune gpt2 --task-kind causal-lm --train-file a.txt --validation-file b.txt "
        "--gradient-accumulation-steps 2 --mixed-precision bf16 --seed 3 --target-sparsity 0.8 --include attn "
        "--rewind-to step:10 --one-shot 0.5 --early-bird 0.7",
    ),
}


@pytest.mark.parametrize(("hashes", "case"), PINNED.items())
def test_run_names_and_commands_of_four_command_lines_are_pinned(hashes, case):
    args, command = case
    config = parse_command("prune", args.split())
    assert f"{config.run_hash()} {config.legacy_run_hash()}" == hashes
    assert config.to_command() == command
