"""``hf-lottery``: the command line. The only module that knows about argv, exit codes and tracebacks."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from transformers import HfArgumentParser

from . import __version__
from .config import LotteryConfig
from .errors import LotteryError

USAGE = """usage: hf-lottery COMMAND [options]   (hf-lottery COMMAND --help for its options)

commands:
  prune MODEL    find lottery tickets in MODEL (a Hub id or a local folder) by iterative magnitude pruning
  demo           the offline demo: a tiny BERT on a toy task, 3 levels with controls

options anywhere: --debug (show tracebacks), --version
"""


def _prune(args: list[str]) -> LotteryConfig:
    if args and not args[0].startswith("-"):
        args = ["--model_name_or_path", args[0], *args[1:]]
    parser = HfArgumentParser(LotteryConfig, prog="hf-lottery prune")
    (config,) = parser.parse_args_into_dataclasses(args=args)
    return config


def _demo(args: list[str]) -> LotteryConfig:
    import argparse

    from .demo import demo_config

    parser = argparse.ArgumentParser(prog="hf-lottery demo", description="Run the offline demo.")
    parser.add_argument("--output-dir", default="runs/demo", help="run directory (default: runs/demo)")
    return demo_config(parser.parse_args(args).output_dir)


def _quiet_libraries() -> None:
    """Our per-level lines and progress bars are the output; library load reports and map bars are noise."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()


COMMANDS = {"prune": _prune, "demo": _demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if "--version" in args:
        print(f"hf-lottery {__version__}")
        return 0
    if not args or args[0] not in COMMANDS:
        print(USAGE, file=sys.stderr if args else sys.stdout)
        return 2 if args else 0
    _quiet_libraries()
    try:
        config = COMMANDS[args[0]](args[1:])
        from .lottery import run_lottery
        from .report import format_table

        rows = run_lottery(config)
        if rows:
            print(format_table(rows, rows[0]["metric"]), end="")
            print(f"results, tickets and sparsity_vs_metric.png are in {config.output_dir}")
    except LotteryError as err:
        if debug:
            raise
        print(f"hf-lottery: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hf-lottery: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as err:  # a bug or an environment problem: still one line unless --debug
        if debug:
            raise
        first = str(err).splitlines()[0] if str(err) else ""
        print(
            f"hf-lottery: error: {type(err).__name__}: {first} (rerun with --debug for the traceback)", file=sys.stderr
        )
        return 1
    return 0
