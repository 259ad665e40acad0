"""find_ticket: IMP from Python with the user's own training function, into the CLI's run directory layout."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_lottery import export_ticket, find_ticket, load_ticket
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.pruning.masks import density

BATCH = {"input_ids": torch.randint(5, 30, (16, 12), generator=torch.Generator().manual_seed(0))}
BATCH["labels"] = (BATCH["input_ids"][:, 0] % 2).long()


def make_model(tiny_bert):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)


class TrainFn:
    """A user's loop: a fresh AdamW, a few steps, accuracy on the batch; records what it saw."""

    def __init__(self):
        self.calls: list[int] = []
        self.pruned_grads_zero: list[bool] = []

    def __call__(self, model, mask, level):
        self.calls.append(level)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        params = dict(model.named_parameters())
        model.train()
        for _ in range(3):
            model(**BATCH).loss.backward()
            self.pruned_grads_zero.append(all((params[n].grad[~m] == 0).all() for n, m in mask.items()))
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        with torch.no_grad():
            accuracy = (model(**BATCH).logits.argmax(-1) == BATCH["labels"]).float().mean().item()
        return {"accuracy": accuracy, "extra": 1.0}


def test_find_ticket_runs_resumes_and_exports(tiny_bert, tmp_path):
    out = tmp_path / "run"
    train_fn = TrainFn()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    options = dict(run_config={"lr": 1e-3, "steps": 3}, output_dir=out, metric="accuracy", levels=2,
                   prune_fraction=0.5, control=["random-prune"], tokenizer=tokenizer)  # fmt: skip
    rows = find_ticket(make_model(tiny_bert), train_fn, **options)
    assert [(r.level, r.branch) for r in rows] == [(0, "imp"), (1, "imp"), (1, "random-prune"),
                                                   (2, "imp"), (2, "random-prune")]  # fmt: skip
    assert train_fn.calls == [0, 1, 1, 2, 2] and all(train_fn.pruned_grads_zero)
    paths = RunPaths(out)
    assert density(load_file(paths.level("imp", 2).mask)) == pytest.approx(0.25, abs=1e-3)
    assert read_json(paths.config)["run_config"] == {"lr": 1e-3, "steps": 3}
    # The rewind point is the model as given; level 1 started from it, masked.
    assert torch.equal(load_file(paths.rewind_point)["classifier.weight"], make_model(tiny_bert).classifier.weight)

    again = TrainFn()
    assert (
        find_ticket(make_model(tiny_bert), again, **options) == rows and again.calls == []
    )  # resumed: nothing trained

    facts = export_ticket(out, tmp_path / "ticket", level=2)
    assert "hf_lottery.find_ticket(model, train_fn" in facts["command"]
    assert f"\n# {tiny_bert.name}-75-sparse\n" in (tmp_path / "ticket" / "README.md").read_text()  # no data to name
    model, masks = load_ticket(tmp_path / "ticket")
    weights = load_file(paths.level("imp", 2).weights)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


def test_another_run_config_in_the_same_directory_is_refused(tiny_bert, tmp_path):
    options = dict(output_dir=tmp_path / "run", metric="accuracy", levels=1, prune_fraction=0.5)
    find_ticket(make_model(tiny_bert), TrainFn(), run_config={"lr": 1e-3}, **options)
    with pytest.raises(LotteryError, match="holds a different run"):
        find_ticket(make_model(tiny_bert), TrainFn(), run_config={"lr": 5e-4}, **options)


def test_a_training_function_that_revives_pruned_weights_is_refused(tiny_bert, tmp_path):
    def reviving(model, mask, level):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)  # what momentum from a dense optimizer would do
        return 0.5

    with pytest.raises(LotteryError, match="train_fn revived"):
        find_ticket(make_model(tiny_bert), reviving, run_config={}, output_dir=tmp_path / "run", levels=1)
    assert not RunPaths(tmp_path / "run").level("imp", 1).is_done()


def test_bad_arguments_are_one_line(tiny_bert, tmp_path):
    model = make_model(tiny_bert)
    with pytest.raises(LotteryError, match="run_config must be a JSON mapping"):
        find_ticket(model, TrainFn(), run_config={"fn": print}, output_dir=tmp_path / "a", levels=1)
    with pytest.raises(LotteryError, match="give target_sparsity"):
        find_ticket(model, TrainFn(), run_config={}, output_dir=tmp_path / "b")
    with pytest.raises(LotteryError, match="early_bird stops levels mid-training"):
        find_ticket(model, TrainFn(), run_config={}, output_dir=tmp_path / "e", levels=1, early_bird=[0.5])
    with pytest.raises(LotteryError, match="rewind_to='step:K'"):
        find_ticket(model, TrainFn(), run_config={}, output_dir=tmp_path / "c", levels=1, rewind_to="step:3")
    with pytest.raises(LotteryError, match="without the metric 'accuracy'"):
        find_ticket(model, lambda m, k, n: {"f1": 1.0}, run_config={}, output_dir=tmp_path / "d", levels=1,
                    metric="accuracy")  # fmt: skip


def test_find_ticket_runs_one_shot_targets_from_the_dense_level(tiny_bert, tmp_path):
    train_fn = TrainFn()
    rows = find_ticket(
        make_model(tiny_bert),
        train_fn,
        run_config={},
        output_dir=tmp_path / "run",
        metric="accuracy",
        one_shot=[0.5, 0.8],
    )
    assert [(r.branch, round(r.sparsity, 3)) for r in rows] == [
        ("imp", 0.0),
        ("one-shot", 0.5),
        ("one-shot", 0.8),
    ]
    assert train_fn.calls == [0, 1, 1] and all(train_fn.pruned_grads_zero)


def test_a_train_fn_that_returns_a_number_gives_rows_with_that_score(tiny_bert, tmp_path):
    def train_fn(model, mask, level):
        return 0.5 + level / 10

    rows = find_ticket(make_model(tiny_bert), train_fn, run_config={}, output_dir=tmp_path / "run", levels=1)
    assert [(r.metric, r.value) for r in rows] == [("score", 0.5), ("score", 0.6)]
    with pytest.raises(LotteryError, match="metric='sparsity' names a fact every level records"):
        find_ticket(make_model(tiny_bert), train_fn, run_config={}, output_dir=tmp_path / "x", levels=1,
                    metric="sparsity")  # fmt: skip
