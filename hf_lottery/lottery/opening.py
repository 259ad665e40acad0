"""Opening a run: one function resolves a command's config (its directory, the launcher's settings, the task kind
and ``--max-length``) once, checks the run directory, says what the run will do, and loads the data, so that
``prune`` and ``finetune`` open their runs the same way and read the same resolved config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator
from transformers import PretrainedConfig

from hf_lottery.foundations.arguments import DataArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.training.launch import describe_processes, launcher_settings, make_accelerator
from hf_lottery.training.model import load_model_config
from hf_lottery.training.tasks import TASK_KINDS, TaskData, TaskKind, resolve_task_kind

from .config import SEPARATE_TEST_CAP, Resolved, RunConfig
from .paths import RunPaths
from .rundir import default_output_dir, open_run_dir, read_run_config


@dataclass
class OpenedRun:
    """A run's resolved config, its Accelerator, task kind, run directory (checked, not yet written), raw data and
    the model's config; the model itself is the command's to load (a pretrained model, or a ticket)."""

    config: RunConfig  # resolved: what the run reads and config.json records
    accelerator: Accelerator
    kind: TaskKind
    paths: RunPaths
    data: TaskData
    model_config: PretrainedConfig


def open_run(config: RunConfig, *, plan: str | None = None) -> OpenedRun:
    """Resolve ``config`` and open its run: the model's config first (a bad model id fails before anything else),
    the task kind, the run directory, then the data. The run's first lines say what it will do (the task kind, its
    data, ``plan`` and its processes) before any download, after the local data files are checked."""
    resolved = resolve_start(config)
    accelerator = make_accelerator(resolved.apply(config).train)
    model_config = load_model_config(config.model.model_name_or_path, config.model.revision)
    kind = resolve_task_kind(config.model, config.data, model_config, config.plugins)
    config.check_options(TASK_KINDS, [kind.name])
    config = resolve_model(resolved, config, model_config, kind).apply(config)
    paths = open_run_dir(config)
    # local files are read and checked before the plan is said, so that a bad one is the only line; data to
    # download is read after it, so that the plan shows while it downloads
    local = config.data.train_file is not None and config.data.task is None and config.data.dataset_name is None
    data = kind.load_data(config.data) if local else None
    accelerator.print(f"task: {kind.name} on {kind.describe_data(config.data)}")
    if plan:
        accelerator.print(plan)
    for line in describe_processes(accelerator, config.train):
        accelerator.print(line)
    if data is None:
        data = kind.load_data(config.data)
    return OpenedRun(config, accelerator, kind, paths, data, model_config)


def resolve_start(config: RunConfig) -> Resolved:
    """What a run resolves before it loads anything: its directory, the launcher's settings and, in a directory
    written before ``--max-test-samples``, that run's test cap.

    Without ``--output-dir`` the directory is named by the hash of the config as given (before the task kind is
    inferred and the launcher's settings are filled in), so the same command finds the same directory.
    """
    settings = launcher_settings(config.train)
    output_dir = config.output_dir or str(default_output_dir(config))
    test_cap = _older_test_cap(config, RunPaths(Path(output_dir)))
    return Resolved(output_dir=output_dir, max_test_samples=test_cap,
                    **{name: value for name, (value, _) in settings.items()})  # fmt: skip


def _older_test_cap(config: RunConfig, paths: RunPaths) -> int | None:
    """The test cap of the run in ``paths`` when it predates ``--max-test-samples`` (its ``--max-eval-samples``
    capped the test split) and this invocation leaves the flag out: rerunning its command keeps its test scores
    comparable, level to level, instead of refusing the directory as another run's."""
    data = config.data
    if data.max_test_samples is not None or (data.test_file is None and data.test_split is None):
        return None
    if not paths.config.is_file():
        return None
    saved = read_run_config(paths, "choose another --output-dir")
    if saved.get("format_version", 1) >= SEPARATE_TEST_CAP:
        return None
    return RunConfig.from_dict(saved).data.max_test_samples


def resolve_model(resolved: Resolved, config: RunConfig, model_config: PretrainedConfig, kind: TaskKind) -> Resolved:
    """``resolved`` with what the model decides: the task kind, and a default ``--max-length`` cut to the
    model's positions (a ``--max-length`` given beyond them is refused)."""
    name, max_length = config.model.model_name_or_path, config.data.max_length
    positions = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    if positions and max_length > positions:
        if max_length != DataArguments.max_length:
            raise LotteryError(f"--max-length {max_length} is too long: model {name!r} has {positions} positions")
        max_length = positions  # the default fits every model: as long as it allows
    return dataclasses.replace(resolved, task_kind=kind.name, max_length=max_length)
