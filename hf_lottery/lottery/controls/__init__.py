"""The controls, by name (``--control``): the only table that maps a name to a control.

Adding a control is one module (a ``Control`` subclass, see ``base.py``) and one line here; the line of a control
with options names them too, kept in this package's ``arguments.py``, which imports no torch, so that ``--help``
lists them without importing the plug-in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_lottery.foundations.registry import Registry, lazy_exports

if TYPE_CHECKING:
    from .base import Control

CONTROLS: Registry[Control] = Registry(
    "control",
    "--control",
    {
        "random-prune": "hf_lottery.lottery.controls.random_prune:RandomPrune",
        "reinit": "hf_lottery.lottery.controls.reinit:Reinit",
    },
)

__getattr__ = lazy_exports(__name__, ".base", ["Control"])

__all__ = ["CONTROLS", "Control"]
