"""A run's configuration: the parts of one command (``hf_lottery.arguments``), checked against the plug-in
registries, and how a run directory saves (``config.json``, with a format version) and names it.

Every function takes only the part it needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from .arguments import (
    DEFAULT_LM_TARGET_SPARSITY,
    LAUNCHER_DEFAULTS,
    DataArguments,
    FinetuneArguments,
    HubArguments,
    ModelArguments,
    PruneArguments,
    TrainArguments,
)
from .controls import CONTROLS
from .errors import LotteryError
from .strategies import get_strategy

# Version of the run directory layout written in config.json. 1: the flat config of hf-lottery 0.1 (no
# version key), classification only. 2: the config split by concern, with the task kind.
FORMAT_VERSION = 2
# How far an invocation goes: not what decides each level's result, so rerunning with a higher target, more
# levels or another control extends the same run (run_log.jsonl records each invocation's reach).
# The cheaper ticket methods (one-shot, early-bird) are branches over the same level 0 and rewind point, so they
# are reach too; early-bird's settings are checked against its own branch folder instead (methods/early_bird.py).
# Replicates are the same run under other seeds (hf_lottery/replicates.py): more of them extend the run.
REACH_FIELDS = frozenset(
    {"levels", "target_sparsity", "control", "one_shot", "early_bird", "early_bird_every", "early_bird_window",
     "early_bird_threshold", "replicates"}
)  # fmt: skip
# Where a run is written and pushed, whether it runs at all, how often it saves its progress and which weights it
# keeps: none changes what it computes, nor belongs in its command line.
OUTPUT_FIELDS = frozenset(
    {"output_dir", "push_to_hub", "hub_private", "dry_run", "report_to", "keep_weights", "save_steps"}
)
# Fields left out of the run's identity (config.json holds the rest, and the run directory's name hashes it).
NON_IDENTITY_FIELDS = REACH_FIELDS | OUTPUT_FIELDS


# The parts of each command, in the order of their flags in --help.
SECTIONS: dict[str, type] = {
    "model": ModelArguments,
    "data": DataArguments,
    "train": TrainArguments,
    "prune": PruneArguments,
    "finetune": FinetuneArguments,
    "hub": HubArguments,
}
COMMAND_SECTIONS = {
    "prune": ("model", "data", "train", "prune", "hub"),
    "finetune": ("model", "data", "train", "finetune", "hub"),
    "api": ("model", "train", "prune"),  # find_ticket: the user's training function stands for data and training
}


@dataclass
class RunConfig:
    """One command's configuration: its parts, the task kind it resolved to, and how it is saved and named."""

    command: Literal["prune", "finetune", "api"]
    model: ModelArguments
    data: DataArguments = field(default_factory=DataArguments)
    train: TrainArguments = field(default_factory=TrainArguments)
    hub: HubArguments = field(default_factory=HubArguments)
    prune: PruneArguments | None = None
    finetune: FinetuneArguments | None = None
    run_config: dict[str, Any] | None = None  # find_ticket's stand-in for the user's training function

    def __post_init__(self) -> None:
        if not self.model.model_name_or_path:
            raise LotteryError(f"give a model: hf-lottery {self.command} MODEL_ID_OR_PATH ...")
        if self.prune is not None:
            check_plugins(self.prune)
        if self.command == "api":
            return
        if self.command == "prune":
            if self.prune is None:
                raise LotteryError("a prune config needs its pruning arguments")
            schedule = self.prune.target_sparsity is not None or self.prune.levels is not None
            if not schedule and (self.prune.one_shot or self.prune.early_bird):
                self.prune.levels, schedule = 0, True  # only the cheap methods: IMP trains the dense level 0
            if not schedule and self.data.has_source:
                raise LotteryError("give --target-sparsity (e.g. 0.9) or --levels N")
            if not schedule:  # the one-command default job: announced in the run's first lines
                self.prune.target_sparsity = DEFAULT_LM_TARGET_SPARSITY
            early_bird = self.prune.early_bird_every * self.prune.early_bird_window
            if self.prune.early_bird and self.train.max_steps is not None and self.train.max_steps < early_bird:
                raise LotteryError(
                    f"--early-bird needs at least --early-bird-every x --early-bird-window = {early_bird} steps per "
                    f"level, but --max-steps is {self.train.max_steps}"
                )
        elif self.finetune is None:
            self.finetune = FinetuneArguments()

    @classmethod
    def from_parts(cls, command: str, parts: list[Any]) -> Self:
        named = {name: part for part in parts for name, kind in SECTIONS.items() if isinstance(part, kind)}
        return cls(command=command, **named)

    @classmethod
    def build(cls, command: str = "prune", **values: Any) -> Self:
        """From flat keyword values, as the CLI names them (``learning_rate=...``): for Python callers and tests."""
        parts = []
        for name in COMMAND_SECTIONS[command]:
            kind = SECTIONS[name]
            known = {f.name for f in dataclasses.fields(kind)}
            parts.append(kind(**{k: v for k, v in values.items() if k in known}))
        unknown = set(values) - {f.name for name in COMMAND_SECTIONS[command] for f in _fields(name)}
        if unknown:
            raise TypeError(f"unknown option(s) for {command}: {', '.join(sorted(unknown))}")
        return cls.from_parts(command, parts)

    def parts(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COMMAND_SECTIONS[self.command]}

    @property
    def output_dir(self) -> str | None:
        return self.train.output_dir

    def flat(self) -> dict[str, Any]:
        """Every value by its field name (field names are unique across the parts)."""
        return {k: v for part in self.parts().values() for k, v in dataclasses.asdict(part).items()}

    def identity(self) -> dict[str, Any]:
        """The values that decide what a run computes (everything but where it is written and pushed)."""
        identity = {k: v for k, v in self.flat().items() if k not in NON_IDENTITY_FIELDS}
        return identity if self.run_config is None else {**identity, "run_config": self.run_config}

    def run_hash(self) -> str:
        """Hash of the non-default identity values: adding an option with a default never renames runs.

        The values as given are hashed (a task kind left to inference is not part of the name), over one flat
        mapping. How far a run goes is not part of it, so a longer run of the same config finds the same name.
        """
        return self._hash(self.identity())

    def legacy_run_hash(self) -> str:
        """The name hf-lottery 0.1 gave this config's directory: its hash also covered the reach fields."""
        return self._hash({k: v for k, v in self.flat().items() if k not in OUTPUT_FIELDS})

    def _hash(self, values: dict[str, Any]) -> str:
        defaults = {f.name: _default(f) for name in COMMAND_SECTIONS[self.command] for f in _fields(name)}
        changed = {k: v for k, v in values.items() if v not in (defaults[k], LAUNCHER_DEFAULTS.get(k))}
        return hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:10]

    def to_command(self) -> str:
        """The ``hf-lottery`` command line that reproduces this run (non-default values only)."""
        if self.command == "api":
            options = {f.name: getattr(self.prune, f.name) for f in dataclasses.fields(self.prune)}
            changed = ", ".join(f"{k}={v!r}" for k, v in options.items() if v != _default(_field("prune", k)))
            return (
                f"hf_lottery.find_ticket(model, train_fn, run_config={json.dumps(self.run_config, sort_keys=True)}, "
                f"seed={self.train.seed}, {changed})  # model: {self.model.model_name_or_path}"
            )
        parts = ["hf-lottery", self.command, shlex.quote(str(self.model.model_name_or_path))]
        for part in self.parts().values():
            for f in dataclasses.fields(part):
                value = getattr(part, f.name)
                if f.name in ("model_name_or_path", *OUTPUT_FIELDS) or value in (
                    _default(f),
                    LAUNCHER_DEFAULTS.get(f.name),
                ):
                    continue
                flag = "--" + f.name.replace("_", "-")
                if isinstance(value, bool):
                    parts.append(flag if value else f"{flag} false")
                elif isinstance(value, list):
                    parts += [flag, *(shlex.quote(str(v)) for v in value)]
                else:
                    parts += [flag, shlex.quote(str(value))]
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        parts = {name: dataclasses.asdict(part) for name, part in self.parts().items()}
        extra = {"run_config": self.run_config} if self.run_config is not None else {}
        return {"format_version": FORMAT_VERSION, "command": self.command, **parts, **extra}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build from a saved config.json, of this format or hf-lottery 0.1's flat one (migrated on reading).

        Keys this version does not know are dropped, so files of newer versions stay readable.
        """
        version = values.get("format_version", 1)
        if version == 1:
            command = values.get("hf_lottery_command", "prune")
            nested = {name: values for name in COMMAND_SECTIONS[command]}
            nested["model"] = {**values, "task_kind": "sequence-classification"}  # 0.1 knew no other kind
        else:
            command = values["command"]
            nested = {name: values.get(name, {}) for name in COMMAND_SECTIONS[command]}
        parts = []
        for name in COMMAND_SECTIONS[command]:
            known = {f.name for f in _fields(name)}
            parts.append(SECTIONS[name](**{k: v for k, v in nested[name].items() if k in known}))
        config = cls.from_parts(command, parts)
        config.run_config = values.get("run_config")
        return config


def _fields(section: str) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(SECTIONS[section])


def _field(section: str, name: str) -> dataclasses.Field:
    return next(f for f in _fields(section) if f.name == name)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def check_plugins(prune: PruneArguments) -> None:
    """The registered names ``--scope`` and ``--control`` may take (an unknown one is one line); controls in
    registry order, each once."""
    get_strategy(prune.scope)
    bad = [c for c in prune.control if c not in CONTROLS]
    if bad:
        raise LotteryError(f"unknown --control {bad[0]!r}; choose from {', '.join(CONTROLS)}")
    prune.control = sorted(set(prune.control), key=list(CONTROLS).index)
