"""The sparse file format: bit-packed masks and sparse state dicts, as plain safetensors files.

Readable without this package (docs/ticket-format.md documents it):

- A **packed mask** is a ``uint8`` tensor of ``ceil(numel / 8)`` bytes: element ``i`` of the row-major
  flattened mask is bit ``i % 8`` (least significant first) of byte ``i // 8``; padding bits are 0.
- ``masks.safetensors``: one packed mask per pruned parameter, keyed by its ``named_parameters()`` name.
- ``*.sparse.safetensors`` (a sparse state dict): for each pruned parameter ``N``, ``N.values`` (1-D, the
  surviving values in row-major order, the parameter's dtype) and ``N.mask`` (its packed mask); every
  other tensor of the state dict stored whole under its own name.
- Both carry the metadata ``format`` (``hf-lottery-masks`` / ``hf-lottery-sparse``), ``format_version``
  (``1``) and ``shapes``: a JSON object mapping each pruned parameter to its shape.

The mask is the truth: a surviving weight whose value is 0.0 is still alive. Files read from elsewhere are
untrusted: every name, shape, dtype and count is checked, and any problem is one ``LotteryError`` naming
the file; nothing is returned half-loaded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import save_tensors
from hf_lottery.pruning.masks import Mask, pack_mask, unpack_mask

MASKS_FORMAT = "hf-lottery-masks"
SPARSE_FORMAT = "hf-lottery-sparse"
FORMAT_VERSION = "1"
# The safetensors dtype names a header may give (safetensors' own table is private).
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


def save_masks(path: Path, masks: Mask) -> None:
    shapes = {name: list(m.shape) for name, m in masks.items()}
    tensors = {name: pack_mask(m) for name, m in masks.items()}
    save_tensors(path, tensors, metadata=_metadata(MASKS_FORMAT, shapes))


def save_sparse(path: Path, state: dict[str, torch.Tensor], masks: Mask) -> None:
    """A state dict with each masked tensor stored as its survivors plus its packed mask."""
    tensors: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if name in masks:
            tensors[f"{name}.values"] = value.detach().flatten()[masks[name].flatten()].cpu()
            tensors[f"{name}.mask"] = pack_mask(masks[name])
        else:
            tensors[name] = value.detach().cpu()
    shapes = {name: list(m.shape) for name, m in masks.items()}
    save_tensors(path, tensors, metadata=_metadata(SPARSE_FORMAT, shapes))


def load_masks(path: Path) -> Mask:
    tensors, shapes = _read(path, MASKS_FORMAT)
    if set(tensors) != set(shapes):
        raise LotteryError(f"{path.name}: the tensors and the recorded shapes name different parameters")
    return {name: _unpack_checked(path, name, tensors[name], shapes[name]) for name in shapes}


def _pruned_entries(
    path: Path, tensors: dict[str, torch.Tensor], shapes: dict[str, list[int]]
) -> Iterator[tuple[str, list[int], torch.Tensor, torch.Tensor]]:
    """(name, shape, values, packed mask) of each pruned tensor, taken out of ``tensors``: the rest stay dense."""
    for name, shape in shapes.items():
        values, packed = tensors.pop(f"{name}.values", None), tensors.pop(f"{name}.mask", None)
        if values is None or packed is None:
            raise LotteryError(f"{path.name}: {name} lacks its .values or .mask tensor")
        yield name, shape, values, packed


def read_sparse_header(path: Path) -> tuple[dict[str, torch.Tensor], Mask]:
    """What ``load_sparse`` would return, as meta tensors (names, shapes, dtypes), from the header alone.

    No tensor data is read and nothing is allocated, so a file can be checked against a model skeleton
    before anything is built; the survivor counts and values are checked later, by ``load_sparse``.
    """
    tensors, shapes = _read_header(path, SPARSE_FORMAT)
    state: dict[str, torch.Tensor] = {}
    masks: Mask = {}
    for name, shape, values, packed in _pruned_entries(path, tensors, shapes):
        _check_packed(path, name, packed, shape)
        if values.dim() != 1 or values.numel() > math.prod(shape):
            raise LotteryError(
                f"{path.name}: {name} has values of shape {list(values.shape)}, expected 1-D, at most "
                f"{math.prod(shape)} long"
            )
        state[name] = torch.empty(shape, dtype=values.dtype, device="meta")
        masks[name] = torch.empty(shape, dtype=torch.bool, device="meta")
    state.update(tensors)
    return state, masks


def load_sparse(path: Path) -> tuple[dict[str, torch.Tensor], Mask]:
    """The dense state dict (zeros where pruned) and the masks of a sparse file."""
    tensors, shapes = _read(path, SPARSE_FORMAT)
    state: dict[str, torch.Tensor] = {}
    masks: Mask = {}
    for name, shape, values, packed in _pruned_entries(path, tensors, shapes):
        mask = _unpack_checked(path, name, packed, shape)
        alive = int(mask.sum())
        if values.dim() != 1 or values.numel() != alive:
            raise LotteryError(f"{path.name}: {name} has {alive} survivors in its mask but {values.numel()} values")
        dense = torch.zeros(shape, dtype=values.dtype)
        dense[mask] = values
        state[name], masks[name] = dense, mask
    state.update(tensors)
    for name, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise LotteryError(f"{path.name}: {name} holds NaN or infinite values")
    return state, masks


def _metadata(kind: str, shapes: dict[str, list[int]]) -> dict[str, str]:
    return {"format": kind, "format_version": FORMAT_VERSION, "shapes": json.dumps(shapes, sort_keys=True)}


def _read(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, tuple[int, ...]]]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            shapes = _shapes(path, kind, fh.metadata() or {})  # a foreign file is refused before reading data
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise LotteryError(f"{path.name}: not a readable safetensors file ({err})") from None
    return tensors, shapes


def _read_header(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, tuple[int, ...]]]:
    """Like ``_read``, but each tensor is an empty meta tensor of the stored dtype and shape."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            entries = {name: (fh.get_slice(name).get_dtype(), fh.get_slice(name).get_shape()) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise LotteryError(f"{path.name}: not a readable safetensors file ({err})") from None
    shapes = _shapes(path, kind, metadata)
    tensors = {}
    for name, (dtype, shape) in entries.items():
        if dtype not in _DTYPES:
            raise LotteryError(f"{path.name}: {name} has dtype {dtype}, which hf-lottery does not read")
        tensors[name] = torch.empty(shape, dtype=_DTYPES[dtype], device="meta")
    return tensors, shapes


def read_plain_header(path: Path) -> dict[str, torch.Tensor]:
    """A plain safetensors file's tensors as empty meta tensors of their stored dtype and shape, from its header
    alone (a ticket's ``model.safetensors``, checked against its config before any weight is read)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            entries = {name: (fh.get_slice(name).get_dtype(), fh.get_slice(name).get_shape()) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise LotteryError(f"{path.name}: not a readable safetensors file ({err})") from None
    tensors = {}
    for name, (dtype, shape) in entries.items():
        if dtype not in _DTYPES:
            raise LotteryError(f"{path.name}: {name} has dtype {dtype}, which hf-lottery does not read")
        tensors[name] = torch.empty(shape, dtype=_DTYPES[dtype], device="meta")
    return tensors


def _shapes(path: Path, kind: str, metadata: dict[str, str]) -> dict[str, tuple[int, ...]]:
    if metadata.get("format") != kind:
        raise LotteryError(f"{path.name}: not an {kind} file (format: {metadata.get('format')!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise LotteryError(f"{path.name}: format version {metadata.get('format_version')!r} is not supported")
    try:
        shapes = {name: tuple(int(d) for d in shape) for name, shape in json.loads(metadata["shapes"]).items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise LotteryError(f"{path.name}: its 'shapes' metadata is missing or malformed") from None
    if any(d < 0 for shape in shapes.values() for d in shape):
        raise LotteryError(f"{path.name}: its 'shapes' metadata holds a negative dimension")
    return shapes


def _check_packed(path: Path, name: str, packed: torch.Tensor, shape: tuple[int, ...]) -> None:
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != math.ceil(numel / 8):
        raise LotteryError(
            f"{path.name}: packed mask of {name} is {packed.dtype} of {packed.numel()} bytes, "
            f"expected uint8 of {math.ceil(numel / 8)} for shape {list(shape)}"
        )


def _unpack_checked(path: Path, name: str, packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    _check_packed(path, name, packed, shape)
    numel = math.prod(shape)
    if numel % 8 and packed[-1] >> (numel % 8):
        raise LotteryError(f"{path.name}: packed mask of {name} has bits set past its {numel} elements")
    return unpack_mask(packed, shape)
