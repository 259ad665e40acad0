"""The package's plan as a newcomer reads it: the floors in pyproject.toml are those docs/development.md lists, every
registry entry resolves to its class (and its options) after any move, and the public names import."""

import re
import tomllib
from pathlib import Path

import pytest

import hf_lottery
from hf_lottery.lottery.controls import CONTROLS
from hf_lottery.lottery.methods import METHODS
from hf_lottery.pruning.strategies import STRATEGIES
from hf_lottery.training.tasks import TASK_KINDS

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contract_lists_the_floors_the_docs_list():
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    floors = [layer for layer in contract["layers"] if layer != "__main__"]
    docs = (ROOT / "docs" / "development.md").read_text().split("## Floors", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^\d+\. `(\w+)`", docs, re.M) == floors
    assert sorted(floors) == sorted(p.name for p in (ROOT / "hf_lottery").iterdir() if (p / "__init__.py").is_file())


@pytest.mark.parametrize("registry", [TASK_KINDS, STRATEGIES, CONTROLS, METHODS], ids=lambda r: r.noun)
def test_every_registry_entry_resolves(registry):
    for name in registry:
        plugin = registry[name]
        assert plugin.name == name
        assert registry.arguments(name) is getattr(plugin, "arguments", None)


def test_the_public_names_import():
    for name in hf_lottery.__all__:
        assert getattr(hf_lottery, name) is not None, name
    assert hf_lottery.MaskEnforcer.__name__ == "MaskEnforcer" and callable(hf_lottery.run_lottery)
