"""What an export ships beside the ticket's weights (a trimmed tokenizer, ONNX float32 and int8 files), each
scored on the run's validation and test data as the folder's own tokenizer reads them.

The scores are ``facts["artifacts"]``: the card's table of artifacts and the export's output lines read them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from statistics import median

import torch
from transformers import AutoTokenizer, PreTrainedModel

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.lottery.config import RunConfig

from .scoring import run_data

LATENCY_TOKENS, LATENCY_WARMUP, LATENCY_REPEATS = 128, 2, 10  # one request of a phone or small server


def refuse_artifacts(onnx: bool, int8: bool) -> None:
    """Refuse, before anything is read, options that cannot be met: int8 without the ONNX file it quantizes,
    ONNX without its packages."""
    if int8 and not onnx:
        raise LotteryError("--int8 quantizes the ONNX export: add --onnx")
    if onnx:
        from .onnx import require_onnx

        require_onnx()


def ship_artifacts(
    model: PreTrainedModel,
    config: RunConfig,
    folder: Path,
    onnx: bool,
    int8: bool,
    tolerance: float,
    dense: Callable[[], PreTrainedModel] | None = None,
) -> dict:
    """Score the PyTorch model saved in ``folder`` and, with ``onnx``/``int8``, write and score its ONNX files;
    return each artifact's file, size and scores, and (``int8_warning``) whether int8 costs more than
    ``tolerance``: said, not refused, as the user decides. With ``dense`` (what loads the dense masked model),
    each artifact is also timed against it (``latency``)."""
    data = run_data(config, AutoTokenizer.from_pretrained(folder))
    weights = [p for p in folder.glob("model*.safetensors") if p.name == "model.safetensors" or "-of-" in p.name]
    rows = [_row("PyTorch float32", "model.safetensors", sum(p.stat().st_size for p in weights), data.score(model))]
    result: dict = {"metric": data.prepared.metric.name, "greater_is_better": data.prepared.metric.greater_is_better}
    if onnx:
        from .onnx import OnnxModel, export_onnx, quantize

        result["onnx"] = export_onnx(model, data, folder)
        for label, info in [("ONNX float32", result["onnx"])] + ([("ONNX int8", quantize(folder))] if int8 else []):
            path = folder / info["file"]
            rows.append(_row(label, info["file"], path.stat().st_size, data.score(OnnxModel(path))))
    result["rows"] = rows
    result["int8_warning"] = quantization_drop(result, tolerance)
    if dense is not None:
        result["latency"] = time_artifacts(rows, folder, model, dense())
    return result


@torch.inference_mode()
def time_artifacts(rows: list[dict], folder: Path, model: PreTrainedModel, dense: PreTrainedModel) -> dict:
    """Each artifact's forward time over the dense PyTorch model's, written into its row (``latency``); return the
    conditions: one thread, batch 1, ``LATENCY_TOKENS`` random tokens (fewer where the model has fewer
    positions), all models taking turns in this process (the order alternating) after a warm-up, medians of
    ``LATENCY_REPEATS``. The ratio is what carries to another machine; the milliseconds are this one's."""
    from .onnx import OnnxModel

    tokens = min(LATENCY_TOKENS, getattr(model.config, "max_position_embeddings", None) or LATENCY_TOKENS)
    ids = torch.randint(model.get_input_embeddings().num_embeddings, (1, tokens),
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        calls = {"dense": partial(dense.eval(), **inputs), rows[0]["name"]: partial(model.eval(), **inputs)}
        onnx = {"token_type_ids": torch.zeros_like(ids), **inputs}
        calls.update({row["name"]: partial(OnnxModel(folder / row["file"], threads=1), **onnx) for row in rows[1:]})
        times: dict[str, list[float]] = {name: [] for name in calls}
        for call in calls.values():
            for _ in range(LATENCY_WARMUP):
                call()
        for turn in range(LATENCY_REPEATS):
            for name in list(calls)[:: 1 if turn % 2 == 0 else -1]:
                start = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    dense_s = median(times["dense"])
    for row in rows:
        row["latency"] = median(times[row["name"]]) / dense_s
    return {"device": "cpu", "threads": 1, "batch": 1, "sequence_length": tokens, "repeats": LATENCY_REPEATS,
            "dense_ms": 1e3 * dense_s}  # fmt: skip


def _row(name: str, file: str, size: int, scores: dict[str, float]) -> dict:
    return {"name": name, "file": file, "bytes": size, "scores": scores}


def quantization_drop(artifacts: dict, tolerance: float) -> str | None:
    """A plain sentence when the int8 model scores further below the float model than ``tolerance`` allows (metric
    units, or a share of the float model's value for a lower-is-better metric), else None."""
    rows = {row["name"]: row for row in artifacts["rows"]}
    if "ONNX int8" not in rows:
        return None
    metric, better = artifacts["metric"], artifacts["greater_is_better"]
    float_score, int8_score = rows["ONNX float32"]["scores"]["validation"], rows["ONNX int8"]["scores"]["validation"]
    drop = float_score - int8_score if better else (int8_score - float_score) / abs(float_score)
    if drop <= tolerance:
        return None
    allowed = f"{tolerance:g}" if better else f"{tolerance:.0%}"
    return (
        f"int8 costs more than the tolerance ({allowed}): validation {metric} {int8_score:.4f} against "
        f"{float_score:.4f} for the float model"
    )
