"""What an export ships beside the ticket's weights (a trimmed tokenizer, ONNX float32 and int8 files), each
scored on the run's validation and test data as the folder's own tokenizer reads them.

The scores are ``facts["artifacts"]``: the card's table of artifacts and the export's output lines read them.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedModel

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.lottery.config import RunConfig

from .scoring import run_data


def refuse_artifacts(onnx: bool, int8: bool) -> None:
    """Refuse, before anything is read, options that cannot be met: int8 without the ONNX file it quantizes,
    ONNX without its packages."""
    if int8 and not onnx:
        raise LotteryError("--int8 quantizes the ONNX export: add --onnx")
    if onnx:
        from .onnx import require_onnx

        require_onnx()


def ship_artifacts(
    model: PreTrainedModel, config: RunConfig, folder: Path, onnx: bool, int8: bool, tolerance: float
) -> dict:
    """Score the PyTorch model saved in ``folder`` and, with ``onnx``/``int8``, write and score its ONNX files;
    return each artifact's file, size and scores, and (``int8_warning``) whether int8 costs more than
    ``tolerance``: said, not refused, as the user decides."""
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
    return result


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
