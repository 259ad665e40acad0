"""Smoke test of the installed wheel, run from a folder outside the source tree: every sub-package imports, and a
tiny ticket is trained, exported and loaded back (about 20 s on 2 cores)."""

import pkgutil
import sys
import tempfile
from pathlib import Path

import hf_lottery

SOURCE = Path(__file__).resolve().parent.parent / "hf_lottery"
installed = Path(hf_lottery.__file__).resolve().parent
# The venv may live inside the checkout (CI's does): what matters is that the package is not the source folder.
assert installed != SOURCE and "site-packages" in installed.parts, f"imported {installed}, not the installed wheel"
for module in pkgutil.walk_packages(hf_lottery.__path__, "hf_lottery."):
    if module.name != "hf_lottery.__main__":
        __import__(module.name)

from hf_lottery.commands.cli import main  # noqa: E402
from hf_lottery.commands.demo import DEMO_DATA, build_tiny_bert  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    model = build_tiny_bert(Path(tmp) / "tiny-bert")
    data = ["--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file", str(DEMO_DATA / "dev.tsv")]
    rc = main(["prune", str(model), *data, "--text-columns", "sentence", "--label-column", "label",
               "--max-train-samples", "64", "--max-eval-samples", "32", "--max-length", "32", "--levels", "1",
               "--prune-fraction", "0.5", "--max-steps", "2", "--output-dir", f"{tmp}/run"])  # fmt: skip
    assert rc == 0, rc
    assert main(["export", f"{tmp}/run", f"{tmp}/ticket", "--level", "1"]) == 0
    ticket, masks = hf_lottery.load_ticket(f"{tmp}/ticket")
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert abs(kept - 0.5) < 0.01, kept
print(f"installed wheel OK: {installed}", file=sys.stderr)
