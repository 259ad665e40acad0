"""The arguments of each command, split by concern as ``run_glue`` does: model, data, training, pruning, hub.

Each part is a dataclass whose fields carry ``metadata={"help": ...}``, so one ``HfArgumentParser`` builds
the CLI from all of them; each ``__post_init__`` validates its own values, so a bad value fails before
anything is loaded or written. The parts sit below the plug-ins (task kinds read ``DataArguments``); what
needs the registries (the names ``--scope`` and ``--control`` may take) is checked by ``hf_lottery.config``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import LotteryError

# The schedule of `hf-lottery prune MODEL` with no data and no schedule: Chen et al.'s universal masked-LM ticket.
DEFAULT_LM_TARGET_SPARSITY = 0.7
# Accelerator settings left unset (None) take the launcher's value, else these (resolved in launch.py). A resolved
# default counts as a default in the run's name, as it did when these were plain defaults.
LAUNCHER_DEFAULTS = {"mixed_precision": "no", "gradient_accumulation_steps": 1}


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

    def level_densities(self) -> list[float]:
        """Density of the prunable weights at each level, level 0 (dense) first.

        Each level keeps (1 - prune_fraction) of the survivors; the last level keeps less so that
        ``target_sparsity`` is hit exactly.
        """
        keep = 1.0 - self.prune_fraction
        densities = [1.0]
        max_levels = self.levels if self.levels is not None else math.inf
        target = self.target_sparsity
        while len(densities) - 1 < max_levels:
            if target is not None and 1.0 - densities[-1] >= target - 1e-12:
                break
            next_density = densities[-1] * keep
            if target is not None and 1.0 - next_density >= target - 1e-12:
                next_density = 1.0 - target
            densities.append(next_density)
        return densities

    def last_level_clipped(self, densities: list[float]) -> bool:
        """Whether the last level prunes less than the fraction, to hit the target exactly (then it is off the
        trunk)."""
        trunk = (1.0 - self.prune_fraction) ** (len(densities) - 1)
        return len(densities) > 1 and abs(densities[-1] - trunk) > 1e-9

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
