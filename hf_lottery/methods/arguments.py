"""The options of the methods, apart from their modules: a registry line names them, so ``--help`` lists them
without importing torch. A method's options are all of role reach (``hf_lottery.methods.base``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..arguments import REACH, help_, positive, sparsities
from ..errors import LotteryError


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
