"""Plug-ins: the base every plug-in class shares, and the registry of plug-in classes by name, the one table a
plug-in kind (task kinds, strategies, controls, methods) has, each entry one line.

An entry names its class as ``"package.module:Class"`` and is imported on first use, so listing the names (a
``--help`` text, an error's choices) imports no plug-in. A plug-in with options names them too, as
``("package.module:Class", "package.arguments:ClassArguments")``, in a module that imports no torch, so that
``--help`` lists every plug-in's options without importing the plug-ins and all they need. A class may also be
registered as itself (a plug-in defined in a test or a user's own module).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from importlib import import_module
from typing import Any, ClassVar, Generic, TypeVar

from .errors import LotteryError

T = TypeVar("T")
# A registry entry: "module:Class", ("module:Class", "module:Arguments"), or the class itself.
Entry = str | tuple[str, str] | type[T]


def _load(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(import_module(module), attribute)


class Plugin:
    """A task kind, strategy, control or method: it brings its own options as ``arguments``, a dataclass whose
    fields carry ``metadata=hf_lottery.foundations.arguments.help_(text, role)`` (its registry entry names it too);
    the command line composes the registered plug-ins' options into one parser, and the run hands each plug-in its
    own values as ``self.args``.

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

    def __init__(self, noun: str, flag: str, entries: dict[str, Entry[T]]) -> None:
        self.noun = noun  # what an entry is: "strategy"
        self.flag = flag  # how messages name a choice of one: "--strategy", "--control", "task kind"
        self._entries: dict[str, Entry[T]] = dict(entries)

    def __getitem__(self, name: str) -> type[T]:
        entry = self._entries[name]
        if isinstance(entry, type):
            return entry
        path, arguments = (entry, None) if isinstance(entry, str) else entry
        found = _load(path)
        if getattr(found, "name", name) != name:
            raise TypeError(f"{self.flag} {name!r} names {found.__name__}, whose name is {found.name!r}")
        if found.arguments is not (None if arguments is None else _load(arguments)):
            raise TypeError(f"the registry entry of {self.flag} {name!r} names {arguments or 'no options'}, but "
                            f"{found.__name__}.arguments is {found.arguments}")  # fmt: skip
        self._entries[name] = found
        return found

    def arguments(self, name: str) -> type | None:
        """The options dataclass of the plug-in ``name`` (None: it has none), read from its entry without importing
        the plug-in."""
        entry = self._entries[name]
        if isinstance(entry, type):
            return entry.arguments
        return None if isinstance(entry, str) else _load(entry[1])

    def __setitem__(self, name: str, entry: Entry[T]) -> None:
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


def lazy_exports(package: str, module: str, names: Iterable[str]) -> Callable[[str], Any]:
    """A plug-in package's module ``__getattr__``: ``names`` of its ``module`` (the plug-ins' base) are imported on
    first use, so importing the package for its registry (as ``--help`` does) imports no torch."""
    names = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module, package), name)

    return __getattr__
