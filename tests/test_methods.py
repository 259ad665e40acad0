"""The cheaper ticket methods (one-shot, early-bird) on a tiny BERT: what they prune, what they cost, how they
resume, extend a finished run, export and refuse bad settings."""

import contextlib
import io
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_lottery import export_ticket
from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.foundations.storage import read_json, write_json
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.rows import LevelResult
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.pruning.strategies import STRATEGIES, ScoringContext
from tests.helpers import kill_9_then_rerun, make_config

EARLY_BIRD = dict(early_bird_every=1, early_bird_window=2, early_bird_threshold=0.5)  # settles at step 2


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("methods") / "run"
    config = make_config(tiny_bert, out, levels=1, one_shot=[0.5, 0.8], early_bird=[0.6, 0.8], max_steps=6,
                         **EARLY_BIRD)  # fmt: skip
    return RunPaths(out), run_lottery(config)


def by_path(rows: list[LevelResult]) -> dict[str, LevelResult]:
    return {r.path: r for r in rows}


def test_one_shot_prunes_the_dense_fine_tuned_weights_straight_to_each_target(run):
    paths, rows = run
    dense = paths.level("imp", 0)
    weights, previous = load_file(dense.weights), load_file(dense.mask)
    for sparsity in (0.5, 0.8):
        level = paths.level("one-shot", 1, clipped_to=sparsity)
        expected = STRATEGIES["magnitude"]().prune(
            ScoringContext({k: weights[k] for k in previous}, previous, 1.0 - sparsity)
        )
        mask = load_file(level.mask)
        assert all(torch.equal(mask[k], expected[k]) for k in expected)
        assert abs(read_json(level.metrics)["sparsity"] - sparsity) < 1e-3
        trained = load_file(level.weights)
        assert all((trained[k][~m] == 0).all() for k, m in mask.items())
    # with a prune fraction of 0.5, IMP's level 1 is the one-shot ticket at 50%: same mask
    imp, one_shot = load_file(paths.level("imp", 1).mask), load_file(paths.level("one-shot", 1, 0.5).mask)
    assert all(torch.equal(imp[k], one_shot[k]) for k in imp)


def test_early_bird_stops_each_search_level_once_the_mask_settles_and_trains_the_targets_fully(run):
    paths, rows = run
    searches = [read_json(paths.root / "early-bird" / f"search_{n}" / "search.json") for n in (1, 2)]
    assert [s["stopped_at"] for s in searches] == [2, 2] and all(s["settled"] for s in searches)
    assert [step for step, _ in searches[0]["distances"]] == [1, 2]
    assert all(d < 0.5 for s in searches for _, d in s["distances"])
    rows = by_path(rows)
    # with half the weights pruned per level, 60% is first reached by level 2 (75%) and 80% by level 3 (87.5%):
    # their masks are drawn where search levels 1 and 2 stopped
    for path, sparsity, searched in (("early-bird/level_2_to_60.00", 0.6, 2), ("early-bird/level_3_to_80.00", 0.8, 4)):
        assert abs(rows[path].sparsity - sparsity) < 1e-3
        assert rows[path].steps == 6  # trained fully
        assert rows[path].total_steps == 6 + searched + 6  # level 0, the search levels before it, its own
    table = (paths.root / "results.md").read_text()
    assert "## Early-bird search" in table
    # the toy model's masks move by a few hundredths, under this run's lax threshold of 0.5
    assert "| 1 | 50.0% | 2 | not moved |" in table and "| 2 | 75.0% | 2 | not moved |" in table
    assert (paths.root / "early_bird_distances.png").stat().st_size > 0


def test_total_steps_count_what_each_ticket_cost(run):
    _, rows = run
    rows = by_path(rows)
    assert rows["imp/level_0"].total_steps == 6
    assert rows["imp/level_1"].total_steps == 12
    assert rows["one-shot/level_1_to_80.00"].total_steps == 12


def test_methods_added_to_a_finished_run_train_only_their_own_levels(tiny_bert, tmp_path):
    out = tmp_path / "run"
    run_lottery(make_config(tiny_bert, out, levels=2, max_steps=4))
    imp = sorted((out / "imp").rglob("*.safetensors"))
    before = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in imp}
    rows = run_lottery(make_config(tiny_bert, out, levels=2, max_steps=4, one_shot=[0.9], early_bird=[0.9],
                                   early_bird_every=1, early_bird_window=2))  # fmt: skip
    assert {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in imp} == before
    trained = [line.split(" ", 1)[1] for line in (out / "training.log").read_text().splitlines()]
    assert len(trained) == 5 and all("(one-shot)" in t or "(early-bird)" in t for t in trained[3:])
    assert [r.path for r in rows] == ["imp/level_0", "imp/level_1", "imp/level_2", "one-shot/level_1_to_90.00",
                                      "early-bird/level_4_to_90.00"]  # fmt: skip
    assert len((out / "run_log.jsonl").read_text().splitlines()) == 2


def test_a_killed_run_with_one_shot_and_early_bird_resumes_to_the_uninterrupted_result(tiny_bert, tmp_path):
    args = [sys.executable, "-m", "hf_lottery", "prune", str(tiny_bert), "--train-file", str(DEMO_DATA / "train.tsv"),
            "--validation-file", str(DEMO_DATA / "dev.tsv"), "--levels", "1", "--prune-fraction", "0.5",
            "--one-shot", "0.7", "--early-bird", "0.6", "0.85", "--early-bird-every", "2", "--early-bird-window", "2",
            "--early-bird-threshold", "0.9", "--max-train-samples", "64", "--max-eval-samples", "16",
            "--batch-size", "8", "--max-steps", "30", "--seed", "0"]  # fmt: skip
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    early_bird = killed / "early-bird"
    kill_9_then_rerun(args, killed, whole, when=early_bird / "search_1" / "search.json",
                      before=early_bird / "level_3_to_85.00" / "metrics.json")  # fmt: skip
    for level in ("one-shot/level_1_to_70.00", "early-bird/level_2_to_60.00", "early-bird/level_3_to_85.00"):
        for name in ("mask.safetensors", "weights.safetensors"):
            a, b = load_file(killed / level / name), load_file(whole / level / name)
            assert all(torch.equal(a[k], b[k]) for k in b), f"{level} {name} differs"
    for search in ("search_1", "search_2"):
        assert read_json(killed / "early-bird" / search / "search.json") == read_json(
            whole / "early-bird" / search / "search.json"
        )
    assert (killed / "results.json").read_text() == (whole / "results.json").read_text()


def test_a_run_searched_with_other_early_bird_settings_is_refused(run, tiny_bert, capsys):
    paths, _ = run
    config_before = paths.config.read_text()
    files = ["--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file", str(DEMO_DATA / "dev.tsv")]
    args = [*files, "--max-train-samples", "64", "--max-eval-samples", "32", "--max-length", "32", "--levels", "1",
            "--prune-fraction", "0.5", "--learning-rate", "1e-3", "--batch-size", "16", "--epochs", "1",
            "--seed", "0", "--max-steps", "6", "--early-bird", "0.6", "--early-bird-every", "2",
            "--early-bird-window", "2", "--output-dir", str(paths.root)]  # fmt: skip
    assert main(["prune", str(tiny_bert), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "found with --early-bird-every 1" in err
    assert paths.config.read_text() == config_before


def test_a_one_shot_ticket_exports_with_a_card_that_describes_its_method(run, tmp_path):
    paths, _ = run
    facts = export_ticket(paths.root, tmp_path / "repo", level="one-shot/level_1_to_80.00", repo_id="me/ticket")
    assert facts["branch"] == "one-shot" and abs(facts["sparsity"] - 0.8) < 1e-3
    card = (tmp_path / "repo" / "README.md").read_text()
    assert "one-shot pruning" in card and "by magnitude" in card and "by iterative magnitude pruning" not in card
    assert "total steps" in card
    masks = load_file(paths.level("one-shot", 1, 0.8).mask)
    shipped = load_file(tmp_path / "repo" / "model.safetensors")
    assert all((shipped[k][~m] == 0).all() for k, m in masks.items())


def test_best_chooses_among_imp_and_the_methods_but_never_a_control(run, tmp_path):
    paths, rows = run
    facts = export_ticket(paths.root, tmp_path / "best", level="best", tolerance=1.0)  # every level qualifies
    assert facts["sparsity"] == max(r.sparsity for r in rows if r.branch != "random-prune")
    assert facts["branch"] in ("one-shot", "early-bird")


def test_a_search_level_whose_mask_never_settles_trains_to_its_end(tiny_bert, tmp_path):
    out = tmp_path / "run"
    rows = run_lottery(make_config(tiny_bert, out, levels=0, early_bird=[0.6], max_steps=6, early_bird_every=1,
                                   early_bird_window=3, early_bird_threshold=0.001))  # fmt: skip
    search = read_json(out / "early-bird" / "search_1" / "search.json")
    assert not search["settled"] and search["stopped_at"] == 6 and len(search["distances"]) == 6
    assert any(d >= 0.001 for _, d in search["distances"][-3:])  # why it did not stop
    assert [(r.path, r.total_steps) for r in rows] == [("imp/level_0", 6), ("early-bird/level_2_to_60.00", 18)]


@pytest.fixture(scope="module")
def pretrained(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT trained on the toy task and saved as a model folder: weights that fine-tuning starts from
    already fitted, as a Hub checkpoint's are."""
    work = tmp_path_factory.mktemp("pretraining")
    run_lottery(make_config(tiny_bert, work / "run", levels=0, max_train_samples=128, epochs=4))
    folder = work / "pretrained"
    shutil.copytree(work / "run" / "model", folder)
    shutil.copy(work / "run" / "imp" / "level_0" / "weights.safetensors", folder / "model.safetensors")
    return folder


def prune_args(model: Path, out: Path, learning_rate: float) -> list[str]:
    """``hf-lottery prune`` fine-tuning ``model`` for 6 steps at ``learning_rate``, one-shot to 50% and early-bird
    to 70% (search level 1 at 50% draws the 75% mask every step, and stops after 2 distances below 0.05)."""
    return ["prune", str(model), "--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file",
            str(DEMO_DATA / "dev.tsv"), "--max-train-samples", "64", "--max-eval-samples", "32", "--max-length", "32",
            "--levels", "0", "--prune-fraction", "0.5", "--batch-size", "16", "--max-steps", "6", "--seed", "0",
            "--learning-rate", str(learning_rate), "--one-shot", "0.5", "--early-bird", "0.7", "--early-bird-every",
            "1", "--early-bird-window", "2", "--early-bird-threshold", "0.05", "--output-dir", str(out)]  # fmt: skip


@pytest.fixture(scope="module")
def fine_tuned(pretrained, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """The pretrained tiny BERT fine-tuned gently (learning rate 1e-4) and hard (1e-2): each run's directory and
    what it printed."""
    runs = {}
    for name, learning_rate in (("gentle", 1e-4), ("hard", 1e-2)):
        out, printed = tmp_path_factory.mktemp(name) / "run", io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(prune_args(pretrained, out, learning_rate)) == 0
        runs[name] = out, printed.getvalue()
    return runs


def test_early_bird_from_pretrained_weights_says_when_its_mask_has_not_moved(fine_tuned):
    """Fine-tuning fitted weights gently leaves their magnitudes ranked as they were: successive draws agree at
    once, but only because none moved from the step-0 draw, so the "early-bird" mask is the rewind weights' own."""
    out, printed = fine_tuned["gentle"]
    search = read_json(out / "early-bird" / "search_1" / "search.json")
    assert search["settled"] and search["unmoved"] and search["stopped_at"] == 2
    assert search["moved"] < 0.05 and [step for step, _ in search["distances_from_start"]] == [1, 2]
    warned = [line for line in printed.splitlines() if "has not moved" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: early-bird search level 1 (sparsity 50.0%) settled")
    assert "warning: early-bird to 70.0%: " in printed
    table = (out / "results.md").read_text()
    assert "| 1 | 50.0% | 2 | not moved |" in table and "*Not moved*" in table

    # a learning rate that moves the weights: the mask settles away from its step-0 draw, and nothing is warned
    out, printed = fine_tuned["hard"]
    search = read_json(out / "early-bird" / "search_1" / "search.json")
    assert search["settled"] and not search["unmoved"] and search["moved"] > 0.05
    assert "has not moved" not in printed and "early-bird to 70.0%: " not in printed
    table = (out / "results.md").read_text()
    assert f"| 1 | 50.0% | {search['stopped_at']} | yes |" in table and "*Not moved*" not in table


def test_one_shot_warns_when_its_mask_is_the_rewind_weights_own(fine_tuned):
    """Six gentle steps from fitted weights leave the one-shot mask almost exactly the rewind weights' mask."""
    _, printed = fine_tuned["gentle"]
    lines = [line for line in printed.splitlines() if line.startswith("warning: one-shot to 50.0%: ")]
    assert len(lines) == 1 and lines[0].endswith("this mask carries no training information")
    assert 98.0 < float(lines[0].split(": ")[2].split("%")[0]) <= 100.0  # the share of its weights
    _, printed = fine_tuned["hard"]
    assert "one-shot to 50.0%: " not in printed


def test_early_bird_levels_searched_before_the_stopping_rule_was_recorded_are_refused(
    fine_tuned, pretrained, tmp_path, capsys
):
    out = tmp_path / "run"
    shutil.copytree(fine_tuned["gentle"][0], out)
    settings_file = out / "early-bird" / "settings.json"
    settings = read_json(settings_file)
    assert "step-0 draw" in settings["stop_rule"]
    del settings["stop_rule"]  # what hf-lottery wrote before it compared draws with the step-0 draw
    write_json(settings_file, settings)
    before = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    assert main(prune_args(pretrained, out, 1e-4)) == 1  # the same command, on the old directory
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "searched by an older hf-lottery, with another stopping rule" in err[0]
    assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file()} == before
