"""Result rows: the JSON shape they are read from and written as, rows of hf-lottery 0.1, and the best-ticket rule."""

import pytest

from hf_lottery.lottery.rows import LevelResult, best_scoring, best_ticket

# An entry of results.json as hf-lottery writes it: a level's metrics.json, its folder and what the run adds.
WRITTEN = {
    "accuracy": 0.8, "f1": 0.75, "steps": 12, "resumed_from_step": 4, "test_accuracy": 0.7, "test_f1": 0.65,
    "command": "hf-lottery prune m", "sparsity": 0.9, "branch": "imp", "level": 3, "metric": "accuracy",
    "greater_is_better": True, "path": "imp/level_3_to_90.00", "total_steps": 48, "replicates": [0.8, 0.7],
    "mean": 0.75, "std": 0.07,
}  # fmt: skip


def row(level: int, branch: str, sparsity: float, value: float, path: str | None = None, greater: bool = True,
        mean: float | None = None) -> LevelResult:  # fmt: skip
    path = path or f"{branch}/level_{level}"
    return LevelResult(level, branch, path, sparsity, "accuracy", greater, {"accuracy": value}, mean=mean)


def test_a_written_row_reads_into_its_fields_and_scores_and_writes_back_the_same():
    result = LevelResult.from_dict(WRITTEN)
    assert result.scores == {"accuracy": 0.8, "f1": 0.75, "test_accuracy": 0.7, "test_f1": 0.65}
    assert (result.level, result.branch, result.steps, result.resumed_from_step) == (3, "imp", 12, 4)
    assert (result.value, result.test_value, result.compared_value) == (0.8, 0.7, 0.75)
    assert result.is_clipped and not result.on_trunk and result.is_ticket
    assert result.to_dict() == WRITTEN


def test_optional_fields_stay_out_of_the_json():
    plain = {k: v for k, v in WRITTEN.items() if k not in ("resumed_from_step", "replicates", "mean", "std")}
    plain |= {"path": "imp/level_3"}
    result = LevelResult.from_dict(plain)
    assert result.replicates is None and result.compared_value == result.value and result.on_trunk
    assert result.to_dict() == plain


def test_a_row_of_hf_lottery_0_1_names_its_trunk_folder_and_a_growing_metric():
    old = {"accuracy": 0.8, "steps": 12, "sparsity": 0.5, "branch": "imp", "level": 1, "metric": "accuracy"}
    result = LevelResult.from_dict(old)
    assert result.path == "imp/level_1" and not result.is_clipped and result.on_trunk
    assert result.main_metric.greater_is_better and result.total_steps is None and result.command is None
    assert result.test_value is None


def test_best_is_the_sparsest_ticket_within_tolerance_never_a_control():
    one_shot = row(1, "one-shot", 0.5, 0.80, path="one-shot/level_1_to_50.00")
    rows = [row(0, "imp", 0.0, 0.80), row(1, "imp", 0.5, 0.795), row(2, "imp", 0.75, 0.70),
            row(2, "random-prune", 0.75, 0.81), one_shot]  # fmt: skip
    assert best_ticket(rows).path == "one-shot/level_1_to_50.00"  # IMP's equal, a better score at the same sparsity
    assert best_ticket(rows, tolerance=0.2).path == "imp/level_2"
    lower = [row(0, "imp", 0.0, 10.0, greater=False), row(1, "imp", 0.5, 10.05, greater=False)]
    assert best_ticket(lower).level == 1 and best_ticket(lower, tolerance=0.001) is None


def test_with_no_pruned_level_within_tolerance_there_is_no_best_only_the_best_scoring():
    rows = [row(0, "imp", 0.0, 0.80), row(1, "imp", 0.5, 0.70), row(2, "imp", 0.75, 0.72),
            row(2, "random-prune", 0.75, 0.79), row(3, "imp", 0.875, 0.72)]  # fmt: skip
    assert best_ticket(rows) is None  # dense matches itself, but it is no ticket
    assert best_scoring(rows).path == "imp/level_3"  # never the control; the sparser of equal scores
    lower = [row(0, "imp", 0.0, 10.0, greater=False), row(1, "imp", 0.5, 12.0, greater=False),
             row(2, "imp", 0.75, 11.0, greater=False)]  # fmt: skip
    assert best_ticket(lower) is None and best_scoring(lower).level == 2
    assert best_ticket(rows[:1]) is None and best_scoring(rows[:1]) is None  # nothing pruned


def test_a_fine_tuned_tickets_level_0_is_sparse_and_its_own_best():
    finetuned = [row(0, "imp", 0.9, 0.70)]
    assert best_ticket(finetuned) == best_scoring(finetuned) == finetuned[0]


def test_with_replicates_best_compares_the_means():
    rows = [row(0, "imp", 0.0, 0.80, mean=0.80), row(1, "imp", 0.5, 0.60, mean=0.80)]
    assert best_ticket(rows).level == 1
    rows[1] = row(1, "imp", 0.5, 0.80, mean=0.60)
    assert best_ticket(rows) is None


@pytest.mark.parametrize("clipped", ["imp/level_2_to_70.00", "early-bird/level_3_to_80.00"])
def test_clipped_levels_are_told_by_their_folder(clipped):
    assert row(2, clipped.split("/")[0], 0.7, 0.8, path=clipped).is_clipped
