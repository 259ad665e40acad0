"""``torchrun -m tests.callback_worker``: Trainer + MaskedTrainingCallback under DDP, for tests/test_callback.py.

Every rank builds the same model, data and mask from ``CALLBACK_MODEL`` (a checkpoint folder) and trains a few
steps; each rank saves its final masked weights (``weights_rank<R>.safetensors``) and rank 0 the mask
(``mask.safetensors``) to ``CALLBACK_OUT``. The builders are shared with the single-process tests.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, TrainingArguments

from hf_lottery.commands.demo import DEMO_DATA
from hf_lottery.pruning.masks import Mask, default_prunable


def demo_dataset(model_dir: Path, samples: int = 64) -> Dataset:
    """The first ``samples`` sentences of the demo task, tokenised to 32 tokens."""
    with (DEMO_DATA / "train.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))[:samples]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded = tokenizer([r["sentence"] for r in rows], truncation=True, padding="max_length", max_length=32)
    return Dataset.from_dict({**encoded, "labels": [int(r["label"]) for r in rows]})


def load_model(model_dir: Path) -> PreTrainedModel:
    """The checkpoint with a freshly initialised 2-label head, the same head on every call and every rank."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)


def random_mask(model: torch.nn.Module, seed: int = 0) -> Mask:
    """Keep a random half of each encoder Linear weight."""
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return {name: torch.rand(params[name].shape, generator=generator) < 0.5 for name in default_prunable(model)}


def training_args(output_dir: Path, **overrides: Any) -> TrainingArguments:
    """Accumulation, clipping and weight decay on: each is a way for a pruned weight to come back."""
    settings: dict[str, Any] = dict(
        output_dir=str(output_dir), max_steps=4, per_device_train_batch_size=8, gradient_accumulation_steps=2,
        max_grad_norm=1.0, weight_decay=0.1, learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=True,
        logging_steps=1, seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    settings.update(overrides)
    return TrainingArguments(**settings)


def main() -> None:
    from accelerate import PartialState
    from torch.nn.parallel import DistributedDataParallel
    from transformers import Trainer

    from hf_lottery import MaskedTrainingCallback

    model_dir, out = Path(os.environ["CALLBACK_MODEL"]), Path(os.environ["CALLBACK_OUT"])
    model = load_model(model_dir)
    mask = random_mask(model)
    args = training_args(out / "trainer")
    trainer = Trainer(
        model=model, args=args, train_dataset=demo_dataset(model_dir), callbacks=[MaskedTrainingCallback(mask)]
    )
    trainer.train()
    state = PartialState()
    if state.num_processes != 2:
        raise SystemExit(f"expected 2 processes, got {state.num_processes}")
    if not isinstance(trainer.model_wrapped, DistributedDataParallel):
        raise SystemExit(f"the model was not wrapped in DDP but in {type(trainer.model_wrapped).__name__}")
    params = dict(model.named_parameters())
    weights = {name: params[name].detach().contiguous() for name in mask}
    save_file(weights, str(out / f"weights_rank{state.process_index}.safetensors"))  # the ranks must agree
    if state.is_main_process:
        save_file({name: m.contiguous() for name, m in mask.items()}, str(out / "mask.safetensors"))


if __name__ == "__main__":
    main()
