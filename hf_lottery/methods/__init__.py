"""The cheaper ticket methods, by name: the only table that maps a branch name to a method.

Adding a method is one module (a ``Method`` subclass, see ``base.py``) and one line here.
"""

from __future__ import annotations

from ..arguments import PruneArguments
from .base import Method
from .early_bird import EarlyBird
from .one_shot import OneShot

METHODS: dict[str, type[Method]] = {
    OneShot.name: OneShot,
    EarlyBird.name: EarlyBird,
}


def asked_methods(prune: PruneArguments) -> list[Method]:
    """The methods a run's pruning arguments ask for, in table order."""
    return [method() for method in METHODS.values() if method.asked(prune)]


__all__ = ["METHODS", "Method", "asked_methods"]
