"""Wanda's scores (|weight| x the input's L2 norm on calibration examples) through the scoring context, and
per-row allocation (``--scope row``)."""

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.paths import IMP, RunPaths
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.pruning.calibration import input_norms
from hf_lottery.pruning.selection import row_prune
from hf_lottery.pruning.strategies import STRATEGIES, ScoringContext
from tests.helpers import make_config


class OneLayer(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.fc = layer

    def forward(self, x):
        return self.fc(x)


W = torch.tensor([[1.0, -2.0, 3.0, -4.0], [4.0, 3.0, -2.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
X = torch.tensor([[1.0, 0.0, 0.0, 2.0], [1.0, 0.0, 1.0, 0.0], [3.0, 0.5, 0.0, 2.0]])  # three tokens, four features


def test_wanda_keeps_the_highest_weight_times_input_norm_in_each_row():
    model = OneLayer(nn.Linear(4, 3, bias=False))
    model.fc.weight.data.copy_(W)
    norms = input_norms(model, ["fc.weight"], [{"x": X[:2]}, {"x": X[2:]}], torch.device("cpu"))
    assert torch.allclose(norms["fc.weight"], torch.linalg.vector_norm(X, dim=0).unsqueeze(0))
    strategy = STRATEGIES["wanda"](STRATEGIES["wanda"].arguments(calibration_samples=1))
    previous = {"fc.weight": torch.ones(3, 4, dtype=torch.bool)}
    context = ScoringContext({"fc.weight": W}, previous, 0.5, scope="row", inputs=lambda samples: norms)
    mask = strategy.prune(context)["fc.weight"]
    # ||X|| per feature: sqrt(11), 0.5, 1, sqrt(8); |W| x ||X||, the two highest of each row kept.
    direct = W.abs() * torch.linalg.vector_norm(X, dim=0)
    expected = torch.zeros(3, 4, dtype=torch.bool).scatter_(1, direct.topk(2, dim=1).indices, True)
    assert torch.equal(mask, expected)
    assert mask.tolist() == [[True, False, False, True], [True, False, False, True], [True, False, False, True]]
    assert not torch.equal(mask, W.abs() >= W.abs().median(dim=1, keepdim=True).values)  # not magnitude's


def test_gpt2_conv1d_rows_are_columns():
    conv = Conv1D(3, 4)  # stores (in, out) = (4, 3)
    conv.weight.data.copy_(W.T)
    norms = input_norms(OneLayer(conv), ["fc.weight"], [{"x": X}], torch.device("cpu"))
    assert norms["fc.weight"].shape == (4, 1)
    strategy = STRATEGIES["wanda"](STRATEGIES["wanda"].arguments(calibration_samples=1))
    previous = {"fc.weight": torch.ones(4, 3, dtype=torch.bool)}
    context = ScoringContext({"fc.weight": W.T}, previous, 0.5, scope="row", transposed=frozenset({"fc.weight"}),
                             inputs=lambda samples: norms)  # fmt: skip
    mask = strategy.prune(context)["fc.weight"]
    assert mask.sum(0).tolist() == [2, 2, 2]  # every output keeps half its inputs
    assert mask.T.tolist() == [[True, False, False, True], [True, False, False, True], [True, False, False, True]]


def test_a_wanda_run_keeps_the_same_share_of_every_output_row(tiny_bert, tmp_path):
    config = make_config(tiny_bert, tmp_path / "run", levels=1, strategy="wanda", scope="row", calibration_samples=8)
    run_lottery(config)
    paths = RunPaths(tmp_path / "run")
    for name, m in load_file(paths.level(IMP, 1).mask).items():
        assert (m.sum(1) == round(m.shape[1] * 0.5)).all(), name
    assert read_json(paths.config)["wanda"] == {"calibration_samples": 8}


def test_bad_calibration_settings_are_one_line(tiny_bert, tmp_path, capsys):
    with pytest.raises(LotteryError, match="--calibration-samples must be >= 1"):
        make_config(tiny_bert, tmp_path / "x", strategy="wanda", calibration_samples=0)
    with pytest.raises(LotteryError, match="--calibration-samples is an option of the strategy wanda"):
        make_config(tiny_bert, tmp_path / "x", calibration_samples=8)
    with pytest.raises(LotteryError, match="--calibration-samples 500 is more than the 64 training examples"):
        run_lottery(make_config(tiny_bert, tmp_path / "run", levels=1, strategy="wanda", calibration_samples=500))
    assert not (tmp_path / "run").exists()


def test_a_tensor_larger_than_a_slice_keeps_the_highest_of_every_row():
    """Rows are ranked a slice at a time (bounded memory on a large model): the rows of every slice, the last
    short one included, keep exactly their highest scores inside what was alive."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(2500, 2048, generator=generator)  # 5.1M weights: two slices of rows and a short third
    alive = torch.rand(2500, 2048, generator=generator) > 0.25
    mask = row_prune({"w": scores}, {"w": alive}, 0.5)["w"]
    keep = round(2048 * 0.5)
    expected = torch.zeros_like(alive).scatter_(1, scores.masked_fill(~alive, -1).topk(keep, dim=1).indices, True)
    assert torch.equal(mask, expected & alive)
    assert torch.equal(mask.sum(1), torch.minimum(alive.sum(1), torch.tensor(keep)))
