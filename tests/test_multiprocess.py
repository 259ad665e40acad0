"""IMP on two CPU processes (gloo, launched by torchrun): same masks everywhere, same result as one process.

Run alone with ``pytest -m multiprocess``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.rows import read_results

pytestmark = pytest.mark.multiprocess
REPO = Path(__file__).resolve().parent.parent


def launch(
    model: Path,
    out: Path,
    processes: int,
    batch: int,
    record: Path | None = None,
    stop_after: int = -1,
    schedule: tuple[str, ...] = ("--levels", "2", "--control", "random-prune"),
):
    args = ["prune", str(model), "--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file",
            str(DEMO_DATA / "dev.tsv"), *schedule, "--max-train-samples", "96",
            "--max-eval-samples", "40", "--batch-size", str(batch), "--epochs", "2", "--learning-rate", "1e-3",
            "--seed", "0", "--output-dir", str(out)]  # fmt: skip
    env = {**os.environ, "MP_STOP_AFTER": str(stop_after), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if record:
        env["MP_RECORD_DIR"] = str(record)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--standalone", "-m", "tests.mp_worker", *args]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)


def files(out: Path, branch: str, level: int, name: str) -> dict:
    return load_file(out / branch / f"level_{level}" / name)


@pytest.fixture(scope="module")
def no_dropout_bert(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT without dropout: each process draws its own dropout masks, so with dropout a 2-process
    run cannot equal a 1-process run bit for bit; without it they differ only by rounding (about 1e-7)."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("no-dropout-bert")
    config = AutoConfig.from_pretrained(tiny_bert, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    AutoModelForMaskedLM.from_pretrained(tiny_bert, config=config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def two_processes(no_dropout_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    done = launch(no_dropout_bert, root / "run", 2, 8, record=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done


def test_every_rank_trains_with_the_same_masks(two_processes):
    root, _ = two_processes
    rank0, rank1 = load_file(root / "masks_rank0.safetensors"), load_file(root / "masks_rank1.safetensors")
    assert set(rank0) == set(rank1) and any(k.startswith("random-prune/level_2|") for k in rank0)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)


def test_only_the_main_process_writes_and_prints(two_processes):
    root, done = two_processes
    assert done.stdout.count("| level | run |") == 1  # one table, from the main process
    assert done.stdout.count("\nprocesses: 2 (global batch 16 = --batch-size 8 x 2 processes") == 1
    assert "warning:" not in done.stdout
    assert [json.loads(line)["processes"] for line in RunPaths(root / "run").run_log.read_text().splitlines()] == [2]
    assert not list((root / "run").rglob(".*.tmp-*"))
    for level in (1, 2):
        mask, weights = (
            files(root / "run", "imp", level, "mask.safetensors"),
            files(root / "run", "imp", level, "weights.safetensors"),
        )
        assert all((weights[k][~m] == 0).all() for k, m in mask.items())  # zero after synchronised steps


def test_two_processes_of_batch_b_match_one_process_of_batch_2b(two_processes, no_dropout_bert, tmp_path):
    root, _ = two_processes
    one = launch(no_dropout_bert, tmp_path / "one", 1, 16)
    assert one.returncode == 0, one.stderr[-3000:]
    two_rows, one_rows = read_results(RunPaths(root / "run")), read_results(RunPaths(tmp_path / "one"))
    assert {r.processes for r in two_rows} == {2} and {r.processes for r in one_rows} == {1}
    for a, b in zip(two_rows, one_rows, strict=True):
        assert a.steps == b.steps
        assert abs(a.value - b.value) <= 0.05
    for level in (1, 2):
        a, b = files(root / "run", "imp", level, "mask.safetensors"), files(tmp_path / "one", "imp", level,
                                                                           "mask.safetensors")  # fmt: skip
        assert all(torch.equal(a[k], b[k]) for k in a), f"level {level} masks differ"
        wa, wb = (
            files(root / "run", "imp", level, "weights.safetensors"),
            files(tmp_path / "one", "imp", level, "weights.safetensors"),
        )
        assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)


def test_a_stopped_multi_process_run_resumes_to_the_same_result(two_processes, no_dropout_bert, tmp_path):
    root, _ = two_processes
    stopped = launch(no_dropout_bert, tmp_path / "run", 2, 8, stop_after=3)  # dense, level 1 and its control
    assert stopped.returncode != 0
    assert (tmp_path / "run" / "random-prune" / "level_1" / "metrics.json").exists()
    assert not (tmp_path / "run" / "imp" / "level_2" / "metrics.json").exists()
    resumed = launch(no_dropout_bert, tmp_path / "run", 2, 8)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for branch in ("imp", "random-prune"):
        for name in ("mask.safetensors", "weights.safetensors"):
            a, b = files(tmp_path / "run", branch, 2, name), files(root / "run", branch, 2, name)
            assert all(torch.equal(a[k], b[k]) for k in a), f"{branch} {name}"


def test_one_shot_and_early_bird_draw_the_same_masks_and_stop_at_the_same_step_on_every_rank(no_dropout_bert, tmp_path):
    schedule = ("--levels", "1", "--prune-fraction", "0.5", "--one-shot", "0.6", "--early-bird", "0.6", "0.85",
                "--early-bird-every", "1", "--early-bird-window", "2", "--early-bird-threshold", "0.5")  # fmt: skip
    done = launch(no_dropout_bert, tmp_path / "run", 2, 8, record=tmp_path, schedule=schedule)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "masks_rank0.safetensors"), load_file(tmp_path / "masks_rank1.safetensors")
    assert set(rank0) == set(rank1)
    assert any(k.startswith("one-shot/level_1_to_60.00|") for k in rank0) and any(
        k.startswith("early-bird/search_") for k in rank0
    )
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    steps0, steps1 = (read_json(tmp_path / f"steps_rank{r}.json") for r in (0, 1))
    searches = {tag: n for tag, n in steps0.items() if tag.startswith("early-bird/search_")}
    assert searches and all(n < steps0["imp/level_0"] for n in searches.values())  # stopped early
    assert steps0 == steps1
    for branch, folder in (("one-shot", "level_1_to_60.00"), ("early-bird", "level_2_to_60.00"),
                           ("early-bird", "level_3_to_85.00")):  # fmt: skip
        sparsity = read_json(tmp_path / "run" / branch / folder / "metrics.json")["sparsity"]
        assert abs(sparsity - float(folder.split("_to_")[1]) / 100) < 1e-3


def test_replicates_run_on_two_processes_with_the_same_masks_on_every_rank(no_dropout_bert, tmp_path):
    schedule = ("--levels", "1", "--prune-fraction", "0.5", "--replicates", "2")
    done = launch(no_dropout_bert, tmp_path / "run", 2, 8, record=tmp_path, schedule=schedule)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "masks_rank0.safetensors"), load_file(tmp_path / "masks_rank1.safetensors")
    assert set(rank0) == set(rank1) and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    rows = read_results(RunPaths(tmp_path / "run"))
    assert [len(r.replicates) for r in rows] == [2, 2]
    replica = load_file(tmp_path / "run" / "replicate_1" / "imp" / "level_1" / "weights.safetensors")
    first = load_file(tmp_path / "run" / "imp" / "level_1" / "weights.safetensors")
    assert any(not torch.equal(replica[k], first[k]) for k in first)  # another seed, another head and data order


def test_wanda_post_training_splits_the_calibration_and_every_rank_draws_the_one_process_mask(
    no_dropout_bert, tmp_path
):
    schedule = ("--train-dense", "false", "--post-training", "0.5", "--strategy", "wanda", "--scope", "row",
                "--calibration-samples", "8", "--recover", "--max-steps", "1")  # fmt: skip
    two = launch(no_dropout_bert, tmp_path / "two", 2, 8, record=tmp_path, schedule=schedule)
    assert two.returncode == 0, two.stderr[-3000:]
    one = launch(no_dropout_bert, tmp_path / "one", 1, 8, schedule=schedule)
    assert one.returncode == 0, one.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "masks_rank0.safetensors"), load_file(tmp_path / "masks_rank1.safetensors")
    recovered = {k: m for k, m in rank0.items() if k.startswith("recover/level_1_to_50.00|")}
    assert recovered and all(torch.equal(m, rank1[k]) for k, m in recovered.items())
    alone = files(tmp_path / "one", "post-training", "1_to_50.00", "mask.safetensors")
    assert all(torch.equal(alone[k.split("|")[1]], m) for k, m in recovered.items())


def test_a_teacher_and_taylor_scores_on_two_processes_give_every_rank_one_mask_and_one_processs_result(
    no_dropout_bert, tmp_path
):
    """The cached teacher logits are looked up per example on each rank's share of the data, and Taylor scores are
    drawn once and broadcast: two processes of batch 8 train what one process of batch 16 trains."""
    schedule = ("--levels", "2", "--distill", "--unit", "neuron", "--scope", "layer", "--strategy", "taylor",
                "--taylor-samples", "8")  # fmt: skip
    two = launch(no_dropout_bert, tmp_path / "two", 2, 8, record=tmp_path, schedule=schedule)
    assert two.returncode == 0, two.stderr[-3000:]
    one = launch(no_dropout_bert, tmp_path / "one", 1, 16, schedule=schedule)
    assert one.returncode == 0, one.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "masks_rank0.safetensors"), load_file(tmp_path / "masks_rank1.safetensors")
    assert rank0 and set(rank0) == set(rank1) and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    for level in (1, 2):
        a, b = (files(tmp_path / run, "imp", level, "weights.safetensors") for run in ("two", "one"))
        assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a), f"level {level} weights differ"
    two_rows, one_rows = read_results(RunPaths(tmp_path / "two")), read_results(RunPaths(tmp_path / "one"))
    assert [r.steps for r in two_rows] == [r.steps for r in one_rows]
