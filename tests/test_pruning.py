import pytest
import torch

from hf_lottery.pruning.selection import keep_counts, magnitude_prune, random_prune
from tests.helpers import make_config


def densities(**kw):
    return make_config("m", "out", **kw).prune.level_densities()


def test_density_is_keep_fraction_to_the_level_and_target_is_hit_exactly():
    d = densities(levels=None, target_sparsity=0.9, prune_fraction=0.2)
    assert len(d) == 12  # 0.8**10 = 0.107 > 0.1, so level 11 is the first at 90%
    for n in range(11):
        assert d[n] == pytest.approx(0.8**n)
    assert d[-1] == pytest.approx(0.1)


def test_levels_cap_and_zero_target():
    assert densities(levels=3, prune_fraction=0.5) == pytest.approx([1, 0.5, 0.25, 0.125])
    assert densities(levels=10, target_sparsity=0.5, prune_fraction=0.5) == pytest.approx([1, 0.5])
    assert densities(levels=None, target_sparsity=0.0) == [1.0]


def _weights():
    torch.manual_seed(0)
    return {"a": torch.randn(10, 20), "b": torch.randn(30)}


def test_global_magnitude_keeps_the_largest_alive_weights():
    weights = _weights()
    mask = {k: torch.ones_like(v, dtype=torch.bool) for k, v in weights.items()}
    new = magnitude_prune(weights, mask, 115)
    assert sum(int(m.sum()) for m in new.values()) == 115
    kept = torch.cat([weights[k][new[k]].abs() for k in weights])
    dropped = torch.cat([weights[k][~new[k]].abs() for k in weights])
    assert kept.min() >= dropped.max()


def test_pruning_only_removes_alive_weights():
    weights = _weights()
    mask = {k: torch.rand_like(v) > 0.3 for k, v in weights.items()}
    weights["b"][0], mask["b"][0] = 1e6, False  # a huge weight that is already pruned cannot come back
    alive = sum(int(m.sum()) for m in mask.values())
    new = magnitude_prune(weights, mask, alive - 5)
    assert sum(int(m.sum()) for m in new.values()) == alive - 5
    assert not any((new[k] & ~mask[k]).any() for k in new)
    assert not new["b"][0]


def test_ties_are_broken_by_position_to_hit_the_exact_count():
    weights = {"a": torch.ones(4, 4), "b": torch.ones(8)}
    mask = {k: torch.ones_like(v, dtype=torch.bool) for k, v in weights.items()}
    new = magnitude_prune(weights, mask, 10)
    assert sum(int(m.sum()) for m in new.values()) == 10
    # The first 14 tied weights go: all of "a" (16 > 14, so its first 14) and none of "b".
    assert int(new["a"].sum()) == 2 and int(new["b"].sum()) == 8
    assert new["a"].flatten()[-2:].all()


def test_layer_scope_prunes_the_same_fraction_in_each_tensor():
    weights = _weights()
    mask = {k: torch.ones_like(v, dtype=torch.bool) for k, v in weights.items()}
    new = magnitude_prune(weights, mask, keep_counts(mask, 0.25, "layer"))
    assert int(new["a"].sum()) == 50 and int(new["b"].sum()) == round(30 * 0.25)
    assert new["a"].sum() == (weights["a"].abs() >= weights["a"].abs().flatten().topk(50).values[-1]).sum()


def test_random_prune_keeps_counts_inside_the_previous_mask():
    previous = {"a": torch.rand(10, 20) > 0.5, "b": torch.rand(30) > 0.5}
    counts = {"a": 20, "b": 5}
    new = random_prune(previous, counts, torch.Generator().manual_seed(0))
    assert {k: int(v.sum()) for k, v in new.items()} == counts
    assert not any((new[k] & ~previous[k]).any() for k in new)
    same = random_prune(previous, counts, torch.Generator().manual_seed(0))
    assert all(torch.equal(new[k], same[k]) for k in new)
