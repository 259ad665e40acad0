"""hf-lottery: find lottery tickets in pretrained transformers and ship them to the Hub."""

__version__ = "0.1.0"

from .api import find_ticket  # noqa: E402
from .callback import MaskedTrainingCallback  # noqa: E402
from .export import export_ticket  # noqa: E402
from .hub import load_ticket, push_ticket  # noqa: E402
from .inference import sparsify_for_inference  # noqa: E402

__all__ = [
    "MaskedTrainingCallback",
    "__version__",
    "export_ticket",
    "find_ticket",
    "load_ticket",
    "push_ticket",
    "sparsify_for_inference",
]
