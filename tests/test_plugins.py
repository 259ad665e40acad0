"""A plug-in is one class and one registry line, and brings its own options: for each of the four registries, a
plug-in defined here is registered, shows its option in --help, runs, and shows in the run's files."""

import dataclasses
import json
from dataclasses import dataclass, field

import pytest
import torch
from safetensors.torch import load_file

from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.foundations.arguments import REACH, help_
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import load_tensors, read_json
from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.controls import CONTROLS, Control
from hf_lottery.lottery.methods import METHODS, Method
from hf_lottery.lottery.paths import IMP, RunPaths
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.pruning.selection import random_prune
from hf_lottery.pruning.strategies import STRATEGIES, PruningStrategy
from hf_lottery.training.tasks import TASK_KINDS
from hf_lottery.training.tasks.sequence_classification import SequenceClassification
from tests.helpers import fails_cleanly, make_config


def help_text(capsys, command: str = "prune") -> str:
    assert main([command, "--help"]) == 0
    return capsys.readouterr().out


@dataclass
class PositionArguments:
    position_reverse: bool = field(default=False, metadata=help_("position: keep the first weights, not the last."))


class Position(PruningStrategy):
    """Scores each weight by its position in its tensor: visibly not magnitude, and its option turns it round."""

    name = "position"
    description = "by position"
    arguments = PositionArguments

    def scores(self, context):
        ranks = {
            n: torch.arange(1, w.numel() + 1, dtype=torch.float32).view(w.shape) for n, w in context.weights.items()
        }
        return {n: r.flip(list(range(r.dim()))) for n, r in ranks.items()} if self.args.position_reverse else ranks


def test_a_strategy_with_its_own_option(tiny_bert, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(STRATEGIES, "position", Position)  # the registry line
    assert "--position-reverse" in help_text(capsys)
    config = make_config(tiny_bert, tmp_path / "run", levels=1, scope="layer", strategy="position",
                         position_reverse=True)  # fmt: skip
    run_lottery(config)
    paths = RunPaths(tmp_path / "run")
    for name, m in load_file(paths.level(IMP, 1).mask).items():  # the first half of each tensor kept
        flat = m.flatten()
        assert flat[: flat.numel() // 2].all() and not flat[flat.numel() // 2 :].any(), name
    saved = read_json(paths.config)
    assert saved["prune"]["strategy"] == "position" and saved["position"] == {"position_reverse": True}


@dataclass
class HalfRandomArguments:
    half_random_seed_offset: int = field(default=0, metadata=help_("half-random: added to the control's seed."))


class HalfRandom(Control):
    """Random pruning at the ticket's per-tensor counts, from a seed its option moves."""

    name = "half-random"
    label = "half random"
    style = "x:"
    description = "random pruning from an offset seed"
    arguments = HalfRandomArguments

    def mask(self, *, ticket, previous, level, seed, units):
        counts = {name: int(m.sum()) for name, m in ticket.items()}
        generator = torch.Generator().manual_seed(seed + level + self.args.half_random_seed_offset)
        return random_prune(previous, counts, generator)


def test_a_control_with_its_own_option(tiny_bert, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(CONTROLS, "half-random", HalfRandom)
    assert "--half-random-seed-offset" in help_text(capsys)
    config = make_config(tiny_bert, tmp_path / "run", levels=1, control=["half-random"], half_random_seed_offset=5)
    rows = run_lottery(config)
    paths = RunPaths(tmp_path / "run")
    assert [r.branch for r in rows] == ["imp", "imp", "half-random"]
    ticket, dense = load_tensors(paths.level(IMP, 1).mask), load_tensors(paths.level(IMP, 0).mask)
    counts = {name: int(m.sum()) for name, m in ticket.items()}
    expected = random_prune(dense, counts, torch.Generator().manual_seed(0 + 1 + 5))
    mask = load_tensors(paths.level("half-random", 1).mask)
    assert all(torch.equal(mask[name], expected[name]) for name in expected)
    assert "half-random" in paths.results_table.read_text()


@dataclass
class LuckyArguments:
    lucky: float | None = field(default=None, metadata=help_("lucky: one branch at this sparsity.", REACH))


class Lucky(Method):
    """The dense level's weights pruned straight to one sparsity, as a branch of its own."""

    name = "lucky"
    label = "lucky"
    style = "*-"
    description = "a lucky draw"
    citation = "this test"
    arguments = LuckyArguments

    def asked(self):
        return self.args.lucky is not None

    def plan(self, prune, steps):
        return [f"| 1 | {self.args.lucky:.1%} | {self.name} | {steps} |"]

    def train(self, run):
        paths = run.paths.level(self.name, 1, clipped_to=self.args.lucky)
        if paths.is_done():
            return
        dense = run.paths.level(IMP, 0)

        def draw():
            model = run.trained_model(dense)
            weights = {n: p for n, p in model.named_parameters() if n in run.prunable}
            return run.draw_mask(model, weights, load_tensors(dense.mask), 1.0 - self.args.lucky, what="lucky")

        run.train_from_rewind(paths, run.shared_mask(draw), level=1, desc="lucky")


def test_a_method_with_its_own_option(tiny_bert, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(METHODS, "lucky", Lucky)
    assert "--lucky" in help_text(capsys)
    rows = run_lottery(make_config(tiny_bert, tmp_path / "run", levels=0, lucky=0.6))
    assert [(r.branch, round(r.sparsity, 2)) for r in rows] == [("imp", 0.0), ("lucky", 0.6)]
    assert "lucky" in RunPaths(tmp_path / "run").results_table.read_text()
    # Its option is reach, as a method's are: a finished run extended by it keeps its name.
    assert make_config(tiny_bert, None, lucky=0.6).run_hash() == make_config(tiny_bert, None).run_hash()


@dataclass
class ShoutingArguments:
    shout: bool = field(default=False, metadata=help_("shouting-classification: upper-case every text."))


class Shouting(SequenceClassification):
    """Sequence classification of upper-cased texts, when its option says so."""

    name = "shouting-classification"
    arguments = ShoutingArguments

    def claims(self, data):
        return False

    def load_data(self, data):
        loaded = super().load_data(data)
        if self.args.shout:
            for split in (loaded.train, loaded.validation):
                split.texts = [[text.upper() for text in column] for column in split.texts]
        return loaded


def test_a_task_kind_with_its_own_option(tiny_bert, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(TASK_KINDS, "shouting-classification", Shouting)
    assert "--shout" in help_text(capsys)
    config = make_config(tiny_bert, tmp_path / "run", levels=1, task_kind="shouting-classification", shout=True)
    rows = run_lottery(config)
    assert [r.level for r in rows] == [0, 1]
    saved = read_json(RunPaths(tmp_path / "run").config)
    assert saved["model"]["task_kind"] == "shouting-classification" and saved["shouting-classification"]["shout"]
    plain = make_config(tiny_bert, tmp_path / "plain", levels=1)
    assert config.run_hash() != plain.run_hash()  # identity: the option changes what the run computes


def test_an_option_of_a_plug_in_the_run_does_not_use_is_one_line(tiny_bert, tmp_path, capsys):
    with pytest.raises(LotteryError, match="--early-bird-every is an option of the method early-bird, which this"):
        make_config(tiny_bert, tmp_path / "x", early_bird_every=5)
    # A task kind's option is checked once the kind is known: before anything is written.
    files = ["--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file", str(DEMO_DATA / "dev.tsv")]
    args = [str(tiny_bert), *files, "--text-columns", "sentence", "--label-column", "label", "--levels", "1",
            "--mlm-probability", "0.3"]  # fmt: skip
    fails_cleanly(capsys, args, "--mlm-probability is an option of the task kind masked-lm", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_plug_in_options_cannot_clash(monkeypatch):
    @dataclass
    class Clashing:
        seed: int = 1

    class Clash(Control):
        name = "clash"
        arguments = Clashing

    monkeypatch.setitem(CONTROLS, "clash", Clash)
    with pytest.raises(TypeError, match="option --seed of clash clashes with train's"):
        RunConfig.build("prune", model_name_or_path="m", task="sst2", target_sparsity=0.5)


# The keys of a config.json that hf-lottery wrote before plug-ins brought their own options (format version 2).
VERSION_2_PRUNE = {"control", "dry_run", "early_bird", "early_bird_every", "early_bird_threshold", "early_bird_window",
                   "exclude", "include", "keep_weights", "levels", "one_shot", "prune_fraction", "replicates",
                   "rewind_to", "scope", "target_sparsity"}  # fmt: skip


def test_a_version_2_run_directory_resumes(tiny_bert, text_files, tmp_path):
    """Its --scope and --mlm-probability sat in the prune and data sections; both still decide the run."""
    train, valid = text_files
    options = dict(train_file=str(train), validation_file=str(valid), text_columns=None, label_column=None,
                   scope="layer", mlm_probability=0.3, levels=1)  # fmt: skip
    run_lottery(make_config(tiny_bert, tmp_path / "run", **options))
    paths = RunPaths(tmp_path / "run")
    new = read_json(paths.config)
    prune = {k: v for k, v in new["prune"].items() if k not in ("strategy", "unit", "block_size", "train_dense")}
    prune |= new["one-shot"] | new["early-bird"]
    assert set(prune) == VERSION_2_PRUNE
    old = {"format_version": 2, "command": "prune", "model": new["model"], "data": new["data"] | new["masked-lm"],
           "train": new["train"], "prune": prune, "hub": new["hub"]}  # fmt: skip
    paths.config.write_text(json.dumps(old))
    trained = paths.level(IMP, 1).weights.stat().st_mtime_ns

    rows = run_lottery(make_config(tiny_bert, tmp_path / "run", **{**options, "levels": 2}))  # extended by a level
    assert [r.level for r in rows] == [0, 1, 2]
    assert paths.level(IMP, 1).weights.stat().st_mtime_ns == trained  # recognised as the same run: not retrained
    with pytest.raises(LotteryError, match="holds a different run.*mlm_probability"):
        run_lottery(make_config(tiny_bert, tmp_path / "run", **{**options, "mlm_probability": 0.2}))
    assert dataclasses.asdict(RunConfig.from_dict(old).plugin("masked-lm")) == {"mlm_probability": 0.3}
