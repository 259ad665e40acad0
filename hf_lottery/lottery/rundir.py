"""A run directory: named, checked against the run it holds, locked, started, and filled level by level.

A run directory is checked before anything is loaded and written only once the model and data are good, so
bad input leaves nothing behind. A level is complete once its ``metrics.json`` is written, last. One
invocation at a time owns it: the lock is taken just before the first write and held to the end, and a full disk
meanwhile is cleaned up after, under the lock.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from filelock import FileLock, Timeout
from safetensors import safe_open
from transformers import PreTrainedModel

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import (
    disk_full_line,
    load_tensors,
    load_weights,
    read_json,
    remove_folder,
    save_bool_tensors,
    save_weights,
    write_folder,
    write_json,
    write_text,
)
from hf_lottery.foundations.version import __version__
from hf_lottery.pruning.masks import Mask, apply_mask, mask_shapes, sparsity_report
from hf_lottery.training.tasks import TEST_PREFIX, Metric

from .config import FORMAT_VERSION, RunConfig
from .controls import CONTROLS
from .methods import METHODS
from .paths import IMP, LevelPaths, RunPaths, run_name

# The run directory's lock, and beside it the PID of its holder (a separate file: filelock may truncate the lock
# file on every attempt to take it). Neither is part of the run: checks, clean-ups and export skip both.
LOCK_FILE = ".hf-lottery.lock"
PID_SUFFIX = ".pid"


def default_output_dir(config: RunConfig) -> Path:
    model = Path(config.model.model_name_or_path.rstrip("/")).name
    data = config.data
    if data.task or data.train_file:
        name = data.task or Path(data.train_file).stem
    else:
        name = Path(data.dataset_name).name if data.dataset_name else "default-corpus"
    folder = Path("runs") / f"{model}-{name}-{config.run_hash()}"
    legacy = folder.with_name(f"{model}-{name}-{config.legacy_run_hash()}")  # named by hf-lottery 0.1
    return legacy if not folder.exists() and legacy.is_dir() else folder


def check_run_dir(paths: RunPaths, config: RunConfig) -> None:
    """Refuse a directory that holds another run, or anything that is not a run."""
    if paths.config.exists():
        values = read_run_config(paths, "choose another --output-dir")
        refuse_newer(paths, values)
        saved = json.loads(json.dumps(RunConfig.from_dict(values).identity()))
        wanted = json.loads(json.dumps(config.identity()))
        changed = [k for k in sorted(wanted) if saved.get(k) != wanted[k]]
        if changed:
            diff = ", ".join(f"{k}: {saved.get(k)!r} there, {wanted[k]!r} now" for k in changed[:3])
            raise LotteryError(f"{paths.root} holds a different run ({diff}); choose another --output-dir or remove it")
    elif paths.root.exists() and any(not item.name.startswith(LOCK_FILE) for item in paths.root.iterdir()):
        raise LotteryError(f"{paths.root} is not empty and holds no hf-lottery run (no config.json)")


def read_run_config(paths: RunPaths, hint: str) -> dict:
    """The run's saved ``config.json`` as it is, refused in one line (ending with ``hint``, what to do) where it is
    damaged or is not a run's: a model's folder has a ``config.json`` too."""
    values = read_json(paths.config, f"restore it from a copy (it records the run's settings), or {hint}")
    if not isinstance(values, dict) or not ("format_version" in values or "model_name_or_path" in values):
        what = "a model" if isinstance(values, dict) and "model_type" in values else "something else"
        raise LotteryError(
            f"{paths.root} is not an hf-lottery run directory: its config.json is {what}'s, not a run's; {hint}"
        )
    return values


def refuse_newer(paths: RunPaths, values: dict) -> None:
    """A run directory a newer hf-lottery wrote may hold what this one does not know to keep: read, never written."""
    version = values.get("format_version", 1)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise LotteryError(
            f"{paths.root} was written by a newer hf-lottery (run directory format {version}; this is hf-lottery "
            f"{__version__}, format {FORMAT_VERSION}): upgrade hf-lottery to add to it, or choose another --output-dir"
        )


def open_run_dir(config: RunConfig) -> RunPaths:
    """The run directory of a resolved config, refused if it holds something else."""
    paths = RunPaths(Path(config.output_dir))
    check_run_dir(paths, config)
    return paths


@contextmanager
def folder_lock(lock_file: Path, folder: Path, hint: str) -> Iterator[None]:
    """Hold ``lock_file`` (created if missing, never deleted) while the block runs, or refuse at once, naming
    ``folder`` and the PID that holds it, then ``hint``.

    An OS file lock: one whose holder died (kill -9 included) is free again, so a stale lock file never blocks.
    """
    lock, pid_file = FileLock(str(lock_file)), lock_file.with_name(lock_file.name + PID_SUFFIX)
    try:  # the lock is the first thing written: a folder that cannot be written is said here, not as a lock's fault
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        if not lock_file.exists():  # one that exists is left as it is: a finished run's may not be ours to touch
            lock_file.touch()
    except OSError as err:
        raise LotteryError(f"cannot write {folder}: {_why_unwritable(lock_file.parent, err)}") from None
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            holder = f"PID {int(pid_file.read_text(encoding='utf-8'))}"
        except (OSError, ValueError):  # its holder has not written it yet
            holder = "PID unknown"
        raise LotteryError(f"{folder} is in use by another hf-lottery process ({holder}); {hint}") from None
    except NotImplementedError:  # a file system without flock, where older filelocks have no fallback
        lock = None
    except OSError as err:  # after Timeout, which is one: a lock file this process may not open for writing
        raise LotteryError(f"cannot write {folder}: {_why_unwritable(lock_file.parent, err)}") from None
    if lock is None:
        print(f"note: {folder} cannot be locked on its file system; use it from one hf-lottery at a time",
              file=sys.stderr)  # fmt: skip
        yield  # unguarded, as before there were locks
        return
    try:
        pid_file.write_text(f"{os.getpid()}\n", encoding="utf-8")  # in place: a kill leaves no temporary file
        yield
    finally:
        pid_file.unlink(missing_ok=True)
        lock.release()


def _why_unwritable(folder: Path, err: OSError) -> str:
    """Why ``folder`` could not be made or written, in words: a file in its way, else the system's reason."""
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    return (err.strerror or type(err).__name__).lower()


@contextmanager
def lock_run_dir(paths: RunPaths, config: RunConfig, accelerator: Accelerator) -> Iterator[None]:
    """The run directory, owned by this invocation while the block runs (call it on every process).

    The processes of one launch are one run: the main process takes the lock and checks the directory again
    (another run may have written it since it was first checked), and every process hears how that went, so
    all of them stop with the same error rather than some waiting forever for the others. A full disk in the block
    is cleaned up after by the main process, before it lets go of the lock (``cleaned_up_if_disk_full``).
    """
    with ExitStack() as held:
        failure: list[str | None] = [None]
        cause = None
        if accelerator.is_main_process:
            try:
                held.enter_context(folder_lock(paths.root / LOCK_FILE, paths.root,
                                               "wait for it to end, or choose another --output-dir"))  # fmt: skip
                check_run_dir(paths, config)
            except Exception as err:  # told to every process, or the others would wait for this one forever
                failure, cause = [str(err) if isinstance(err, LotteryError) else f"{type(err).__name__}: {err}"], err
        broadcast_object_list(failure)
        if failure[0] is not None:
            raise LotteryError(failure[0]) from cause
        if accelerator.is_main_process:
            held.enter_context(cleaned_up_if_disk_full(paths, config))
        yield


@contextmanager
def cleaned_up_if_disk_full(paths: RunPaths, config: RunConfig) -> Iterator[None]:
    """A full disk while the block writes the run directory: one line, once what would be in the way is removed.

    Until any level of the run is finished, all that this invocation added goes (what was there before stays, and
    so does the lock file). After, only the unfinished level folders it started go: finished levels are never
    deleted, and the line gives the command that resumes the run from them.
    """
    before = _contents(paths.root)

    def clean_up() -> str:
        added = sorted(_contents(paths.root) - before)  # a folder before what is in it
        levels = [LevelPaths(path) for path in paths.root.rglob("level_*") if path.is_dir()]
        if not any(level.is_done() for level in levels):
            for path in added:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            return "removed what this command wrote; free some space and run it again"
        unfinished = [level.root for level in levels if level.root in added and not level.is_done()]
        for folder in unfinished:
            remove_folder(folder)
        names = ", ".join(str(folder.relative_to(paths.root)) for folder in unfinished)
        return (
            f"{f'removed the unfinished {names}, ' if unfinished else ''}kept the finished levels; free some space, "
            f"then resume with: {config.to_command(outputs=True)}"
        )

    with disk_full_line(paths.root, clean_up):
        yield


def _contents(folder: Path) -> set[Path]:
    """Everything in ``folder`` but its lock files."""
    return {path for path in folder.rglob("*") if not path.name.startswith(LOCK_FILE)}


def start_run_dir(
    paths: RunPaths,
    config: RunConfig,
    model: PreTrainedModel,
    tokenizer,
    accelerator: Accelerator,
    base_facts: dict | None = None,
) -> None:
    """Write the config and the model's config and tokenizer files (main process), once everything is checked.

    ``base_facts`` joins the base model's name in ``model/base_model.json`` (for a fine-tuned ticket: the task
    kind it was found for, and which of its weights the fine-tuning started from). Whether the name is a local
    folder is recorded there too: transformers loads a folder of that name before any Hub repository, and the
    folder may be gone, or another, where the ticket is exported.
    """
    if accelerator.is_main_process:
        if paths.config.exists() and (saved := read_json(paths.config)).get("format_version", 1) == 1:
            _migrate_version_1(paths, RunConfig.from_dict(saved))
        if not paths.config.exists():
            write_text(paths.config, config.to_json())
        if config.prune is not None:  # each invocation's reach: how far it went and how
            reach = dict(sorted(config.reach().items()))
            with open(paths.run_log, "a", encoding="utf-8") as log:
                log.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **reach,
                                      "processes": accelerator.num_processes,
                                      "command": config.to_command()}) + "\n")  # fmt: skip
        if not paths.model_files.exists():
            name = config.model.model_name_or_path
            base = {"name": name, "revision": config.model.revision, "local": Path(name).is_dir(),
                    "commit": getattr(model.config, "_commit_hash", None), **(base_facts or {})}  # fmt: skip

            def save_model_files(folder: Path) -> None:
                model.config.save_pretrained(folder)
                if tokenizer is not None:
                    tokenizer.save_pretrained(folder)
                write_json(folder / "base_model.json", base)

            write_folder(paths.model_files, save_model_files)
        for stale in paths.root.rglob(".*.tmp-*"):  # left by a killed run; never mistaken for a result
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        for level in finished_levels(paths):  # killed between its metrics.json and the removal of its checkpoints
            remove_folder(level.checkpoint)
    accelerator.wait_for_everyone()


def _migrate_version_1(paths: RunPaths, old: RunConfig) -> None:
    """A run directory of hf-lottery 0.1 in today's layout: its clipped last level moves off the trunk.

    0.1 stored a level clipped to hit --target-sparsity as an ordinary level, which an extended run would
    prune from. Folders are renamed before config.json is rewritten, so a kill in between repeats the move.
    """
    densities = old.prune.level_densities() if old.prune is not None else [1.0]
    if old.prune is not None and old.prune.last_level_clipped(densities):
        last = len(densities) - 1
        for branch in (IMP, *CONTROLS):
            trunk, clipped = paths.level(branch, last), paths.level(branch, last, old.prune.target_sparsity)
            if trunk.root.exists() and not clipped.root.exists():
                trunk.root.rename(clipped.root)
    write_text(paths.config, old.to_json())


def level_facts(
    paths: LevelPaths, model: PreTrainedModel, report: dict, metric: Metric, processes: int, dead: int = 0
) -> dict:
    """What ``metrics.json`` says of a level beside its scores (a score of one of these names would be lost).

    ``processes`` trained it: the command alone does not say, and the global batch grows with them. The model's
    parameters (a tied one once) and those its mask keeps say what sparsity alone does not: how much of the whole
    model, embeddings and head included, a level removes (``report`` is its ``sparsity_report``; ``dead``, the
    parameters outside the mask its removed units leave without effect: ``Units.dead``)."""
    parameters = sum(p.numel() for p in model.parameters())
    pruned = report["total"]["numel"] - report["total"]["alive"] + dead
    return {"sparsity": report["total"]["sparsity"], "branch": paths.branch, "level": paths.number,
            "metric": metric.name, "greater_is_better": metric.greater_is_better, "processes": processes,
            "parameters": parameters, "kept_parameters": parameters - pruned}  # fmt: skip


# The keys of metrics.json that are not scores: a metric may not be named like one.
FACT_KEYS = frozenset({"sparsity", "branch", "level", "metric", "greater_is_better", "steps", "resumed_from_step",
                       "command", "path", "total_steps", "replicates", "mean", "std", "unit",
                       "unit_sparsity", "processes", "untrained_head", "parameters",
                       "kept_parameters", "weights"})  # fmt: skip

# A level's ``metrics.json`` says ``"weights": AT_REWIND`` when it wrote no weights file, because its weights are the
# rewind point's under its mask (a level scored untrained: the pretrained model with --train-dense false, and the
# post-training masks of it): a large model is not written again for nothing.
AT_REWIND = "the rewind point under the mask"


def weights_kept(level: LevelPaths) -> bool:
    """Whether a finished level's trained weights can be had: its own file, or the rewind point under its mask."""
    return level.weights.exists() or read_json(level.metrics).get("weights") == AT_REWIND


def load_level_weights(model: torch.nn.Module, level: LevelPaths) -> None:
    """Load the weights a finished level holds into ``model`` in place (``weights_kept`` says whether it can)."""
    if level.weights.exists():
        load_weights(model, level.weights)
        return
    load_weights(model, level.rewind_point)
    apply_mask(model, load_tensors(level.mask))


@torch.no_grad()
def _at_rewind(paths: LevelPaths, model: PreTrainedModel, mask: Mask) -> bool:
    """Whether ``model`` holds exactly the rewind point under ``mask``, compared one tensor at a time."""
    if not paths.rewind_point.exists():
        return False
    state = model.state_dict()
    with safe_open(str(paths.rewind_point), framework="pt") as rewind:
        for name in rewind.keys():
            expected = rewind.get_tensor(name)
            if name in mask:
                expected = expected * mask[name]
            if name not in state or not torch.equal(state[name].cpu(), expected):
                return False
    return True


def save_level(
    accelerator: Accelerator, paths: LevelPaths, model: PreTrainedModel, mask: Mask, metrics: dict, metric: Metric,
    dead: int = 0,
) -> None:  # fmt: skip
    """A level's files, ``metrics.json`` last: its presence means the level is complete; then its checkpoints go.
    ``dead``: see ``level_facts``."""
    if accelerator.is_main_process:
        report = sparsity_report(mask)
        save_bool_tensors(paths.mask, mask, mask_shapes(mask))
        if metrics.get("steps") == 0 and _at_rewind(paths, model, mask):  # scored untrained: nothing new to write
            metrics = {**metrics, "weights": AT_REWIND}
        else:
            save_weights(paths.weights, model)
        write_json(paths.sparsity, report)
        sparsity = report["total"]["sparsity"]
        info = level_facts(paths, model, report, metric, accelerator.num_processes, dead)
        write_json(paths.metrics, {**metrics, **info})
        remove_folder(paths.checkpoint)
        name = run_name(paths.branch, paths.number, sparsity)
        line = f"level {paths.number} ({name}): sparsity {sparsity:.2%}, {metric.name} {metrics[metric.name]:.4f}"
        if TEST_PREFIX + metric.name in metrics:
            line += f", test {metric.name} {metrics[TEST_PREFIX + metric.name]:.4f}"
        accelerator.print(line)
        with open(paths.root.parent.parent / "training.log", "a", encoding="utf-8") as log:  # a batch job's record
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}, {metrics.get('steps', 0)} steps\n")
    accelerator.wait_for_everyone()


def finished_levels(paths: RunPaths) -> list[LevelPaths]:
    """Every complete level on disk, of IMP, every control and every method, in table order (level, sparsity,
    branch)."""

    def done(branch: str) -> list[LevelPaths]:
        return [level for level in map(LevelPaths, (paths.root / branch).glob("level_*")) if level.is_done()]

    # IMP and its controls level by level (a clipped N below trunk N), then each method's levels by sparsity
    found = [((0, level.number, not level.clipped, index), level)
             for index, branch in enumerate((IMP, *CONTROLS)) for level in done(branch)]  # fmt: skip
    found += [((index, level.clipped_to or 0.0, 0, 0), level)
              for index, branch in enumerate(METHODS, 1) for level in done(branch)]  # fmt: skip
    return [level for _, level in sorted(found, key=lambda item: item[0])]
