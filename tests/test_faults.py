"""Faults found by trying the tool from outside: resuming and extending a masked-adapter branch, and the edges of
bad state (refused pushes, killed exports, newer or corrupt run directories, read-only disks, signals)."""

import hashlib
import json
import os
import re
import shutil
import signal
import warnings
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from huggingface_hub import HfApi, constants, hf_hub_download
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

from hf_lottery import export_ticket, load_ticket
from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.run import RunEvents
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import fails_cleanly
from tests.test_disk_full import DATA, FULL, fill_disk
from tests.test_post_training import lm_config

ADAPTED = ("recover-adapter", 1, 0.5)
ADAPTER_RUN = dict(post_training=[0.5], recover=True, recover_adapter=4, max_steps=4)


@pytest.fixture(scope="module")
def adapter_run(tiny_gpt2, text_files, tmp_path_factory) -> RunPaths:
    """A post-training run with both recoveries, uninterrupted."""
    out = tmp_path_factory.mktemp("faults") / "run"
    run_lottery(lm_config(tiny_gpt2, text_files, out, **ADAPTER_RUN))
    return RunPaths(out)


def same_weights(a: RunPaths, b: RunPaths, branch: str, level: int, clipped_to: float | None) -> bool:
    left, right = (load_file(p.level(branch, level, clipped_to=clipped_to).weights) for p in (a, b))
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


# --- 1. a masked-adapter branch resumes and can be added --------------------------------------------------------


@pytest.mark.slow
def test_an_adapter_branch_added_to_a_finished_post_training_run_trains_as_if_asked_at_first(
    adapter_run, tiny_gpt2, text_files, tmp_path
):
    out = tmp_path / "run"
    run_lottery(lm_config(tiny_gpt2, text_files, out, post_training=[0.5], recover=True, max_steps=4))
    run_lottery(lm_config(tiny_gpt2, text_files, out, **ADAPTER_RUN))
    assert same_weights(RunPaths(out), adapter_run, *ADAPTED)


class Killed(Exception):
    """Stands for kill -9: the run stops where it is raised."""


class KillAt(RunEvents):
    def __init__(self, tag: str, step: int) -> None:
        self.tag, self.step = tag, step

    def step_ended(self, tag: str, step: int, model) -> None:
        if tag == self.tag and step == self.step:
            raise Killed


@pytest.mark.slow
def test_an_adapter_level_killed_after_a_checkpoint_resumes_bit_identically(
    adapter_run, tiny_gpt2, text_files, tmp_path
):
    out = tmp_path / "run"
    asked = ADAPTER_RUN | dict(save_steps=2)
    with pytest.raises(Killed):
        run_lottery(lm_config(tiny_gpt2, text_files, out, **asked), KillAt("recover-adapter/level_1_to_50.00", 3))
    AcceleratorState._reset_state(reset_partial_state=True)  # a new process
    GradientState._reset_state()
    run_lottery(lm_config(tiny_gpt2, text_files, out, **asked))
    killed = RunPaths(out).level(*ADAPTED[:2], clipped_to=ADAPTED[2])
    assert read_json(killed.metrics)["resumed_from_step"] == 2
    assert same_weights(RunPaths(out), adapter_run, *ADAPTED)


# --- 2. a refused push leaves nothing on the Hub ----------------------------------------------------------------


def prune_args(tiny_bert, out: Path, *extra: str) -> list[str]:
    """``hf-lottery prune``'s arguments for a one-level run of the tiny BERT on the demo data, in seconds."""
    return ["prune", str(tiny_bert), *DATA, *extra, "--output-dir", str(out)]


@pytest.fixture(scope="module")
def element_run(tiny_bert, tmp_path_factory) -> RunPaths:
    out = tmp_path_factory.mktemp("faults") / "element"
    assert main(prune_args(tiny_bert, out, "--levels", "1")) == 0
    return RunPaths(out)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("hf-lottery: error: "), err
    return err


def test_an_element_ticket_pushed_compact_is_refused_locally_and_creates_no_repository(
    element_run, hub_server, monkeypatch, capsys
):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert main(["push", str(element_run.root), "alice/refused", "--level", "1", "--compact"]) == 1
    assert "only neuron, head and layer tickets become smaller models" in one_error_line(capsys)
    assert not HfApi(token=hub_server.token).repo_exists("alice/refused")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # offline: the same local refusal
    assert main(["push", str(element_run.root), "alice/refused", "--level", "1", "--compact"]) == 1
    assert "only neuron, head and layer tickets become smaller models" in one_error_line(capsys)


def test_a_push_whose_export_fills_the_disk_creates_no_repository_or_branch(
    element_run, hub_server, monkeypatch, capsys
):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    fill_disk(monkeypatch, lambda path: path.name.startswith(".ticket.safetensors"), FULL)
    args = ["push", str(element_run.root), "alice/full", "--level", "1", "--revision", "trial"]
    assert main(args) == 1
    assert "nothing was written" in one_error_line(capsys)
    assert not HfApi(token=hub_server.token).repo_exists("alice/full")


# --- 3. a killed export's temporary folder goes with the next export ---------------------------------------------


def test_the_temporary_folder_of_a_killed_export_is_removed_by_the_next_export_to_that_folder(element_run, tmp_path):
    out = tmp_path / "out"
    killed = tmp_path / ".out.tmp-k1ll3d"  # what a kill -9 inside the export's write leaves beside it
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"\0" * 1024)
    other = tmp_path / ".outer.tmp-k1ll3d"  # another folder's: not this export's to remove
    other.mkdir()
    export_ticket(element_run.root, out, level=1)
    assert (out / "ticket.json").exists() and not killed.exists() and other.exists()


# --- 4, 5. newer and damaged run directories -----------------------------------------------------------------------


def test_a_run_directory_of_a_newer_format_is_refused_for_writing_and_left_as_it_is(
    element_run, tiny_bert, tmp_path, capsys
):
    out = tmp_path / "newer"
    shutil.copytree(element_run.root, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "format_version": 99, "from_the_future": {"x": 1}}))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(prune_args(tiny_bert, out, "--levels", "2")) == 1
    line = one_error_line(capsys)
    assert "written by a newer hf-lottery (run directory format 99;" in line and ", format 4)" in line, line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    export_ticket(out, tmp_path / "read", level=1)  # reading it is fine


def test_a_damaged_config_is_named_in_one_line(element_run, tiny_bert, tmp_path, capsys):
    out = tmp_path / "damaged"
    shutil.copytree(element_run.root, out)
    (out / "config.json").write_text('{"format_version": 4, "prune": {')
    capsys.readouterr()
    assert main(prune_args(tiny_bert, out, "--levels", "1")) == 1
    line = one_error_line(capsys)
    assert f"{out / 'config.json'} is damaged (not JSON: " in line and "or choose another --output-dir" in line, line
    assert main(["export", str(out), str(tmp_path / "x"), "--level", "1"]) == 1
    assert f"{out / 'config.json'} is damaged (not JSON: " in one_error_line(capsys)


def test_a_truncated_level_is_named_on_export_with_how_to_train_it_again(element_run, tmp_path, capsys):
    out = tmp_path / "truncated"
    shutil.copytree(element_run.root, out)
    weights = out / "imp" / "level_1" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["export", str(out), str(tmp_path / "x"), "--level", "1"]) == 1
    line = one_error_line(capsys)
    assert f"{weights} is damaged (not a whole safetensors file: " in line, line
    assert f"remove {out / 'imp' / 'level_1'} and run the run's `hf-lottery prune` command again" in line
    assert not (tmp_path / "x").exists()


# --- 6. lines that say what is wrong ------------------------------------------------------------------------------


def test_a_model_folder_given_as_a_run_directory_is_called_a_model(tiny_bert, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    assert main(prune_args(tiny_bert, model, "--levels", "1")) == 1
    assert f"{model} is not an hf-lottery run directory: its config.json is a model's" in one_error_line(capsys)
    assert main(["export", str(model), str(tmp_path / "out")]) == 1
    line = one_error_line(capsys)
    assert "its config.json is a model's, not a run's; give the run directory that `hf-lottery prune` wrote" in line
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in tiny_bert.iterdir())


def test_an_export_where_a_file_is_in_the_way_names_the_file(element_run, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["export", str(element_run.root), str(blocker / "out"), "--level", "1"]) == 1
    assert one_error_line(capsys).endswith(f"cannot write {blocker / 'out'}: {blocker} is a file, not a folder")
    assert main(["export", str(element_run.root), str(blocker), "--level", "1"]) == 1
    assert one_error_line(capsys).endswith(f"{blocker} is a file, not a folder")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no folder can be made")
def test_an_output_dir_that_cannot_be_made_is_one_line_naming_it(tiny_bert, capsys):
    assert main(prune_args(tiny_bert, Path("/proc/forbidden"), "--levels", "1")) == 1
    assert "hf-lottery: error: cannot write /proc/forbidden: " in capsys.readouterr().err.splitlines()[-1]


# --- 8. hostile compact tickets -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ticket(element_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "ticket"
    export_ticket(element_run.root, out, level=1)
    return out


def test_a_config_its_own_validator_refuses_is_one_line_with_the_reason(ticket, tmp_path):
    hostile = tmp_path / "hostile"
    shutil.copytree(ticket, hostile)
    llama = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4).to_dict()
    (hostile / "config.json").write_text(json.dumps({**llama, "num_attention_heads": 64, "num_key_value_heads": 64}))
    with pytest.raises(LotteryError) as err:
        load_ticket(hostile)
    assert str(err.value) == (
        f"{hostile}: config.json does not describe a model: The hidden size (32) is not a multiple of the number of "
        "attention heads (64)."
    )


def test_a_config_of_zero_sized_layers_is_refused_without_warnings(ticket, tmp_path):
    hostile = tmp_path / "hostile"
    shutil.copytree(ticket, hostile)
    config = json.loads((hostile / "config.json").read_text())
    (hostile / "config.json").write_text(json.dumps({**config, "intermediate_size": 0}))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(LotteryError, match="config.json says"):
        warnings.simplefilter("always")
        load_ticket(hostile)
    assert not [w for w in caught if issubclass(w.category, UserWarning)], [str(w.message) for w in caught]


# --- 9. SIGTERM: a checkpoint and one line ------------------------------------------------------------------------


class SigtermAt(RunEvents):
    """Sends this process SIGTERM, as a batch system at its time limit does, after a step of one training."""

    def __init__(self, tag: str, step: int) -> None:
        self.tag, self.step = tag, step

    def step_ended(self, tag: str, step: int, model) -> None:
        if tag == self.tag and step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_saves_the_level_and_prints_the_command_that_resumes_it(element_run, tiny_bert, tmp_path, capsys):
    out = tmp_path / "run"
    args = prune_args(tiny_bert, out, "--levels", "1")
    assert main(args, SigtermAt("imp/level_1", 1)) == 143
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hf-lottery: stopped by SIGTERM after step 1 of 2 of level 1 (imp, sparsity 20.0%): its "
                          "checkpoint is saved; resume with: hf-lottery prune "), err  # fmt: skip
    assert f"--output-dir {out}" in err and "error" not in err
    assert [p.name for p in (out / "imp" / "level_1" / "checkpoint").iterdir()] == ["step_1"]
    AcceleratorState._reset_state(reset_partial_state=True)  # a new process
    GradientState._reset_state()
    assert main(args) == 0
    assert read_json(RunPaths(out).level("imp", 1).metrics)["resumed_from_step"] == 1
    assert same_weights(RunPaths(out), element_run, "imp", 1, None)


# --- 12. no local path reaches the Hub ----------------------------------------------------------------------------


def test_a_pushed_ticket_names_local_files_by_name_and_sha256_and_holds_no_local_path(
    element_run, tiny_bert, hub_server, monkeypatch
):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert main(["push", str(element_run.root), "alice/no-paths", "--level", "1"]) == 0
    card, facts = (Path(hf_hub_download("alice/no-paths", name)).read_text() for name in ("README.md", "ticket.json"))
    for local in (str(tiny_bert), str(DEMO_DATA), str(element_run.root), str(Path.home())):
        assert local not in card and local not in facts, local
    assert f"hf-lottery prune {tiny_bert.name} \\" in card and "--train-file train.tsv" in card
    train = json.loads(facts)["data_files"]["train_file"]
    assert train == {"name": "train.tsv", "sha256": hashlib.sha256((DEMO_DATA / "train.tsv").read_bytes()).hexdigest()}
    assert json.loads(facts)["base_model"] == tiny_bert.name
    assert str(tiny_bert) in read_json(element_run.level("imp", 1).metrics)["command"]  # the run keeps it whole


# --- 15. smaller ones ---------------------------------------------------------------------------------------------


def test_a_sparsity_given_twice_is_refused_in_one_line(tiny_bert, tmp_path, capsys):
    args = [str(tiny_bert), *DATA, "--train-dense", "false", "--post-training", "0.5", "0.5", "--recover"]
    fails_cleanly(capsys, args, "--post-training 0.5 is given twice: give each sparsity once", tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_adapter_rank_above_a_weights_smaller_dimension_is_warned_of(tiny_gpt2, text_files, tmp_path, capsys):
    asked = dict(post_training=[0.5], recover_adapter=40, max_steps=1)
    run_lottery(lm_config(tiny_gpt2, text_files, tmp_path / "run", **asked))
    warned = "warning: --recover-adapter 40 is above the smaller dimension of transformer.h.0.attn.c_attn.weight (32)"
    assert warned in capsys.readouterr().out


# --- 11, 13. a structured ticket's card says what was pruned; no sparse copy that is not smaller ------------------


@pytest.fixture(scope="module")
def neuron_run(tiny_bert, tmp_path_factory) -> RunPaths:
    out = tmp_path_factory.mktemp("faults") / "neurons"
    unit = ["--unit", "neuron", "--scope", "layer"]
    assert main(prune_args(tiny_bert, out, "--levels", "2", "--prune-fraction", "0.5", *unit)) == 0
    return RunPaths(out)


def test_a_compact_neuron_ticket_chosen_by_hand_says_what_it_is_and_ships_no_larger_sparse_copy(
    neuron_run, tmp_path, capsys
):
    out = tmp_path / "ticket"
    assert main(["export", str(neuron_run.root), str(out), "--compact", "--level", "2"]) == 0
    card = (out / "README.md").read_text()
    facts = json.loads((out / "ticket.json").read_text())
    assert facts["unit"] == "neuron" and facts["unit_sparsity"] == pytest.approx(0.75) and facts["chosen_by_hand"]
    removed = f"75% of the FFN neurons ({facts['sparsity']:.0%} of encoder weights) removed"
    assert removed in card and "-75-neuron-sparse\n" in card
    assert "Each level removed 50% of the surviving FFN neurons (" in card and "the same fraction in each block" in card
    assert "per tensor" not in card and "zeros in place" not in card and "winning lottery ticket" not in card
    gap = 100 * (facts["metric_value"] - facts["dense_metric_value"])
    side = "below" if gap < 0 else "above"
    distance = f"{abs(gap):.1f} points {side} the dense model's validation accuracy"
    assert f"A pruned level, chosen by hand ({distance}), of the local model" in card
    assert "what a deployment needs" in card and "to train the ticket again from its rewind point" in card
    assert not (out / "model.sparse.safetensors").exists() and not facts["sparse_copy"]
    assert "model.sparse.safetensors" not in card
    model, masks = load_ticket(out)  # from the stock model file and the masks
    stock = AutoModelForSequenceClassification.from_pretrained(out)
    assert all(torch.equal(p, stock.state_dict()[k]) for k, p in model.state_dict().items())
    assert set(masks) == set(load_file(out / "masks.safetensors"))


def test_an_element_ticket_keeps_its_smaller_sparse_copy(ticket):
    facts = json.loads((ticket / "ticket.json").read_text())
    assert facts["sparse_copy"] and facts["unit"] == "element" and facts["unit_sparsity"] is None
    assert (ticket / "model.sparse.safetensors").stat().st_size < (ticket / "model.safetensors").stat().st_size
    assert facts["chosen_by_hand"] and "winning lottery ticket" not in (ticket / "README.md").read_text()


# --- 10. post-training runs write no copy of what the rewind point holds ------------------------------------------


def test_levels_scored_untrained_write_no_weights_and_read_back_as_the_rewind_point_under_their_mask(
    adapter_run, tiny_gpt2, tmp_path
):
    dense, pruned = adapter_run.level("imp", 0), adapter_run.level("post-training", 1, clipped_to=0.5)
    assert not dense.weights.exists() and not pruned.weights.exists()
    assert read_json(pruned.metrics)["weights"] == "the rewind point under the mask"
    rewind, mask = load_file(adapter_run.rewind_point), load_file(pruned.mask)
    pretrained = load_file(tiny_gpt2 / "model.safetensors")
    assert all(torch.equal(rewind[k], v) for k, v in pretrained.items() if k in rewind)
    export_ticket(adapter_run.root, tmp_path / "out", level="post-training/level_1_to_50.00")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    for name, value in model.state_dict().items():
        if name in rewind:
            expected = rewind[name] * mask[name] if name in mask else rewind[name]
            assert torch.equal(value, expected), name
    files = [p for p in adapter_run.root.rglob("*.safetensors")]
    full = [p for p in files if p.stat().st_size >= adapter_run.rewind_point.stat().st_size]
    # the rewind point and the two recoveries' trained weights: no copy of the pretrained model besides
    assert sorted(p.relative_to(adapter_run.root).as_posix() for p in full) == [
        "recover-adapter/level_1_to_50.00/weights.safetensors", "recover/level_1_to_50.00/weights.safetensors",
        "rewind_point.safetensors",
    ]  # fmt: skip


def test_the_dry_runs_disk_estimate_is_what_the_run_writes(adapter_run, tiny_gpt2, text_files, tmp_path, capsys):
    capsys.readouterr()
    run_lottery(lm_config(tiny_gpt2, text_files, tmp_path / "plan", **ADAPTER_RUN, dry_run=True))
    estimate = re.search(r"about ([\d.]+) (kB|MB|GB) of weights and masks on disk", capsys.readouterr().out)
    estimated = float(estimate.group(1)) * {"kB": 1e3, "MB": 1e6, "GB": 1e9}[estimate.group(2)]
    written = sum(p.stat().st_size for p in adapter_run.root.rglob("*.safetensors"))
    assert abs(estimated - written) < 0.001 * written, (estimated, written)


# --- the header lines: after the checks that need no model ----------------------------------------------------------


def test_a_missing_data_file_is_the_only_line_printed(tiny_bert, tmp_path, capsys):
    args = ["prune", str(tiny_bert), "--train-file", str(tmp_path / "nope.tsv"), "--validation-file",
            str(DEMO_DATA / "dev.tsv"), "--levels", "1", "--output-dir", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"hf-lottery: error: {tmp_path / 'nope.tsv'}: no such file\n"
    assert not (tmp_path / "run").exists()


# --- 7. a finished run in a folder that cannot be written shows its results ----------------------------------------


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="file modes bind every user but root")
def test_a_finished_run_that_cannot_be_written_shows_its_results(element_run, tiny_bert, tmp_path, capsys):
    out = tmp_path / "finished"
    shutil.copytree(element_run.root, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    for path in [out, *out.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        capsys.readouterr()
        assert main(prune_args(tiny_bert, out, "--levels", "1")) == 0
        assert "| 1 | imp | 20.0% |" in capsys.readouterr().out
        assert main(prune_args(tiny_bert, out, "--levels", "2")) == 1  # something left to do: one line
        assert one_error_line(capsys).endswith(f"cannot write {out}: permission denied")
    finally:
        for path in [out, *out.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
