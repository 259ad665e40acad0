"""Distillation (``--distill``): the loss, the teacher logits kept in the run directory, which trainings a teacher
changes, a resumed run with a teacher, and the teachers refused in one line."""

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from hf_lottery import export_ticket
from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.foundations.storage import load_weights
from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.training.distill import distillation_loss
from hf_lottery.training.tasks import get_task_kind
from tests.helpers import fails_cleanly, kill_9_then_rerun, make_config
from tests.test_cli import files_args
from tests.test_token_classification import conllu, ner_sentences

TRAIN, DEV = str(DEMO_DATA / "train.tsv"), str(DEMO_DATA / "dev.tsv")


def test_the_loss_is_the_hand_computed_mix_of_kl_and_task_loss():
    student = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.3, -1.0]])
    teacher = torch.tensor([[0.5, 0.0, 1.0], [2.0, -1.0, 0.0]])
    task_loss, alpha, t = torch.tensor(0.7), 0.25, 2.0
    kl = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        s_exp = [math.exp(x / t) for x in s_row]
        t_exp = [math.exp(x / t) for x in t_row]
        p_s = [e / sum(s_exp) for e in s_exp]
        p_t = [e / sum(t_exp) for e in t_exp]
        kl += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
    expected = alpha * t * t * kl / 2 + (1 - alpha) * 0.7
    loss = distillation_loss(student, teacher, task_loss, alpha=alpha, temperature=t)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert distillation_loss(teacher, teacher, task_loss, alpha=1.0, temperature=t).item() == pytest.approx(0, abs=1e-7)


def weights(run: Path, level: str) -> dict[str, torch.Tensor]:
    return load_file(run / level / "weights.safetensors")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory) -> dict[str, Path]:
    """The same tiny run without a teacher, with one at alpha 0 (only the task loss counts) and at alpha 0.5."""
    root = tmp_path_factory.mktemp("distill")
    options = {"plain": {}, "alpha 0": dict(distill=True, distill_alpha=0.0), "alpha 0.5": dict(distill=True)}
    for name, extra in options.items():
        run_lottery(make_config(tiny_bert, root / name, levels=1, control=["random-prune"], **extra))
    return {name: root / name for name in options}


def test_a_teacher_changes_every_level_after_level_0_and_alpha_0_changes_nothing(runs):
    plain, neutral, taught = runs["plain"], runs["alpha 0"], runs["alpha 0.5"]
    for level in ("imp/level_0", "imp/level_1", "random-prune/level_1"):
        assert same(weights(plain, level), weights(neutral, level)), f"{level}: alpha 0 must be the task loss alone"
    assert same(weights(plain, "imp/level_0"), weights(taught, "imp/level_0"))  # the dense level 0 is the teacher
    for level in ("imp/level_1", "random-prune/level_1"):  # the control trains against the same teacher
        assert not same(weights(plain, level), weights(taught, level)), level
    assert not (plain / "teacher_logits.safetensors").exists()
    assert "--distill" in (taught / "imp" / "level_1" / "metrics.json").read_text()  # the command each level records


def test_a_run_without_a_teacher_keeps_its_name():
    plain = make_config(Path("m"), None)
    assert plain.run_hash() == RunConfig.from_dict(plain.to_dict()).run_hash()
    assert (
        "distill" not in plain.to_command()
        and plain.run_hash() != make_config(Path("m"), None, distill=True).run_hash()
    )


def cached_rows(run: Path) -> list[torch.Tensor]:
    cache = load_file(run / "teacher_logits.safetensors")
    bounds = cache["offsets"].tolist()
    return [cache["logits"][a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def assert_cache_is_level_0_on_each_example(run: Path, auto_model, kind_name: str, config: RunConfig) -> None:
    """The cached rows of every training example equal the trained dense level 0 run on that example alone."""
    model = auto_model.from_config(AutoConfig.from_pretrained(RunPaths(run).model_files))
    load_weights(model, run / "imp" / "level_0" / "weights.safetensors")
    model.eval()
    kind = get_task_kind(kind_name)
    tokenizer = AutoTokenizer.from_pretrained(RunPaths(run).model_files)
    data = kind.prepare(kind.load_data(config.data), tokenizer, config.data, Accelerator(cpu=True))
    rows = cached_rows(run)
    assert len(rows) == len(data.train)
    with torch.no_grad():
        for i in range(len(data.train)):
            batch = data.eval_collator([data.train[i]])
            labels = batch.pop("labels")
            logits = model(**batch).logits
            expected = logits if logits.dim() == 2 else logits[labels != -100]
            torch.testing.assert_close(rows[i], expected, atol=1e-5, rtol=0)


def test_cached_sequence_logits_are_the_dense_level_0s(runs, tiny_bert):
    config = make_config(tiny_bert, runs["alpha 0.5"], levels=1, control=["random-prune"], distill=True)
    assert_cache_is_level_0_on_each_example(
        runs["alpha 0.5"], AutoModelForSequenceClassification, "sequence-classification", config
    )


def test_cached_token_logits_are_the_dense_level_0s_at_each_labelled_token(tiny_bert, tmp_path):
    train, dev = tmp_path / "train.conllu", tmp_path / "dev.conllu"
    train.write_text(conllu(ner_sentences(20, 0)))
    dev.write_text(conllu(ner_sentences(6, 20)))
    config = RunConfig.build(
        "prune", model_name_or_path=str(tiny_bert), train_file=str(train), validation_file=str(dev), levels=1,
        prune_fraction=0.5, max_steps=3, batch_size=8, max_length=32, seed=0, output_dir=str(tmp_path / "run"),
        distill=True,
    )  # fmt: skip
    run_lottery(config)
    rows = cached_rows(tmp_path / "run")
    assert all(len(r) >= 4 for r in rows)  # a row per word (the first sub-token), none for special tokens
    assert_cache_is_level_0_on_each_example(
        tmp_path / "run", AutoModelForTokenClassification, "token-classification", config
    )


def test_a_masked_lm_learns_from_the_pretrained_model_on_the_fly(tiny_bert, text_files, tmp_path):
    train, valid = text_files

    def run(name: str, **extra) -> Path:
        run_lottery(make_config(tiny_bert, tmp_path / name, task_kind="masked-lm", train_file=str(train),
                                validation_file=str(valid), max_steps=3, levels=1, **extra))  # fmt: skip
        return tmp_path / name

    plain, taught = run("plain"), run("taught", distill=True, distill_alpha=1.0)
    assert same(weights(plain, "imp/level_0"), weights(taught, "imp/level_0"))
    assert not same(weights(plain, "imp/level_1"), weights(taught, "imp/level_1"))
    assert not (taught / "teacher_logits.safetensors").exists()  # vocabulary-wide logits are not kept


@pytest.fixture(scope="module")
def trained_teacher(tiny_bert, tmp_path_factory) -> Path:
    """A sequence classifier for the demo's two labels, with the tiny BERT's tokenizer."""
    folder = tmp_path_factory.mktemp("teacher") / "teacher"
    AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return folder


def test_a_named_teacher_teaches_level_0_too(tiny_bert, trained_teacher, runs, tmp_path):
    run_lottery(make_config(tiny_bert, tmp_path / "run", levels=1, distill=True, teacher=str(trained_teacher)))
    assert not same(weights(runs["plain"], "imp/level_0"), weights(tmp_path / "run", "imp/level_0"))


def test_finetune_trains_against_a_named_teacher(tiny_bert, trained_teacher, tmp_path):
    args = ["finetune", str(tiny_bert), *files_args(), "--no-mask", "--max-train-samples", "32", "--max-steps", "2",
            "--max-eval-samples", "16", "--max-length", "32"]  # fmt: skip
    assert main([*args, "--output-dir", str(tmp_path / "plain")]) == 0
    assert main([*args, "--distill", "--teacher", str(trained_teacher), "--output-dir", str(tmp_path / "taught")]) == 0
    assert not same(weights(tmp_path / "plain", "imp/level_0"), weights(tmp_path / "taught", "imp/level_0"))


@pytest.fixture(scope="module")
def other_vocabulary(trained_teacher, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("other") / "teacher"
    shutil.copytree(trained_teacher, folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["movie-x"] = vocab.pop("film")  # the same size, one word another
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    return folder


def test_bad_teachers_and_settings_get_one_line_and_write_nothing(
    tiny_bert, trained_teacher, other_vocabulary, tmp_path, capsys
):
    base = [str(tiny_bert), *files_args(), "--levels", "1", "--max-steps", "2", "--max-length", "32"]
    out = tmp_path / "out"
    cases = [
        (["--distill", "--distill-alpha", "1.5"], "--distill-alpha must be in [0, 1], got 1.5"),
        (["--distill", "--distill-temperature", "0"], "--distill-temperature must be > 0, got 0.0"),
        (["--distill-alpha", "0.9"], "--distill-alpha sets the teacher of --distill: add --distill"),
        (["--teacher", str(trained_teacher)], "--teacher sets the teacher of --distill: add --distill"),
        (["--distill", "--teacher", str(tiny_bert)], "is not a trained sequence-classification head model"),
        (["--distill", "--teacher", str(other_vocabulary)], "has another vocabulary than the model's tokenizer"),
        (["--distill", "--train-dense", "false", "--levels", "0", "--post-training", "0.5", "--recover"],
         "--train-dense false leaves level 0 untrained under a new sequence-classification head"),
    ]  # fmt: skip
    for extra, message in cases:
        fails_cleanly(capsys, [*base, *extra], message, out)
        assert not out.exists(), extra


def test_a_teacher_with_other_labels_is_refused(tiny_bert, tmp_path, capsys):
    teacher = tmp_path / "three"
    AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3).save_pretrained(teacher)
    args = [str(tiny_bert), *files_args(), "--levels", "1", "--distill", "--teacher", str(teacher)]
    fails_cleanly(capsys, args, "has 3 labels, the data has 2", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_finetune_with_distill_needs_a_named_teacher(tiny_bert, tmp_path, capsys):
    code = main(["finetune", str(tiny_bert), *files_args(), "--no-mask", "--distill", "--output-dir",
                 str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "finetune trains no dense model to teach it" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_run_with_a_teacher_resumes_bit_identically_after_kill_9(tiny_bert, tmp_path):
    args = [sys.executable, "-m", "hf_lottery", "prune", str(tiny_bert), *files_args(), "--levels", "2",
            "--max-train-samples", "64", "--max-eval-samples", "16", "--batch-size", "8", "--max-steps", "16",
            "--distill", "--control", "random-prune"]  # fmt: skip
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    level = killed / "imp"
    kill_9_then_rerun(
        args, killed, whole, when=level / "level_1" / "metrics.json", before=level / "level_2" / "metrics.json"
    )
    assert not list(killed.rglob(".*.tmp-*")), "a temporary file from the killed run was left behind"
    assert same(load_file(killed / "teacher_logits.safetensors"), load_file(whole / "teacher_logits.safetensors"))
    for branch in ("imp", "random-prune"):
        for n in (1, 2):
            assert same(weights(killed, f"{branch}/level_{n}"), weights(whole, f"{branch}/level_{n}")), (branch, n)
    assert (killed / "results.json").read_text() == (whole / "results.json").read_text()


def test_the_card_names_the_teacher_and_its_settings(runs, tmp_path):
    export_ticket(runs["alpha 0.5"], tmp_path / "ticket", level=1)
    card = (tmp_path / "ticket" / "README.md").read_text()
    assert "against a teacher: the run's trained dense level 0 (logit distillation, alpha 0.5, temperature 2.0)" in card
    export_ticket(runs["plain"], tmp_path / "plain", level=1)
    assert "teacher" not in (tmp_path / "plain" / "README.md").read_text()
