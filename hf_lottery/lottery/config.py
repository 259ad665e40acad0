"""A run's configuration: the parts of one command (``hf_lottery.foundations.arguments``) and the options of every
registered plug-in (``hf_lottery.foundations.registry.Plugin``), checked against the registries, and how a run
directory saves (``config.json``, with a format version) and names it.

Every function takes only the part it needs; a plug-in gets its own options.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Self

from hf_lottery.foundations.arguments import (
    DEFAULT_LM_TARGET_SPARSITY,
    LAUNCHER_DEFAULTS,
    OUTPUT,
    REACH,
    DataArguments,
    FinetuneArguments,
    HubArguments,
    ModelArguments,
    PruneArguments,
    TrainArguments,
    role,
)
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.registry import Registry
from hf_lottery.pruning.strategies import STRATEGIES
from hf_lottery.training.tasks import TASK_KINDS

from .controls import CONTROLS
from .methods import METHODS, asked_methods

if TYPE_CHECKING:
    from hf_lottery.pruning.strategies import PruningStrategy

    from .controls import Control

# Version of the run directory layout written in config.json. 1: the flat config of hf-lottery 0.1 (no
# version key), classification only. 2: the config split by concern, with the task kind. 3: each plug-in's own
# options in a section named by the plug-in. 4: --max-test-samples caps the test split, which --max-eval-samples
# capped before. Every version is read by finding each saved field by its name.
FORMAT_VERSION = 4
SEPARATE_TEST_CAP = 4  # the first version in which --max-eval-samples leaves the test split alone

# The core parts of every command.
CORE: dict[str, type] = {
    "model": ModelArguments,
    "data": DataArguments,
    "train": TrainArguments,
    "prune": PruneArguments,
    "finetune": FinetuneArguments,
    "hub": HubArguments,
}
# The parts of each command in the order of their flags in --help: core parts by name, and the plug-in kinds whose
# registered plug-ins bring their options there.
COMMAND_PARTS: dict[str, tuple[str | Registry, ...]] = {
    "prune": ("model", "data", TASK_KINDS, "train", "prune", STRATEGIES, CONTROLS, METHODS, "hub"),
    "finetune": ("model", "data", TASK_KINDS, "train", "finetune", "hub"),
    # find_ticket: the user's training function stands for data and training
    "api": ("model", "train", "prune", STRATEGIES, CONTROLS, METHODS),
}


def sections(command: str) -> dict[str, type]:
    """The parts of ``command`` by name, in --help order: the core parts and the registered plug-ins' options.

    Plug-ins are read from the registries at each call, so one registered later (a test's, a user's) takes part.
    """
    found: dict[str, type] = {}
    owners: dict[str, str] = {}
    for part in COMMAND_PARTS[command]:
        named = [(part, CORE[part])] if isinstance(part, str) else [(n, part.arguments(n)) for n in part]
        for name, arguments in named:
            if arguments is None:
                continue
            if name in found:
                raise TypeError(f"two parts of {command} are named {name!r}")
            for f in dataclasses.fields(arguments):
                if f.name in owners:
                    raise TypeError(f"option --{f.name.replace('_', '-')} of {name} clashes with {owners[f.name]}'s")
                owners[f.name] = name
            found[name] = arguments
    return found


@dataclass(frozen=True)
class RunConfig:
    """One command's configuration: its parts, each plug-in's options, and how it is saved and named."""

    command: Literal["prune", "finetune", "api"]
    model: ModelArguments
    data: DataArguments = field(default_factory=DataArguments)
    train: TrainArguments = field(default_factory=TrainArguments)
    hub: HubArguments = field(default_factory=HubArguments)
    prune: PruneArguments | None = None
    finetune: FinetuneArguments | None = None
    run_config: dict[str, Any] | None = None  # find_ticket's stand-in for the user's training function
    plugins: dict[str, Any] = field(default_factory=dict)  # each registered plug-in's options, by its name

    def __post_init__(self) -> None:
        if not self.model.model_name_or_path:
            raise LotteryError(f"give a model: hf-lottery {self.command} MODEL_ID_OR_PATH ...")
        if self.command in ("prune", "api") and self.prune is None:
            raise LotteryError(f"a {self.command} config needs its pruning arguments")
        if self.command == "finetune" and self.finetune is None:
            object.__setattr__(self, "finetune", FinetuneArguments())
        for name, arguments in sections(self.command).items():
            if name not in CORE and name not in self.plugins:
                self.plugins[name] = arguments()
        if self.prune is None:
            return
        scored = STRATEGIES.choose(self.prune.strategy).units
        if scored is not None and self.prune.unit not in scored:
            raise LotteryError(
                f"--strategy {self.prune.strategy} scores {' or '.join(scored)} units only: add --unit {scored[0]}"
            )
        from hf_lottery.pruning.units import check_scope  # here, not above: it imports torch, which --help must not

        check_scope(self.prune.unit, self.prune.scope)
        bad = [c for c in self.prune.control if c not in CONTROLS]
        if bad:
            raise LotteryError(f"unknown --control {bad[0]!r}; choose from {', '.join(CONTROLS)}")
        controls = sorted(set(self.prune.control), key=list(CONTROLS).index)  # canonical: the same run, one name
        if controls != self.prune.control:
            object.__setattr__(self, "prune", dataclasses.replace(self.prune, control=controls))
        methods = asked_methods(self.plugins)
        self.check_options(STRATEGIES, [self.prune.strategy])
        self.check_options(CONTROLS, self.prune.control)
        self.check_options(METHODS, [method.name for method in methods])
        if not self.prune.train_dense and not methods:
            raise LotteryError("--train-dense false prunes nothing by itself: add --post-training SPARSITY or --nm N:M")
        trained = [m for m in methods if not (m.scores_untrained or m.trains)]
        if not self.prune.train_dense and trained:
            flag = "--" + dataclasses.fields(trained[0].arguments)[0].name.replace("_", "-")
            raise LotteryError(f"--train-dense false leaves level 0 untrained, and {flag} prunes trained weights")
        schedule = self.prune.target_sparsity is not None or self.prune.levels is not None
        if not schedule and methods:  # only the cheap methods: IMP trains the dense level 0
            object.__setattr__(self, "prune", dataclasses.replace(self.prune, levels=0))
            schedule = True
        if self.command == "api":
            return
        if not schedule and self.data.has_source:
            raise LotteryError("give --target-sparsity (e.g. 0.9) or --levels N")
        if not schedule:  # the one-command default job: announced in the run's first lines
            object.__setattr__(
                self, "prune", dataclasses.replace(self.prune, target_sparsity=DEFAULT_LM_TARGET_SPARSITY)
            )
        if self.strategy().whole_model and any(m.by_block for m in methods):
            by_block = next(m.name for m in methods if m.by_block)
            raise LotteryError(
                f"--strategy {self.prune.strategy} scores by running the whole model on training examples, and "
                f"{by_block} draws its mask one block at a time: use --strategy wanda or magnitude with it"
            )
        if self.strategy().calibrated and self.prune.scope == "global" and any(m.by_block for m in methods):
            by_block = next(m.name for m in methods if m.by_block)
            raise LotteryError(
                f"{by_block} calibrates block by block, each block's mask from its own statistics, so it allocates "
                f"per row or per tensor: --scope row (Wanda's) or layer"
            )
        names = [method.name for method in methods]
        for method in methods:
            if method.trains is not None and method.trains not in names:
                flag = "--" + dataclasses.fields(METHODS.arguments(method.trains))[0].name.replace("_", "-")
                raise LotteryError(f"{method.name} trains the masks of {method.trains}: add {flag}")
            method.check_run(self.prune, self.train)

    def check_options(self, registry: Registry, chosen: list[str]) -> None:
        """Refuse, in one line, an option given to a plug-in of ``registry`` that the run does not use: it would
        change the run's identity for nothing."""
        for name in registry:
            arguments = self.plugins.get(name)
            if name in chosen or arguments is None:
                continue
            given = [f for f in dataclasses.fields(arguments) if getattr(arguments, f.name) != _default(f)]
            if given:
                flag = "--" + given[0].name.replace("_", "-")
                raise LotteryError(f"{flag} is an option of the {registry.noun} {name}, which this run does not use")

    @classmethod
    def from_parts(cls, command: str, parts: list[Any]) -> Self:
        """From one instance of each part of ``command`` (as the CLI's parser gives them), core or plug-in."""
        by_type = {type(part): part for part in parts}
        named = {name: by_type[kind] for name, kind in sections(command).items() if kind in by_type}
        core = {name: part for name, part in named.items() if name in CORE}
        return cls(command=command, **core, plugins={n: p for n, p in named.items() if n not in CORE})

    @classmethod
    def build(cls, command: str = "prune", **values: Any) -> Self:
        """From flat keyword values, as the CLI names them (``learning_rate=...``): for Python callers and tests."""
        kinds = sections(command)
        known = {f.name for kind in kinds.values() for f in dataclasses.fields(kind)}
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"unknown option(s) for {command}: {', '.join(sorted(unknown))}")
        return cls.from_parts(command, [_part(kind, values) for kind in kinds.values()])

    def parts(self) -> dict[str, Any]:
        """Every part of the command by name, core and plug-in, in --help order."""
        return {name: getattr(self, name) if name in CORE else self.plugins[name] for name in sections(self.command)}

    def plugin(self, name: str) -> Any:
        """The options of the plug-in ``name`` (None for a plug-in without options)."""
        return self.plugins.get(name)

    def strategy(self) -> PruningStrategy:
        """The run's scoring rule, with its own options."""
        return STRATEGIES.choose(self.prune.strategy)(self.plugin(self.prune.strategy))

    def control(self, name: str) -> Control:
        """A control of the run, with its own options."""
        return CONTROLS.choose(name)(self.plugin(name))

    @property
    def output_dir(self) -> str | None:
        return self.train.output_dir

    def _fields(self) -> list[dataclasses.Field]:
        return [f for kind in sections(self.command).values() for f in dataclasses.fields(kind)]

    def flat(self) -> dict[str, Any]:
        """Every value by its field name (field names are unique across the parts)."""
        return {k: v for part in self.parts().values() for k, v in dataclasses.asdict(part).items()}

    def identity(self) -> dict[str, Any]:
        """The values that decide what a run computes (everything but its reach and output)."""
        values = self.flat()
        identity = {f.name: values[f.name] for f in self._fields() if role(f) not in (REACH, OUTPUT)}
        return identity if self.run_config is None else {**identity, "run_config": self.run_config}

    def reach(self) -> dict[str, Any]:
        """How far this invocation goes (levels, target, controls, methods, replicates): run_log.jsonl's record."""
        values = self.flat()
        return {f.name: values[f.name] for f in self._fields() if role(f) == REACH}

    def run_hash(self) -> str:
        """Hash of the non-default identity values: adding an option with a default never renames runs.

        The values as given are hashed (a task kind left to inference is not part of the name), over one flat
        mapping. How far a run goes is not part of it, so a longer run of the same config finds the same name.
        """
        return self._hash(self.identity())

    def legacy_run_hash(self) -> str:
        """The name hf-lottery 0.1 gave this config's directory: its hash also covered the reach fields."""
        values = self.flat()
        return self._hash({f.name: values[f.name] for f in self._fields() if role(f) != OUTPUT})

    def _hash(self, values: dict[str, Any]) -> str:
        defaults = {f.name: _default(f) for f in self._fields()}
        changed = {k: v for k, v in values.items() if v not in (defaults.get(k), LAUNCHER_DEFAULTS.get(k))}
        return hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:10]

    def to_command(self, outputs: bool = False) -> str:
        """The ``hf-lottery`` command line that reproduces this run (non-default values only); with ``outputs``, also
        its options of where and how it writes (``--output-dir``, ``--keep-weights``, ``--push-to-hub``...): the
        command that resumes this very run."""
        if self.command == "api":
            options = [part for name, part in self.parts().items() if name not in ("model", "train")]
            changed = ", ".join(
                f"{f.name}={getattr(part, f.name)!r}"
                for part in options
                for f in dataclasses.fields(part)
                if getattr(part, f.name) != _default(f)
            )
            return (
                f"hf_lottery.find_ticket(model, train_fn, run_config={json.dumps(self.run_config, sort_keys=True)}, "
                f"seed={self.train.seed}, {changed})  # model: {self.model.model_name_or_path}"
            )
        parts = ["hf-lottery", self.command, shlex.quote(str(self.model.model_name_or_path))]
        for part in self.parts().values():
            for f in dataclasses.fields(part):
                value = getattr(part, f.name)
                if (
                    f.name == "model_name_or_path"
                    or (role(f) == OUTPUT and not outputs)
                    or value
                    in (
                        _default(f),
                        LAUNCHER_DEFAULTS.get(f.name),
                    )
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
        """Build from a saved config.json of any format version, each saved field found by its name in whichever
        section holds it: hf-lottery 0.1's flat file, version 2's core sections (which held a few options that
        plug-ins own now, such as ``mlm_probability`` and ``one_shot``), or this version's.

        Keys this version does not know are dropped, so files of newer versions stay readable. Before version 4
        ``--max-eval-samples`` also capped the test split; such a run keeps that cap as its ``max_test_samples``, so
        its test scores stay what they were.
        """
        version = values.get("format_version", 1)
        if version == 1:
            command = values.get("hf_lottery_command", "prune")
            found = {**values, "task_kind": "sequence-classification"}  # 0.1 knew no other kind
        else:
            command = values["command"]
            saved = [section for key, section in values.items() if isinstance(section, dict) and key != "run_config"]
            found = {k: v for section in saved for k, v in section.items()}
        if version < SEPARATE_TEST_CAP and (found.get("test_file") or found.get("test_split")):
            found["max_test_samples"] = found.get("max_eval_samples")
        config = cls.from_parts(command, [_part(kind, found) for kind in sections(command).values()])
        return dataclasses.replace(config, run_config=values.get("run_config"))


@dataclass(frozen=True)
class Resolved:
    """What a run works out from its config, once, before anything is written: where it is written, the
    launcher's settings (a flag beats ``accelerate launch``'s environment, which beats the default), the test cap of
    a run directory written before ``--max-test-samples`` (see ``from_dict``) when the flag is not given, and, once
    the model is known, its task kind and the ``--max-length`` its positions allow.

    ``apply`` gives the config with these values in place: what the run reads, what ``config.json`` records and
    what a rerun's identity is compared against. The run's name is hashed from the config as given, before.
    """

    output_dir: str
    mixed_precision: str | None = None
    gradient_accumulation_steps: int | None = None
    task_kind: str | None = None
    max_length: int | None = None
    max_test_samples: int | None = None

    def apply(self, config: RunConfig) -> RunConfig:
        train = {"output_dir": self.output_dir}
        for name in ("mixed_precision", "gradient_accumulation_steps"):
            if getattr(self, name) is not None:
                train[name] = getattr(self, name)
        model = {"task_kind": self.task_kind} if self.task_kind is not None else {}
        data = {n: getattr(self, n) for n in ("max_length", "max_test_samples") if getattr(self, n) is not None}
        return dataclasses.replace(
            config,
            train=dataclasses.replace(config.train, **train),
            model=dataclasses.replace(config.model, **model),
            data=dataclasses.replace(config.data, **data),
        )


def _part(kind: type, values: dict[str, Any]) -> Any:
    """An instance of the part ``kind`` from the values among ``values`` that are its fields."""
    return kind(**{f.name: values[f.name] for f in dataclasses.fields(kind) if f.name in values})


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]
