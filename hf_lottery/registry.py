"""Plug-ins: the base every plug-in class shares, and the registry of plug-in classes by name, the one table a
plug-in kind (task kinds, strategies, controls, methods) has, each entry one line.

An entry names its class as ``"package.module:Class"`` and is imported on first use, so listing the names (a
``--help`` text, an error's choices) imports no plug-in. A class may also be registered as itself (a plug-in
defined in a test or a user's own module).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from importlib import import_module
from typing import Any, ClassVar, Generic, TypeVar

from .errors import LotteryError

T = TypeVar("T")


class Plugin:
    """A task kind, strategy, control or method: it brings its own options as ``arguments``, a dataclass whose
    fields carry ``metadata=hf_lottery.arguments.help_(text, role)``; the command line composes the registered
    plug-ins' options into one parser, and the run hands each plug-in its own values as ``self.args``.

    Option names must be unique over all plug-ins and the core options (prefix them with the plug-in's name where
    needed); an option of a plug-in the run does not use is refused.
    """

    name: ClassVar[str]  # the registry key
    arguments: ClassVar[type | None] = None

    def __init__(self, args: Any = None) -> None:
        if args is None and self.arguments is not None:
            args = self.arguments()
        self.args = args


class Registry(MutableMapping[str, type[T]], Generic[T]):
    """Plug-in classes by name, in registration order (the order of tables, plots and ``--help``)."""

    def __init__(self, noun: str, flag: str, entries: dict[str, str | type[T]]) -> None:
        self.noun = noun  # what an entry is: "strategy"
        self.flag = flag  # how messages name a choice of one: "--strategy", "--control", "task kind"
        self._entries: dict[str, str | type[T]] = dict(entries)

    def __getitem__(self, name: str) -> type[T]:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = getattr(import_module(module), attribute)
            if getattr(entry, "name", name) != name:
                raise TypeError(f"{self.flag} {name!r} names {entry.__name__}, whose name is {entry.name!r}")
            self._entries[name] = entry
        return entry

    def __setitem__(self, name: str, entry: str | type[T]) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def choose(self, name: str) -> type[T]:
        """The class registered as ``name``; an unknown name is one line that lists the known ones."""
        if name not in self._entries:
            raise LotteryError(f"unknown {self.flag} {name!r}; choose from {', '.join(self)}")
        return self[name]
