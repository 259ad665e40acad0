"""A run's whole configuration: one dataclass from the CLI to every module, saved in the run directory.

Fields carry ``metadata={"help": ...}`` so ``transformers.HfArgumentParser`` builds the CLI from them.
``__post_init__`` validates, so a bad value fails before anything is loaded or written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from .errors import LotteryError

CONTROLS = ("random-prune", "reinit")
# Fields that do not change what a run computes: they are left out of the run's identity.
NON_IDENTITY_FIELDS = frozenset({"output_dir", "push_to_hub", "hub_private"})


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainingConfig:
    """What every command that trains shares: the model, the data, the training loop, the output."""

    COMMAND: ClassVar[str] = "train"
    model_name_or_path: str | None = field(
        default=None, metadata=_help("Hub model id or local folder of a pretrained transformer.")
    )
    revision: str | None = field(default=None, metadata=_help("Hub revision (branch, tag or commit) of the model."))
    # Data.
    task: str | None = field(
        default=None,
        metadata=_help(
            "GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli). With --train-file, "
            "the task's label count and metric apply to the local files."
        ),
    )
    train_file: str | None = field(default=None, metadata=_help("Local training file: .csv, .tsv or .jsonl."))
    validation_file: str | None = field(default=None, metadata=_help("Local validation file, same format."))
    text_columns: list[str] | None = field(default=None, metadata=_help("One or two text columns of the files."))
    label_column: str | None = field(default=None, metadata=_help("Label column of the files."))
    max_train_samples: int | None = field(default=None, metadata=_help("Use only the first N training rows."))
    max_eval_samples: int | None = field(default=None, metadata=_help("Use only the first N validation rows."))
    max_length: int = field(default=128, metadata=_help("Tokens per example after truncation."))
    # Training (every level).
    learning_rate: float = field(default=2e-5, metadata=_help("Peak AdamW learning rate."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW decoupled weight decay."))
    warmup_ratio: float = field(default=0.1, metadata=_help("Share of the steps with linear warm-up."))
    batch_size: int = field(default=32, metadata=_help("Examples per device per forward pass."))
    eval_batch_size: int = field(default=64, metadata=_help("Examples per device when evaluating."))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("Forward passes per optimizer step."))
    epochs: float = field(default=3.0, metadata=_help("Training epochs per level (ignored with --max-steps)."))
    max_steps: int | None = field(default=None, metadata=_help("Optimizer steps per level; overrides --epochs."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm (0 disables)."))
    mixed_precision: Literal["no", "fp16", "bf16"] = field(default="no", metadata=_help("Autocast precision."))
    eval_steps: int | None = field(
        default=None, metadata=_help("Also evaluate every N optimizer steps and keep the best weights.")
    )
    seed: int = field(default=42, metadata=_help("Seed of the head init, data order and controls."))
    output_dir: str | None = field(
        default=None, metadata=_help("Run directory (default: runs/<model>-<task>-<config hash>).")
    )
    push_to_hub: str | None = field(
        default=None, metadata=_help("Push the winning ticket to this Hub repository (user/name) at the end.")
    )
    hub_private: bool = field(default=False, metadata=_help("Create the --push-to-hub repository as private."))

    def __post_init__(self) -> None:
        if not self.model_name_or_path:
            raise LotteryError(f"give a model: hf-lottery {self.COMMAND} MODEL_ID_OR_PATH ...")
        if self.task is None and self.train_file is None:
            raise LotteryError("give --task (a GLUE task) or --train-file and --validation-file")
        if (self.train_file is None) != (self.validation_file is None):
            raise LotteryError("give both --train-file and --validation-file")
        if self.text_columns is not None and len(self.text_columns) not in (1, 2):
            raise LotteryError(f"--text-columns takes one or two columns, got {len(self.text_columns)}")
        positive = {
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "max_length": self.max_length,
        }
        for name, value in positive.items():
            if value < 1:
                raise LotteryError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        for name in ("max_steps", "eval_steps", "max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LotteryError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.epochs <= 0 and self.max_steps is None:
            raise LotteryError(f"--epochs must be > 0, got {self.epochs}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise LotteryError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")

    def identity(self) -> dict[str, Any]:
        """The values that decide what a run computes (everything but where it is written)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NON_IDENTITY_FIELDS}

    def run_hash(self) -> str:
        """Hash of the non-default identity values: adding an option with a default never renames runs."""
        defaults = {f.name: _default(f) for f in dataclasses.fields(self)}
        changed = {k: v for k, v in self.identity().items() if v != defaults[k]}
        return hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:10]

    def to_command(self) -> str:
        """The ``hf-lottery`` command line that reproduces this run (non-default values only)."""
        parts = ["hf-lottery", self.COMMAND, shlex.quote(str(self.model_name_or_path))]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("model_name_or_path", *NON_IDENTITY_FIELDS) or value == _default(f):
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                parts.append(flag if value else f"--no-{f.name.replace('_', '-')}")
            elif isinstance(value, list):
                parts += [flag, *(shlex.quote(str(v)) for v in value)]
            else:
                parts += [flag, shlex.quote(str(value))]
        return " ".join(parts)

    def to_json(self) -> str:
        return (
            json.dumps({**dataclasses.asdict(self), "hf_lottery_command": self.COMMAND}, indent=2, sort_keys=True)
            + "\n"
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build from saved JSON; keys this version does not know are dropped (newer files stay readable)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class LotteryConfig(TrainingConfig):
    """``hf-lottery prune``: IMP with rewinding, its levels and its controls."""

    COMMAND: ClassVar[str] = "prune"
    # Pruning.
    target_sparsity: float | None = field(
        default=None, metadata=_help("Stop at the first level whose sparsity reaches this, in [0, 1).")
    )
    levels: int | None = field(default=None, metadata=_help("Stop after this many pruning levels."))
    prune_fraction: float = field(
        default=0.2, metadata=_help("Share of the still-alive weights removed per level, in (0, 1).")
    )
    scope: Literal["global", "layer"] = field(
        default="global", metadata=_help("One magnitude threshold over all prunable tensors, or per tensor.")
    )
    include: list[str] | None = field(
        default=None,
        metadata=_help(
            "Regexes over named_parameters() names: prune exactly the matching parameters "
            "instead of the default (Linear/Conv1D weights of the transformer body)."
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_sparsity is None and self.levels is None:
            raise LotteryError("give --target-sparsity (e.g. 0.9) or --levels N")
        if self.target_sparsity is not None and not 0.0 <= self.target_sparsity < 1.0:
            raise LotteryError(f"--target-sparsity must be in [0, 1), got {self.target_sparsity}")
        if self.levels is not None and self.levels < 0:
            raise LotteryError(f"--levels must be >= 0, got {self.levels}")
        if not 0.0 < self.prune_fraction < 1.0:
            raise LotteryError(f"--prune-fraction must be in (0, 1), got {self.prune_fraction}")
        bad = [c for c in self.control if c not in CONTROLS]
        if bad:
            raise LotteryError(f"unknown --control {bad[0]!r}; choose from {', '.join(CONTROLS)}")
        self.control = sorted(set(self.control), key=CONTROLS.index)
        _ = self.rewind_step  # validates the format
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
class FinetuneConfig(TrainingConfig):
    """``hf-lottery finetune``: train a ticket (from the Hub or a folder) on a task with its mask fixed."""

    COMMAND: ClassVar[str] = "finetune"
    from_init: bool = field(
        default=False, metadata=_help("Start from the ticket's rewind-point weights, not its trained weights.")
    )
    no_mask: bool = field(default=False, metadata=_help("Train a plain model (a repository with no masks), dense."))


def load_run_config(values: dict[str, Any]) -> TrainingConfig:
    """The config saved in a run directory, as the class of the command that made it."""
    kinds = {cls.COMMAND: cls for cls in (LotteryConfig, FinetuneConfig)}
    return kinds.get(values.get("hf_lottery_command", "prune"), LotteryConfig).from_dict(values)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]
