"""Scoring of tag sequences for token classification: entity-level micro F1 with conlleval's rules for a BIO
tag set, token accuracy for any other (POS).

A module of its own so that the scores are plain functions of lists of tag names, written out here rather
than taken from a metrics package: nothing is downloaded to score a level, and each rule can be checked by
hand without a model or a tokenizer.
"""

from __future__ import annotations

from .base import Metric


def is_bio(names: list[str]) -> bool:
    """Whether tags are BIO/IOB entity tags (each ``O``, ``B-X`` or ``I-X``, and at least one entity tag)."""
    return all(n == "O" or n.startswith(("B-", "I-")) for n in names) and any(n != "O" for n in names)


def tag_metric(names: list[str]) -> Metric:
    """Entity F1 for entity tags, token accuracy for any other tag set (POS)."""
    return Metric("f1" if is_bio(names) else "accuracy")


def entities(tags: list[str]) -> set[tuple[int, int, str]]:
    """The (start, end, type) spans of one BIO sentence with conlleval's rules: ``B-X`` starts an entity, and
    so does an ``I-X`` after ``O`` or after another type; ``I-X`` after ``X`` continues it.
    """
    spans = set()
    start, kind = 0, None
    for i, tag in enumerate([*tags, "O"]):  # the final O closes an entity at the sentence end
        prefix, label = (tag[0], tag[2:]) if tag.startswith(("B-", "I-")) else ("O", "")
        continues = prefix == "I" and label == kind
        if kind is not None and not continues:
            spans.add((start, i, kind))
            kind = None
        if prefix != "O" and not continues:
            start, kind = i, label
    return spans


def entity_f1(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 over exact entity matches (span and type), as conlleval reports them."""
    gold_spans = {(s, *span) for s, tags in enumerate(gold) for span in entities(tags)}
    pred_spans = {(s, *span) for s, tags in enumerate(pred) for span in entities(tags)}
    correct = len(gold_spans & pred_spans)
    precision = correct / len(pred_spans) if pred_spans else 0.0
    recall = correct / len(gold_spans) if gold_spans else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def token_accuracy(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Share of words whose tag is right."""
    pairs = [(g, p) for g_row, p_row in zip(gold, pred, strict=True) for g, p in zip(g_row, p_row, strict=True)]
    return {"accuracy": sum(g == p for g, p in pairs) / len(pairs) if pairs else 0.0}


def tag_metrics(gold: list[list[str]], pred: list[list[str]], *, entity_level: bool) -> dict[str, float]:
    """A level's metrics: token accuracy always, entity precision/recall/F1 for entity tags."""
    return {**entity_f1(gold, pred), **token_accuracy(gold, pred)} if entity_level else token_accuracy(gold, pred)
