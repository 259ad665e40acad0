"""Post-training pruning of a pretrained model (no level-0 training), N:M masks, and recovery that keeps the mask,
on a tiny GPT-2 and a tiny BERT built from configs."""

import re
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hf_lottery import export_ticket
from hf_lottery.foundations.errors import LotteryError, NoTicketError
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.paths import IMP, RunPaths
from hf_lottery.lottery.rows import read_results
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.pruning.selection import check_nm, nm_prune
from tests.helpers import fails_cleanly, make_config, saved_weights

# --- N:M masks -------------------------------------------------------------------------------------------------


def test_nm_keeps_the_n_highest_of_every_m_consecutive_inputs():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5, 0.6, 0.7, 0.8], [1.0, 1.0, 1.0, 1.0, 9.0, 0.0, 0.0, 8.0]])
    mask = nm_prune({"w": scores}, {"w": torch.ones(2, 8, dtype=torch.bool)}, 2, 4)["w"]
    assert mask.tolist() == [
        [True, False, True, False, False, False, True, True],
        [True, True, False, False, True, False, False, True],  # ties go to the earlier position
    ]


def test_nm_groups_run_along_the_inputs_of_a_transposed_weight_and_only_among_alive_weights():
    scores = torch.rand(16, 6)  # a Conv1D weight: (in, out), so the groups run down the columns
    previous = torch.ones(16, 6, dtype=torch.bool)
    previous[0, 0] = previous[1, 0] = previous[2, 0] = False  # three of the first group's four are dead
    mask = nm_prune({"c": scores}, {"c": previous}, 2, 4, frozenset({"c"}))["c"]
    groups = mask.T.reshape(6, 4, 4)  # (out, groups, 4 inputs)
    assert groups[1:].sum(-1).eq(2).all() and groups[0, 1:].sum(-1).eq(2).all()
    assert groups[0, 0].tolist() == [False, False, False, True]  # the one alive weight is all the group keeps
    assert not (mask & ~previous).any()


def test_nm_refuses_a_weight_whose_inputs_m_does_not_divide():
    with pytest.raises(LotteryError, match=r"--nm 2:4: fc.weight has 6 inputs, which 4 does not divide"):
        check_nm({"fc.weight": torch.Size([8, 6])}, 2, 4)
    check_nm({"fc.weight": torch.Size([8, 6])}, 2, 4, frozenset({"fc.weight"}))  # (in, out): 6 outputs are fine


# --- pruning the pretrained model directly ---------------------------------------------------------------------


def lm_config(tiny_gpt2, text_files, out, **overrides):
    train, valid = text_files
    values = dict(
        train_file=str(train), validation_file=str(valid), max_length=16, max_train_samples=None,
        max_eval_samples=None, train_dense=False, strategy="wanda", scope="row", calibration_samples=8,
        levels=None, batch_size=8,
    )  # fmt: skip
    return make_config(tiny_gpt2, out, **(values | overrides))


@pytest.fixture(scope="module")
def wanda_run(tiny_gpt2, text_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("post") / "run"
    run_lottery(lm_config(tiny_gpt2, text_files, out, post_training=[0.5], recover=True, recover_adapter=4))
    return RunPaths(out)


def test_the_pretrained_model_is_pruned_and_scored_without_training(wanda_run, tiny_gpt2):
    pretrained = load_file(tiny_gpt2 / "model.safetensors")
    dense = wanda_run.level(IMP, 0)
    assert read_json(dense.metrics)["steps"] == 0
    assert all(torch.equal(t, pretrained[k]) for k, t in saved_weights(dense).items() if k in pretrained)
    pruned = wanda_run.level("post-training", 1, clipped_to=0.5)
    weights, mask = saved_weights(pruned), load_file(pruned.mask)
    assert read_json(pruned.metrics)["steps"] == 0
    for name, m in mask.items():  # Conv1D (in, out): Wanda keeps half of each output's inputs
        assert m.sum(0).eq(m.shape[0] // 2).all(), name
        assert torch.equal(weights[name], pretrained[name] * m)  # the survivors are untouched
    rows = read_results(wanda_run)
    assert [(r.path, r.steps) for r in rows] == [
        ("imp/level_0", 0), ("post-training/level_1_to_50.00", 0), ("recover/level_1_to_50.00", 4),
        ("recover-adapter/level_1_to_50.00", 4),
    ]  # fmt: skip


@pytest.mark.parametrize("branch", ["recover", "recover-adapter"])
def test_recovery_trains_the_post_training_mask_and_keeps_it(wanda_run, branch):
    pruned = wanda_run.level("post-training", 1, clipped_to=0.5)
    recovered = wanda_run.level(branch, 1, clipped_to=0.5)
    mask = load_file(pruned.mask)
    assert all(torch.equal(m, load_file(recovered.mask)[k]) for k, m in mask.items())
    before, after = saved_weights(pruned), saved_weights(recovered)
    assert all(after[k][~m].eq(0).all() for k, m in mask.items())
    assert any(not torch.equal(after[k][m], before[k][m]) for k, m in mask.items())  # trained
    assert set(after) == set(before)  # the adapters merged: stock names only


def test_recovery_trains_at_its_own_learning_rate(wanda_run, tiny_gpt2, text_files, tmp_path):
    out = tmp_path / "run"
    run_lottery(lm_config(tiny_gpt2, text_files, out, post_training=[0.5], recover_adapter=4,
                          recover_adapter_learning_rate=0.05))  # fmt: skip
    mine, shared = RunPaths(out), wanda_run  # the same run but for the adapter's learning rate
    for name, value in saved_weights(shared.level("post-training", 1, clipped_to=0.5)).items():
        assert torch.equal(value, saved_weights(mine.level("post-training", 1, clipped_to=0.5))[name])
    fast, slow = (load_file(p.level("recover-adapter", 1, clipped_to=0.5).weights) for p in (mine, shared))
    pruned = saved_weights(shared.level("post-training", 1, clipped_to=0.5))
    name = "transformer.h.0.mlp.c_fc.weight"
    assert (fast[name] - pruned[name]).abs().sum() > 5 * (slow[name] - pruned[name]).abs().sum()
    assert read_json(out / "recover-adapter" / "settings.json") == {"recover_adapter_learning_rate": 0.05}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(recover_adapter_learning_rate=0.05), "found with --recover-adapter-learning-rate None; this run asks "
                                                   "for --recover-adapter-learning-rate 0.05"),
        (dict(nm="2:4"), "found with --nm None; this run asks for --nm 2:4"),
    ],
)  # fmt: skip
def test_a_branch_found_with_other_settings_is_refused_and_left_as_it_is(
    wanda_run, tiny_gpt2, text_files, tmp_path, overrides, message
):
    out = tmp_path / "run"
    shutil.copytree(wanda_run.root, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    asked = dict(post_training=[0.5], recover=True, recover_adapter=4) | overrides
    with pytest.raises(LotteryError, match=re.escape(message)):
        run_lottery(lm_config(tiny_gpt2, text_files, out, **asked))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_an_adapter_recovered_level_ships_as_a_stock_model(wanda_run, tmp_path):
    export_ticket(wanda_run.root, tmp_path / "out", level="recover-adapter/level_1_to_50.00")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    trained = load_file(wanda_run.level("recover-adapter", 1, clipped_to=0.5).weights)
    assert all(torch.equal(p, trained[k]) for k, p in model.state_dict().items() if k in trained)
    assert "post-training mask recovered through a masked adapter" in (tmp_path / "out" / "README.md").read_text()


def test_a_post_training_mask_ships_as_a_stock_model_and_its_card_says_what_it_is(wanda_run, tmp_path):
    facts = export_ticket(wanda_run.root, tmp_path / "out", level="post-training/level_1_to_50.00")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "A one-shot post-training mask of" in card and "not an IMP ticket" in card
    assert "for the pretrained model as it is" in card
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    mask = load_file(wanda_run.level("post-training", 1, clipped_to=0.5).mask)
    params = dict(model.named_parameters())
    assert all(params[k][~m].eq(0).all() for k, m in mask.items())
    assert facts["branch"] == "post-training"


def test_nm_masks_keep_exactly_n_of_every_m_inputs(tiny_gpt2, text_files, tmp_path):
    run_lottery(lm_config(tiny_gpt2, text_files, tmp_path / "run", nm="2:4", calibration_samples=4))
    level = RunPaths(tmp_path / "run").level("post-training", 1, clipped_to=0.5)
    for name, m in load_file(level.mask).items():
        assert m.T.reshape(m.shape[1], -1, 4).sum(-1).eq(2).all(), name  # Conv1D: inputs are dim 0
    assert read_json(level.metrics)["sparsity"] == 0.5


def test_a_new_head_untrained_is_no_dense_reference(tiny_bert, tmp_path):
    out = tmp_path / "run"
    run_lottery(make_config(tiny_bert, out, levels=None, train_dense=False, post_training=[0.5], recover=True))
    rows = read_results(RunPaths(out))
    assert rows[0].untrained_head and not rows[0].is_reference
    assert "vs dense" not in (out / "results.md").read_text()
    with pytest.raises(NoTicketError, match="a new head it was never trained with"):
        export_ticket(out, tmp_path / "best")
    export_ticket(out, tmp_path / "named", level="recover/level_1_to_50.00")
    card = (tmp_path / "named" / "README.md").read_text()
    assert "A fine-tuned post-training mask of" in card and " dense" not in card.split("\n\n")[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calibration-samples", "0"], "--calibration-samples must be >= 1"),
        (["--nm", "4:2"], "--nm must be N:M with 0 < N < M"),
        (["--nm", "2:3"], "--nm 2:3: transformer.h.0.attn.c_attn.weight has 32 inputs, which 3 does not divide"),
        (["--nm", "2:4", "--post-training", "0.6"], "--nm 2:4 prunes to sparsity 50.0%"),
        (["--post-training", "0.5", "--calibration-samples", "500"], "--calibration-samples 500 is more than"),
        (["--recover"], "recover trains the masks of post-training: add --post-training"),
        (["--post-training", "0.5", "--levels", "1"], "--train-dense false leaves level 0 untrained"),
        ([], "--train-dense false prunes nothing by itself"),
        (["--one-shot", "0.5"], "--train-dense false leaves level 0 untrained, and --one-shot prunes trained weights"),
    ],
)
def test_bad_post_training_input_is_one_line_and_writes_nothing(tiny_gpt2, text_files, tmp_path, capsys, args, message):
    train, valid = text_files
    base = [str(tiny_gpt2), "--train-file", str(train), "--validation-file", str(valid), "--max-length", "16",
            "--train-dense", "false", "--strategy", "wanda", "--scope", "row",
            "--calibration-samples", "4"]  # fmt: skip
    fails_cleanly(capsys, [*base, *args], message, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_wanda_on_a_layer_the_examples_never_reach_is_one_line_and_writes_nothing(
    tiny_gpt2, text_files, tmp_path, capsys
):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    crossed = tmp_path / "crossed"  # cross-attention runs only with encoder states, which text data has none of
    GPT2LMHeadModel.from_pretrained(tiny_gpt2, add_cross_attention=True).save_pretrained(crossed)
    AutoTokenizer.from_pretrained(tiny_gpt2).save_pretrained(crossed)
    capsys.readouterr()  # the loading bars above
    train, valid = text_files
    args = [str(crossed), "--train-file", str(train), "--validation-file", str(valid), "--max-length", "16",
            "--train-dense", "false", "--post-training", "0.5", "--strategy", "wanda", "--scope", "row",
            "--calibration-samples", "4"]  # fmt: skip
    fails_cleanly(capsys, args, "the calibration examples never reach transformer.h.0.crossattention", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_a_new_head_left_untrained_needs_recovery(tiny_bert, tmp_path, capsys):
    from hf_lottery.commands.demo import DEMO_DATA

    args = [str(tiny_bert), "--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file",
            str(DEMO_DATA / "dev.tsv"), "--train-dense", "false", "--post-training", "0.5"]  # fmt: skip
    fails_cleanly(capsys, args, "scores chance until trained: add --recover or --recover-adapter RANK", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_the_dry_run_counts_untrained_levels_and_one_recovery_per_mask(tiny_gpt2, text_files, tmp_path, capsys):
    from hf_lottery.commands.cli import main

    train, valid = text_files
    args = [str(tiny_gpt2), "--train-file", str(train), "--validation-file", str(valid), "--max-length", "16",
            "--train-dense", "false", "--post-training", "0.5", "0.6", "--recover", "--max-steps", "3", "--dry-run",
            "--output-dir", str(tmp_path / "run")]  # fmt: skip
    assert main(["prune", *args]) == 0
    printed = capsys.readouterr().out
    assert "| 0 | 0.0% | pretrained, scored untrained | 0 |" in printed
    assert "| 1 | 60.0% | post-training | 0 |" in printed and "| 1 | 60.0% | recover | 3 |" in printed
    assert "2 trainings and 3 levels scored untrained, 6 optimizer steps in all" in printed
    assert not (tmp_path / "run").exists()
