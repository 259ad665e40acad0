"""Learning-rate rewinding (``--rewind-to lr``): an IMP level starts from the survivors of the weights the level
before trained, and trains its whole schedule again; the controls start from the pretrained weights as always."""

import torch
from safetensors.torch import load_file

from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.run import RunEvents
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config


class Starts(RunEvents):
    """The weights each training starts from, by its tag."""

    def __init__(self) -> None:
        self.weights: dict[str, dict[str, torch.Tensor]] = {}

    def level_started(self, tag, model, mask) -> None:
        self.weights[tag] = {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_level_keeps_the_trained_survivors_and_trains_a_whole_schedule(tiny_bert, tmp_path):
    starts = Starts()
    out = tmp_path / "run"
    run_lottery(make_config(tiny_bert, out, rewind_to="lr", levels=2, max_steps=5, control=["random-prune"]), starts)
    rewind = load_file(out / "rewind_point.safetensors")
    for level in (1, 2):
        before = load_file(out / "imp" / f"level_{level - 1}" / "weights.safetensors")
        mask = load_file(out / "imp" / f"level_{level}" / "mask.safetensors")
        start = starts.weights[f"imp/level_{level}"]
        for name, weight in before.items():
            expected = weight * mask[name] if name in mask else weight
            assert torch.equal(start[name], expected), (level, name)
        assert read_json(out / "imp" / f"level_{level}" / "metrics.json")["steps"] == 5  # warm-up and decay again
    control = starts.weights["random-prune/level_1"]
    mask = load_file(out / "random-prune" / "level_1" / "mask.safetensors")
    assert all(torch.equal(control[k], v * mask[k] if k in mask else v) for k, v in rewind.items())


def test_learning_rate_rewinding_is_another_run_and_ordinary_runs_keep_their_names():
    plain = make_config("m", None)
    assert make_config("m", None, rewind_to="pretrained").run_hash() == plain.run_hash()
    assert make_config("m", None, rewind_to="lr").run_hash() != plain.run_hash()
