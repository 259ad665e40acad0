"""Atomic file writes: a kill at any moment leaves either the old file or the complete new one, with the mode the
umask gives, as any file a user writes has; and a full disk said in one line."""

from __future__ import annotations

import errno
import glob
import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file, save_model

from .errors import DamagedFileError, LotteryError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def follow_umask(path: Path) -> None:
    """Give ``path`` (and, for a folder, everything in it) the mode a plain ``open`` or ``mkdir`` would: safetensors
    and ``tempfile`` create theirs 0600 and 0700, which would keep a shared ticket folder from the rest of a team."""
    umask = _umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` (with the umask's mode) only if the block
    succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        follow_umask(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write(path: Path, writer: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def write_folder(path: Path, writer: Callable[[Path], None]) -> None:
    """Fill a temporary sibling folder, then rename it to ``path`` (which must not exist yet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        writer(tmp)
        follow_umask(tmp)  # mkdtemp's 0700 and the writers' 0600 files would outlive the rename
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_killed_writes(path: Path) -> None:
    """Remove the temporary folders ``write_folder(path, ...)`` left behind when killed (hidden, as big as what
    they held); call it only where no other writer of ``path`` can be running (under its lock)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def remove_folder(path: Path) -> None:
    """Rename ``path`` to a temporary sibling, then delete that: a kill midway never leaves a half-deleted ``path``
    (the next run removes the temporary folder)."""
    if path.exists():
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        path.rename(tmp)
        shutil.rmtree(tmp)


def write_text(path: Path, text: str) -> None:
    _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, hint: str | None = None) -> Any:
    """The JSON in ``path``; one line naming it, and ``hint`` (what to do), where it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        reason = f"not JSON: {err.msg if isinstance(err, json.JSONDecodeError) else err.reason}"
        raise DamagedFileError(path, reason, *([hint] if hint else [])) from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    _write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata))


def save_bool_tensors(path: Path, tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, Sequence[int]]) -> None:
    """Save boolean tensors (masks) as ``save_tensors`` does, reading and writing them one at a time: ``tensors``
    may unpack each only when read (``masks.PackedMask``), so a mask of a model too big to hold twice is never
    whole in memory. ``shapes`` gives each tensor's shape without reading it. The file is plain safetensors (an
    8-byte header length, the JSON header padded with spaces to 8 bytes, the data in header order), which
    ``load_tensors`` and any safetensors reader load."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        header[name] = {"dtype": "BOOL", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            out.write(struct.pack("<Q", len(encoded)) + encoded)
            for name in shapes:
                tensor = tensors[name]
                if tensor.dtype != torch.bool or tuple(tensor.shape) != tuple(shapes[name]):
                    raise ValueError(f"{name}: expected a torch.bool tensor of shape {list(shapes[name])}")
                out.write(tensor.contiguous().cpu().numpy().data)  # no copy

    _write(path, write)


@contextmanager
def safetensors_read(path: Path, hint: str | None = None) -> Iterator[None]:
    """Reading the safetensors file ``path`` in the block: a file cut short or not safetensors is one line naming it,
    and ``hint`` (what to do)."""
    try:
        yield
    except SafetensorError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DamagedFileError(path, f"not a whole safetensors file: {reason}", *([hint] if hint else [])) from None


def load_tensors(path: Path, hint: str | None = None) -> dict[str, torch.Tensor]:
    with safetensors_read(path, hint):
        return load_file(str(path))


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """Save a model's state; ``save_model`` drops tied duplicates that safetensors refuses."""
    _write(path, lambda tmp: save_model(model, str(tmp)))


@torch.no_grad()
def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a ``save_weights`` file into ``model`` in place, one tensor at a time: a model too big to hold twice
    takes another level's weights with no second copy (safetensors' ``load_model`` reads the whole file first).
    A tied duplicate that ``save_weights`` dropped shares its storage with the one loaded."""
    state = model.state_dict()
    with safetensors_read(path), safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            if name not in state:
                raise LotteryError(f"{path}: holds {name!r}, which the model has not")
            state[name].copy_(f.get_tensor(name))


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err``, or an error it was raised from, is a full disk: an ``OSError`` ENOSPC, or a library's error
    that only words it (safetensors' ``SafetensorError``, torch's file writer)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or os.strerror(errno.ENOSPC) in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def free_space(path: Path) -> str:
    """The free space of the disk that holds ``path`` (or its nearest existing parent), as people read it."""
    folder = Path(path).absolute()
    while not folder.exists():
        folder = folder.parent
    free = float(shutil.disk_usage(folder).free)
    for unit in ("B", "KB", "MB", "GB"):
        if free < 1000:
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1000
    return f"{free:.1f} TB"


@contextmanager
def disk_full_line(folder: Path, clean_up: Callable[[], str]) -> Iterator[None]:
    """A full disk inside the block becomes one ``LotteryError`` line naming ``folder`` and the free space left,
    once ``clean_up`` has removed what should go; what it returns (what it did, what to do next) ends the line."""
    try:
        yield
    except Exception as err:
        if not is_disk_full(err):
            raise
        done = clean_up()
        raise LotteryError(f"no space left on device in {folder} ({free_space(folder)} free now); {done}") from err
