"""The options of the methods, apart from their modules: a registry line names them, so ``--help`` lists them
without importing torch. A method's options are all of role reach (``hf_lottery.lottery.methods.base``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hf_lottery.foundations.arguments import REACH, above_zero, help_, positive, sparsities
from hf_lottery.foundations.errors import LotteryError


@dataclass(frozen=True)
class OneShotArguments:
    one_shot: list[float] = field(
        default_factory=list,
        metadata=help_(
            "One-shot pruning (a branch beside IMP): for each of these sparsities, prune the dense level-0 weights "
            "straight to it, rewind and train once. Adding it to a finished run trains only its own levels.",
            REACH,
        ),
    )

    def __post_init__(self) -> None:
        sparsities(self, "one_shot")


@dataclass(frozen=True)
class EarlyBirdArguments:
    early_bird: list[float] = field(
        default_factory=list,
        metadata=help_(
            "Early-bird IMP to these sparsities (a branch beside IMP): each search level stops as soon as its next "
            "mask stops changing, and the masks at these sparsities are then trained fully from the rewind point.",
            REACH,
        ),
    )
    early_bird_every: int = field(
        default=10, metadata=help_("Early-bird: draw the next level's mask every N optimizer steps.", REACH)
    )
    early_bird_window: int = field(
        default=5,
        metadata=help_(
            "Early-bird: stop once W mask distances in a row are below the threshold (You et al.: 5).", REACH
        ),
    )
    early_bird_threshold: float = field(
        default=0.1,
        metadata=help_(
            "Early-bird: the mask distance below which the mask counts as settled, in (0, 1): the share of the "
            "level's surviving weights whose mask bit changed since the last check (You et al.: 0.1).",
            REACH,
        ),
    )

    def __post_init__(self) -> None:
        sparsities(self, "early_bird")
        positive(self, "early_bird_every", "early_bird_window")
        if not 0.0 < self.early_bird_threshold < 1.0:
            raise LotteryError(f"--early-bird-threshold must be in (0, 1), got {self.early_bird_threshold}")


@dataclass(frozen=True)
class PostTrainingArguments:
    post_training: list[float] = field(
        default_factory=list,
        metadata=help_(
            "Post-training pruning (a branch beside IMP): for each of these sparsities, prune level 0's weights (the "
            "pretrained ones with --train-dense false) straight to it with the run's strategy, block by block for "
            "a calibrated one such as wanda, and score the pruned model without training it.",
            REACH,
        ),
    )
    nm: str | None = field(
        default=None,
        metadata=help_(
            "Post-training masks in an N:M pattern (2:4, 4:8): N kept of every M consecutive inputs of each weight, "
            "sparsity 1 - N/M (the format of sparse GPU tensor cores; no faster on CPU).",
            REACH,
        ),
    )

    def __post_init__(self) -> None:
        sparsities(self, "post_training")
        if self.nm is None:
            return
        n, m = self.pattern
        if self.post_training and self.post_training != [1 - n / m]:
            raise LotteryError(
                f"--nm {self.nm} prunes to sparsity {1 - n / m:.1%}; drop --post-training or give only that"
            )
        object.__setattr__(self, "post_training", [1 - n / m])

    @property
    def pattern(self) -> tuple[int, int] | None:
        """``--nm`` as (N, M), None when not given."""
        if self.nm is None:
            return None
        match = re.fullmatch(r"(\d+):(\d+)", self.nm)
        if match is None or not 0 < int(match.group(1)) < int(match.group(2)):
            raise LotteryError(f"--nm must be N:M with 0 < N < M, such as 2:4, got {self.nm!r}")
        return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class RecoverArguments:
    recover: bool = field(
        default=False,
        metadata=help_(
            "Recovery (a branch beside --post-training): fine-tune each post-training mask's pruned model, every "
            "kept weight trainable, the mask fixed.",
            REACH,
        ),
    )
    recover_learning_rate: float | None = field(
        default=None,
        metadata=help_("Peak learning rate of --recover's fine-tune (default: the run's --learning-rate).", REACH),
    )

    def __post_init__(self) -> None:
        above_zero(self, "recover_learning_rate")


@dataclass(frozen=True)
class AdapterRecoverArguments:
    recover_adapter: int | None = field(
        default=None,
        metadata=help_(
            "Recovery with a masked low-rank adapter of this rank (a branch beside --post-training): the pruned "
            "weights stay frozen and an update (B A) * mask is trained and merged in, so every pruned weight stays "
            "zero and the result is a stock model.",
            REACH,
        ),
    )
    recover_adapter_learning_rate: float | None = field(
        default=None,
        metadata=help_(
            "Peak learning rate of the adapter's training (default: the run's --learning-rate; adapters usually "
            "want a larger one than a full fine-tune).",
            REACH,
        ),
    )

    def __post_init__(self) -> None:
        positive(self, "recover_adapter")
        above_zero(self, "recover_adapter_learning_rate")
