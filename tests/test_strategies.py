"""Pruning strategies and controls behind registries: today's masks bit for bit, and a new one is one class."""

import hashlib

import pytest
import torch
from safetensors.torch import load_file

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.lottery.controls import CONTROLS
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.pruning.masks import Mask
from hf_lottery.pruning.selection import keep_counts, magnitude_prune, random_prune
from hf_lottery.pruning.strategies import STRATEGIES, PruningStrategy, ScoringContext
from hf_lottery.pruning.units import ELEMENT
from hf_lottery.tickets.sparse import pack_mask
from tests.helpers import make_config


def synthetic() -> tuple[dict[str, torch.Tensor], Mask]:
    """Seeded weights of three shapes (one with ties), and a previous mask that already pruned some."""
    g = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(64, 32, generator=g), "b": torch.randn(128, 64, generator=g) * 0.5,
               "c": torch.randint(-3, 4, (40,), generator=g).float()}  # fmt: skip
    previous = {name: torch.rand(w.shape, generator=g) > 0.2 for name, w in weights.items()}
    return weights, previous


def digest(mask: Mask) -> str:
    return hashlib.sha256(b"".join(pack_mask(mask[name]).numpy().tobytes() for name in sorted(mask))).hexdigest()[:16]


# Pinned with the code of hf-lottery before the registries (commit 9cc3e94), run on these same inputs.
PINNED = {"global": "da10e9075d83a23d", "layer": "2c7895aeab8cfed7", "random-prune": "e63b5a899954f283"}


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_strategies_give_todays_masks(scope):
    weights, previous = synthetic()
    mask = STRATEGIES["magnitude"]().prune(ScoringContext(weights, previous, 0.3, scope=scope))
    old = magnitude_prune(weights, previous, keep_counts(previous, 0.3, scope))  # the code the CLI used before
    assert all(torch.equal(mask[k], old[k]) for k in old)
    assert digest(mask) == PINNED[scope]


def test_controls_give_todays_masks():
    weights, previous = synthetic()
    ticket = STRATEGIES["magnitude"]().prune(ScoringContext(weights, previous, 0.3))
    mask = CONTROLS["random-prune"]().mask(ticket=ticket, previous=previous, level=2, seed=7, units=ELEMENT)
    counts = {name: int(m.sum()) for name, m in ticket.items()}
    old = random_prune(previous, counts, torch.Generator().manual_seed(7 * 1000 + 2))
    assert all(torch.equal(mask[k], old[k]) for k in old) and digest(mask) == PINNED["random-prune"]
    assert CONTROLS["reinit"]().mask(ticket=ticket, previous=previous, level=2, seed=7, units=ELEMENT) is ticket


class SmallestMagnitude(PruningStrategy):
    """A strategy a test adds: keep the smallest weights (nonsense, but visibly not magnitude pruning)."""

    name = "smallest"
    description = "the smallest weights kept"

    def scores(self, context):
        return {name: 1.0 / (w.abs() + 1e-6) for name, w in context.weights.items()}


def test_a_new_strategy_is_a_class_and_a_registry_line(tiny_bert, tmp_path, monkeypatch):
    with pytest.raises(LotteryError, match="unknown --strategy 'smallest'; choose from magnitude"):
        make_config(tiny_bert, tmp_path / "x", strategy="smallest")
    monkeypatch.setitem(STRATEGIES, SmallestMagnitude.name, SmallestMagnitude)  # the registry line
    run_lottery(make_config(tiny_bert, tmp_path / "run", levels=1, strategy="smallest"))
    paths = RunPaths(tmp_path / "run")
    mask, trained = load_file(paths.level("imp", 1).mask), load_file(paths.level("imp", 0).weights)
    for name, m in mask.items():  # every survivor is no larger than any pruned weight
        assert trained[name][m].abs().max() <= trained[name][~m].abs().min() or not (~m).any()
