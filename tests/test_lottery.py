"""End-to-end IMP runs on a tiny BERT: the invariants that make a ticket a ticket."""

import pytest
import torch
from safetensors.torch import load_file

from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.run import RunEvents
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config

BRANCHES = ["imp", "random-prune", "reinit"]
LEVELS = 3


class TrainSpy(RunEvents):
    """Records each training's starting weights by the folder it trains; can interrupt a chosen training."""

    def __init__(self, interrupt_call: int | None = None, interrupt_step: int = 2, record_step: int | None = None):
        self.starts: dict[str, dict[str, torch.Tensor]] = {}
        self.at_step: dict[str, torch.Tensor] = {}
        self.calls = 0
        self.interrupt_call, self.interrupt_step, self.record_step = interrupt_call, interrupt_step, record_step

    def level_started(self, tag, model, mask):
        self.calls += 1
        self.starts[tag] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def step_ended(self, tag, step, model):
        if step == self.record_step and tag == "imp/level_0":
            self.at_step = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.calls == self.interrupt_call and step == self.interrupt_step:
            raise KeyboardInterrupt


def level_files(paths: RunPaths, branch: str, level: int):
    lp = paths.level(branch, level)
    return load_file(lp.mask), load_file(lp.weights), read_json(lp.metrics)


@pytest.fixture(scope="module")
def finished(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    config = make_config(tiny_bert, out, levels=LEVELS, prune_fraction=0.5, control=["random-prune", "reinit"])
    spy = TrainSpy()
    rows = run_lottery(config, spy)
    return config, RunPaths(out), rows, spy


def test_density_after_each_level_and_masks_only_shrink(finished):
    _, paths, rows, _ = finished
    assert [(r.level, r.branch) for r in rows][:2] == [(0, "imp"), (1, "imp")]
    assert len(rows) == 1 + LEVELS * len(BRANCHES)
    for branch in ("imp", "random-prune"):
        previous = load_file(paths.level("imp", 0).mask)
        for level in range(1, LEVELS + 1):
            mask, _, metrics = level_files(paths, branch, level)
            total = sum(m.numel() for m in mask.values())
            alive = sum(int(m.sum()) for m in mask.values())
            assert alive == round(total * 0.5**level)
            assert metrics["sparsity"] == pytest.approx(1 - 0.5**level, abs=1e-4)
            assert all(not (mask[k] & ~previous[k]).any() for k in mask), "a mask grew"
            previous = mask


def test_pruned_weights_are_exactly_zero_after_training(finished):
    _, paths, _, _ = finished
    for branch in BRANCHES:
        for level in range(1, LEVELS + 1):
            mask, weights, _ = level_files(paths, branch, level)
            for name, m in mask.items():
                assert (weights[name][~m] == 0).all(), f"{branch} level {level}: {name} revived"
                assert (weights[name][m] != 0).float().mean() > 0.99  # and the survivors did train


def test_survivors_equal_the_rewind_point_after_rewinding(finished):
    _, paths, _, spy = finished
    rewind = load_file(paths.rewind_point)
    level0_start = spy.starts["imp/level_0"]
    assert all(torch.equal(level0_start[k], rewind[k]) for k in rewind)  # pretrained weights + seeded head
    for branch in ("imp", "random-prune"):
        for level in range(1, LEVELS + 1):
            start = spy.starts[f"{branch}/level_{level}"]
            mask = load_file(paths.level(branch, level).mask)
            for name, value in rewind.items():
                expected = value * mask[name] if name in mask else value
                assert torch.equal(start[name], expected), f"{branch} level {level}: {name} not rewound"


def test_random_prune_control_matches_ticket_counts_not_positions(finished):
    _, paths, _, _ = finished
    for level in range(1, LEVELS + 1):
        ticket = load_file(paths.level("imp", level).mask)
        random = load_file(paths.level("random-prune", level).mask)
        assert {k: int(v.sum()) for k, v in random.items()} == {k: int(v.sum()) for k, v in ticket.items()}
        assert any(not torch.equal(random[k], ticket[k]) for k in ticket)


def test_reinit_control_has_the_ticket_mask_and_fresh_survivors(finished):
    _, paths, _, spy = finished
    rewind = load_file(paths.rewind_point)
    for level in range(1, LEVELS + 1):
        ticket = load_file(paths.level("imp", level).mask)
        assert all(torch.equal(load_file(paths.level("reinit", level).mask)[k], ticket[k]) for k in ticket)
        start = spy.starts[f"reinit/level_{level}"]
        for name, value in rewind.items():
            if name in ticket:
                assert (start[name][~ticket[name]] == 0).all()
                assert not torch.equal(start[name], value * ticket[name])
            else:
                assert torch.equal(start[name], value)


def test_results_table_and_plot(finished):
    _, paths, rows, _ = finished
    assert paths.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = paths.results_table.read_text()
    assert table.count("\n") == 2 + len(rows)
    assert "| 0 | dense | 0.0% |" in table and "| 3 | reinit | 87.5% |" in table


def test_a_killed_run_resumes_to_the_same_result(finished, tiny_bert, tmp_path):
    config, done_paths, _, _ = finished
    out = tmp_path / "resumed"
    controls = ["random-prune", "reinit"]

    def make():
        return make_config(tiny_bert, out, levels=LEVELS, prune_fraction=0.5, control=controls)

    with pytest.raises(KeyboardInterrupt):
        run_lottery(make(), TrainSpy(interrupt_call=6))  # level 2's random-prune control, mid-level
    paths = RunPaths(out)
    assert paths.level("imp", 2).is_done() and not paths.level("random-prune", 2).is_done()
    left = [p for p in out.rglob("*") if p.name.startswith(".") and p.name != ".hf-lottery.lock"]  # the lock stays
    assert not left, "a temporary file was left behind"

    spy = TrainSpy()
    run_lottery(make(), spy)
    assert spy.calls == 1 + LEVELS * len(BRANCHES) - 5  # finished levels are not trained again
    assert torch.equal(
        load_file(paths.rewind_point)["classifier.weight"], load_file(done_paths.rewind_point)["classifier.weight"]
    )
    for branch in BRANCHES:
        for level in range(0 if branch == "imp" else 1, LEVELS + 1):
            if branch != "imp" and level == 0:
                continue
            mask, weights, metrics = level_files(paths, branch, level)
            ref_mask, ref_weights, ref_metrics = level_files(done_paths, branch, level)
            assert metrics == ref_metrics
            assert all(torch.equal(mask[k], ref_mask[k]) for k in ref_mask)
            assert all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights), f"{branch} {level}"


def test_rewind_to_step_k_saves_the_weights_after_k_steps(tiny_bert, tmp_path):
    config = make_config(tiny_bert, tmp_path / "run", levels=1, rewind_to="step:2")
    spy = TrainSpy(record_step=2)
    run_lottery(config, spy)
    rewind = load_file(RunPaths(tmp_path / "run").rewind_point)
    pretrained = spy.starts["imp/level_0"]
    assert all(torch.equal(rewind[k], spy.at_step[k]) for k in rewind)
    assert not torch.equal(rewind["bert.pooler.dense.weight"], pretrained["bert.pooler.dense.weight"])
    mask = load_file(RunPaths(tmp_path / "run").level("imp", 1).mask)
    start = spy.starts["imp/level_1"]
    pooler = "bert.pooler.dense.weight"
    assert torch.equal(start[pooler], rewind[pooler] * mask[pooler])


def test_excluded_tensors_are_never_pruned(tiny_bert, tmp_path):
    config = make_config(tiny_bert, tmp_path / "run", levels=1, exclude=["pooler", r"layer\.0\.output"])
    run_lottery(config)
    mask, weights, _ = level_files(RunPaths(tmp_path / "run"), "imp", 1)
    for name in ("bert.pooler.dense.weight", "bert.encoder.layer.0.output.dense.weight"):
        assert name not in mask
        assert (weights[name] != 0).all()
    assert sum(int(m.sum()) for m in mask.values()) == round(sum(m.numel() for m in mask.values()) * 0.5)
