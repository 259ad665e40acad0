"""The model card of a ticket: rendered from ``model_cards/ticket_card.md`` with ``huggingface_hub.ModelCard``.

An existing card is updated, not overwritten: its metadata keys we do not set are kept, tags are merged,
and only the section between the ``hf-lottery:start``/``hf-lottery:end`` markers is replaced (a card
without the markers keeps its text below ours).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from . import __version__
from .config import FinetuneConfig, TrainingConfig
from .report import format_table

TEMPLATE = resources.files("hf_lottery.model_cards") / "ticket_card.md"
SECTION = re.compile(r"<!-- hf-lottery:start.*?<!-- hf-lottery:end -->", re.DOTALL)
TASK_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
              "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}  # fmt: skip


def render_card(
    facts: dict, config: TrainingConfig, rows: list[dict], repo_id: str, license: str | None, existing: str | None
) -> str:
    """The README.md of a ticket repository, merged into ``existing`` when the repository has one."""
    metric, value, dense = facts["metric"], facts["metric_value"], facts["dense_metric_value"]
    task = TASK_NAMES.get((config.task or "").lower(), "validation")
    base = facts["base_model"]
    on_hub = not Path(base).exists()
    data = ModelCardData(
        base_model=base if on_hub else None,
        library_name="transformers",
        pipeline_tag="text-classification",
        license=license,
        tags=["pruned", "sparse", "lottery-ticket", "hf-lottery", "text-classification"],
        datasets=["nyu-mll/glue"] if config.task else None,
        model_name=repo_id.split("/")[-1],
        eval_results=[
            EvalResult(
                task_type="text-classification", dataset_type="nyu-mll/glue" if config.task else "custom",
                dataset_name=f"GLUE {task}" if config.task else "validation file", dataset_config=config.task,
                dataset_split="validation", metric_type=metric, metric_value=round(value, 4),
                metric_name=f"{metric} at {facts['sparsity']:.0%} sparsity",
            )
        ],
    )  # fmt: skip
    what = (
        "encoder weights"
        if not (getattr(config, "include", None) or getattr(config, "exclude", None))
        else ("selected weights")
    )
    summary = f"{facts['sparsity']:.0%} of {what} removed, {task} {metric} {100 * value:.1f} vs {100 * dense:.1f} dense"
    if isinstance(config, FinetuneConfig):
        summary = f"A {facts['sparsity']:.0%}-sparse lottery ticket fine-tuned on {task}: {metric} {100 * value:.1f}"
    rewind_step = getattr(config, "rewind_step", None)
    rewind = "the pretrained weights" if rewind_step is None else f"the weights after step {rewind_step}"
    if isinstance(config, FinetuneConfig):
        rewind = "the rewind point of the ticket it was fine-tuned from"
    card = ModelCard.from_template(
        data,
        template_str=TEMPLATE.read_text(encoding="utf-8"),
        model_name=repo_id.split("/")[-1],
        summary=summary,
        base_model=base,
        base_model_url=f"https://huggingface.co/{base}" if on_hub else base,
        prune_description=_prune_description(config),
        level=facts["level"],
        sparsity_pct=f"{facts['sparsity']:.1%}",
        level_reason=facts["level_reason"],
        metric=metric,
        table=format_table(rows, metric),
        rewind_description=rewind,
        repo_id=repo_id,
        command=facts["command"],
        version=__version__,
        prune_fraction=getattr(config, "prune_fraction", None),
        scope=getattr(config, "scope", None),
    )
    return str(card) if existing is None else merge_cards(existing, card)


def merge_cards(existing: str, new: ModelCard) -> str:
    old = ModelCard(existing, ignore_metadata_errors=True)
    metadata = {**old.data.to_dict(), **{k: v for k, v in new.data.to_dict().items() if v is not None}}
    metadata["tags"] = sorted(set(old.data.tags or []) | set(new.data.tags or []))
    section = SECTION.search(new.text).group(0)
    body = SECTION.sub(lambda _: section, old.text) if SECTION.search(old.text) else f"{section}\n\n{old.text}"
    merged = ModelCard(f"---\n{ModelCardData(**metadata).to_yaml()}\n---\n{body.lstrip()}")
    return str(merged)


def _prune_description(config: TrainingConfig) -> str:
    if isinstance(config, FinetuneConfig):
        start = "its rewind-point weights" if config.from_init else "its trained weights"
        return f"Fine-tuned from the lottery ticket {config.model_name_or_path} ({start}) with its mask fixed."
    scope = "one global magnitude threshold" if config.scope == "global" else "the same fraction in each tensor"
    return (
        f"Each level removed {config.prune_fraction:.0%} of the surviving weights by magnitude ({scope}), "
        "rewound the survivors and trained again."
    )
