"""A run's configuration, split by concern as ``run_glue`` does: model, data, training, pruning, hub.

Each part is a dataclass whose fields carry ``metadata={"help": ...}``, so one ``HfArgumentParser`` builds
the CLI from all of them; each ``__post_init__`` validates its own values, so a bad value fails before
anything is loaded or written. A ``RunConfig`` holds the parts of one command and is what a run directory
saves (``config.json``, with a format version); every function takes only the part it needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from .errors import LotteryError

# Version of the run directory layout written in config.json. 1: the flat config of hf-lottery 0.1 (no
# version key), classification only. 2: the config split by concern, with the task kind.
FORMAT_VERSION = 2
# The schedule of `hf-lottery prune MODEL` with no data and no schedule: Chen et al.'s universal masked-LM ticket.
DEFAULT_LM_TARGET_SPARSITY = 0.7
# Accelerator settings left unset (None) take the launcher's value, else these (resolved in runs.py). A resolved
# default counts as a default in the run's name, as it did when these were plain defaults.
LAUNCHER_DEFAULTS = {"mixed_precision": "no", "gradient_accumulation_steps": 1}
# How far an invocation goes: not what decides each level's result, so rerunning with a higher target, more
# levels or another control extends the same run (run_log.jsonl records each invocation's reach).
# The cheaper ticket methods (one-shot, early-bird) are branches over the same level 0 and rewind point, so they
# are reach too; early-bird's settings are checked against its own branch folder instead (methods/early_bird.py).
# Replicates are the same run under other seeds (hf_lottery/replicates.py): more of them extend the run.
REACH_FIELDS = frozenset(
    {"levels", "target_sparsity", "control", "one_shot", "early_bird", "early_bird_every", "early_bird_window",
     "early_bird_threshold", "replicates"}
)  # fmt: skip
# Where a run is written and pushed, whether it runs at all, how often it saves its progress and which weights it
# keeps: none changes what it computes, nor belongs in its command line.
OUTPUT_FIELDS = frozenset(
    {"output_dir", "push_to_hub", "hub_private", "dry_run", "report_to", "keep_weights", "save_steps"}
)
# Fields left out of the run's identity (config.json holds the rest, and the run directory's name hashes it).
NON_IDENTITY_FIELDS = REACH_FIELDS | OUTPUT_FIELDS


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _positive(owner: object, *names: str) -> None:
    """Refuse values below 1 of the named fields (None means "not set" and passes)."""
    for name in names:
        value = getattr(owner, name)
        if value is not None and value < 1:
            raise LotteryError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata=_help("Hub model id or local folder of a pretrained transformer.")
    )
    revision: str | None = field(default=None, metadata=_help("Hub revision (branch, tag or commit) of the model."))
    task_kind: str | None = field(
        default=None,
        metadata=_help(
            "sequence-classification, token-classification, masked-lm or causal-lm. Default: inferred: "
            "--task or --label-column means sequence classification, .conll/.conllu files token "
            "classification, .txt files or no data at all language modelling (masked-LM for encoders such "
            "as BERT, causal-LM for decoders such as GPT-2)."
        ),
    )


@dataclass
class DataArguments:
    """Where the data comes from and how much of it is used.

    The test split (``test_file``/``test_split``) is part of a run's identity like the rest of the data: its
    scores go into every level's ``metrics.json``, so a run directory never holds levels scored on different
    test data, or on none. Left unset it hashes as a default, so runs without one keep their names.
    """

    task: str | None = field(
        default=None,
        metadata=_help(
            "GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli). With --train-file, "
            "the task's label count and metric apply to the local files."
        ),
    )
    dataset_name: str | None = field(
        default=None, metadata=_help("A data set on the Hub (datasets.load_dataset), with --text-columns etc.")
    )
    dataset_config: str | None = field(default=None, metadata=_help("Configuration name of --dataset-name."))
    train_file: str | None = field(
        default=None,
        metadata=_help(
            "Local training file: .csv, .tsv or .jsonl (classification), .conll or .conllu (token "
            "classification), .txt with one document per line (language modelling)."
        ),
    )
    validation_file: str | None = field(
        default=None, metadata=_help("Local validation file, same format: the level to ship is chosen on it.")
    )
    test_file: str | None = field(
        default=None,
        metadata=_help(
            "Local test file, same format, text and label columns: every level is also scored on it, and it "
            "never chooses a level, so its scores are held out (choosing on validation flatters the chosen level)."
        ),
    )
    test_split: str | None = field(
        default=None,
        metadata=_help(
            "Split of --dataset-name scored like --test-file (e.g. test). GLUE's test splits (--task) have "
            "no labels: give a labelled local copy with --train-file/--validation-file/--test-file instead."
        ),
    )
    text_columns: list[str] | None = field(
        default=None, metadata=_help("Text columns: one or two for classification, one for token lists or text.")
    )
    label_column: str | None = field(default=None, metadata=_help("Label (or tag) column of the data."))
    max_train_samples: int | None = field(default=None, metadata=_help("Use only the first N training rows."))
    max_eval_samples: int | None = field(
        default=None, metadata=_help("Use only the first N validation rows (and test rows).")
    )
    max_length: int = field(
        default=128, metadata=_help("Tokens per example after truncation (block length for causal-LM).")
    )
    mlm_probability: float = field(default=0.15, metadata=_help("Share of tokens masked for masked-LM."))

    def __post_init__(self) -> None:
        if (self.train_file is None) != (self.validation_file is None):
            raise LotteryError("give both --train-file and --validation-file")
        if self.dataset_name is not None and self.train_file is not None:
            raise LotteryError("give --dataset-name or --train-file/--validation-file, not both")
        self._check_test()
        if self.text_columns is not None and len(self.text_columns) not in (1, 2):
            raise LotteryError(f"--text-columns takes one or two columns, got {len(self.text_columns)}")
        _positive(self, "max_length", "max_train_samples", "max_eval_samples")
        if not 0.0 < self.mlm_probability < 1.0:
            raise LotteryError(f"--mlm-probability must be in (0, 1), got {self.mlm_probability}")

    def _check_test(self) -> None:
        """A test split needs the source it belongs to, and must be data the run never trains or chooses on."""
        if self.test_split is not None and self.dataset_name is None:
            raise LotteryError(
                "--test-split needs --dataset-name; GLUE's test splits (--task) have no labels, so give a "
                "labelled copy with --test-file"
            )
        if self.test_file is None:
            return
        if self.train_file is None:
            raise LotteryError("--test-file needs --train-file and --validation-file")
        test = Path(self.test_file).resolve()
        for flag, other in (("--train-file", self.train_file), ("--validation-file", self.validation_file)):
            if test == Path(other).resolve():
                raise LotteryError(f"--test-file {self.test_file} is also the {flag}; held-out scores need other data")

    @property
    def has_source(self) -> bool:
        """Whether any data was named; without, language-model task kinds use the default corpus."""
        return any(v is not None for v in (self.task, self.dataset_name, self.train_file))


@dataclass
class TrainArguments:
    learning_rate: float = field(default=2e-5, metadata=_help("Peak AdamW learning rate."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW decoupled weight decay."))
    warmup_ratio: float = field(default=0.1, metadata=_help("Share of the steps with linear warm-up."))
    batch_size: int = field(default=32, metadata=_help("Examples per device per forward pass."))
    eval_batch_size: int = field(default=64, metadata=_help("Examples per device when evaluating."))
    gradient_accumulation_steps: int | None = field(
        default=None,
        metadata=_help(
            "Forward passes per optimizer step. Default: what `accelerate launch` / `accelerate config` set "
            "(ACCELERATE_GRADIENT_ACCUMULATION_STEPS), else 1."
        ),
    )
    epochs: float = field(default=3.0, metadata=_help("Training epochs per level (ignored with --max-steps)."))
    max_steps: int | None = field(default=None, metadata=_help("Optimizer steps per level; overrides --epochs."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm (0 disables)."))
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None,
        metadata=_help(
            "Autocast precision. Default: what `accelerate launch` / `accelerate config` set "
            "(ACCELERATE_MIXED_PRECISION), else no."
        ),
    )
    eval_steps: int | None = field(
        default=None, metadata=_help("Also evaluate every N optimizer steps and keep the best weights.")
    )
    save_steps: int | None = field(
        default=None,
        metadata=_help(
            "Save the level's training state every N optimizer steps (the latest kept, removed when the level "
            "ends): a killed level resumes from it, to the same result."
        ),
    )
    seed: int = field(default=42, metadata=_help("Seed of the head init, data order and controls."))
    report_to: str = field(
        default="none",
        metadata=_help(
            "tensorboard, wandb, all or none: loss, learning rate and evaluation metrics of every step, tagged "
            "by branch and level, through Accelerate's trackers (TensorBoard files go to the run directory)."
        ),
    )
    output_dir: str | None = field(
        default=None, metadata=_help("Run directory (default: runs/<model>-<data>-<config hash>).")
    )

    def __post_init__(self) -> None:
        _positive(self, "batch_size", "eval_batch_size", "gradient_accumulation_steps", "max_steps", "eval_steps",
                  "save_steps")  # fmt: skip
        if self.epochs <= 0 and self.max_steps is None:
            raise LotteryError(f"--epochs must be > 0, got {self.epochs}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise LotteryError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise LotteryError(f"--learning-rate must be > 0, got {self.learning_rate}")
        for name in ("weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise LotteryError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if self.report_to not in ("tensorboard", "wandb", "all", "none"):
            raise LotteryError(f"--report-to must be tensorboard, wandb, all or none, got {self.report_to!r}")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise LotteryError(f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision!r}")


@dataclass
class PruneArguments:
    target_sparsity: float | None = field(
        default=None,
        metadata=_help(
            "Stop at the first level whose sparsity reaches this, in [0, 1). With no data, no schedule "
            f"and a language model: {DEFAULT_LM_TARGET_SPARSITY} (Chen et al.'s universal masked-LM ticket)."
        ),
    )
    levels: int | None = field(default=None, metadata=_help("Stop after this many pruning levels."))
    prune_fraction: float = field(
        default=0.2, metadata=_help("Share of the still-alive weights removed per level, in (0, 1).")
    )
    scope: str = field(
        default="global",
        metadata=_help(
            "The pruning strategy: global (one magnitude threshold over all prunable tensors) or layer (the "
            "same fraction in each tensor)."
        ),
    )
    include: list[str] | None = field(
        default=None,
        metadata=_help(
            "Regexes over named_parameters() names: prune exactly the matching parameters instead of the "
            "default (Linear/Conv1D weights of the transformer body, word embeddings and the unused pooler "
            "excluded)."
        ),
    )
    exclude: list[str] | None = field(default=None, metadata=_help("Regexes of parameters never to prune."))
    rewind_to: str = field(
        default="pretrained",
        metadata=_help(
            "Rewind point: 'pretrained' (weights before fine-tuning) or 'step:K' "
            "(weights after K optimizer steps of level 0)."
        ),
    )
    control: list[str] = field(
        default_factory=list, metadata=_help("Control runs beside IMP: random-prune and/or reinit.")
    )
    one_shot: list[float] = field(
        default_factory=list,
        metadata=_help(
            "One-shot pruning (a branch beside IMP): for each of these sparsities, prune the dense level-0 weights "
            "straight to it, rewind and train once. Adding it to a finished run trains only its own levels."
        ),
    )
    early_bird: list[float] = field(
        default_factory=list,
        metadata=_help(
            "Early-bird IMP to these sparsities (a branch beside IMP): each search level stops as soon as its next "
            "mask stops changing, and the masks at these sparsities are then trained fully from the rewind point."
        ),
    )
    early_bird_every: int = field(
        default=10, metadata=_help("Early-bird: draw the next level's mask every N optimizer steps.")
    )
    early_bird_window: int = field(
        default=5,
        metadata=_help("Early-bird: stop once W mask distances in a row are below the threshold (You et al.: 5)."),
    )
    early_bird_threshold: float = field(
        default=0.1,
        metadata=_help(
            "Early-bird: the mask distance below which the mask counts as settled, in (0, 1): the share of the "
            "level's surviving weights whose mask bit changed since the last check (You et al.: 0.1)."
        ),
    )
    keep_weights: str = field(
        default="all",
        metadata=_help(
            "all: keep every level's trained weights. needed: keep every mask and metric, but the trained weights "
            "only of level 0, the last IMP trunk level (to extend from) and the best ticket so far (to ship; with "
            "--replicates, replicate 0 keeps every ticket level, since the mean chooses); the rest are deleted as "
            "the run goes."
        ),
    )
    replicates: int = field(
        default=1,
        metadata=_help(
            "Run the same IMP (levels, controls, methods) this many times under different seeds and report mean "
            "± std per level; replicate 0 is the plain run, the others go to replicate_<r>/ in the run directory."
        ),
    )
    dry_run: bool = field(
        default=False,
        metadata=_help(
            "Print the levels, their sparsities, optimizer steps per level and in all, and the disk the run "
            "will write; then exit, writing nothing."
        ),
    )

    def __post_init__(self) -> None:
        if self.target_sparsity is not None and not 0.0 <= self.target_sparsity < 1.0:
            raise LotteryError(f"--target-sparsity must be in [0, 1), got {self.target_sparsity}")
        if self.levels is not None and self.levels < 0:
            raise LotteryError(f"--levels must be >= 0, got {self.levels}")
        if not 0.0 < self.prune_fraction < 1.0:
            raise LotteryError(f"--prune-fraction must be in (0, 1), got {self.prune_fraction}")
        from .controls import CONTROLS  # the registries import this module
        from .strategies import get_strategy

        get_strategy(self.scope)  # an unknown name is one line
        bad = [c for c in self.control if c not in CONTROLS]
        if bad:
            raise LotteryError(f"unknown --control {bad[0]!r}; choose from {', '.join(CONTROLS)}")
        self.control = sorted(set(self.control), key=list(CONTROLS).index)
        _ = self.rewind_step  # validates the format
        for flag in ("one_shot", "early_bird"):
            bad_sparsity = [s for s in getattr(self, flag) if not 0.0 < s < 1.0]
            if bad_sparsity:
                raise LotteryError(f"--{flag.replace('_', '-')} sparsities must be in (0, 1), got {bad_sparsity[0]}")
            setattr(self, flag, sorted(set(getattr(self, flag))))
        _positive(self, "early_bird_every", "early_bird_window", "replicates")
        if self.keep_weights not in ("all", "needed"):
            raise LotteryError(f"--keep-weights must be all or needed, got {self.keep_weights!r}")
        if not 0.0 < self.early_bird_threshold < 1.0:
            raise LotteryError(f"--early-bird-threshold must be in (0, 1), got {self.early_bird_threshold}")
        for flag in ("include", "exclude"):
            for pattern in getattr(self, flag) or []:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise LotteryError(f"--{flag} {pattern!r} is not a valid regex: {err}") from None

    @property
    def rewind_step(self) -> int | None:
        """None for the pretrained weights, else the level-0 optimizer step to rewind to."""
        if self.rewind_to == "pretrained":
            return None
        match = re.fullmatch(r"step:(\d+)", self.rewind_to)
        if match is None:
            raise LotteryError(f"--rewind-to must be 'pretrained' or 'step:K', got {self.rewind_to!r}")
        return int(match.group(1))


@dataclass
class FinetuneArguments:
    from_init: bool | None = field(
        default=None,
        metadata=_help(
            "Start from the ticket's rewind-point weights (true) or its trained weights (false). Default: the "
            "rewind point for a masked-LM ticket transferred to another task (Chen et al. 2020's transfer "
            "setting: the ticket is the mask plus the pretrained weights), the trained weights otherwise."
        )
        | {"nargs": "?", "const": True},  # a bare --from-init means true
    )
    no_mask: bool = field(default=False, metadata=_help("Train a plain model (a repository with no masks), dense."))


@dataclass
class HubArguments:
    push_to_hub: str | None = field(
        default=None, metadata=_help("Push the winning ticket to this Hub repository (user/name) at the end.")
    )
    hub_private: bool = field(default=False, metadata=_help("Create the --push-to-hub repository as private."))


# The parts of each command, in the order of their flags in --help.
SECTIONS: dict[str, type] = {
    "model": ModelArguments,
    "data": DataArguments,
    "train": TrainArguments,
    "prune": PruneArguments,
    "finetune": FinetuneArguments,
    "hub": HubArguments,
}
COMMAND_SECTIONS = {
    "prune": ("model", "data", "train", "prune", "hub"),
    "finetune": ("model", "data", "train", "finetune", "hub"),
    "api": ("model", "train", "prune"),  # find_ticket: the user's training function stands for data and training
}


@dataclass
class RunConfig:
    """One command's configuration: its parts, the task kind it resolved to, and how it is saved and named."""

    command: Literal["prune", "finetune", "api"]
    model: ModelArguments
    data: DataArguments = field(default_factory=DataArguments)
    train: TrainArguments = field(default_factory=TrainArguments)
    hub: HubArguments = field(default_factory=HubArguments)
    prune: PruneArguments | None = None
    finetune: FinetuneArguments | None = None
    run_config: dict[str, Any] | None = None  # find_ticket's stand-in for the user's training function

    def __post_init__(self) -> None:
        if not self.model.model_name_or_path:
            raise LotteryError(f"give a model: hf-lottery {self.command} MODEL_ID_OR_PATH ...")
        if self.command == "api":
            return
        if self.command == "prune":
            if self.prune is None:
                raise LotteryError("a prune config needs its pruning arguments")
            schedule = self.prune.target_sparsity is not None or self.prune.levels is not None
            if not schedule and (self.prune.one_shot or self.prune.early_bird):
                self.prune.levels, schedule = 0, True  # only the cheap methods: IMP trains the dense level 0
            if not schedule and self.data.has_source:
                raise LotteryError("give --target-sparsity (e.g. 0.9) or --levels N")
            if not schedule:  # the one-command default job: announced in the run's first lines
                self.prune.target_sparsity = DEFAULT_LM_TARGET_SPARSITY
            early_bird = self.prune.early_bird_every * self.prune.early_bird_window
            if self.prune.early_bird and self.train.max_steps is not None and self.train.max_steps < early_bird:
                raise LotteryError(
                    f"--early-bird needs at least --early-bird-every x --early-bird-window = {early_bird} steps per "
                    f"level, but --max-steps is {self.train.max_steps}"
                )
        elif self.finetune is None:
            self.finetune = FinetuneArguments()

    @classmethod
    def from_parts(cls, command: str, parts: list[Any]) -> Self:
        named = {name: part for part in parts for name, kind in SECTIONS.items() if isinstance(part, kind)}
        return cls(command=command, **named)

    @classmethod
    def build(cls, command: str = "prune", **values: Any) -> Self:
        """From flat keyword values, as the CLI names them (``learning_rate=...``): for Python callers and tests."""
        parts = []
        for name in COMMAND_SECTIONS[command]:
            kind = SECTIONS[name]
            known = {f.name for f in dataclasses.fields(kind)}
            parts.append(kind(**{k: v for k, v in values.items() if k in known}))
        unknown = set(values) - {f.name for name in COMMAND_SECTIONS[command] for f in _fields(name)}
        if unknown:
            raise TypeError(f"unknown option(s) for {command}: {', '.join(sorted(unknown))}")
        return cls.from_parts(command, parts)

    def parts(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COMMAND_SECTIONS[self.command]}

    @property
    def output_dir(self) -> str | None:
        return self.train.output_dir

    def flat(self) -> dict[str, Any]:
        """Every value by its field name (field names are unique across the parts)."""
        return {k: v for part in self.parts().values() for k, v in dataclasses.asdict(part).items()}

    def identity(self) -> dict[str, Any]:
        """The values that decide what a run computes (everything but where it is written and pushed)."""
        identity = {k: v for k, v in self.flat().items() if k not in NON_IDENTITY_FIELDS}
        return identity if self.run_config is None else {**identity, "run_config": self.run_config}

    def run_hash(self) -> str:
        """Hash of the non-default identity values: adding an option with a default never renames runs.

        The values as given are hashed (a task kind left to inference is not part of the name), over one flat
        mapping. How far a run goes is not part of it, so a longer run of the same config finds the same name.
        """
        return self._hash(self.identity())

    def legacy_run_hash(self) -> str:
        """The name hf-lottery 0.1 gave this config's directory: its hash also covered the reach fields."""
        return self._hash({k: v for k, v in self.flat().items() if k not in OUTPUT_FIELDS})

    def _hash(self, values: dict[str, Any]) -> str:
        defaults = {f.name: _default(f) for name in COMMAND_SECTIONS[self.command] for f in _fields(name)}
        changed = {k: v for k, v in values.items() if v not in (defaults[k], LAUNCHER_DEFAULTS.get(k))}
        return hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:10]

    def to_command(self) -> str:
        """The ``hf-lottery`` command line that reproduces this run (non-default values only)."""
        if self.command == "api":
            options = {f.name: getattr(self.prune, f.name) for f in dataclasses.fields(self.prune)}
            changed = ", ".join(f"{k}={v!r}" for k, v in options.items() if v != _default(_field("prune", k)))
            return (
                f"hf_lottery.find_ticket(model, train_fn, run_config={json.dumps(self.run_config, sort_keys=True)}, "
                f"seed={self.train.seed}, {changed})  # model: {self.model.model_name_or_path}"
            )
        parts = ["hf-lottery", self.command, shlex.quote(str(self.model.model_name_or_path))]
        for part in self.parts().values():
            for f in dataclasses.fields(part):
                value = getattr(part, f.name)
                if f.name in ("model_name_or_path", *OUTPUT_FIELDS) or value in (
                    _default(f),
                    LAUNCHER_DEFAULTS.get(f.name),
                ):
                    continue
                flag = "--" + f.name.replace("_", "-")
                if isinstance(value, bool):
                    parts.append(flag if value else f"{flag} false")
                elif isinstance(value, list):
                    parts += [flag, *(shlex.quote(str(v)) for v in value)]
                else:
                    parts += [flag, shlex.quote(str(value))]
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        parts = {name: dataclasses.asdict(part) for name, part in self.parts().items()}
        extra = {"run_config": self.run_config} if self.run_config is not None else {}
        return {"format_version": FORMAT_VERSION, "command": self.command, **parts, **extra}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build from a saved config.json, of this format or hf-lottery 0.1's flat one (migrated on reading).

        Keys this version does not know are dropped, so files of newer versions stay readable.
        """
        version = values.get("format_version", 1)
        if version == 1:
            command = values.get("hf_lottery_command", "prune")
            nested = {name: values for name in COMMAND_SECTIONS[command]}
            nested["model"] = {**values, "task_kind": "sequence-classification"}  # 0.1 knew no other kind
        else:
            command = values["command"]
            nested = {name: values.get(name, {}) for name in COMMAND_SECTIONS[command]}
        parts = []
        for name in COMMAND_SECTIONS[command]:
            known = {f.name for f in _fields(name)}
            parts.append(SECTIONS[name](**{k: v for k, v in nested[name].items() if k in known}))
        config = cls.from_parts(command, parts)
        config.run_config = values.get("run_config")
        return config


def _fields(section: str) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(SECTIONS[section])


def _field(section: str, name: str) -> dataclasses.Field:
    return next(f for f in _fields(section) if f.name == name)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]
