"""The controls, by name (``--control``): the only table that maps a name to a control.

Adding a control is one module (a ``Control`` subclass, see ``base.py``) and one line here.
"""

from __future__ import annotations

from .base import Control
from .random_prune import RandomPrune
from .reinit import Reinit

CONTROLS: dict[str, type[Control]] = {
    RandomPrune.name: RandomPrune,
    Reinit.name: Reinit,
}

__all__ = ["CONTROLS", "Control"]
