"""The controls, by name (``--control``): the only table that maps a name to a control.

Adding a control is one module (a ``Control`` subclass, see ``base.py``) and one line here.
"""

from __future__ import annotations

from ..registry import Registry
from .base import Control

CONTROLS: Registry[Control] = Registry(
    "control",
    "--control",
    {
        "random-prune": "hf_lottery.controls.random_prune:RandomPrune",
        "reinit": "hf_lottery.controls.reinit:Reinit",
    },
)

__all__ = ["CONTROLS", "Control"]
