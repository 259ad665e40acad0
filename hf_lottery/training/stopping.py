"""Stopping on SIGTERM, what a batch system sends a while before its kill -9 at a job's time limit: the level in
training saves its checkpoint (as ``--save-steps`` does) and the run ends with one line, so that the same
command resumes it from there.

The command line installs the handler (``stop_on_sigterm``); the training loop asks ``stop_requested`` after
every optimizer step. The processes of a launch agree before any of them stops, since saving a checkpoint is
collective: each step they reduce their flags, so all stop at the same step even when the signal reaches them at
different times.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator

_state = {"installed": False, "requested": False}


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While the block runs, SIGTERM asks the training to stop at its next step instead of killing the process."""

    def request(signum, frame) -> None:
        _state["requested"] = True

    previous = signal.signal(signal.SIGTERM, request)
    _state.update(installed=True, requested=False)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _state.update(installed=False, requested=False)


def stop_requested(accelerator: Accelerator) -> bool:
    """Whether any process of the launch got SIGTERM (a collective call on several processes)."""
    if not _state["installed"]:
        return False
    if accelerator.num_processes == 1:
        return _state["requested"]
    flag = torch.tensor([float(_state["requested"])], device=accelerator.device)
    return bool(accelerator.reduce(flag, "sum").item())
