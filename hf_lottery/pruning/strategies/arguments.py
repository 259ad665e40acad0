"""The options of the strategies that bring their own, apart from their modules: a registry line names them, so
``--help`` lists them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_lottery.foundations.arguments import help_, positive


@dataclass(frozen=True)
class WandaArguments:
    calibration_samples: int = field(
        default=128,
        metadata=help_(
            "wanda: training examples whose inputs score the weights: the first N of a permutation seeded by "
            "--seed (Wanda: 128)."
        ),
    )

    def __post_init__(self) -> None:
        positive(self, "calibration_samples")


@dataclass(frozen=True)
class TaylorArguments:
    taylor_samples: int = field(
        default=128,
        metadata=help_(
            "taylor: training examples whose loss gradients score the weights, one per batch: the first N of a "
            "permutation seeded by --seed."
        ),
    )

    def __post_init__(self) -> None:
        positive(self, "taylor_samples")


@dataclass(frozen=True)
class BlockInfluenceArguments:
    influence_samples: int = field(
        default=128,
        metadata=help_(
            "block-influence: training examples whose hidden states score the blocks: the first N of a permutation "
            "seeded by --seed."
        ),
    )

    def __post_init__(self) -> None:
        positive(self, "influence_samples")


@dataclass(frozen=True)
class ActivationArguments:
    activation_samples: int = field(
        default=128,
        metadata=help_(
            "activation: training examples whose activations score the units: the first N of a permutation seeded "
            "by --seed."
        ),
    )

    def __post_init__(self) -> None:
        positive(self, "activation_samples")
