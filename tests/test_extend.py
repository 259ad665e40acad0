"""Long runs a person can steer: extend a finished run, add a control later, clipped levels off the trunk."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.config import FORMAT_VERSION
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.rundir import default_output_dir
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config


def files_of(paths: RunPaths) -> dict[str, int]:
    """Every level file and its modification time: a retrained level would rewrite them."""
    return {str(p.relative_to(paths.root)): p.stat().st_mtime_ns for p in paths.root.glob("*/level_*/*")}


def same_level(a: RunPaths, b: RunPaths, name: str) -> None:
    la, lb = a.root / name, b.root / name
    for file in ("mask.safetensors", "weights.safetensors"):
        x, y = load_file(la / file), load_file(lb / file)
        assert all(torch.equal(x[k], y[k]) for k in y), f"{name}/{file}"
    ma, mb = read_json(la / "metrics.json"), read_json(lb / "metrics.json")
    assert {k: v for k, v in ma.items() if k != "command"} == {k: v for k, v in mb.items() if k != "command"}


def test_more_levels_reuse_the_finished_ones(tiny_bert, tmp_path):
    out, straight = RunPaths(tmp_path / "run"), RunPaths(tmp_path / "straight")
    run_lottery(make_config(tiny_bert, out.root, levels=2, prune_fraction=0.5))
    before = files_of(out)
    rows = run_lottery(make_config(tiny_bert, out.root, levels=3, prune_fraction=0.5))
    after = files_of(out)
    assert all(after[f] == t for f, t in before.items()), "a finished level was trained again"
    assert {f for f in after if f not in before} == {f"imp/level_3/{n}" for n in
                                                    ("mask.safetensors", "weights.safetensors", "sparsity.json",
                                                     "metrics.json")}  # fmt: skip
    assert [r.level for r in rows] == [0, 1, 2, 3]
    run_lottery(make_config(tiny_bert, straight.root, levels=3, prune_fraction=0.5))
    for level in range(4):
        same_level(out, straight, f"imp/level_{level}")
    log = [json.loads(line) for line in out.run_log.read_text().splitlines()]
    assert [entry["levels"] for entry in log] == [2, 3] and "--levels 3" in log[1]["command"]


def test_a_control_added_later_trains_only_the_control(tiny_bert, tmp_path):
    out = RunPaths(tmp_path / "run")
    run_lottery(make_config(tiny_bert, out.root, levels=2, prune_fraction=0.5))
    before = files_of(out)
    rows = run_lottery(make_config(tiny_bert, out.root, levels=2, prune_fraction=0.5, control=["reinit"]))
    after = files_of(out)
    assert all(after[f] == t for f, t in before.items())
    assert {f.split("/")[0] for f in after if f not in before} == {"reinit"}
    assert [(r.level, r.branch) for r in rows] == [(0, "imp"), (1, "imp"), (1, "reinit"), (2, "imp"),
                                                   (2, "reinit")]  # fmt: skip
    # A lower reach is fine too: nothing is deleted, the results still cover every finished level.
    assert len(run_lottery(make_config(tiny_bert, out.root, levels=1, prune_fraction=0.5))) == 5


def test_a_clipped_level_is_off_the_trunk_and_extending_prunes_from_the_trunk(tiny_bert, tmp_path):
    out = RunPaths(tmp_path / "run")
    rows = run_lottery(make_config(tiny_bert, out.root, target_sparsity=0.7, levels=None, prune_fraction=0.5))
    assert [(r.level, r.path) for r in rows] == [(0, "imp/level_0"), (1, "imp/level_1"),
                                                 (2, "imp/level_2_to_70.00")]  # fmt: skip
    assert rows[-1].sparsity == pytest.approx(0.7, abs=1e-3)
    clipped = files_of(out)
    rows = run_lottery(make_config(tiny_bert, out.root, target_sparsity=0.8, levels=None, prune_fraction=0.5))
    assert all(files_of(out)[f] == t for f, t in clipped.items())
    assert [(r.path, round(r.sparsity, 3)) for r in rows] == [
        ("imp/level_0", 0.0), ("imp/level_1", 0.5), ("imp/level_2_to_70.00", 0.7), ("imp/level_2", 0.75),
        ("imp/level_3_to_80.00", 0.8),
    ]  # fmt: skip
    trunk1, trunk2 = load_file(out.level("imp", 1).mask), load_file(out.level("imp", 2).mask)
    assert all(not (trunk2[k] & ~trunk1[k]).any() for k in trunk1)  # level 2 was pruned from level 1
    assert "| 2 | imp (clipped) | 70.0% |" in out.results_table.read_text()


def test_another_identity_value_is_still_refused(tiny_bert, tmp_path):
    run_lottery(make_config(tiny_bert, tmp_path / "run", levels=1, prune_fraction=0.5))
    from hf_lottery.foundations.errors import LotteryError

    with pytest.raises(LotteryError, match="holds a different run"):
        run_lottery(make_config(tiny_bert, tmp_path / "run", levels=2, prune_fraction=0.3))


def test_a_version_1_run_keeps_its_name_and_its_clipped_level_moves_off_the_trunk(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = make_config(tiny_bert, None, target_sparsity=0.7, levels=None, prune_fraction=0.5)
    legacy = default_output_dir(config).with_name(default_output_dir(config).name.replace(
        config.run_hash(), config.legacy_run_hash()))  # fmt: skip
    # Lay out the run as hf-lottery 0.1 did: flat config.json, the clipped level 2 as imp/level_2.
    run_lottery(make_config(tiny_bert, legacy, target_sparsity=0.7, levels=None, prune_fraction=0.5))
    paths = RunPaths(legacy)
    os.rename(paths.root / "imp" / "level_2_to_70.00", paths.root / "imp" / "level_2")
    new_fields = {"task_kind", "dataset_name", "dataset_config", "mlm_probability"}
    flat = {k: v for k, v in read_json(paths.config).items() if k not in ("format_version", "command", "run_config")}
    flat = {k: v for part in flat.values() for k, v in part.items() if k not in new_fields}
    paths.config.write_text(json.dumps({**flat, "output_dir": str(legacy), "hf_lottery_command": "prune"}))
    weights = (paths.root / "imp" / "level_2" / "weights.safetensors").stat().st_mtime_ns

    config = make_config(tiny_bert, None, target_sparsity=0.7, levels=None, prune_fraction=0.5)
    rows = run_lottery(config)  # the same command, no --output-dir: finds the old directory
    assert default_output_dir(config) == legacy and sorted(Path("runs").iterdir()) == [legacy]
    moved = paths.root / "imp" / "level_2_to_70.00" / "weights.safetensors"
    assert moved.stat().st_mtime_ns == weights and not (paths.root / "imp" / "level_2").exists()
    assert read_json(paths.config)["format_version"] == FORMAT_VERSION and [r.level for r in rows] == [0, 1, 2]


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_bert, tmp_path, capsys):
    from hf_lottery.commands.cli import main
    from hf_lottery.commands.demo import DEMO_DATA

    out = tmp_path / "run"
    files = ["--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file", str(DEMO_DATA / "dev.tsv")]
    args = [*files, "--levels", "2", "--prune-fraction", "0.5", "--control", "reinit", "--max-steps", "3"]
    assert main(["prune", str(tiny_bert), *args, "--dry-run", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 0 | 0.0% | dense | 3 |" in printed and "| 2 | 75.0% | imp, reinit | 6 |" in printed
    assert "5 trainings, 15 optimizer steps in all" in printed and "B of weights and masks on disk" in printed
    assert not out.exists()


def test_trackers_get_every_step_and_a_log_file_every_level(tiny_bert, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hf_lottery.commands.cli import main

    out = RunPaths(tmp_path / "run")
    run_lottery(make_config(tiny_bert, out.root, levels=1, prune_fraction=0.5, report_to="tensorboard", replicates=2))
    events = sorted(out.root.rglob("events.out.tfevents*"))
    assert events, "no TensorBoard event file in the run directory"
    tags = set()
    for event_file in events:
        tags |= set(EventAccumulator(str(event_file)).Reload().Tags()["scalars"])
    assert {"imp/level_0/loss", "imp/level_1/learning_rate", "imp/level_1/eval_accuracy"} <= tags
    assert {"replicate_1/imp/level_0/loss", "replicate_1/imp/level_1/eval_accuracy"} <= tags  # tagged by replicate
    lines = (out.root / "training.log").read_text().splitlines()
    assert [line.split(" ", 1)[1].split(":")[0] for line in lines] == ["level 0 (dense)", "level 1 (imp)"]

    capsys.readouterr()
    args = ["prune", str(tiny_bert), "--task", "sst2", "--levels", "1", "--report-to", "wandb"]
    assert main([*args, "--output-dir", str(tmp_path / "w")]) == 1  # wandb is not installed here
    assert "needs the wandb package: pip install wandb" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
