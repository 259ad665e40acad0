"""Vocabulary trimming: keep the token ids a ticket's data uses, and cut the word embeddings (and a tied output
head) to them.

In a small encoder the word embeddings, which no pruning unit touches, can be most of the parameters, and a
task's text uses a fraction of a general-purpose vocabulary. What is kept: the special tokens, every id the
trimming text tokenises to, and (by default) the single-character pieces (``x`` and ``##x``), so that WordPiece
can still spell any word it meets instead of answering ``[UNK]``. Kept ids stay in their old order; the new id
of a token is its rank among them.

The tokenizer is rebuilt from its fast ``tokenizer.json`` (vocabulary, added tokens, post-processor and padding
ids renumbered), so stock ``AutoTokenizer`` loads the trimmed folder and, on text whose tokens were all kept, gives
the same tokens under the new ids. Only WordPiece can be cut this way: a BPE vocabulary is spelled by its merges,
and a token cannot go without the merges that make it and those built on it.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedModel

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import write_text
from hf_lottery.lottery.config import RunConfig
from hf_lottery.pruning.architectures import architecture

from .scoring import run_data

TOKENIZER_JSON, SLOW_VOCAB, TOKENIZER_CONFIG, ADDED_TOKENS = (
    "tokenizer.json", "vocab.txt", "tokenizer_config.json", "added_tokens.json",
)  # fmt: skip


@dataclass
class VocabularyTrim:
    """The ids a trimmed vocabulary keeps (old ids, ascending: a token's new id is its index) and its tokenizer."""

    kept: list[int]
    old_size: int
    tokenizer_json: dict
    fallback: bool

    @property
    def index(self) -> torch.Tensor:
        return torch.tensor(self.kept, dtype=torch.long)

    def new_id(self, old: int) -> int | None:
        return self._new_ids.get(old)

    def __post_init__(self) -> None:
        self._new_ids = {old: new for new, old in enumerate(self.kept)}

    def cut_model(self, model: PreTrainedModel) -> list[str]:
        """Cut the word embeddings, a tied or untied output head over the vocabulary (with its bias) and the
        config's token ids, in place; return the names (``named_parameters()``, all aliases) of the cut tensors."""
        tensors = vocabulary_tensors(model, self.old_size)
        index = self.index
        with torch.no_grad():
            for param in {id(p): p for p in tensors.values()}.values():
                param.data = param.data.index_select(0, index).contiguous()
        for module in model.modules():  # what their repr and a later resize read
            if isinstance(module, torch.nn.Embedding) and module.weight.shape[0] != module.num_embeddings:
                module.num_embeddings = len(self.kept)
            elif isinstance(module, torch.nn.Linear) and module.weight.shape[0] != module.out_features:
                module.out_features = module.weight.shape[0]
        model.config = copy.deepcopy(model.config)  # its own: a compaction builds its rewind point from the shared one
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        config.vocab_size = len(self.kept)
        for name, value in list(vars(config).items()):
            if name.endswith("_token_id") and isinstance(value, int):
                setattr(config, name, self.new_id(value))
        return sorted(tensors)

    def cut(self, state: dict[str, torch.Tensor], names: Iterable[str]) -> dict[str, torch.Tensor]:
        """``state`` (masks or weights, by ``named_parameters()`` name) with the tensors ``names`` cut to the kept
        rows; the others as they are."""
        names, index = set(names), self.index
        return {k: v.index_select(0, index) if k in names else v for k, v in state.items()}

    def write_tokenizer(self, folder: Path) -> None:
        """Replace the tokenizer files that ``folder`` holds (copied from the run) with the trimmed ones: the fast
        ``tokenizer.json``, and where they are there, the ids in ``tokenizer_config.json`` (``added_tokens_decoder``)
        and ``added_tokens.json`` and the slow tokenizer's ``vocab.txt`` in the new order."""
        write_text(folder / TOKENIZER_JSON, json.dumps(self.tokenizer_json, ensure_ascii=False, indent=2) + "\n")
        config_path = folder / TOKENIZER_CONFIG
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
        if "added_tokens_decoder" in config:  # keyed by id: renumbered, or AutoTokenizer would place them wrong
            decoder = config["added_tokens_decoder"]
            config["added_tokens_decoder"] = {str(self.new_id(int(i))): t for i, t in decoder.items()
                                              if self.new_id(int(i)) is not None}  # fmt: skip
            write_text(config_path, json.dumps(config, ensure_ascii=False, indent=2) + "\n")
        added = folder / ADDED_TOKENS
        if added.exists():  # the slow tokenizer's added tokens, by id
            tokens = json.loads(added.read_text(encoding="utf-8"))
            renumbered = {t: self.new_id(i) for t, i in tokens.items() if self.new_id(i) is not None}
            write_text(added, json.dumps(renumbered, ensure_ascii=False) + "\n")
        if (folder / SLOW_VOCAB).exists():
            vocab = self.tokenizer_json["model"]["vocab"]
            write_text(folder / SLOW_VOCAB, "".join(f"{t}\n" for t in sorted(vocab, key=vocab.__getitem__)))


def vocabulary_tensors(model: PreTrainedModel, vocab_size: int) -> dict[str, torch.nn.Parameter]:
    """The parameters indexed by token id, by every name they have: the word embeddings and the output heads over
    the vocabulary (masked-LM and LM heads, tied or not) with their biases, where the architecture table says."""
    entry = architecture(model.config, need="--trim-vocab")
    suffixes = (entry.embeddings, *entry.tied_heads)
    params = dict(model.named_parameters(remove_duplicate=False))
    wanted = [p for n, p in params.items() if any(n == s or n.endswith("." + s) for s in suffixes)]
    heads = [n.removesuffix("weight") + "bias" for n, p in params.items() if n.endswith(entry.tied_heads)]
    wanted += [params[n] for n in heads if n in params]
    ids = {id(p) for p in wanted}
    wrong = [n for n, p in params.items() if id(p) in ids and p.shape[0] != vocab_size]
    if not wanted or wrong:
        raise LotteryError(
            f"the word embeddings of {type(model).__name__} do not match the tokenizer's {vocab_size} ids"
            + (f" ({wrong[0]} has {params[wrong[0]].shape[0]} rows)" if wrong else "")
            + ": hf-lottery trims only a vocabulary the embeddings match"
        )
    return {n: p for n, p in params.items() if id(p) in ids}


def plan_trim(
    tokenizer_folder: Path, used_ids: Iterable[int], vocab_size: int, fallback: bool = True
) -> VocabularyTrim:
    """The trim keeping ``used_ids``, the special tokens and (with ``fallback``) the single-character pieces of
    the fast tokenizer in ``tokenizer_folder``; refuses, in one line, a tokenizer it cannot rebuild."""
    path = Path(tokenizer_folder) / TOKENIZER_JSON
    if not path.exists():
        raise LotteryError(
            f"the model's tokenizer has no {TOKENIZER_JSON} (a fast tokenizer), which --trim-vocab rebuilds: "
            "save it with a fast tokenizer first"
        )
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec.get("model", {})
    kind = model.get("type")
    if kind != "WordPiece":
        why = {
            "BPE": "a BPE vocabulary is spelled by its merges, and removing a token breaks every merge that makes "
            "it or builds on it, so its text would no longer tokenise the same",
            "Unigram": "a Unigram (SentencePiece) vocabulary scores every segmentation, and removing pieces changes "
            "how kept text is split",
        }.get(kind, "hf-lottery rebuilds only WordPiece tokenizers")
        raise LotteryError(f"--trim-vocab trims WordPiece (BERT-family) tokenizers only, not {kind}: {why}")
    vocab: dict[str, int] = model["vocab"]
    if len(vocab) != vocab_size or sorted(vocab.values()) != list(range(vocab_size)):
        raise LotteryError(
            f"the tokenizer's vocabulary ({len(vocab)} ids) does not number the model's {vocab_size} embeddings "
            "0..N-1, so --trim-vocab cannot say which rows to keep"
        )
    kept = {i for i in used_ids if 0 <= i < vocab_size}
    if not kept:
        raise LotteryError("--trim-vocab: the trimming text has no tokens")
    kept |= {token["id"] for token in spec.get("added_tokens", [])}
    special = AutoTokenizer.from_pretrained(tokenizer_folder).all_special_ids
    kept |= set(special)
    if fallback:
        prefix = model.get("continuing_subword_prefix", "##")
        kept |= {i for t, i in vocab.items() if len(t) == 1 or (t.startswith(prefix) and len(t) == len(prefix) + 1)}
    unk = model.get("unk_token")
    if unk in vocab:
        kept.add(vocab[unk])
    trim = VocabularyTrim(sorted(kept), vocab_size, spec, fallback)
    trim.tokenizer_json = _renumbered(spec, trim)
    return trim


def _renumbered(spec: dict, trim: VocabularyTrim) -> dict:
    """``tokenizer.json`` with only the kept tokens, every id in it renumbered."""
    spec = json.loads(json.dumps(spec))  # a deep copy
    spec["model"]["vocab"] = {
        t: trim.new_id(i) for t, i in spec["model"]["vocab"].items() if trim.new_id(i) is not None
    }
    for token in spec.get("added_tokens", []):
        token["id"] = trim.new_id(token["id"])
    if spec.get("padding") and "pad_id" in spec["padding"]:
        spec["padding"]["pad_id"] = trim.new_id(spec["padding"]["pad_id"])
    spec["post_processor"] = _renumber_processor(spec.get("post_processor"), trim)
    return spec


def _renumber_processor(processor: dict | None, trim: VocabularyTrim) -> dict | None:
    """The post-processor's special-token ids, renumbered (template, BERT/RoBERTa processing, or a sequence of
    them); refuses a kind whose ids it does not know."""
    if processor is None:
        return None
    kind = processor.get("type")
    if kind == "TemplateProcessing":
        for token in processor["special_tokens"].values():
            token["ids"] = [trim.new_id(i) for i in token["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            processor[key][1] = trim.new_id(processor[key][1])
    elif kind == "Sequence":
        processor["processors"] = [_renumber_processor(p, trim) for p in processor["processors"]]
    elif kind != "ByteLevel":
        raise LotteryError(f"--trim-vocab cannot renumber the tokenizer's {kind} post-processor")
    return processor


def text_file_ids(tokenizer, files: list[str]) -> set[int]:
    """The ids of the named plain-text files, one text per line; refuses a missing or empty file in one line."""
    ids: set[int] = set()
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise LotteryError(f"--trim-vocab {name}: no such file")
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise LotteryError(f"--trim-vocab {name} has no text")
        for encoded in tokenizer(lines, add_special_tokens=False)["input_ids"]:
            ids.update(encoded)
    return ids


def split_ids(datasets: Iterable) -> set[int]:
    """Every token id of tokenised splits (``datasets.Dataset``s with ``input_ids``)."""
    ids: set[int] = set()
    for dataset in datasets:
        for row in dataset["input_ids"]:
            ids.update(row)
    return ids


def token_counts(dataset, unk_id: int | None) -> tuple[int, int]:
    """Tokens (padding excluded: the splits are not padded yet) and unknown tokens of a tokenised split."""
    total = unknown = 0
    for row in dataset["input_ids"]:
        total += len(row)
        unknown += sum(1 for i in row if i == unk_id)
    return total, unknown


TOKENIZER_FILES = (TOKENIZER_JSON, SLOW_VOCAB, TOKENIZER_CONFIG, "special_tokens_map.json", ADDED_TOKENS)


def trimmed_tokenizer(trim: VocabularyTrim, source: Path, folder: Path):
    """Write the trimmed tokenizer's files into ``folder`` (the others copied from ``source``) and load it with
    stock ``AutoTokenizer``: what a user of the trimmed folder gets."""
    for name in TOKENIZER_FILES:
        if (Path(source) / name).exists():
            shutil.copy2(Path(source) / name, folder / name)
    trim.write_tokenizer(folder)
    return AutoTokenizer.from_pretrained(folder)


def trim_run(
    config: RunConfig, tokenizer_folder: Path, vocab_size: int, files: list[str]
) -> tuple[VocabularyTrim, dict]:
    """Plan the trim of a run's vocabulary to the ids of ``files`` (plain text, one text per line) or, with none,
    of the run's training and validation data; report the tokens and unknown tokens of its validation and test
    splits before and after (as the run tokenises them, at its ``--max-length``)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    before = run_data(config, tokenizer, with_train=not files)
    used = text_file_ids(tokenizer, files) if files else split_ids([before.prepared.train, before.prepared.validation])
    trim = plan_trim(tokenizer_folder, used, vocab_size)
    with tempfile.TemporaryDirectory(prefix="hf-lottery-vocab-") as tmp:
        after = run_data(config, trimmed_tokenizer(trim, tokenizer_folder, Path(tmp)))
    new_unk = trim.new_id(tokenizer.unk_token_id) if tokenizer.unk_token_id is not None else None
    splits = {}
    for split in after.splits:
        tokens, unknown = token_counts(getattr(before.prepared, split), tokenizer.unk_token_id)
        new_tokens, new_unknown = token_counts(getattr(after.prepared, split), new_unk)
        splits[split] = {"tokens": tokens, "unknown": unknown, "trimmed_tokens": new_tokens,
                         "trimmed_unknown": new_unknown}  # fmt: skip
    report = {
        "vocab_size": vocab_size, "kept_ids": len(trim.kept), "fallback_pieces": trim.fallback,
        "source": [str(f) for f in files] or "the run's training and validation data", "splits": splits,
    }  # fmt: skip
    return trim, report


def describe_trim(report: dict) -> str:
    """One line of what trimming kept and cost, for the command's output."""
    parts = [f"vocabulary: {report['kept_ids']:,} of {report['vocab_size']:,} ids kept"]
    if "parameters_removed" in report:
        parts[0] += f", {report['parameters_removed']:,} parameters removed"
    for split, counts in report["splits"].items():
        unknown, before, change = token_change(counts)
        parts.append(f"{split}: {unknown:.2%} unknown tokens (was {before:.2%}), {change:+.1%} tokens")
    return "; ".join(parts)


def token_change(counts: dict) -> tuple[float, float, float]:
    """A split's share of unknown tokens after and before trimming, and its relative change in token count."""
    return (
        counts["trimmed_unknown"] / max(counts["trimmed_tokens"], 1),
        counts["unknown"] / max(counts["tokens"], 1),
        counts["trimmed_tokens"] / max(counts["tokens"], 1) - 1,
    )
