"""The offline demo: a tiny BERT built from a config and a toy task shipped in the package.

It runs the real ``prune`` path end to end (model folder, local TSV files, IMP and both controls)
with no network.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from hf_lottery.foundations.storage import write_folder
from hf_lottery.lottery.config import RunConfig

DEMO_DATA = resources.files("hf_lottery") / "demo_data"


def build_tiny_bert(folder: Path, hidden_size: int = 64, num_attention_heads: int = 4) -> Path:
    """Save a 2-layer BERT with the demo vocabulary to ``folder`` (the same weights every time)."""
    if (folder / "config.json").exists():
        return folder
    tokenizer = BertTokenizerFast(vocab=str(DEMO_DATA / "vocab.txt"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=num_attention_heads,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=64,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BertForMaskedLM(config)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    if folder.exists():
        folder.rmdir()  # an empty folder to fill
    write_folder(folder, save)
    return folder


def demo_config(output_dir: str = "runs/demo") -> RunConfig:
    """Three levels of 70% pruning (97.3% sparse) with both controls, small enough to run on a CPU."""
    model = build_tiny_bert(Path(output_dir).parent / "demo-tiny-bert")
    return RunConfig.build(
        "prune",
        model_name_or_path=str(model),
        train_file=str(DEMO_DATA / "train.tsv"),
        validation_file=str(DEMO_DATA / "dev.tsv"),
        text_columns=["sentence"],
        label_column="label",
        max_length=32,
        levels=3,
        prune_fraction=0.7,
        control=["random-prune", "reinit"],
        learning_rate=3e-3,
        batch_size=32,
        epochs=4,
        warmup_ratio=0.1,
        seed=0,
        output_dir=output_dir,
    )
