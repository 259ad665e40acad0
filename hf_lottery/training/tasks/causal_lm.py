"""Causal-LM: next-token prediction, the objective of GPT-style decoders, on plain text, scored by perplexity.

The documents of a split are tokenised, each followed by the end-of-text token, concatenated and cut into
blocks of exactly ``--max-length`` tokens (the remainder is dropped). Blocks need no padding, so every
label is a real token: a tokenizer whose padding token is its end-of-text token (GPT-2) would otherwise lose
the document boundaries from the loss.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from accelerate import Accelerator
from datasets import Dataset
from transformers import AutoModelForCausalLM, PretrainedConfig, default_data_collator
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from hf_lottery.foundations.arguments import DataArguments
from hf_lottery.foundations.errors import LotteryError

from .base import PreparedData, TaskData
from .text import LanguageModelKind, evaluate_perplexity


class CausalLM(LanguageModelKind):
    name = "causal-lm"
    auto_model = AutoModelForCausalLM
    mapping_names = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    head_name = "causal-LM head"
    pipeline_tag = "text-generation"

    def prefers(self, model_config: PretrainedConfig) -> bool:
        # GPT-2 and Llama configs carry no is_decoder flag; having no masked-LM class is what makes them decoders.
        decoder = getattr(model_config, "is_decoder", False)
        return decoder or model_config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES

    def prepare(self, data: TaskData, tokenizer, args: DataArguments, accelerator: Accelerator) -> PreparedData:
        if tokenizer.eos_token_id is None:
            raise LotteryError(
                f"the tokenizer of {tokenizer.name_or_path!r} has no end-of-text token to separate documents"
            )
        if args.max_length < 2:
            raise LotteryError("causal-LM needs --max-length 2 or more: a block's first token is never predicted")
        with accelerator.main_process_first():
            train = make_blocks(data.train, tokenizer, args.max_length, "training")
            validation = make_blocks(data.validation, tokenizer, args.max_length, "validation")
            test = make_blocks(data.test, tokenizer, args.max_length, "test") if data.test is not None else None
        evaluate = partial(evaluate_perplexity, shift=True)
        return PreparedData(
            train, validation, lambda seed: default_data_collator, default_data_collator, data.metric, evaluate, test
        )


def make_blocks(documents: list[str], tokenizer, max_length: int, split: str) -> Dataset:
    """Blocks of ``max_length`` tokens over the documents, each document ending with the end-of-text token;
    ``labels`` are the input ids (the model shifts them).
    """
    eos = tokenizer.eos_token_id

    def encode(batch: dict) -> dict:
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [doc + [eos] for doc in ids]}

    tokenized = Dataset.from_dict({"text": documents}).map(encode, batched=True, remove_columns=["text"])
    # One array per document, not a Python int per token, which a large corpus could not afford.
    tokens = np.concatenate([*tokenized.with_format("numpy")["input_ids"], np.zeros(0, np.int64)]).astype(np.int64)
    count = len(tokens) // max_length
    if count == 0:
        raise LotteryError(
            f"the {split} text is {len(tokens)} tokens, less than one block of --max-length {max_length}; "
            f"give more text or a smaller --max-length"
        )
    blocks = tokens[: count * max_length].reshape(count, max_length)
    # No token is padding; said explicitly, since a model whose padding token is its end-of-text token warns otherwise.
    attention = np.ones_like(blocks, dtype=np.int8)
    return Dataset.from_dict({"input_ids": blocks, "attention_mask": attention, "labels": blocks})
