"""Fine-tune a lottery ticket with its mask fixed: a readable, accelerate-style example.

The same file runs everywhere Accelerate does:

    python scripts/finetune_ticket.py --ticket me/bert-sst2-ticket --train-file train.csv --validation-file dev.csv
    accelerate launch scripts/finetune_ticket.py --ticket ...                      # the GPUs of `accelerate config`
    accelerate launch --multi_gpu --num_processes 8 scripts/finetune_ticket.py ...  # 8 GPUs
    torchrun --nproc_per_node 2 scripts/finetune_ticket.py ...                     # 2 CPU processes (gloo)

`hf-lottery finetune` does the same with every option, resuming, and a run directory that `hf-lottery push`
ships; this script shows the three lines that make a ticket train sparse: a `MaskEnforcer` of the ticket's
masks zeroes the pruned weights' gradients before each optimizer step, and the pruned weights after it.
"""

import argparse

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

import hf_lottery
from hf_lottery.lottery.config import DataArguments
from hf_lottery.training.tasks import get_task_kind


def training_function(args: argparse.Namespace) -> None:
    accelerator = Accelerator(cpu=not torch.accelerator.is_available())
    set_seed(args.seed)
    # Data: local files (CSV/TSV/JSON lines) with a `sentence` and a `label` column, or a GLUE task.
    kind = get_task_kind("sequence-classification")
    data = kind.load_data(
        DataArguments(task=args.task, train_file=args.train_file, validation_file=args.validation_file)
    )
    # The ticket: its trained weights (or its rewind point with --from-init) and its masks.
    model, masks = hf_lottery.load_ticket(args.ticket, weights="rewind" if args.from_init else "trained")
    model = kind.transfer(model, data, args.seed)  # a new classification head where the ticket's does not fit
    tokenizer = AutoTokenizer.from_pretrained(args.ticket)
    prepared = kind.prepare(data, tokenizer, DataArguments(max_length=128), accelerator)
    train_loader = DataLoader(
        prepared.train, batch_size=args.batch_size, shuffle=True, collate_fn=prepared.train_collator(args.seed)
    )
    eval_loader = DataLoader(prepared.validation, batch_size=64, collate_fn=prepared.eval_collator)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    steps = len(train_loader) * args.epochs  # the scheduler of a prepared optimizer counts every process's step
    scheduler = get_linear_schedule_with_warmup(optimizer, steps // 10, steps)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    # its masks follow the parameters' devices
    enforcer = hf_lottery.MaskEnforcer(accelerator.unwrap_model(model), masks)

    for epoch in range(args.epochs):
        model.train()
        for batch in tqdm(train_loader, desc=f"epoch {epoch}", disable=not accelerator.is_local_main_process):
            loss = model(**batch).loss
            accelerator.backward(loss)
            enforcer.mask_gradients()  # 1. pruned weights get no gradient (AdamW's moments stay 0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            enforcer.mask_weights()  # 2. and stay exactly 0

        model.eval()
        correct = total = 0
        for batch in eval_loader:
            with torch.no_grad():
                predictions = model(**batch).logits.argmax(dim=-1)
            predictions, labels = accelerator.gather_for_metrics((predictions, batch["labels"]))
            correct += (predictions == labels).sum().item()
            total += labels.numel()
        accelerator.print(f"epoch {epoch}: accuracy {correct / total:.4f}")

    params = dict(accelerator.unwrap_model(model).named_parameters())
    alive = sum(int(params[name].count_nonzero()) for name in masks)  # 3. the sparsity did not move
    accelerator.print(f"density of the pruned tensors: {alive / sum(m.numel() for m in masks.values()):.4f}")
    if args.output_dir:
        accelerator.wait_for_everyone()
        accelerator.unwrap_model(model).save_pretrained(args.output_dir, is_main_process=accelerator.is_main_process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticket", required=True, help="Hub id or folder of an hf-lottery ticket")
    parser.add_argument("--task", help="a GLUE task name (with or without local files)")
    parser.add_argument("--train-file")
    parser.add_argument("--validation-file")
    parser.add_argument("--from-init", action="store_true", help="start from the ticket's rewind point")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", help="save the fine-tuned model here (save_pretrained)")
    training_function(parser.parse_args())


if __name__ == "__main__":
    main()
