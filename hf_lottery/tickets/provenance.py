"""What a shipped ticket says of where it came from, without the paths of the machine that made it.

A ticket is published (``push``), so its card and ``ticket.json`` name a local file by its file name, and by its
sha256 where it is still there to hash, never by its path: a home folder's layout is nobody's business and means
nothing where the card is read. The full commands stay in the run directory (``metrics.json``, ``run_log.jsonl``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
from pathlib import Path

from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.rows import LevelResult

DATA_FILES = ("train_file", "validation_file", "test_file")
# A path from the root or the home folder inside a line of Python (``find_ticket``'s call), up to a quote, a comma,
# a bracket or a space.
_PATH = re.compile(r"(?<![\w.])(?:~|/)[^\s'\",()\[\]]*")


def shareable_command(command: str | None) -> str | None:
    """``command`` with each local path (a word from the root or the home folder, or one naming a file or folder
    that exists here) cut to its last part."""
    if command is None:
        return None
    if not command.startswith("hf-lottery "):  # find_ticket's Python call
        return _PATH.sub(lambda found: _name(found.group()), command)
    return " ".join(shlex.quote(_name(word) if _is_local(word) else word) for word in shlex.split(command))


def shareable_facts(facts: dict, config: RunConfig) -> dict:
    """``ticket.json``'s facts with every local path cut to a name, and the run's data files as names and sha256s."""
    shared = {**facts, "command": shareable_command(facts["command"])}
    shared["levels"] = [{**level, "command": shareable_command(level.get("command"))} for level in facts["levels"]]
    if facts["base_model_local"]:
        shared["base_model"] = _name(facts["base_model"])
    for key in ("train_file", "test_file", "dataset_name", "finetuned_from"):
        if shared.get(key) and _is_local(shared[key]):
            shared[key] = _name(shared[key])
    shared["data_files"] = {
        key: {"name": Path(path).name, "sha256": _sha256(Path(path))}
        for key in DATA_FILES
        if (path := getattr(config.data, key, None))
    }
    return shared


def shareable_rows(rows: list[LevelResult]) -> list[LevelResult]:
    """The result rows with their commands' local paths cut to names, for the card."""
    return [dataclasses.replace(row, command=shareable_command(row.command)) for row in rows]


def _is_local(word: str) -> bool:
    return word.startswith(("/", "~")) or ("/" in word and Path(word).exists())


def _name(path: str) -> str:
    return Path(path.rstrip("/")).name or path


def _sha256(path: Path) -> str | None:
    """The file's sha256, or None where it is gone (the ticket is exported after the data moved)."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
