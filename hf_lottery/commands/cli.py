"""``hf-lottery``: the command line. The only module that knows about argv, exit codes and tracebacks."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hf_lottery.foundations.arguments import DEFAULT_TOLERANCE
from hf_lottery.foundations.errors import LotteryError, NoTicketError, Terminated
from hf_lottery.foundations.version import __version__
from hf_lottery.lottery.config import RunConfig, sections

from .flags import Parser

if TYPE_CHECKING:
    from hf_lottery.lottery.run import RunEvents

USAGE = """usage: hf-lottery COMMAND [options]   (hf-lottery COMMAND --help for its options)

commands:
  prune MODEL      find lottery tickets in MODEL (a Hub id or a local folder) by iterative magnitude pruning
  demo             the offline demo: a tiny BERT on a toy task, 3 levels with controls
  export RUN OUT   write one level of a finished run as a ticket repository folder (no upload)
  push RUN REPO    export one level and upload it to a Hub repository in one commit
  finetune TICKET  train a ticket (Hub id or folder) on a task with its mask fixed
  env              versions and the accelerate config, for bug reports

options anywhere: --debug (show tracebacks), --version
"""

# The positional argument of each run command: how --help names and explains the model it takes.
MODELS = {
    "prune": ("MODEL", "the pretrained transformer: a Hub model id or a local folder"),
    "finetune": ("TICKET", "the ticket: a Hub repository or a folder that `hf-lottery export` wrote (with --no-mask, "
                 "any model)"),
}  # fmt: skip


def parse_command(command: str, args: list[str]) -> RunConfig:
    """One parser over the command's parts (model, data, training, pruning or fine-tuning, hub) and the options of
    every registered plug-in."""
    parser = Parser(f"hf-lottery {command}", sections(command), ("model_name_or_path", *MODELS[command]))
    return RunConfig.from_parts(command, parser.parse(args))


def _prune(args: list[str]) -> RunConfig:
    config = parse_command("prune", args)
    _quiet_libraries()
    return config


def _level(value: str) -> int | str:
    if value == "best" or "/" in value:  # "best", or a level's folder as the results name it
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--level takes a level number, a level's folder (one-shot/level_1_to_90.00) or 'best', not {value!r}"
        ) from None


def _ship_parser(prog: str, target: str, help_: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("run_dir", help="a finished run directory of `hf-lottery prune`")
    parser.add_argument(target, help=help_)
    parser.add_argument(
        "--level",
        type=_level,
        default="best",
        help="an IMP level number, a level's folder as results.md names it (one-shot/level_1_to_90.00), or "
        "'best': the sparsest ticket within --tolerance of dense, of IMP or a cheaper method the run has (default)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="how far below dense 'best' may be, in metric units (default 0.01: one point)",
    )
    parser.add_argument(
        "--compact",
        action="store_true",
        help="write a neuron, head or layer ticket (--unit) as a smaller stock model of its kept units, which loads "
        "and runs at that size in plain transformers",
    )
    parser.add_argument(
        "--measure-latency",
        action="store_true",
        help="with --compact: time the compact model against the dense one on this machine's CPU (batch 1, the "
        "run's --max-length, interleaved in one process) and give the ratio in the card; with --onnx: time each "
        "artifact against the dense model (1 thread, batch 1, 128 tokens)",
    )
    parser.add_argument(
        "--trim-vocab",
        nargs="*",
        metavar="FILE",
        help="keep only the token ids of these plain-text files (one text per line; none: the run's training and "
        "validation data), the special tokens and the single-character pieces; cut the word embeddings (and a tied "
        "head) to them and rebuild the fast tokenizer. WordPiece (BERT-family) tokenizers only",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also write onnx/model.onnx (dynamic batch and sequence, head included), refused unless onnxruntime "
        'matches PyTorch within 1e-4 on validation batches; needs pip install "hf-lottery[onnx]"',
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="with --onnx: also write onnx/model_quantized.onnx (dynamic int8, embeddings included), scored on the "
        "validation (and test) data; a drop beyond --tolerance is said",
    )
    return parser  # fmt: skip


def _ship_options(ns: argparse.Namespace):
    """The shipping options ``_ship_parser`` parsed, as ``export_ticket`` and ``push_ticket`` take them."""
    from hf_lottery.tickets.export import ShipOptions

    return ShipOptions(**{field.name: getattr(ns, field.name) for field in dataclasses.fields(ShipOptions)})


def _export(args: list[str]) -> None:
    ns = _ship_parser("hf-lottery export", "out_dir", "folder to write (must not exist or be empty)").parse_args(args)
    _quiet_libraries()
    from hf_lottery.tickets.export import export_ticket

    facts = export_ticket(ns.run_dir, ns.out_dir, _ship_options(ns))
    print(f"level {facts['level']} ({facts['sparsity']:.1%} sparse, {facts['metric']} {facts['metric_value']:.4f}) "
          f"written to {ns.out_dir}")  # fmt: skip
    if ns.compact:
        print(_compact_line(facts["compact"]))
    _artifact_lines(facts)


def _artifact_lines(facts: dict) -> None:
    """What trimming kept and cost, and each shipped artifact's size and scores (and latency, when timed)."""
    from hf_lottery.tickets.vocab import describe_trim

    if "vocabulary" in facts:
        print(describe_trim(facts["vocabulary"]))
    artifacts = facts.get("artifacts")
    if artifacts is None:
        return
    for row in artifacts["rows"]:
        scores = ", ".join(f"{split} {value:.4f}" for split, value in row["scores"].items())
        latency = f", latency {row['latency']:.2f}x dense" if "latency" in row else ""
        print(f"{row['file']}: {row['name']}, {row['bytes'] / 1e6:.2f} MB, {artifacts['metric']} {scores}{latency}")
    if "latency" in artifacts:
        timed = artifacts["latency"]
        print(f"latency against the dense PyTorch model: CPU, {timed['threads']} thread, batch {timed['batch']}, "
              f"{timed['sequence_length']} tokens")  # fmt: skip
    if artifacts["int8_warning"]:
        print(f"warning: {artifacts['int8_warning']}")


def _compact_line(compact: dict) -> str:
    changes = ", ".join(f"{field} {a} -> {b}" for field, (a, b) in compact["config_changes"].items())
    line = (f"compact: {changes}; {compact['dense_parameters']:,} -> {compact['compact_parameters']:,} parameters"
            + (" (padded to the widest block)" if compact["padded"] else ""))  # fmt: skip
    latency = compact.get("latency")
    if latency is not None:
        line += (f"; latency {latency['ratio']:.2f}x dense ({latency['device']}, {latency['threads']} threads, batch "
                 f"{latency['batch']}, {latency['sequence_length']} tokens)")  # fmt: skip
    return line


def _push(args: list[str]) -> None:
    parser = _ship_parser("hf-lottery push", "repo_id", "Hub repository, user/name (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to commit to (created if missing; default: main)")
    parser.add_argument("--commit-message", help="default: the level, its sparsity and metric")
    ns = parser.parse_args(args)
    _quiet_libraries()
    from hf_lottery.tickets.push import push_ticket

    url = push_ticket(ns.run_dir, ns.repo_id, _ship_options(ns), private=ns.private, revision=ns.revision,
                      commit_message=ns.commit_message)  # fmt: skip
    print(f"pushed: {url}")


def _finetune(args: list[str]) -> RunConfig:
    config = parse_command("finetune", args)
    _quiet_libraries()
    return config


def _env(args: list[str]) -> None:
    argparse.ArgumentParser(prog="hf-lottery env", description="Print versions for bug reports.").parse_args(args)
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from accelerate.commands.config import default_config_file

    lines = [f"hf-lottery {__version__}", f"Python {platform.python_version()} on {platform.platform()}"]
    for package in ("torch", "transformers", "accelerate", "huggingface_hub", "datasets", "safetensors"):
        try:
            lines.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            lines.append(f"{package} not installed")
    import torch

    from hf_lottery.foundations.arguments import TrainArguments
    from hf_lottery.training.launch import launcher_settings

    lines.append(f"accelerator: {torch.accelerator.current_accelerator() or 'none (CPU)'}")
    settings = launcher_settings(TrainArguments())
    lines.append("settings a run uses when its flags leave them out (flag > launcher environment > default):")
    lines += [f"  {name}: {value} ({source})" for name, (value, source) in settings.items()]
    config_path = Path(default_config_file)
    if config_path.is_file():
        lines.append(f"accelerate config ({config_path}):")
        lines += ["  " + line for line in config_path.read_text().splitlines()]
    else:
        lines.append(f"accelerate config: none ({config_path} does not exist; `accelerate config` writes it)")
    print("\n".join(lines))


def _demo(args: list[str]) -> RunConfig:
    parser = argparse.ArgumentParser(prog="hf-lottery demo", description="Run the offline demo.")
    parser.add_argument("--output-dir", default="runs/demo", help="run directory (default: runs/demo)")
    output_dir = parser.parse_args(args).output_dir
    _quiet_libraries()
    from .demo import demo_config

    return demo_config(output_dir)


def _quiet_libraries() -> None:
    """Our per-level lines and progress bars are the output; library load reports and map bars are noise. Each
    command calls it once its arguments are parsed, so that ``--help`` imports neither library."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()


RUNS = {"prune": _prune, "demo": _demo, "finetune": _finetune}
SHIPS = {"export": _export, "push": _push, "env": _env}


def _run(config: RunConfig, events: RunEvents | None) -> None:
    from accelerate import PartialState

    from hf_lottery.lottery.report import format_table
    from hf_lottery.lottery.rundir import default_output_dir
    from hf_lottery.lottery.runner import run_lottery
    from hf_lottery.training.stopping import stop_on_sigterm

    from .finetune import run_finetune

    hub = config.hub
    if hub.push_to_hub:
        from hf_lottery.tickets.push import push_ticket, require_token

        require_token()  # before hours of training, not after
    try:
        with stop_on_sigterm():
            rows = run_finetune(config) if config.command == "finetune" else run_lottery(config, events)
    except Terminated as err:
        raise Terminated(f"{err}; resume with: {config.to_command(outputs=True)}") from None
    run_dir = config.output_dir or str(default_output_dir(config))
    if rows:
        print(format_table(rows, rows[0].metric), end="")
        print(f"results, tickets and sparsity_vs_metric.png are in {run_dir}")
    if hub.push_to_hub and rows and PartialState().is_main_process:
        try:
            url = push_ticket(run_dir, hub.push_to_hub, private=hub.hub_private)
        except NoTicketError as err:  # the run is finished and stays: say how to ship one of its levels anyway
            raise LotteryError(
                f"not pushed: {err.reason}; the results stay in {run_dir}, and `hf-lottery push {shlex.quote(run_dir)} "
                f"{hub.push_to_hub} --level {err.level}{' --private' if hub.hub_private else ''}` pushes that level "
                "anyway"
            ) from None
        print(f"pushed: {url}")


def main(argv: Sequence[str] | None = None, events: RunEvents | None = None) -> int:
    """The command line, from Python too: ``argv`` as the shell gives it; ``events`` observe the trainings of a
    ``prune`` or ``demo`` run (``hf_lottery.lottery.run.RunEvents``). Returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if "--version" in args:
        print(f"hf-lottery {__version__}")
        return 0
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if args[0] not in {**RUNS, **SHIPS}:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        if args[0] in SHIPS:
            SHIPS[args[0]](args[1:])
        else:
            _run(RUNS[args[0]](args[1:]), events)
    except LotteryError as err:
        if debug:
            raise
        if isinstance(err, Terminated):  # asked for, not an error; the status of a process SIGTERM ended
            _error_line(f"hf-lottery: {err}")
            return 128 + signal.SIGTERM
        _error_line(f"hf-lottery: error: {err}")
        return 1
    except SystemExit as exit_:  # argparse: --help, or a usage error it has already printed
        return exit_.code if isinstance(exit_.code, int) else 1
    except KeyboardInterrupt:
        _error_line("hf-lottery: interrupted; run the same command again to resume")
        return 130
    except Exception as err:  # a bug or an environment problem: still one line unless --debug
        if debug:
            raise
        first = str(err).splitlines()[0] if str(err) else ""
        _error_line(f"hf-lottery: error: {type(err).__name__}: {first} (rerun with --debug for the traceback)")
        return 1
    return 0


def _error_line(line: str) -> None:
    """One line on stderr in one write, so the processes of a launch never interleave theirs."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
