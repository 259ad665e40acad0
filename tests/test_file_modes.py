"""Files a run and an export write have the mode the umask gives, as any file the user writes: a ticket folder on a
shared disk is readable by the rest of the team (safetensors alone writes its files 0600)."""

import os
import stat

import pytest

from hf_lottery import export_ticket
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def wrong_modes(folder) -> dict[str, str]:
    """Everything in ``folder`` whose mode is not the umask 022's (0755 folders, 0644 files)."""
    return {str(p): oct(mode) for p in [folder, *folder.rglob("*")]
            if (mode := stat.S_IMODE(p.stat().st_mode)) != (0o755 if p.is_dir() else 0o644)}  # fmt: skip


def test_every_file_of_a_run_and_an_export_follows_the_umask(tiny_bert, tmp_path, umask_022):
    run, ticket = tmp_path / "run", tmp_path / "ticket"
    run_lottery(make_config(tiny_bert, run, levels=1))
    export_ticket(run, ticket, level=1)
    for name in ("model.safetensors", "ticket.safetensors", "masks.safetensors", "model.sparse.safetensors"):
        assert (ticket / name).is_file()
    assert (run / "imp" / "level_1" / "weights.safetensors").is_file()
    assert wrong_modes(run) == {} and wrong_modes(ticket) == {}
