"""Masked-LM: the pretraining objective of BERT-style encoders, on plain text, scored by perplexity.

Each document is one example (truncated to ``--max-length``). Training masks a fresh ``--mlm-probability``
of the tokens in every batch, from a generator seeded per level. The validation set (and the test set) is
masked once, when it is prepared, from a fixed seed and each example's index: every level, and every run on the
same text, is scored on the same masked tokens, so their perplexities are comparable.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from accelerate import Accelerator
from datasets import Dataset
from transformers import (
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    DataCollatorForTokenClassification,
    PretrainedConfig,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from hf_lottery.foundations.arguments import DataArguments
from hf_lottery.foundations.errors import LotteryError

from .arguments import MaskedLMArguments
from .base import PreparedData, TaskData
from .text import IGNORE_INDEX, LanguageModelKind, evaluate_perplexity

EVAL_MASK_SEED = 0  # fixed, not the run's --seed: runs with different seeds are scored on the same tokens
MASK_REPLACE, RANDOM_REPLACE = 0.8, 0.1  # BERT's split of the chosen tokens; the rest stay as they are


class MaskedLM(LanguageModelKind):
    name = "masked-lm"
    arguments = MaskedLMArguments
    auto_model = AutoModelForMaskedLM
    mapping_names = MODEL_FOR_MASKED_LM_MAPPING_NAMES
    head_name = "masked-LM head"
    pipeline_tag = "fill-mask"

    def prefers(self, model_config: PretrainedConfig) -> bool:
        return not getattr(model_config, "is_decoder", False)

    def prepare(self, data: TaskData, tokenizer, args: DataArguments, accelerator: Accelerator) -> PreparedData:
        if tokenizer.mask_token is None:
            raise LotteryError(
                f"the tokenizer of {tokenizer.name_or_path!r} has no mask token, which masked-LM needs; "
                "use --task-kind causal-lm"
            )

        def masked(documents: list[str], split: str) -> Dataset:
            return mask_validation(
                tokenize_lines(documents, tokenizer, args.max_length), tokenizer, self.args.mlm_probability, split
            )

        with accelerator.main_process_first():
            train = tokenize_lines(data.train, tokenizer, args.max_length)
            validation = masked(data.validation, "validation")
            test = masked(data.test, "test") if data.test is not None else None

        def train_collator(seed: int) -> DataCollatorForLanguageModeling:
            return DataCollatorForLanguageModeling(tokenizer, mlm_probability=self.args.mlm_probability, seed=seed)

        eval_collator = DataCollatorForTokenClassification(tokenizer)  # pads labels with -100
        evaluate = partial(evaluate_perplexity, shift=False)
        return PreparedData(train, validation, train_collator, eval_collator, data.metric, evaluate, test)


def tokenize_lines(documents: list[str], tokenizer, max_length: int) -> Dataset:
    """One example per document, truncated, with the special-tokens mask (which tokens may be masked)."""

    def encode(batch: dict) -> dict:
        return tokenizer(batch["text"], truncation=True, max_length=max_length, return_special_tokens_mask=True)

    return Dataset.from_dict({"text": documents}).map(encode, batched=True, remove_columns=["text"])


def mask_validation(dataset: Dataset, tokenizer, probability: float, split: str) -> Dataset:
    """An evaluation split (validation or test) with its masked tokens drawn once: ``input_ids`` masked,
    ``labels`` the originals.
    """
    mask_id, vocab_size = tokenizer.mask_token_id, len(tokenizer)

    def mask_batch(batch: dict, indices: list[int]) -> dict:
        masked = [
            mask_tokens(ids, special, np.random.default_rng([EVAL_MASK_SEED, index]), probability, mask_id, vocab_size)
            for ids, special, index in zip(batch["input_ids"], batch["special_tokens_mask"], indices, strict=True)
        ]
        return {"input_ids": [m[0] for m in masked], "labels": [m[1] for m in masked]}

    masked = dataset.map(mask_batch, batched=True, with_indices=True, remove_columns=["special_tokens_mask"])
    if not any(label != IGNORE_INDEX for labels in masked["labels"] for label in labels):
        raise LotteryError(f"the {split} text has no token that masked-LM can mask (only special tokens)")
    return masked


def mask_tokens(
    ids: list[int], special: list[int], rng: np.random.Generator, probability: float, mask_id: int, vocab_size: int
) -> tuple[list[int], list[int]]:
    """BERT's masking of one example: each non-special token is chosen with ``probability`` (at least one is,
    so no example is empty of scored tokens); a chosen token becomes [MASK] (80%), a random token (10%) or
    stays (10%). Returns the input ids and the labels (the original ids, -100 where nothing was chosen).
    """
    ids_array = np.asarray(ids, dtype=np.int64)
    candidates = np.asarray(special) == 0
    chosen = (rng.random(len(ids_array)) < probability) & candidates
    if candidates.any() and not chosen.any():
        chosen[rng.choice(np.flatnonzero(candidates))] = True
    labels = np.where(chosen, ids_array, IGNORE_INDEX)
    how = rng.random(len(ids_array))
    inputs = ids_array.copy()
    inputs[chosen & (how < MASK_REPLACE)] = mask_id
    random_ones = chosen & (how >= MASK_REPLACE) & (how < MASK_REPLACE + RANDOM_REPLACE)
    inputs[random_ones] = rng.integers(vocab_size, size=int(random_ones.sum()))
    return inputs.tolist(), labels.tolist()
