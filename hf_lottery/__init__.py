"""hf-lottery: find lottery tickets in pretrained transformers and ship them to the Hub.

The public names load on first use, so ``import hf_lottery`` (and ``hf-lottery --help``) imports no torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .foundations.version import __version__

# Each public name and the module that defines it.
_PUBLIC = {
    "MaskEnforcer": "pruning.masks",
    "MaskedTrainingCallback": "training.callback",
    "export_ticket": "tickets.export",
    "find_ticket": "commands.api",
    "load_ticket": "tickets.load",
    "push_ticket": "tickets.push",
    "run_lottery": "lottery.runner",
    "sparsify_for_inference": "tickets.inference",
}

if TYPE_CHECKING:
    from .commands.api import find_ticket
    from .lottery.runner import run_lottery
    from .pruning.masks import MaskEnforcer
    from .tickets.export import export_ticket
    from .tickets.inference import sparsify_for_inference
    from .tickets.load import load_ticket
    from .tickets.push import push_ticket
    from .training.callback import MaskedTrainingCallback


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_lottery' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = [
    "MaskEnforcer",
    "MaskedTrainingCallback",
    "__version__",
    "export_ticket",
    "find_ticket",
    "load_ticket",
    "push_ticket",
    "run_lottery",
    "sparsify_for_inference",
]
