"""hf-lottery: find lottery tickets in pretrained transformers."""

__version__ = "0.1.0"
