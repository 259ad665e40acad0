"""--replicates: the same IMP under other seeds, replicate 0 the plain run, the results' mean ± std."""

import shutil
from itertools import combinations
from statistics import fmean

import pytest
import torch
from safetensors.torch import load_file

from hf_lottery import export_ticket
from hf_lottery.commands.cli import main
from hf_lottery.foundations.errors import LotteryError, NoTicketError
from hf_lottery.foundations.storage import read_json, write_json
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.replicates import replicate_seed
from hf_lottery.lottery.report import format_table
from hf_lottery.lottery.rows import collect_rows, read_results
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory):
    """A plain run and the same run with two replicates."""
    base = tmp_path_factory.mktemp("replicates")
    plain_rows = run_lottery(make_config(tiny_bert, base / "plain", levels=1, max_steps=3))
    rows = run_lottery(make_config(tiny_bert, base / "run", levels=1, max_steps=3, replicates=2))
    return RunPaths(base / "plain"), plain_rows, RunPaths(base / "run"), rows


def seeds_of(seed: int) -> set[int]:
    """Every seed a replicate of seed ``seed`` uses for up to 1000 levels: training, reinit, random-prune."""
    return set(range(seed, seed + 1000)) | set(range(seed * 1000, seed * 1000 + 1000))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 42, 999, 1000, 1001, 123456])
def test_replicate_seeds_never_collide(seed):
    seeds = [replicate_seed(seed, r) for r in range(6)]
    assert seeds[0] == seed
    for a, b in combinations(seeds, 2):
        assert not seeds_of(a) & seeds_of(b), (a, b)


def assert_same_files(a, b) -> None:
    ta, tb = load_file(a), load_file(b)
    assert set(ta) == set(tb) and all(torch.equal(ta[k], tb[k]) for k in ta), (a, b)


def test_replicate_0_is_the_plain_run_and_replicate_1_another_seed(runs):
    plain, plain_rows, paths, _ = runs
    assert plain_rows[0].replicates is None and not plain.replicates()
    assert_same_files(plain.rewind_point, paths.rewind_point)
    for level in (0, 1):
        assert_same_files(plain.level("imp", level).weights, paths.level("imp", level).weights)
        assert_same_files(plain.level("imp", level).mask, paths.level("imp", level).mask)
    other = paths.replicate(1)
    assert paths.replicates() == [other] and other.root == paths.root / "replicate_1"
    assert read_json(other.config)["train"]["seed"] == replicate_seed(0, 1)
    for mine, theirs in ((paths.rewind_point, other.rewind_point), *(
        (paths.level("imp", n).weights, other.level("imp", n).weights) for n in (0, 1)
    )):  # fmt: skip
        a, b = load_file(mine), load_file(theirs)
        assert any(not torch.equal(a[k], b[k]) for k in a), f"{theirs} equals {mine}"


def test_results_give_mean_and_std_and_the_plot_has_bands(runs):
    _, _, paths, rows = runs
    assert read_json(paths.results_json) == [row.to_dict() for row in rows] and read_results(paths) == rows
    assert [r.path for r in rows] == ["imp/level_0", "imp/level_1"]
    for row in rows:
        own = read_json(paths.level("imp", row.level).metrics)["accuracy"]
        other = read_json(paths.replicate(1).level("imp", row.level).metrics)["accuracy"]
        assert row.value == own and row.replicates == [own, other]
        assert row.mean == pytest.approx(fmean([own, other]))
        assert row.std == pytest.approx(abs(own - other) / 2**0.5)
    table = paths.results_table.read_text()
    assert "| accuracy (mean ± std) | vs dense | n |" in table
    assert f"| {rows[1].mean:.4f} ± {rows[1].std:.4f} | {rows[1].mean - rows[0].mean:+.4f} | 2 |" in table
    assert paths.plot.stat().st_size > 0
    assert "±" not in paths.replicate(1).results_table.read_text()  # a replicate's own table is plain


def test_a_level_some_replicate_lacks_counts_the_others(runs, tmp_path):
    _, _, paths, _ = runs
    copy = RunPaths(tmp_path / "run")
    shutil.copytree(paths.root, copy.root)
    copy.replicate(1).level("imp", 1).metrics.unlink()
    rows = collect_rows(copy)
    assert [len(r.replicates) for r in rows] == [2, 1]
    assert rows[1].std == 0.0 and rows[1].mean == rows[1].value
    assert f"| 1 | {rows[1].total_steps} | " in format_table(rows, "accuracy").splitlines()[3]


def test_more_replicates_train_only_the_new_one(runs, tmp_path, capsys, tiny_bert):
    _, _, paths, _ = runs
    copy = RunPaths(tmp_path / "run")
    shutil.copytree(paths.root, copy.root)  # copy2: modification times kept
    kept = [f for root in (copy, copy.replicate(1)) for f in root.root.rglob("*.safetensors")]
    before = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in kept}
    config = make_config(tiny_bert, copy.root, levels=1, max_steps=3)
    args = ["prune", str(tiny_bert), "--train-file", config.data.train_file, "--validation-file",
            config.data.validation_file, "--max-train-samples", "64", "--max-eval-samples", "32", "--max-length",
            "32", "--levels", "1", "--prune-fraction", "0.5", "--learning-rate", "1e-3", "--batch-size", "16",
            "--epochs", "1", "--max-steps", "3", "--seed", "0", "--replicates", "3",
            "--output-dir", str(copy.root)]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"replicate 2 of 2 (seed {replicate_seed(0, 2)})" in printed and "±" in printed
    assert printed.count("level 1 (imp)") == 1  # only replicate 2 trained
    assert {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in kept} == before
    assert [r.root.name for r in copy.replicates()] == ["replicate_1", "replicate_2"]
    assert all(len(r.replicates) == 3 for r in read_results(copy))


def test_zero_replicates_is_one_line_and_writes_nothing(capsys, tmp_path, tiny_bert):
    out = tmp_path / "out"
    config = make_config(tiny_bert, out)
    capsys.readouterr()
    data = ["--train-file", config.data.train_file, "--validation-file", config.data.validation_file]
    code = main(["prune", str(tiny_bert), *data, "--levels", "1", "--replicates", "0", "--output-dir", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and lines == ["hf-lottery: error: --replicates must be >= 1, got 0"], err
    assert not out.exists()


def test_dry_run_counts_every_replicate(capsys, tmp_path, tiny_bert):
    out = tmp_path / "out"
    assert run_lottery(make_config(tiny_bert, out, levels=1, max_steps=3, replicates=3, dry_run=True)) == []
    assert "6 trainings (3 replicates of the levels above), 18 optimizer steps in all" in capsys.readouterr().out
    assert not out.exists()


def test_best_compares_means_and_ships_replicate_0(runs, tmp_path):
    _, _, paths, rows = runs
    copy = RunPaths(tmp_path / "run")
    shutil.copytree(paths.root, copy.root)
    dense, level_1 = read_json(copy.results_json)
    # Replicate 0's own level 1 is far below dense, but the mean over the replicates matches it: best is level 1.
    level_1.update(accuracy=dense["accuracy"] - 0.5, mean=dense["mean"], std=0.25)
    write_json(copy.results_json, [dense, level_1])
    facts = export_ticket(copy.root, tmp_path / "ticket")
    assert facts["level"] == 1 and "mean validation accuracy over its replicates" in facts["level_reason"]
    assert facts["replicates"] == 2 and facts["metric_value"] == level_1["accuracy"]
    assert facts["metric_mean"] == dense["mean"] and facts["metric_replicates"] == level_1["replicates"]
    shipped, own = load_file(tmp_path / "ticket" / "model.safetensors"), load_file(paths.level("imp", 1).weights)
    assert set(shipped) & set(own) and all(torch.equal(shipped[k], own[k]) for k in set(shipped) & set(own))
    card = (tmp_path / "ticket" / "README.md").read_text()
    assert "The run had 2 replicates" in card and "± 25.0 over 2 replicates" in card
    # The other way round: replicate 0 matches dense, the mean does not, so there is no winning ticket.
    level_1.update(accuracy=dense["accuracy"], mean=dense["mean"] - 0.5)
    write_json(copy.results_json, [dense, level_1])
    with pytest.raises(NoTicketError, match="mean validation accuracy over its replicates .*imp/level_1"):
        export_ticket(copy.root, tmp_path / "dense")
    assert not (tmp_path / "dense").exists()


def test_find_ticket_refuses_replicates(tiny_bert):
    from hf_lottery import find_ticket

    with pytest.raises(LotteryError, match="find_ticket runs one replicate"):
        find_ticket(None, None, run_config={}, output_dir="unused", levels=1, replicates=2)
