"""A full disk: one line naming the directory and its free space; what this command wrote goes until a level is
finished, then only the unfinished level, and the command the line gives resumes the run.

The disk fills up inside safetensors' writers (``save_model``, ``save_file``), the third-party functions every
weight and mask file of a run goes through, as the storage module calls them: they write part of the file, then
fail as they do on a real full disk (an ``OSError`` ENOSPC, or safetensors' own error wording it).
"""

import errno
import shlex
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError

import hf_lottery.foundations.storage
from hf_lottery.commands.cli import main
from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.rundir import LOCK_FILE

DATA = ["--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file", str(DEMO_DATA / "dev.tsv"),
        "--max-train-samples", "32", "--max-eval-samples", "16", "--batch-size", "16", "--max-steps", "2"]  # fmt: skip
FULL = OSError(errno.ENOSPC, "No space left on device")
SAFETENSORS_FULL = SafetensorError(
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
)


def fill_disk(monkeypatch, when: Callable[[Path], bool], error: Exception) -> None:
    """The disk is full for every safetensors file ``when`` accepts: part of it is written, then ``error``."""

    def failing(real):
        def write(tensors_or_model, filename, *args, **kwargs):
            if when(Path(filename)):
                Path(filename).write_bytes(b"\0" * 64)
                raise error
            return real(tensors_or_model, filename, *args, **kwargs)

        return write

    storage = hf_lottery.foundations.storage
    monkeypatch.setattr(storage, "save_model", failing(storage.save_model))
    monkeypatch.setattr(storage, "save_file", failing(storage.save_file))


def in_folder(name: str) -> Callable[[Path], bool]:
    return lambda path: path.parent.name == name


def error_line(capsys) -> str:
    """The last line on stderr, the only error there (the progress bars of the levels trained come before it)."""
    err = capsys.readouterr().err
    line = err.splitlines()[-1].strip()
    assert line.startswith("hf-lottery: error: no space left on device in "), err
    assert err.count("error") == 1 and "Traceback" not in err and "SafetensorError" not in err, err
    return line


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(LOCK_FILE)}  # fmt: skip


def test_a_full_disk_before_any_level_is_finished_leaves_only_the_lock(tiny_bert, tmp_path, monkeypatch, capsys):
    fill_disk(monkeypatch, in_folder("level_0"), FULL)
    out = tmp_path / "run"
    assert main(["prune", str(tiny_bert), *DATA, "--levels", "1", "--output-dir", str(out)]) == 1
    line = error_line(capsys)
    assert f"no space left on device in {out} (" in line and " free now); removed what this command wrote" in line
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]  # no config.json, run_log.jsonl, model/ or level


def test_a_full_disk_in_level_2_keeps_the_finished_levels_and_the_line_resumes_the_run(
    tiny_bert, tmp_path, monkeypatch, capsys
):
    fill_disk(monkeypatch, in_folder("level_2"), SAFETENSORS_FULL)
    out = tmp_path / "run"
    args = ["prune", str(tiny_bert), *DATA, "--levels", "2", "--prune-fraction", "0.5", "--output-dir", str(out)]
    assert main(args) == 1
    line = error_line(capsys)
    assert f"in {out} (" in line and "removed the unfinished imp/level_2, kept the finished levels" in line
    paths = RunPaths(out)
    assert paths.level("imp", 0).is_done() and paths.level("imp", 1).is_done()
    assert not paths.level("imp", 2).root.exists()
    command = shlex.split(line.split("then resume with: ", 1)[1])
    assert command[0] == "hf-lottery" and f"--output-dir {out}" in shlex.join(command)
    finished = files(out)

    assert main(command[1:]) == 1  # still full: this invocation finished nothing, and removes only its own level
    assert "removed the unfinished imp/level_2, kept the finished levels" in error_line(capsys)
    kept = files(out)
    assert all(kept[name] == finished[name] for name in finished if name not in ("run_log.jsonl",)), "touched"

    monkeypatch.undo()  # space again
    assert main(command[1:]) == 0
    assert paths.level("imp", 2).is_done()
    assert [row["level"] for row in read_json(paths.results_json)] == [0, 1, 2]
    assert all(files(out)[name] == finished[name] for name in finished if name.startswith("imp/level_")), "retrained"


def test_a_full_disk_in_finetune_leaves_only_the_lock(tiny_bert, tmp_path, monkeypatch, capsys):
    fill_disk(monkeypatch, in_folder("level_0"), FULL)
    out = tmp_path / "ft"
    assert main(["finetune", str(tiny_bert), *DATA, "--no-mask", "--output-dir", str(out)]) == 1
    assert " free now); removed what this command wrote" in error_line(capsys)
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]


def test_a_full_disk_in_export_writes_nothing(tiny_bert, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["prune", str(tiny_bert), *DATA, "--levels", "1", "--output-dir", str(run)]) == 0
    fill_disk(monkeypatch, lambda path: path.name.startswith(".ticket.safetensors"), FULL)
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["export", str(run), str(out), "--level", "1"]) == 1
    assert f"no space left on device in {out} (" in error_line(capsys)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == [".out.lock"]
