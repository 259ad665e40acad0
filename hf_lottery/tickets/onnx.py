"""ONNX export of a ticket (``onnx/model.onnx``) and its int8 twin (``onnx/model_quantized.onnx``): the layout
Transformers.js and onnxruntime read from a Hub folder.

The exporter is ``torch.onnx.export(..., dynamo=True)`` with batch and sequence as dynamic axes and the task head
included; a causal LM is exported without its key-value cache (one full forward pass per call). Before anything is
kept, onnxruntime runs the exported model on validation batches against PyTorch: logits further apart than
``PARITY_TOLERANCE`` refuse the export. int8 is onnxruntime's ``quantize_dynamic``, whose default operators include
``Gather``, so the word embeddings are quantized too. onnx, onnxruntime and onnxscript are the optional extra
``hf-lottery[onnx]``.
"""

from __future__ import annotations

import io
import logging
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from transformers import PreTrainedModel

from hf_lottery.foundations.errors import LotteryError

from .scoring import RunData

ONNX_DIR, FLOAT_FILE, INT8_FILE = "onnx", "model.onnx", "model_quantized.onnx"
PARITY_TOLERANCE = 1e-4  # largest |logit difference| onnxruntime may show against PyTorch
PARITY_BATCHES = 4  # validation batches compared
INSTALL = 'pip install "hf-lottery[onnx]"'
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in the exporter's messages


def require_onnx() -> None:
    """Refuse, in one line that says what to install, when the optional ONNX packages are missing."""
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise LotteryError(f"--onnx needs {', '.join(missing)}, not installed here: {INSTALL}")


class _Logits(torch.nn.Module):
    """The model as the exporter sees it: named token inputs in, the head's logits out (no cache)."""

    def __init__(self, model: PreTrainedModel, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(**{n: given[n] for n in self.names}, **_no_cache(self.model)).logits


class OnnxModel(torch.nn.Module):
    """An onnxruntime session behind the ``model(**batch).logits`` call the task kinds evaluate with."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, **batch: torch.Tensor) -> SimpleNamespace:
        feed = {name: batch[name].cpu().numpy().astype(np.int64) for name in self.names}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feed)[0]))


def input_names(data: RunData) -> list[str]:
    """The token inputs of the run's batches that the model takes (``input_ids``, ``attention_mask``,
    ``token_type_ids`` where the tokenizer gives them)."""
    batch = next(iter(data.loader("validation")))
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in batch]


def export_onnx(model: PreTrainedModel, data: RunData, folder: Path) -> dict:
    """Write ``folder/onnx/model.onnx`` and check it in onnxruntime against ``model`` on validation batches;
    return what was checked. Refuses a model the exporter cannot trace and a parity failure, in one line each
    (the caller's folder is then dropped whole)."""
    model = model.eval()
    names = input_names(data)
    example = next(iter(data.loader("validation")))
    inputs = {n: example[n][:2] for n in names}  # two rows: a batch of one would be specialised to one
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
    path = folder / ONNX_DIR / FLOAT_FILE
    path.parent.mkdir(exist_ok=True)
    try:
        with _quiet():
            program = torch.onnx.export(
                _Logits(model, names), (), kwargs=inputs, dynamo=True, input_names=names, output_names=["logits"],
                dynamic_shapes={n: axes for n in names}, optimize=True, verbose=False,
            )  # fmt: skip
    except Exception as err:
        raise LotteryError(
            f"torch.onnx.export cannot trace {model.config.model_type} ({type(model).__name__}): {_root_cause(err)}"
        ) from err
    program.save(str(path))
    difference = parity(model, OnnxModel(path), data)
    if not difference <= PARITY_TOLERANCE:
        raise LotteryError(
            f"the ONNX export of {type(model).__name__} differs from PyTorch by {difference:.2e} in its logits on "
            f"validation batches (at most {PARITY_TOLERANCE:g} allowed): refused, nothing written"
        )
    return {"file": f"{ONNX_DIR}/{FLOAT_FILE}", "inputs": names, "parity_max_abs_diff": difference,
            "parity_tolerance": PARITY_TOLERANCE, "opset": _opset(path)}  # fmt: skip


@torch.no_grad()
def parity(model: PreTrainedModel, onnx_model: OnnxModel, data: RunData) -> float:
    """The largest |logit difference| between ``model`` and its ONNX export on the first validation batches."""
    worst = 0.0
    for i, batch in enumerate(data.loader("validation")):
        if i == PARITY_BATCHES:
            break
        inputs = {n: batch[n] for n in onnx_model.names}
        expected = model(**inputs, **_no_cache(model)).logits
        got = onnx_model(**inputs).logits
        if got.shape != expected.shape:
            return float("inf")
        difference = float((got - expected).abs().max())
        if not difference <= worst:  # a larger difference, or NaN (non-finite logits), which nothing may hide
            worst = difference
        if math.isnan(worst):
            break
    return worst


def quantize(folder: Path) -> dict:
    """Write ``onnx/model_quantized.onnx``: dynamic int8 quantization of ``onnx/model.onnx`` (weights int8,
    activations quantized per call), embeddings included."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = folder / ONNX_DIR / FLOAT_FILE, folder / ONNX_DIR / INT8_FILE
    with _quiet():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return {"file": f"{ONNX_DIR}/{INT8_FILE}", "weight_type": "int8", "method": "onnxruntime quantize_dynamic"}


def _root_cause(err: BaseException) -> str:
    """The first line of the error at the bottom of ``err``'s chain, without terminal colours: the exporter wraps
    what failed (a data-dependent shape, an unsupported operator) in a page of generic advice."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = [line for line in ANSI.sub("", str(err)).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0].strip()[:300]}" if lines else type(err).__name__


def _no_cache(model: PreTrainedModel) -> dict[str, bool]:
    """``use_cache=False`` for a model that keeps a key-value cache (a causal LM): logits only, every call whole."""
    return {"use_cache": False} if getattr(model.config, "use_cache", None) is not None else {}


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and quantizer's prints, log lines and warnings: the export's own lines are the output."""
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)  # the exporter logs a failed trace's whole graph as an error
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)
