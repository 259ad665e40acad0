"""The arguments of each command, split by concern as ``run_glue`` does: model, data, training, pruning, hub.

Each part is a dataclass whose fields carry ``metadata={"help": ...}``, so one parser (``hf_lottery.commands.flags``)
builds the CLI from all of them; each ``__post_init__`` validates its own values, so a bad value fails before
anything is loaded or written. The parts sit below the plug-ins (task kinds read ``DataArguments``); what
needs the registries (the names ``--strategy`` and ``--control`` may take) is checked by ``hf_lottery.lottery.config``.
"""

from __future__ import annotations

import dataclasses
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
# "Matches dense", for the best ticket (`export`/`push` --tolerance, results, the card): within one point of a
# higher-is-better metric (on a 0-1 scale: accuracy, F1), or, for a lower-is-better one (perplexity, loss), at most
# this share above dense (0.01: 1% higher perplexity).
DEFAULT_TOLERANCE = 0.01


# A field's role, in its metadata: what it is to a run directory. Identity (the default) decides what the run
# computes: config.json records it and the directory's name hashes it. Reach is how far an invocation goes (more
# levels, another control, a method's branch): rerunning with more extends the same run, and run_log.jsonl records
# each invocation's reach. Output is where the run is written or pushed, whether it runs at all, how often it saves
# its progress and which weights it keeps: none changes what it computes, nor belongs in its command line.
IDENTITY, REACH, OUTPUT = "identity", "reach", "output"


def help_(text: str, role: str = IDENTITY) -> dict[str, str]:
    """A field's metadata: its ``--help`` text and its role."""
    return {"help": text, "role": role}


def role(f: dataclasses.Field) -> str:
    return f.metadata.get("role", IDENTITY)


def sparsities(owner: object, name: str) -> None:
    """Check that the sparsities of the field ``name`` lie in (0, 1), each given once, and keep them sorted: the
    same run has one name."""
    values = getattr(owner, name)
    bad = [s for s in values if not 0.0 < s < 1.0]
    if bad:
        raise LotteryError(f"--{name.replace('_', '-')} sparsities must be in (0, 1), got {bad[0]}")
    twice = next((s for s in values if values.count(s) > 1), None)
    if twice is not None:  # a typo, most likely (0.5 0.5 for 0.5 0.6): not to be run as one level without a word
        raise LotteryError(f"--{name.replace('_', '-')} {twice} is given twice: give each sparsity once")
    object.__setattr__(owner, name, sorted(set(values)))  # the argument dataclasses are frozen


def positive(owner: object, *names: str) -> None:
    """Refuse values below 1 of the named fields (None means "not set" and passes)."""
    for name in names:
        value = getattr(owner, name)
        if value is not None and value < 1:
            raise LotteryError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def above_zero(owner: object, *names: str) -> None:
    """Refuse values of the named fields that are not finite numbers above 0 (None means "not set" and passes)."""
    for name in names:
        value = getattr(owner, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise LotteryError(f"--{name.replace('_', '-')} must be > 0, got {value}")


@dataclass(frozen=True)
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata=help_("Hub model id or local folder of a pretrained transformer.")
    )
    revision: str | None = field(default=None, metadata=help_("Hub revision (branch, tag or commit) of the model."))
    task_kind: str | None = field(
        default=None,
        metadata=help_(
            "sequence-classification, token-classification, masked-lm or causal-lm. Default: inferred: "
            "--task or --label-column means sequence classification, .conll/.conllu files token "
            "classification, .txt files or no data at all language modelling (masked-LM for encoders such "
            "as BERT, causal-LM for decoders such as GPT-2)."
        ),
    )


@dataclass(frozen=True)
class DataArguments:
    """Where the data comes from and how much of it is used.

    The test split (``test_file``/``test_split``, and the rows of it ``max_test_samples`` keeps) is part of a run's
    identity like the rest of the data: it never chooses a level, but its scores go into every level's
    ``metrics.json``, so a run directory never holds levels scored on different test data, or on none. Left unset
    it hashes as a default, so runs without one keep their names.
    """

    task: str | None = field(
        default=None,
        metadata=help_(
            "GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli). With --train-file, "
            "the task's label count and metric apply to the local files."
        ),
    )
    dataset_name: str | None = field(
        default=None, metadata=help_("A data set on the Hub (datasets.load_dataset), with --text-columns etc.")
    )
    dataset_config: str | None = field(default=None, metadata=help_("Configuration name of --dataset-name."))
    train_file: str | None = field(
        default=None,
        metadata=help_(
            "Local training file: .csv, .tsv or .jsonl (classification), .conll or .conllu (token "
            "classification), .txt with one document per line (language modelling)."
        ),
    )
    validation_file: str | None = field(
        default=None, metadata=help_("Local validation file, same format: the level to ship is chosen on it.")
    )
    test_file: str | None = field(
        default=None,
        metadata=help_(
            "Local test file, same format, text and label columns: every level is also scored on it, and it "
            "never chooses a level, so its scores are held out (choosing on validation flatters the chosen level)."
        ),
    )
    test_split: str | None = field(
        default=None,
        metadata=help_(
            "Split of --dataset-name scored like --test-file (e.g. test). GLUE's test splits (--task) have "
            "no labels: give a labelled local copy with --train-file/--validation-file/--test-file instead."
        ),
    )
    text_columns: list[str] | None = field(
        default=None, metadata=help_("Text columns: one or two for classification, one for token lists or text.")
    )
    label_column: str | None = field(default=None, metadata=help_("Label (or tag) column of the data."))
    max_train_samples: int | None = field(default=None, metadata=help_("Use only the first N training rows."))
    max_eval_samples: int | None = field(default=None, metadata=help_("Use only the first N validation rows."))
    max_test_samples: int | None = field(
        default=None, metadata=help_("Use only the first N test rows of --test-file/--test-split (default: all).")
    )
    max_length: int = field(
        default=128, metadata=help_("Tokens per example after truncation (block length for causal-LM).")
    )

    def __post_init__(self) -> None:
        for name in ("train_file", "validation_file", "test_file"):
            path = getattr(self, name)
            if path is not None and Path(path).is_dir():  # else its reader says "no such file", or worse
                raise LotteryError(f"--{name.replace('_', '-')} {path} is a directory; give a file")
        if (self.train_file is None) != (self.validation_file is None):
            raise LotteryError("give both --train-file and --validation-file")
        if self.dataset_name is not None and self.train_file is not None:
            raise LotteryError("give --dataset-name or --train-file/--validation-file, not both")
        if self.dataset_config is not None and self.dataset_name is None:  # nothing would read it
            raise LotteryError("--dataset-config needs --dataset-name: it names a configuration of that data set")
        self._check_test()
        if self.text_columns is not None and len(self.text_columns) not in (1, 2):
            raise LotteryError(f"--text-columns takes one or two columns, got {len(self.text_columns)}")
        positive(self, "max_length", "max_train_samples", "max_eval_samples", "max_test_samples")

    def _check_test(self) -> None:
        """A test split needs the source it belongs to, and must be data the run never trains or chooses on."""
        if self.test_split is not None and self.dataset_name is None:
            raise LotteryError(
                "--test-split needs --dataset-name; GLUE's test splits (--task) have no labels, so give a "
                "labelled copy with --test-file"
            )
        if self.max_test_samples is not None and self.test_file is None and self.test_split is None:
            raise LotteryError("--max-test-samples needs a test split: give --test-file or --test-split")
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


@dataclass(frozen=True)
class TrainArguments:
    learning_rate: float = field(default=2e-5, metadata=help_("Peak AdamW learning rate."))
    weight_decay: float = field(default=0.0, metadata=help_("AdamW decoupled weight decay."))
    warmup_ratio: float = field(default=0.1, metadata=help_("Share of the steps with linear warm-up."))
    batch_size: int = field(default=32, metadata=help_("Examples per device per forward pass."))
    eval_batch_size: int = field(default=64, metadata=help_("Examples per device when evaluating."))
    gradient_accumulation_steps: int | None = field(
        default=None,
        metadata=help_(
            "Forward passes per optimizer step. Default: what `accelerate launch` / `accelerate config` set "
            "(ACCELERATE_GRADIENT_ACCUMULATION_STEPS), else 1."
        ),
    )
    epochs: float = field(default=3.0, metadata=help_("Training epochs per level (ignored with --max-steps)."))
    max_steps: int | None = field(default=None, metadata=help_("Optimizer steps per level; overrides --epochs."))
    max_grad_norm: float = field(default=1.0, metadata=help_("Gradient clipping norm (0 disables)."))
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None,
        metadata=help_(
            "Autocast precision. Default: what `accelerate launch` / `accelerate config` set "
            "(ACCELERATE_MIXED_PRECISION), else no."
        ),
    )
    eval_steps: int | None = field(
        default=None, metadata=help_("Also evaluate every N optimizer steps and keep the best weights.")
    )
    save_steps: int | None = field(
        default=None,
        metadata=help_(
            "Save the level's training state every N optimizer steps (the latest kept, removed when the level "
            "ends): a killed level resumes from it, to the same result.",
            OUTPUT,
        ),
    )
    seed: int = field(default=42, metadata=help_("Seed of the head init, data order and controls."))
    report_to: str = field(
        default="none",
        metadata=help_(
            "tensorboard, wandb, all or none: loss, learning rate and evaluation metrics of every step, tagged "
            "by branch and level, through Accelerate's trackers (TensorBoard files go to the run directory).",
            OUTPUT,
        ),
    )
    output_dir: str | None = field(
        default=None, metadata=help_("Run directory (default: runs/<model>-<data>-<config hash>).", OUTPUT)
    )
    distill: bool = field(
        default=False,
        metadata=help_(
            "Train every pruned level, control, method branch, recovery and finetune against a teacher: the "
            "loss is --distill-alpha x T^2 x KL(teacher || student, both at temperature T) + (1 - alpha) x the "
            "task loss. The teacher is --teacher, else the run's trained dense level 0 (classification kinds, "
            "its logits computed once per training example and kept in the run directory), else the pretrained "
            "model (language-model kinds, run beside the student)."
        ),
    )
    distill_alpha: float = field(
        default=0.5, metadata=help_("Share of the distillation term in the loss with --distill, in [0, 1].")
    )
    distill_temperature: float = field(
        default=2.0, metadata=help_("Temperature T of both softmaxes of the distillation term, > 0.")
    )
    teacher: str | None = field(
        default=None,
        metadata=help_(
            "The teacher of --distill: a Hub id or folder of a trained model of the run's task kind, with the "
            "same tokenizer and labels (default: the run's dense level 0, or the pretrained model)."
        ),
    )

    def __post_init__(self) -> None:
        positive(self, "batch_size", "eval_batch_size", "gradient_accumulation_steps", "max_steps", "eval_steps",
                  "save_steps")  # fmt: skip
        if not (math.isfinite(self.distill_alpha) and 0.0 <= self.distill_alpha <= 1.0):
            raise LotteryError(f"--distill-alpha must be in [0, 1], got {self.distill_alpha}")
        above_zero(self, "distill_temperature")
        if not self.distill:
            given = [f.name for f in dataclasses.fields(self) if f.name.startswith(("distill_", "teacher"))
                     and getattr(self, f.name) != f.default]  # fmt: skip
            if given:
                raise LotteryError(f"--{given[0].replace('_', '-')} sets the teacher of --distill: add --distill")
        if self.epochs <= 0 and self.max_steps is None:
            raise LotteryError(f"--epochs must be > 0, got {self.epochs}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise LotteryError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        above_zero(self, "learning_rate")
        for name in ("weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise LotteryError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if self.report_to not in ("tensorboard", "wandb", "all", "none"):
            raise LotteryError(f"--report-to must be tensorboard, wandb, all or none, got {self.report_to!r}")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise LotteryError(f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision!r}")


# How the kept weights are allocated among the scores (``hf_lottery.pruning.selection.allocate``), with the card's
# words.
SCOPES = {
    "global": "one global threshold over all prunable tensors",
    "layer": "the same fraction in each tensor",
    "row": "the same fraction in each output row",
}

# --rewind-to's value for learning-rate rewinding (Renda, Frankle and Carbin 2020).
LEARNING_RATE_REWINDING = "lr"

# What a mask keeps or removes as one (``hf_lottery.pruning.units``), with the card's words.
UNITS = {
    "element": "single weights",
    "block": "square blocks of weights",
    "neuron": "FFN neurons",
    "head": "attention heads (KV groups)",
    "layer": "transformer blocks",
    "layer+neuron": "transformer blocks and FFN neurons",
}


@dataclass(frozen=True)
class PruneArguments:
    target_sparsity: float | None = field(
        default=None,
        metadata=help_(
            "Stop at the first level whose sparsity reaches this, in [0, 1). With no data, no schedule "
            f"and a language model: {DEFAULT_LM_TARGET_SPARSITY} (Chen et al.'s universal masked-LM ticket).",
            REACH,
        ),
    )
    levels: int | None = field(default=None, metadata=help_("Stop after this many pruning levels.", REACH))
    prune_fraction: float = field(
        default=0.2, metadata=help_("Share of the still-alive weights removed per level, in (0, 1).")
    )
    scope: str = field(
        default="global",
        metadata=help_(
            "How the weights to keep are allocated among the scores: global (one threshold over all prunable "
            "tensors), layer (the same fraction in each tensor) or row (the same fraction in each output row, "
            "as Wanda compares)."
        ),
    )
    unit: str = field(
        default="element",
        metadata=help_(
            "What is pruned as one: element (single weights), block (square --block-size blocks of each weight, "
            "for sparse block kernels), neuron (an FFN neuron: its row of the up and gate projections and column "
            "of the down projection), head (an attention KV group; llama, mistral, qwen2, qwen3), layer (a whole "
            "transformer block, skipped once removed) or layer+neuron (blocks and the FFN neurons of the kept "
            "blocks, the same share of each per level; --scope layer). Sparsity targets and the prune fraction "
            "count units; "
            "weights no unit spans stay dense."
        ),
    )
    block_size: int | None = field(
        default=None, metadata=help_("The side of a --unit block block (default 32; it must divide every weight).")
    )
    strategy: str = field(
        default="magnitude",
        metadata=help_(
            "The scoring rule that ranks the weights (hf_lottery.pruning.strategies): magnitude (|weight|), wanda "
            "(|weight| x the L2 norm of its input on --calibration-samples training examples), taylor (|weight x "
            "gradient of the loss| summed over --taylor-samples training examples), activation (a unit's mean absolute "
            "output on --activation-samples training examples) or block-influence (--unit layer: "
            "1 - the mean cosine of a block's input and output on --influence-samples training examples)."
        ),
    )
    include: list[str] | None = field(
        default=None,
        metadata=help_(
            "Regexes over named_parameters() names: prune exactly the matching parameters instead of the "
            "default (Linear/Conv1D weights of the transformer body, word embeddings and the unused pooler "
            "excluded)."
        ),
    )
    exclude: list[str] | None = field(default=None, metadata=help_("Regexes of parameters never to prune."))
    rewind_to: str = field(
        default="pretrained",
        metadata=help_(
            "Rewind point: 'pretrained' (weights before fine-tuning), 'step:K' (weights after K optimizer steps of "
            "level 0) or 'lr' (learning-rate rewinding, Renda et al. 2020: each IMP level keeps the survivors of the "
            "weights the level before trained and only the learning-rate schedule starts again; the controls and "
            "methods start from the pretrained weights)."
        ),
    )
    train_dense: bool = field(
        default=True,
        metadata=help_(
            "Fine-tune the dense model as level 0 (true), or score the pretrained model as it is (false: level 0 "
            "takes no steps, for --post-training masks of models too big to train; IMP levels, controls and the "
            "other methods prune trained weights and are refused)."
        ),
    )
    control: list[str] = field(
        default_factory=list, metadata=help_("Control runs beside IMP: random-prune and/or reinit.", REACH)
    )
    keep_weights: str = field(
        default="all",
        metadata=help_(
            "all: keep every level's trained weights. needed: keep every mask and metric, but the trained weights "
            "only of level 0, the last IMP trunk level (to extend from) and the best ticket so far (to ship; while "
            "no pruned level is within tolerance, the best-scoring one; with --replicates, replicate 0 keeps every "
            "ticket level, since the mean chooses); the rest are deleted as the run goes.",
            OUTPUT,
        ),
    )
    replicates: int = field(
        default=1,
        metadata=help_(
            "Run the same IMP (levels, controls, methods) this many times under different seeds and report mean "
            "± std per level; replicate 0 is the plain run, the others go to replicate_<r>/ in the run directory.",
            REACH,
        ),
    )
    dry_run: bool = field(
        default=False,
        metadata=help_(
            "Print the levels, their sparsities, optimizer steps per level and in all, and the disk the run "
            "will write; then exit, writing nothing.",
            OUTPUT,
        ),
    )

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise LotteryError(f"unknown --scope {self.scope!r}; choose from {', '.join(SCOPES)}")
        if self.unit not in UNITS:
            raise LotteryError(f"unknown --unit {self.unit!r}; choose from {', '.join(UNITS)}")
        if self.block_size is not None and self.unit != "block":
            raise LotteryError("--block-size sets the side of --unit block blocks; add --unit block or drop it")
        positive(self, "block_size")
        if self.target_sparsity is not None and not 0.0 <= self.target_sparsity < 1.0:
            raise LotteryError(f"--target-sparsity must be in [0, 1), got {self.target_sparsity}")
        if self.levels is not None and self.levels < 0:
            raise LotteryError(f"--levels must be >= 0, got {self.levels}")
        if not 0.0 < self.prune_fraction < 1.0:
            raise LotteryError(f"--prune-fraction must be in (0, 1), got {self.prune_fraction}")
        if not self.train_dense and (self.levels or self.target_sparsity is not None or self.control):
            raise LotteryError(
                "--train-dense false leaves level 0 untrained, and IMP's levels and controls prune trained weights: "
                "drop --levels, --target-sparsity and --control (--post-training prunes the pretrained model)"
            )
        _ = self.rewind_step  # validates the format
        positive(self, "replicates")
        if self.keep_weights not in ("all", "needed"):
            raise LotteryError(f"--keep-weights must be all or needed, got {self.keep_weights!r}")
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
    def rewinds_learning_rate(self) -> bool:
        """Whether an IMP level starts from the weights the level before trained, its schedule alone rewound."""
        return self.rewind_to == LEARNING_RATE_REWINDING

    @property
    def rewind_step(self) -> int | None:
        """None for the pretrained weights (the rewind point of learning-rate rewinding's controls too), else the
        level-0 optimizer step to rewind to."""
        if self.rewind_to in ("pretrained", LEARNING_RATE_REWINDING):
            return None
        match = re.fullmatch(r"step:(\d+)", self.rewind_to)
        if match is None:
            raise LotteryError(f"--rewind-to must be 'pretrained', 'step:K' or 'lr', got {self.rewind_to!r}")
        return int(match.group(1))


@dataclass(frozen=True)
class FinetuneArguments:
    from_init: bool | None = field(
        default=None,
        metadata=help_(
            "Start from the ticket's rewind-point weights (true) or its trained weights (false). Default: the "
            "rewind point for a masked-LM ticket transferred to another task (Chen et al. 2020's transfer "
            "setting: the ticket is the mask plus the pretrained weights), the trained weights otherwise."
        ),
    )
    no_mask: bool = field(default=False, metadata=help_("Train a plain model (a repository with no masks), dense."))


@dataclass(frozen=True)
class HubArguments:
    push_to_hub: str | None = field(
        default=None, metadata=help_("Push the winning ticket to this Hub repository (user/name) at the end.", OUTPUT)
    )
    hub_private: bool = field(default=False, metadata=help_("Create the --push-to-hub repository as private.", OUTPUT))
