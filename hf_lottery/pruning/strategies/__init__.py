"""The pruning strategies, by name (``--strategy``): the only table that maps a name to a strategy.

Adding a strategy is one module (a ``PruningStrategy`` subclass, see ``base.py``) and one line here; the line of a
strategy with options names them too, kept in this package's ``arguments.py``, which imports no torch, so that
``--help`` lists them without importing the plug-in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_lottery.foundations.registry import Registry, lazy_exports

if TYPE_CHECKING:
    from .base import PruningStrategy, ScoringContext

STRATEGIES: Registry[PruningStrategy] = Registry(
    "strategy",
    "--strategy",
    {
        "magnitude": "hf_lottery.pruning.strategies.magnitude:Magnitude",
        "wanda": (
            "hf_lottery.pruning.strategies.wanda:Wanda",
            "hf_lottery.pruning.strategies.arguments:WandaArguments",
        ),
        "taylor": (
            "hf_lottery.pruning.strategies.taylor:Taylor",
            "hf_lottery.pruning.strategies.arguments:TaylorArguments",
        ),
        "activation": (
            "hf_lottery.pruning.strategies.activation:Activation",
            "hf_lottery.pruning.strategies.arguments:ActivationArguments",
        ),
        "block-influence": (
            "hf_lottery.pruning.strategies.block_influence:BlockInfluence",
            "hf_lottery.pruning.strategies.arguments:BlockInfluenceArguments",
        ),
    },
)

__getattr__ = lazy_exports(__name__, ".base", ["PruningStrategy", "ScoringContext"])

__all__ = ["STRATEGIES", "PruningStrategy", "ScoringContext"]
