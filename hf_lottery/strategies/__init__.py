"""The pruning strategies, by name (``--scope``): the only table that maps a name to a strategy.

Adding a strategy is one module (a ``PruningStrategy`` subclass, see ``base.py``) and one line here.
"""

from __future__ import annotations

from ..errors import LotteryError
from .base import PruningStrategy
from .magnitude import GlobalMagnitude, LayerMagnitude

STRATEGIES: dict[str, type[PruningStrategy]] = {
    GlobalMagnitude.name: GlobalMagnitude,
    LayerMagnitude.name: LayerMagnitude,
}


def get_strategy(name: str) -> PruningStrategy:
    strategy = STRATEGIES.get(name)
    if strategy is None:
        raise LotteryError(f"unknown --scope {name!r}; choose from {', '.join(STRATEGIES)}")
    return strategy()


__all__ = ["STRATEGIES", "PruningStrategy", "get_strategy"]
