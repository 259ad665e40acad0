"""What a built wheel holds: every sub-package of hf_lottery/, found rather than listed, and the card templates."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from setuptools import find_namespace_packages

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_package_of_the_tree(tmp_path):
    source = tmp_path / "source"  # a copy: a build/ folder left in the tree would hand stale files to the wheel
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "hf_lottery", "model_cards"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        check=True,
        cwd=source,
    )
    (wheel,) = tmp_path.glob("hf_lottery-*.whl")
    files = set(zipfile.ZipFile(wheel).namelist())
    shipped = {name.rsplit("/", 1)[0].replace("/", ".") for name in files if name.endswith("/__init__.py")}
    # Every folder of hf_lottery/ that holds Python code, with or without an __init__.py: a sub-package that lost
    # its __init__.py, or one the declaration misses, would be left out of the wheel.
    code = {
        name
        for name in find_namespace_packages(where=str(ROOT), include=["hf_lottery", "hf_lottery.*"])
        if any((ROOT / name.replace(".", "/")).glob("*.py"))
    }
    assert {
        "hf_lottery.training.tasks",
        "hf_lottery.pruning.strategies",
        "hf_lottery.lottery.controls",
        "hf_lottery.lottery.methods",
    } <= code
    assert code <= shipped
    assert "hf_lottery/model_cards/ticket_card.md" in files
    assert not any(name.startswith("model_cards/") for name in files)  # no stray top-level package
    assert {"hf_lottery/demo_data/train.tsv", "hf_lottery/demo_data/vocab.txt"} <= files
