"""The command line of a command's parts: every field of their dataclasses is an option, parsed as
``HfArgumentParser`` did before, with argparse alone, so that ``--help`` imports neither transformers nor torch.

A field ``max_steps`` is the option ``--max-steps``, the one spelling ``--help`` shows; ``--max_steps`` parses too,
as command lines written for ``HfArgumentParser`` spell it. The field's type says what the option takes: ``X |
None`` an X, a ``Literal`` one of its values, ``list[X]`` one or more X. A ``bool`` is a switch (``--dry-run``)
that may also take a value (``--from-init false``, as ``RunConfig.to_command`` writes a three-state switch).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import textwrap
import types
import typing
from typing import Any, Literal

from hf_lottery.foundations.errors import LotteryError

TRUE, FALSE = ("yes", "true", "t", "y", "1"), ("no", "false", "f", "n", "0")


def _switch_value(value: str) -> bool:
    """The value a switch may take, in the spellings ``HfArgumentParser`` took."""
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false (yes/no, 1/0), got {value!r}")


class _Help(argparse.HelpFormatter):
    """A switch reads as one (``--dry-run``, not ``--dry-run [DRY_RUN]``), and help texts never break an option
    name at its dashes."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if action.type is _switch_value:
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    """One parser over the parts of a command (a dataclass each, its options in a group named by the part), with the
    field ``positional`` taken as the command's positional argument: its name, how ``--help`` names it and its help.
    """

    def __init__(self, prog: str, parts: dict[str, type], positional: tuple[str, str, str]) -> None:
        field, metavar, help_text = positional
        super().__init__(prog=prog, usage=f"%(prog)s {metavar} [options]", formatter_class=_Help)
        self.parts = parts
        self.add_argument(field, metavar=metavar, nargs="?", help=help_text)
        for title, kind in parts.items():
            group = self.add_argument_group(f"{title} options")
            hints = typing.get_type_hints(kind)
            for f in dataclasses.fields(kind):
                if f.name != field:
                    _add_option(group, f, hints[f.name])

    def parse(self, args: list[str]) -> list[Any]:
        """One instance of each part, from ``args``. What no option takes is refused before the parts are built, in
        one line as argparse words it: a misspelt option is the error to show, not what its absence makes a
        ``__post_init__`` say."""
        namespace, leftovers = self.parse_known_args(args)
        if leftovers:
            options = [arg for arg in leftovers if arg.startswith("-")] or leftovers
            raise LotteryError("unrecognized arguments: " + " ".join(self._suggest(arg) for arg in options))
        values = vars(namespace)
        return [kind(**{f.name: values[f.name] for f in dataclasses.fields(kind)}) for kind in self.parts.values()]

    def _suggest(self, arg: str) -> str:
        """``arg`` with the nearest option (Python 3.11's argparse suggests none), compared without the dashes so
        that they do not make every option look alike."""
        if not arg.startswith("--"):
            return arg
        known = [s[2:] for a in self._actions if a.help is not argparse.SUPPRESS for s in a.option_strings
                 if s.startswith("--")]  # fmt: skip
        near = difflib.get_close_matches(arg.split("=", 1)[0][2:].replace("_", "-"), known, n=1)
        return f"{arg} (did you mean --{near[0]}?)" if near else arg


def _add_option(group: argparse._ArgumentGroup, f: dataclasses.Field, hint: Any) -> None:
    """The option of the field ``f`` (of type ``hint``), and its underscore spelling, hidden from ``--help``."""
    kind = _option_type(hint)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    unset = default is None or default is False or default == []  # said by the help text where it matters
    shown = f.metadata.get("help", "") + ("" if unset else f" (default: {default})")
    kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": shown.replace("%", "%%")}
    if kind is bool:
        kwargs |= {"type": _switch_value, "nargs": "?", "const": True}
    elif typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        kwargs |= {"type": type(choices[0]), "choices": choices}
    elif typing.get_origin(kind) is list:
        kwargs |= {"type": typing.get_args(kind)[0], "nargs": "+"}
    else:
        kwargs |= {"type": kind}
    group.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    if "_" in f.name:
        group.add_argument("--" + f.name, **{**kwargs, "help": argparse.SUPPRESS})


def _option_type(hint: Any) -> Any:
    """What an option of type ``hint`` takes: ``X`` for ``X | None``; one type, as argparse parses one."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return hint
    kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
    if len(kinds) != 1:
        raise TypeError(f"an option takes one type (or None), not {hint}")
    return kinds[0]
