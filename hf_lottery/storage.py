"""Atomic file writes: a kill at any moment leaves either the old file or the complete new one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file, save_model


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
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
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename
    try:
        writer(tmp)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    _write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """Save a model's state; ``save_model`` drops tied duplicates that safetensors refuses."""
    _write(path, lambda tmp: save_model(model, str(tmp)))
