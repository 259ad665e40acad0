"""Does choosing the sparsity on validation flatter it? IMP on MiniLM/SST-2 with a held-out test split.

SST-2's GLUE test split has no labels, so the dev set of ../shared/data/glue/SST-2 is split in two halves
(alternate rows, so both halves have the same mix): one validates every level (and chooses the winning
level), the other is `--test-file`, never used to choose. The run is otherwise scripts/compare_cheap_tickets.py's
IMP (2,000 training sentences, one epoch per level, 20% per level to 90%). It prints the table and the level
each half would choose as the sparsest within one point of dense.

    python scripts/heldout_sst2.py    # resumable; the split files are written beside the run
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from reproduce_sst2 import minilm_folder, sst2_folder  # scripts/ is on the path of a script run from it

from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.report import format_table
from hf_lottery.lottery.rows import LevelResult, best_ticket
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.training.tasks import TEST_PREFIX


def split_dev(dev: Path, folder: Path) -> tuple[Path, Path]:
    """Alternate rows of ``dev`` into validation and test halves (the same files on every run)."""
    header, *rows = dev.read_text(encoding="utf-8").splitlines()
    folder.mkdir(parents=True, exist_ok=True)
    halves = folder / "dev_validation_half.tsv", folder / "dev_test_half.tsv"
    for path, part in zip(halves, (rows[0::2], rows[1::2]), strict=True):
        path.write_text("\n".join([header, *part]) + "\n", encoding="utf-8")
    return halves


def chosen_on_test(rows: list[LevelResult]) -> LevelResult | None:
    """The level the rule of ``export --level best`` would choose if it could see the test half: the same rule
    (``best_ticket``) on rows whose metric is the test score (the run has one replicate, so no means to replace)."""
    return best_ticket([dataclasses.replace(r, metric=TEST_PREFIX + r.metric) for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/glue/SST-2"))
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--output-dir", default="runs/heldout-sst2")
    args = parser.parse_args()
    glue = sst2_folder(args.glue_dir)
    validation, test = split_dev(glue / "dev.tsv", Path(args.output_dir + "-data"))
    config = RunConfig.build(
        "prune",
        model_name_or_path=str(minilm_folder()), task="sst2", train_file=str(glue / "train.tsv"),
        validation_file=str(validation), test_file=str(test), max_train_samples=args.train_samples,
        max_length=64, target_sparsity=0.9, prune_fraction=0.2, exclude=["pooler"], rewind_to="pretrained",
        learning_rate=1e-4, batch_size=32, eval_batch_size=128, epochs=1, seed=0, output_dir=args.output_dir,
    )  # fmt: skip
    rows = run_lottery(config)
    print(format_table(rows, "accuracy"), end="")
    on_validation, on_test = best_ticket(rows), chosen_on_test(rows)
    if on_validation is None:
        print("validation chooses no level: none is within one point of dense (export's best refuses)")
    else:
        print(
            f"validation chooses {on_validation.sparsity:.1%} (what export's best ships); there the held-out test "
            f"half says {on_validation.test_value:.4f} against {rows[0].test_value:.4f} dense."
        )
    print(f"The test half alone would choose {'no level' if on_test is None else f'{on_test.sparsity:.1%}'}.")


if __name__ == "__main__":
    main()
