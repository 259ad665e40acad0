"""The cheaper ticket methods, by name: the only table that maps a branch name to a method.

Adding a method is one module (a ``Method`` subclass, see ``base.py``) and one line here; the line of a method with
options names them too, kept in this package's ``arguments.py``, which imports no torch, so that ``--help`` lists
them without importing the plug-in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hf_lottery.foundations.registry import Registry, lazy_exports

if TYPE_CHECKING:
    from .base import Method, RunContext

METHODS: Registry[Method] = Registry(
    "method",
    "method",
    {
        "one-shot": (
            "hf_lottery.lottery.methods.one_shot:OneShot",
            "hf_lottery.lottery.methods.arguments:OneShotArguments",
        ),
        "early-bird": (
            "hf_lottery.lottery.methods.early_bird:EarlyBird",
            "hf_lottery.lottery.methods.arguments:EarlyBirdArguments",
        ),
        "post-training": (
            "hf_lottery.lottery.methods.post_training:PostTraining",
            "hf_lottery.lottery.methods.arguments:PostTrainingArguments",
        ),
        "recover": (
            "hf_lottery.lottery.methods.recover:Recover",
            "hf_lottery.lottery.methods.arguments:RecoverArguments",
        ),
        "recover-adapter": (
            "hf_lottery.lottery.methods.recover_adapter:RecoverAdapter",
            "hf_lottery.lottery.methods.arguments:AdapterRecoverArguments",
        ),
    },
)


def asked_methods(plugins: Mapping[str, Any]) -> list[Method]:
    """The methods whose own options (``plugins``: each plug-in's options by its name) ask for them, in table
    order."""
    methods = [METHODS[name](plugins.get(name)) for name in METHODS]
    return [method for method in methods if method.asked()]


__getattr__ = lazy_exports(__name__, ".base", ["Method", "RunContext"])

__all__ = ["METHODS", "Method", "RunContext", "asked_methods"]
