"""The model card of a ticket: rendered from ``model_cards/ticket_card.md`` with ``huggingface_hub.ModelCard``.

An existing card is updated, not overwritten: its metadata keys we do not set are kept, tags are merged,
and only the section between the ``hf-lottery:start``/``hf-lottery:end`` markers is replaced (a card
without the markers keeps its text below ours).
"""

from __future__ import annotations

import re
import shlex
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_lottery.foundations.arguments import SCOPES, UNITS, PruneArguments
from hf_lottery.foundations.version import __version__
from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.controls import CONTROLS
from hf_lottery.lottery.methods import METHODS
from hf_lottery.lottery.report import format_table
from hf_lottery.lottery.rows import LevelResult
from hf_lottery.pruning.strategies import STRATEGIES
from hf_lottery.training.tasks import TEST_PREFIX, Metric, get_task_kind

from .runtimes import runtimes_section

TEMPLATE = resources.files("hf_lottery.model_cards") / "ticket_card.md"
SECTION = re.compile(r"<!-- hf-lottery:start.*?<!-- hf-lottery:end -->", re.DOTALL)
TASK_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
              "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}  # fmt: skip


def render_card(
    facts: dict,
    config: RunConfig,
    rows: list[LevelResult],
    repo_id: str | None,
    license: str | None,
    existing: str | None,
    folder: str,
) -> str:
    """The README.md of a ticket repository, merged into ``existing`` when the repository has one.

    ``repo_id`` is the Hub repository it is pushed to (None for a plain export), which names the model and loads it
    in the card's examples; without one, the examples load the exported ``folder``.
    """
    kind = get_task_kind(config.model.task_kind)
    metric = Metric(facts["metric"], facts["greater_is_better"])
    value, dense, sparsity = facts["metric_value"], facts["dense_metric_value"], facts["sparsity"]
    data = config.data
    task = TASK_NAMES.get((data.task or "").lower())
    dataset_id, dataset_config = kind.dataset_ref(data)
    data_name = f"GLUE {task}" if task else (dataset_id or "validation")
    base = facts["base_model"]
    on_hub = _on_hub(facts)
    name = repo_id.split("/")[-1] if repo_id else _ticket_name(facts, config, dataset_id)
    test_value = facts.get("test_metric_value")
    at = f"{metric.name} at {sparsity:.0%} sparsity"
    scores = [(data_name if dataset_id else "validation file", "validation", value, at)]
    if test_value is not None:
        scores.append(
            (data_name if dataset_id else "test file", data.test_split or "test", test_value, f"{at}, held out")
        )
    card_data = ModelCardData(
        base_model=base if on_hub else None,
        library_name="transformers",
        pipeline_tag=kind.pipeline_tag,
        license=license,
        tags=sorted({"pruned", "sparse", "lottery-ticket", "hf-lottery", kind.pipeline_tag, kind.name}),
        datasets=[dataset_id] if dataset_id else None,
        model_name=name,
        eval_results=[
            EvalResult(
                task_type=kind.pipeline_tag, dataset_type=dataset_id or "custom",
                dataset_name=name, dataset_config=dataset_config or data.task, dataset_split=split,
                metric_type=metric.name, metric_value=round(score, 4), metric_name=label,
            )
            for name, split, score, label in scores
        ],
    )  # fmt: skip
    prune = config.prune
    what = "encoder weights" if not (prune and (prune.include or prune.exclude)) else "selected weights"
    if kind.language_model:
        what = "the body's Linear weights"
    dense_row = LevelResult.from_dict(facts["levels"][0])
    reference = "dense" if dense_row.steps != 0 else "for the pretrained model as it is"
    removed = f"{sparsity:.0%} of {what}"
    if facts.get("unit_sparsity") is not None:  # the unit pruned first; the weights it took with it after
        removed = f"{facts['unit_sparsity']:.0%} of the {UNITS[facts['unit']]} ({sparsity:.0%} of {what})"
    summary = f"{removed} removed, {data_name} {metric.name} {_show(metric, value)}"
    if dense_row.is_reference:
        summary += f" vs {_show(metric, dense)} {reference}"
    if facts.get("metric_mean") is not None:
        summary = (
            f"{removed} removed, {data_name} {metric.name} {_show(metric, value)} (mean "
            f"{_show(metric, facts['metric_mean'])} ± {_show(metric, facts['metric_std'])} over "
            f"{len(facts['metric_replicates'])} replicates) vs {_show(metric, dense)} dense (mean "
            f"{_show(metric, facts['dense_metric_mean'])} ± {_show(metric, facts['dense_metric_std'])})"
        )
    if test_value is not None:
        dense_test = facts["dense_test_metric_value"]
        summary += f"; held-out test {_show(metric, test_value)}"
        summary += f" vs {_show(metric, dense_test)} {reference}" if dense_row.is_reference else ""
    rewind = "the pretrained weights"
    if prune is not None and prune.rewind_step is not None:
        rewind = f"the weights after step {prune.rewind_step}"
    if prune is not None and prune.rewinds_learning_rate:
        rewind += "; learning-rate rewinding: each level trained the survivors of the level before, its schedule new"
    train, teacher = config.train, None
    if train.distill:
        who = train.teacher or ("the pretrained model" if kind.language_model else "the run's trained dense level 0")
        teacher = f"{who} (logit distillation, alpha {train.distill_alpha}, temperature {train.distill_temperature})"
    if config.command == "finetune":
        summary = (
            f"A {sparsity:.0%}-sparse lottery ticket fine-tuned on {data_name}: {metric.name} {_show(metric, value)}"
        )
        if test_value is not None:
            summary += f", held-out test {_show(metric, test_value)}"
        rewind = "the rewind point of the ticket it was fine-tuned from"
    card = ModelCard.from_template(
        card_data,
        template_str=TEMPLATE.read_text(encoding="utf-8"),
        model_name=name,
        summary=summary,
        base_model_ref=f"[{base}](https://huggingface.co/{base})" if on_hub else f"the local model `{Path(base).name}`",
        method=_method(facts, config.prune),
        noun=_noun(facts, metric),
        prune_description=_prune_description(config, facts),
        level=facts["level"],
        sparsity_pct=f"{sparsity:.1%}",
        level_reason=facts["level_reason"],
        metric=metric.name,
        table=format_table(rows, metric.name),
        rewind_description=rewind,
        teacher=teacher,
        repo_id=repo_id or folder,
        auto_class=kind.auto_model.__name__,
        finetune_data=kind.finetune_data,
        finetune_flags=kind.finetune_flags,
        commands=_commands(facts, rows),
        version=__version__,
        processes=_processes(facts.get("processes")),
        prune_fraction=prune.prune_fraction if prune else None,
        strategy=_strategy(prune) if prune else None,
        controls_sentence=_controls_sentence(rows),
        test_sentence=_test_sentence(config, rows, metric),
        replicates_sentence=_replicates_sentence(facts, metric),
        compact_sentence=_compact_sentence(facts.get("compact")),
        files_table=_files_table(facts, rewind),
        stock_note="a smaller stock model" if facts.get("compact") else "dense storage, zeros in place",
        load_note="only the sparse file" if facts.get("sparse_copy", True) else "the model file and the masks",
        runtimes=runtimes_section(facts, repo_id, folder),
        onnx="onnx" in facts.get("artifacts", {}),
        int8=any(row["name"] == "ONNX int8" for row in facts.get("artifacts", {}).get("rows", [])),
    )
    return str(card) if existing is None else merge_cards(existing, card)


def _ticket_name(facts: dict, config: RunConfig, dataset_id: str | None) -> str:
    """A name that says what the ticket is, for an export that names no repository (its folder is often ``out``):
    the base model, the data (none for ``find_ticket``, whose training function holds it) and the sparsity, e.g.
    ``bert-base-uncased-sst2-90-sparse``."""
    data = config.data
    source = data.task or (Path(data.train_file).stem if data.train_file else dataset_id and Path(dataset_id).name)
    if facts.get("unit_sparsity") is not None:  # named by the units removed, as the run's lines count them
        amount = f"{100 * facts['unit_sparsity']:.0f}-{facts['unit']}-sparse"
    else:
        amount = f"{100 * facts['sparsity']:.0f}-sparse"
    return "-".join(filter(None, [Path(facts["base_model"]).name, source, amount]))


def _on_hub(facts: dict) -> bool:
    """Whether the base model is a Hub repository, which the card may link and name as ``base_model`` (the
    metadata's field holds a Hub id): not a local folder, whose path means nothing where the card is read."""
    return not facts["base_model_local"]


def _commands(facts: dict, rows: list[LevelResult]) -> list[str]:
    """The commands that trained the table's levels, in the order they ran (a run extended later has several),
    each with one option per line: a long command line is cut off by narrow viewers, which hides the options
    that make the run what it is."""
    commands = list(dict.fromkeys(row.command for row in rows if row.command)) or [facts["command"]]
    return [_one_option_per_line(command) for command in commands]


def _one_option_per_line(command: str) -> str:
    if not command.startswith("hf-lottery "):  # find_ticket's Python call
        return command
    lines: list[list[str]] = [[]]
    for word in shlex.split(command):
        if word.startswith("--"):
            lines.append([])
        lines[-1].append(shlex.quote(word))
    return " \\\n  ".join(" ".join(line) for line in lines)


def _compact_sentence(compact: dict | None) -> str:
    """What a compact export changed: the model is smaller, in stock terms."""
    if compact is None:
        return ""
    changes = ", ".join(f"`{field}` {a} to {b}" for field, (a, b) in compact["config_changes"].items())
    padded = (
        " Its blocks kept different numbers of units, and a stock config holds one width, so every block is padded "
        "to the widest with removed units, whose weights are zero: the outputs are exact, at the widest block's speed."
        if compact["padded"]
        else ""
    )
    sizes = f"{_bytes(compact['dense_bytes'])} dense, {_bytes(compact['compact_bytes'])} here"
    return (
        f"\n\nIt is **compact**: the removed units are cut out, so `model.safetensors` is a smaller stock model "
        f"({changes}; {compact['dense_parameters']:,} parameters dense, {compact['compact_parameters']:,} here; "
        f"{sizes}), and the masks and rewind point are cut the same way.{padded}"
        f"{_latency_sentence(compact.get('latency'))}"
    )


def _latency_sentence(latency: dict | None) -> str:
    """The compact model's time against the dense one's, when the export measured it (``--measure-latency``), with
    the conditions: the ratio carries to other machines better than the times, which are the exporting one's."""
    if latency is None:
        return ""
    return (
        f" Timed at export on {latency['device'].upper()} ({latency['threads']} threads, batch {latency['batch']}, "
        f"{latency['sequence_length']} tokens, the median of {latency['repeats']} forward passes each, the two "
        f"models taking turns in one process), it takes {latency['ratio']:.2f}× the dense masked model's time "
        f"({latency['compact_ms']:.3g} ms vs {latency['dense_ms']:.3g} ms on that machine)."
    )


def _bytes(size: int) -> str:
    """A file size as the Hub shows it (decimal units): 412.3 kB, 87.6 MB, 1.34 GB."""
    for unit, suffix, digits in ((1e9, "GB", 2), (1e6, "MB", 1), (1e3, "kB", 1)):
        if size >= unit:
            return f"{size / unit:.{digits}f} {suffix}"
    return f"{size} B"


def _controls_sentence(rows: list[LevelResult]) -> str:
    """What the controls in the table are, in the registry's words; nothing when the run had none."""
    present = [CONTROLS[name].description for name in CONTROLS if any(r.branch == name for r in rows)]
    return f" The controls ({'; '.join(present)}) show whether the ticket wins." if present else ""


def _test_sentence(config: RunConfig, rows: list[LevelResult], metric: Metric) -> str:
    """What the test columns are, when the run has them: the scores that choosing a level did not see."""
    if TEST_PREFIX + metric.name not in rows[0].scores:
        return ""
    data = config.data
    source = f"the {data.test_split!r} split" if data.test_split else f"the test file {Path(data.test_file).name}"
    return (
        f" The test columns score every level on {source}, which was never used to choose a level: levels are "
        f"compared on validation, which flatters the one chosen, so the test {metric.name} is the estimate to quote."
    )


def _replicates_sentence(facts: dict, metric: Metric) -> str:
    """How many replicates the run had and which one this repository is; nothing for a run without replicates."""
    if facts.get("metric_mean") is None:
        return ""
    return (
        f" The run had {facts['replicates']} replicates (the same IMP under different seeds): the table gives each "
        "level's mean ± std over them, and choosing the best level compares the means. This repository holds "
        f"replicate 0, whose own {metric.name} is {_show(metric, facts['metric_value'])} (mean "
        f"{_show(metric, facts['metric_mean'])} ± {_show(metric, facts['metric_std'])})."
    )


def _processes(count: int | None) -> str | None:
    """How many processes trained the level, which the command does not say (None: a level of an earlier version,
    which did not record it)."""
    return None if count is None else f"{count} process{'es' if count > 1 else ''}"


def _show(metric: Metric, value: float) -> str:
    """Scores on a 0-1 scale as points (87.5), others (perplexity, loss) as they are."""
    return f"{100 * value:.1f}" if metric.greater_is_better else f"{value:.2f}"


def merge_cards(existing: str, new: ModelCard) -> str:
    old = ModelCard(existing, ignore_metadata_errors=True)
    metadata = {**old.data.to_dict(), **{k: v for k, v in new.data.to_dict().items() if v is not None}}
    metadata["tags"] = sorted(set(old.data.tags or []) | set(new.data.tags or []))
    section = SECTION.search(new.text).group(0)
    body = SECTION.sub(lambda _: section, old.text) if SECTION.search(old.text) else f"{section}\n\n{old.text}"
    merged = ModelCard(f"---\n{ModelCardData(**metadata).to_yaml()}\n---\n{body.lstrip()}")
    return str(merged)


def _prune_description(config: RunConfig, facts: dict) -> str:
    if config.command == "finetune":
        start = "its rewind-point weights" if facts.get("from_init") else "its trained weights"
        base = facts["base_model"]
        ticket = f"lottery ticket {base}" if _on_hub(facts) else f"local lottery ticket `{Path(base).name}`"
        text = f"Fine-tuned from the {ticket} ({start}) with its mask fixed."
        source = facts.get("transferred_from_task_kind")
        if source and source != config.model.task_kind:
            text += (
                f" The ticket was found on the {source} objective and transferred to {config.model.task_kind}"
                " with a new task head (Chen et al. 2020's transfer setting)."
            )
        return text
    prune = config.prune
    imp = (
        f"Each level removed {prune.prune_fraction:.0%} of the surviving {_units(prune)} "
        f"({_strategy(prune)}), rewound the survivors and trained again."
    )
    if facts.get("branch") not in METHODS:
        return imp
    return (
        f"Its mask was drawn {_strategy(prune)}. The table's total steps count every "
        f"optimizer step a row cost, level 0 and the search for its mask included. The run's IMP levels: "
        f"{imp[0].lower()}{imp[1:]}"
    )


def _method(facts: dict, prune: PruneArguments | None) -> str:
    """How the shipped ticket was found, in the words of its method (IMP unless a cheaper method found it), named
    by the run's strategy (the card says how it scores in ``prune_description``)."""
    method = METHODS.get(facts.get("branch", ""))
    if method is None:
        strategy = prune.strategy if prune is not None else "magnitude"
        return f"iterative {strategy} pruning with rewinding (Frankle & Carbin 2019; Chen et al. 2020)"
    return f"{method.description} ({method.citation})"


def _noun(facts: dict, metric: Metric) -> str:
    """What the shipped level is: in its method's words when a method drew it; for IMP, a winning ticket, unless it
    was chosen by hand (``--level``), which makes it a pruned level at its distance from dense, winning or not."""
    method = METHODS.get(facts.get("branch", ""))
    if method is not None:
        return method.noun
    if not facts.get("chosen_by_hand") or facts.get("finetuned_from"):  # a fine-tuned ticket has its one level
        return "winning lottery ticket"
    value, dense = facts["metric_value"], facts["dense_metric_value"]
    if metric.greater_is_better:
        gap = 100 * (value - dense)
        distance = f"{abs(gap):.1f} points {'below' if gap < 0 else 'above'}"
    else:
        share = (value - dense) / dense
        distance = f"{abs(share):.1%} {'above' if share >= 0 else 'below'}"
    return f"pruned level, chosen by hand ({distance} the dense model's validation {metric.name}),"


def _files_table(facts: dict, rewind: str) -> str:
    """Each file of the repository and what it is for: which one a deployment needs, which the rewind point is for."""
    model = (
        "the trained ticket as a smaller stock model of the kept units"
        if facts.get("compact")
        else "the trained sparse model as a plain dense state dict, zeros in place"
    )
    rows = [
        ("`model.safetensors`, `config.json`, tokenizer files",
         f"{model}: what a deployment needs, and all it needs (stock `transformers` loads it)"),
    ]  # fmt: skip
    if facts.get("sparse_copy", True):
        sparse = "the same weights, sparse: survivors and a 1-bit-per-weight mask for each pruned tensor (a smaller "
        rows.append(("`model.sparse.safetensors`", sparse + "download for `load_ticket`)"))
    rows += [
        ("`masks.safetensors`", "the masks alone, bit-packed, keyed by parameter name"),
        ("`ticket.safetensors`", f"the ticket itself: the mask and the rewind-point weights ({rewind}), sparse: to "
                                 "train the ticket again from its rewind point, not to deploy"),
        ("`ticket.json`", "the facts: base model, task, every level's sparsity and metric, prune settings"),
    ]  # fmt: skip
    return "\n".join(["| file | what it is |", "|---|---|", *(f"| {name} | {what} |" for name, what in rows)])


def _strategy(prune: PruneArguments) -> str:
    """How the masks were drawn, in the registry's words: "by magnitude, one global threshold over all ..."."""
    scope = SCOPES[prune.scope]
    if prune.unit != "element":  # units are ranked within their block or all together, never per tensor
        scope = "the same fraction in each block" if prune.scope == "layer" else f"one ranking of all {_units(prune)}"
    return f"{STRATEGIES[prune.strategy].description}, {scope}"


def _units(prune: PruneArguments) -> str:
    """What the run's masks removed, in the card's words: weights, or the units that held them."""
    return "weights" if prune.unit == "element" else UNITS[prune.unit]
