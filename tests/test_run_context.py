"""What a method sees of a run: the run implements every member of the small protocols methods are given, with the
same signature, so the interface a method is written against cannot drift from the run it gets."""

import inspect
from typing import Protocol

import pytest

from hf_lottery.lottery.methods.base import Draws, RunContext, Shares, Trains
from hf_lottery.lottery.run import Run


def members(protocol: type) -> dict[str, object]:
    """The protocol's own methods and properties (not those of ``Protocol`` itself)."""
    return {name: value for name, value in vars(protocol).items() if callable(value) or isinstance(value, property)
            if not name.startswith("_")}  # fmt: skip


def parameters(member) -> list[tuple]:
    function = member.fget if isinstance(member, property) else member
    return [(p.name, p.kind, p.default, str(p.annotation)) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("protocol", [Shares, Draws, Trains])
def test_the_run_has_every_member_of_what_a_method_sees_with_its_signature(protocol):
    assert RunContext in Run.__mro__ and protocol in RunContext.__mro__ and Protocol in protocol.__bases__
    for name, member in members(protocol).items():
        assert parameters(getattr(Run, name)) == parameters(member), f"Run.{name} differs from {protocol.__name__}"
    for name in inspect.get_annotations(protocol):
        assert name in Run.__dataclass_fields__ or name in vars(Run), f"Run has no {name}"
