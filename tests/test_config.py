import json

import pytest

from hf_lottery.config import LotteryConfig
from hf_lottery.errors import LotteryError

BASE = dict(model_name_or_path="bert-base-uncased", task="sst2", target_sparsity=0.9)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"target_sparsity": 1.0}, "--target-sparsity must be in [0, 1)"),
        ({"target_sparsity": -0.1}, "--target-sparsity must be in [0, 1)"),
        ({"prune_fraction": 0.0}, "--prune-fraction must be in (0, 1)"),
        ({"prune_fraction": 1.0}, "--prune-fraction must be in (0, 1)"),
        ({"rewind_to": "step:x"}, "--rewind-to must be 'pretrained' or 'step:K'"),
        ({"control": ["shuffle"]}, "unknown --control 'shuffle'"),
        ({"include": ["("]}, "is not a valid regex"),
        ({"target_sparsity": None}, "give --target-sparsity"),
        ({"task": None}, "give --task"),
        ({"train_file": "a.tsv"}, "give both --train-file and --validation-file"),
        ({"batch_size": 0}, "--batch-size must be >= 1"),
    ],
)
def test_bad_values_are_refused(override, message):
    with pytest.raises(LotteryError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        LotteryConfig(**{**BASE, **override})


def test_rewind_step_parsed():
    assert LotteryConfig(**BASE).rewind_step is None
    assert LotteryConfig(**BASE, rewind_to="step:100").rewind_step == 100


def test_run_hash_is_pinned_and_ignores_output_dir():
    # Pinned: a change here renames every existing run directory.
    config = LotteryConfig(**BASE)
    assert config.run_hash() == "3f52d210f3"
    assert LotteryConfig(**BASE, output_dir="elsewhere").run_hash() == config.run_hash()
    assert LotteryConfig(**BASE, prune_fraction=0.3).run_hash() != config.run_hash()


def test_json_round_trip_drops_unknown_keys():
    config = LotteryConfig(**BASE, control=["reinit", "random-prune"])
    values = json.loads(config.to_json())
    values["option_from_a_newer_version"] = 1
    assert LotteryConfig.from_dict(values) == config
    assert config.control == ["random-prune", "reinit"]  # canonical order: same run, same hash
