"""``--keep-weights needed``: every mask and metric stays, trained weights only where the run can still use them."""

import pytest
from safetensors.torch import load_file

from hf_lottery import export_ticket
from hf_lottery.foundations.errors import LotteryError, NoTicketError
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.rundir import finished_levels
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config, rescore


def kept_weights(paths: RunPaths) -> set[str]:
    return {level.name for level in finished_levels(paths) if level.weights.exists()}


def test_only_level_0_the_last_trunk_level_and_the_best_keep_their_weights(tiny_bert, tmp_path):
    out = tmp_path / "run"
    options = dict(control=["random-prune"], one_shot=[0.6], keep_weights="needed", max_steps=3)
    rows = run_lottery(make_config(tiny_bert, out, levels=2, **options))
    paths = RunPaths(out)
    assert all(level.mask.exists() and level.metrics.exists() for level in finished_levels(paths))
    facts = export_ticket(out, tmp_path / "best")  # the best ticket still ships
    best = next(r.path for r in rows if abs(r.sparsity - facts["sparsity"]) < 1e-9 and r.branch == facts["branch"])
    assert kept_weights(paths) == {"imp/level_0", "imp/level_2", best}
    dropped = next(r.path for r in rows if r.path not in kept_weights(paths))
    with pytest.raises(LotteryError, match="were not kept"):
        export_ticket(out, tmp_path / "dropped", level=dropped)
    assert not (tmp_path / "dropped").exists()

    # extending prunes from the last trunk level, which was kept; then level 2 is no longer needed
    run_lottery(make_config(tiny_bert, out, levels=3, **options))
    assert {"imp/level_0", "imp/level_3"} <= kept_weights(paths)
    assert len(kept_weights(paths)) <= 3
    trunk_3 = load_file(paths.level("imp", 3).mask)
    assert all(not (trunk_3[k] & ~load_file(paths.level("imp", 2).mask)[k]).any() for k in trunk_3)


def test_with_replicates_replicate_0_keeps_every_ticket_level_since_the_mean_chooses_later(tiny_bert, tmp_path):
    out = tmp_path / "run"
    options = dict(control=["random-prune"], keep_weights="needed", max_steps=3, replicates=2)
    run_lottery(make_config(tiny_bert, out, levels=2, **options))
    paths = RunPaths(out)
    assert kept_weights(paths) == {"imp/level_0", "imp/level_1", "imp/level_2"}  # no control's
    assert kept_weights(paths.replicate(1)) <= {"imp/level_0", "imp/level_1", "imp/level_2"}
    assert "imp/level_0" in kept_weights(paths.replicate(1)) and "imp/level_2" in kept_weights(paths.replicate(1))
    export_ticket(out, tmp_path / "best")  # whichever level the means choose, its weights are there


def test_while_no_pruned_level_is_within_tolerance_the_best_scoring_one_keeps_its_weights(tiny_bert, tmp_path):
    out = tmp_path / "run"
    rows = run_lottery(make_config(tiny_bert, out, levels=3, max_steps=3))
    paths, dense = RunPaths(out), rows[0].value
    assert dense > 0.1  # so that each score below is well outside the default tolerance
    for level, share in ((1, 0.5), (2, 0.8), (3, 0.6)):  # every pruned level falls short of dense; level 2 least
        rescore(paths.level("imp", level), share * dense)
    run_lottery(make_config(tiny_bert, out, levels=3, max_steps=3, keep_weights="needed"))  # nothing to train
    assert kept_weights(paths) == {"imp/level_0", "imp/level_3", "imp/level_2"}
    with pytest.raises(NoTicketError, match="the best, imp/level_2 ") as refused:
        export_ticket(out, tmp_path / "best")
    assert not (tmp_path / "best").exists()
    assert refused.value.level == "2"
    assert export_ticket(out, tmp_path / "two", level=int(refused.value.level))["level"] == 2  # its weights are kept
    with pytest.raises(LotteryError, match="were not kept"):
        export_ticket(out, tmp_path / "one", level=1)
