"""Export one level of a finished run as a ticket repository folder (what ``push`` uploads).

The folder is written to a temporary sibling and renamed into place, so it is complete or absent; a sibling lock
(``.OUT.lock`` for folder ``OUT``) keeps two exports from writing the same folder at once.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model as load_weights_into
from transformers import AutoConfig, PreTrainedModel

from hf_lottery.foundations.arguments import DEFAULT_TOLERANCE
from hf_lottery.foundations.errors import LotteryError, NoTicketError
from hf_lottery.foundations.storage import (
    disk_full_line,
    load_tensors,
    read_json,
    remove_killed_writes,
    safetensors_read,
    write_folder,
    write_json,
)
from hf_lottery.foundations.version import __version__
from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.paths import IMP, LevelPaths, RunPaths
from hf_lottery.lottery.rows import LevelResult, best_scoring, best_ticket, read_results
from hf_lottery.lottery.rundir import folder_lock, read_run_config, weights_kept
from hf_lottery.pruning.masks import apply_mask
from hf_lottery.pruning.units import UNIT_TYPES
from hf_lottery.training.tasks import Metric, TaskKind, get_task_kind

from .artifacts import refuse_artifacts, ship_artifacts
from .card import render_card
from .compact import compaction, compare_latency, refuse_uncompactable
from .provenance import shareable_facts, shareable_rows
from .sparse import save_masks, save_sparse
from .vocab import trim_run

MODEL_FILE, SPARSE_FILE, MASKS_FILE, TICKET_FILE, FACTS_FILE = (
    "model.safetensors", "model.sparse.safetensors", "masks.safetensors", "ticket.safetensors", "ticket.json",
)  # fmt: skip


@dataclass
class FinishedRun:
    paths: RunPaths
    config: RunConfig
    rows: list[LevelResult]

    @classmethod
    def open(cls, run_dir: Path) -> FinishedRun:
        paths = RunPaths(Path(run_dir))
        if not paths.config.exists():
            raise LotteryError(f"{run_dir} is not an hf-lottery run directory (no config.json)")
        values = read_run_config(paths, "give the run directory that `hf-lottery prune` wrote")
        if not paths.results_json.exists():
            raise LotteryError(f"{run_dir} is not finished: run the same `hf-lottery prune` command again")
        return cls(paths, RunConfig.from_dict(values), read_results(paths))

    @property
    def kind(self) -> TaskKind:
        if self.config.model.task_kind is None:
            raise LotteryError(
                f"{self.paths.root}: its model has a head of no task kind hf-lottery knows, so it cannot be exported"
            )
        return get_task_kind(self.config.model.task_kind)

    @property
    def metric(self) -> Metric:
        return self.rows[0].main_metric

    def choose_level(self, level: int | str, tolerance: float = DEFAULT_TOLERANCE) -> tuple[LevelResult, str]:
        """The level to ship and why: an IMP level number (a trunk level before a clipped one of the same number),
        a level's folder (``one-shot/level_1_to_90.00``), or ``best``: the sparsest ticket within tolerance of
        dense, of IMP or a cheaper method (the better one at equal sparsity; controls are never shipped).
        Returns its result row; refuses a level whose trained weights were not kept, and ``best`` when no pruned
        level is within tolerance (``NoTicketError``: the dense model is no winning ticket).

        ``best`` compares validation scores only: the test scores (``test_*``) are never read here, so they stay
        an estimate of the chosen level that the choice did not flatter. With replicates it compares their means
        (dense's too), so one lucky seed does not choose the level; the weights shipped are replicate 0's.
        """
        row, reason = self._find_level(level, tolerance)
        if not weights_kept(self.level_paths(row)):
            raise LotteryError(
                f"the trained weights of {row.path} were not kept (--keep-weights needed): export the best "
                "level, or rerun that level with --keep-weights all in another run directory"
            )
        return row, reason

    def _find_level(self, level: int | str, tolerance: float) -> tuple[LevelResult, str]:
        imp = [r for r in self.rows if r.branch == IMP]
        if isinstance(level, str) and "/" in level:
            row = next((r for r in self.rows if r.path == level.strip("/")), None)
            if row is None:
                names = ", ".join(r.path for r in self.rows)
                raise LotteryError(f"the run has no level {level!r}; its levels are {names}")
            return row, f"chosen by hand (`--level {level}`)."
        if level != "best":
            matches = sorted((r for r in imp if r.level == int(level)), key=lambda r: r.is_clipped)
            if not matches:
                raise LotteryError(f"the run has no level {level}; its levels are 0..{max(r.level for r in imp)}")
            return matches[0], f"chosen by hand (`--level {level}`)."
        best = best_ticket(self.rows, tolerance)
        metric, dense = self.metric, imp[0]
        replicated = dense.mean is not None
        what = f"mean validation {metric.name} over its replicates" if replicated else f"validation {metric.name}"
        if best is None:
            raise self._no_ticket(tolerance, what)
        how = f"within {tolerance:g}" if metric.greater_is_better else f"at most {tolerance:.0%} above"
        return best, (
            f"the sparsest level whose {what} is {how} the dense model's ({best.compared_value:.4f} vs "
            f"{dense.compared_value:.4f}): the winning ticket."
        )

    def _no_ticket(self, tolerance: float, what: str) -> NoTicketError:
        """Why ``best`` has nothing to ship, naming the best-scoring pruned level and how far it is from dense."""
        dense, closest = self.rows[0], best_scoring(self.rows)
        if closest is None:
            return NoTicketError("the run has no pruned level, only the dense model", "0")
        if dense.untrained_head:
            return NoTicketError(
                "level 0 is the pretrained model under a new head it was never trained with, so no level can be "
                f"said to match it; the best-scoring pruned level is {closest.path}",
                str(closest.level) if closest.on_trunk else closest.path,
            )
        metric, gap = self.metric, closest.compared_value - dense.compared_value
        if metric.greater_is_better:
            allowed, distance = f"{tolerance:g}", f"{-gap:.4f} below" if gap < 0 else f"{gap:.4f} above"
        else:  # a share of dense, as --tolerance is for these metrics
            share = gap / dense.compared_value
            allowed, distance = f"{tolerance:.0%}", f"{share:.1%} above" if share >= 0 else f"{-share:.1%} below"
        return NoTicketError(
            f"no pruned level is within the tolerance ({allowed}) of the dense model's {what} "
            f"({dense.compared_value:.4f}): the best, {closest.path} ({closest.sparsity:.1%} sparse, "
            f"{closest.compared_value:.4f}), is {distance} it",
            str(closest.level) if closest.on_trunk else closest.path,
        )

    def level_paths(self, row: LevelResult) -> LevelPaths:
        """The folder of a result row in this run directory."""
        return LevelPaths(self.paths.root / row.path)

    def load_model(self, weights: Path, hint: str | None = None) -> PreTrainedModel:
        """The run's model holding ``weights``; ``hint`` says what to do if the file is damaged."""
        config = AutoConfig.from_pretrained(self.paths.model_files)
        model = self.kind.auto_model.from_config(config)
        with safetensors_read(weights, hint):
            load_weights_into(model, str(weights))
        return model

    def facts(self, row: LevelResult, reason: str) -> dict:
        base = read_json(self.paths.model_files / "base_model.json")  # "local" is new; Hub models had a commit
        c, metric, dense = self.config, self.metric, self.rows[0]
        prune = dataclasses.asdict(c.prune) if c.prune else {}
        return {
            "hf_lottery_version": __version__, "base_model": base["name"], "base_model_revision": base["revision"],
            "base_model_commit": base["commit"], "base_model_local": base.get("local", base["commit"] is None),
            "task_kind": c.model.task_kind, "task": c.data.task,
            "dataset_name": c.data.dataset_name, "train_file": c.data.train_file,
            "metric": metric.name, "greater_is_better": metric.greater_is_better,
            "level": row.level, "branch": row.branch, "level_reason": reason, "sparsity": row.sparsity,
            "unit": row.unit or "element", "unit_sparsity": row.unit_sparsity,
            "metric_value": row.value, "dense_metric_value": dense.value, "levels": [r.to_dict() for r in self.rows],
            "test_file": c.data.test_file, "test_split": c.data.test_split,
            "test_metric_value": row.test_value, "dense_test_metric_value": dense.test_value,
            "command": row.command or c.to_command(), "processes": row.processes,
            "finetuned_from": base["name"] if c.command == "finetune" else None,
            "transferred_from_task_kind": base.get("task_kind") if c.command == "finetune" else None,
            "from_init": base.get("from_init"),
            **{k: prune.get(k) for k in ("rewind_to", "prune_fraction", "scope", "include", "exclude")},
            "controls": prune.get("control", []),
            "replicates": len(dense.replicates or [None]), "metric_mean": row.mean, "metric_std": row.std,
            "metric_replicates": row.replicates, "dense_metric_mean": dense.mean, "dense_metric_std": dense.std,
        }  # fmt: skip


def model_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """Parameters (a tied one once, under its ``named_parameters()`` name) and persistent buffers."""
    state = dict(model.named_parameters())
    aliases = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    state.update({k: v for k, v in model.state_dict().items() if k not in aliases})
    return state


@dataclass(frozen=True)
class ShipOptions:
    """What of a finished run ships, and in which form: ``export_ticket``, ``push_ticket`` and the ``export`` and
    ``push`` commands take the same options (as this object, or as keywords).

    ``level`` is an IMP level number, a level's folder as ``results.md`` names it (``"one-shot/level_1_to_90.00"``)
    or ``"best"``: the sparsest ticket within ``tolerance`` of dense (in metric units). ``compact`` writes a neuron,
    head or layer ticket as the smaller stock model of its kept units (``hf_lottery.tickets.compact``): its weights,
    rewind point and masks all cut the same way. ``measure_latency`` times it against the dense masked model, on
    CPU, batch 1, at the run's ``--max-length`` (``hf_lottery.tickets.compact.compare_latency``); the ratio and its
    conditions go to ``ticket.json`` and the card, which is then no longer the same on every export.

    ``trim_vocab`` (a list of text files, empty for the run's own training and validation data) keeps only the
    token ids of that text (``hf_lottery.tickets.vocab``); ``onnx`` adds ``onnx/model.onnx``, checked against
    PyTorch, and ``int8`` its quantized twin (``hf_lottery.tickets.onnx``). What changed form is scored again
    (``facts["artifacts"]``), and with ``measure_latency`` and ``onnx`` each artifact is timed against the dense
    masked model (``hf_lottery.tickets.artifacts``).
    """

    level: int | str = "best"
    tolerance: float = DEFAULT_TOLERANCE
    compact: bool = False
    measure_latency: bool = False
    trim_vocab: list[str] | None = None
    onnx: bool = False
    int8: bool = False

    def __post_init__(self) -> None:
        if self.measure_latency and not (self.compact or self.onnx):  # a ratio to the dense model needs a pair
            raise LotteryError(
                "--measure-latency times the compact model (or the ONNX files) against the dense one: add --compact or "
                "--onnx"
            )
        refuse_artifacts(self.onnx, self.int8)

    @classmethod
    def given(cls, options: ShipOptions | None, keywords: dict) -> ShipOptions:
        """``options`` with ``keywords`` (its fields) in place; the defaults where neither gives one."""
        return dataclasses.replace(options or cls(), **keywords)


def export_ticket(
    run_dir: Path,
    out_dir: Path,
    options: ShipOptions | None = None,
    *,
    repo_id: str | None = None,
    existing_card: str | None = None,
    license: str | None = None,
    **ship,
) -> dict:
    """Write the repository folder of one level (``options``, or their fields as keywords: ``ShipOptions``);
    return its facts (also saved as ``ticket.json``).

    ``repo_id``, the Hub repository the folder is for, names the model in its card and is what the card's examples
    load; without it they load ``out_dir``, and the name says what the ticket is (base model, data, sparsity).
    """
    options = ShipOptions.given(options, ship)
    level, tolerance, compact = options.level, options.tolerance, options.compact
    run = FinishedRun.open(run_dir)
    out_dir = Path(out_dir)
    _refuse_non_empty(out_dir)
    unit = refuse_unshippable(run, options)
    chosen, reason = run.choose_level(level, tolerance)
    level_paths = run.level_paths(chosen)
    rerun = f"remove {level_paths.root} and run the run's `hf-lottery prune` command again, which retrains that level"
    masks = load_tensors(level_paths.mask, rerun)
    at_rewind = not level_paths.weights.exists()  # the rewind point under the mask (``rundir.AT_REWIND``)
    level_masks = masks

    def load_trained() -> PreTrainedModel:
        """The level's trained model, dense, from its own weights or the rewind point under its mask."""
        model = run.load_model(run.paths.rewind_point if at_rewind else level_paths.weights, rerun)
        if at_rewind:
            apply_mask(model, level_masks)
        return model

    trained = load_trained()
    facts = shareable_facts(run.facts(chosen, reason), run.config)  # published: names, not local paths
    facts["chosen_by_hand"] = level != "best"
    cut = None
    if compact:
        cut = compaction(trained, masks, unit)
        dense = trained
        trained, masks = cut.cut_model(dense), cut.cut(masks)
        facts["compact"] = {
            "config_changes": {field: list(change) for field, change in cut.changes.items()}, "padded": cut.padded,
            "dense_parameters": dense.num_parameters(), "compact_parameters": trained.num_parameters(),
            # the level's weights, the dense model's state (the rewind point's file when it wrote none)
            "dense_bytes": (run.paths.rewind_point if at_rewind else level_paths.weights).stat().st_size,
        }  # fmt: skip
        if options.measure_latency:
            ids = torch.randint(dense.get_input_embeddings().num_embeddings, (1, run.config.data.max_length),
                                generator=torch.Generator().manual_seed(0))  # fmt: skip
            facts["compact"]["latency"] = compare_latency(dense, trained, ids)
        del dense
    trim = None
    if options.trim_vocab is not None:
        vocab_size = trained.config.vocab_size
        trim, facts["vocabulary"] = trim_run(run.config, run.paths.model_files, vocab_size, options.trim_vocab)
        before = trained.num_parameters()
        masks = trim.cut(masks, trim.cut_model(trained))
        facts["vocabulary"]["parameters_removed"] = before - trained.num_parameters()
    models = [trained]  # handed to write, which drops it before it reads the rewind point: one model at a time
    del trained

    def write(folder: Path) -> None:
        model = models.pop()
        model.save_pretrained(folder)
        # what save_pretrained wrote (shards too), before any other weights file is there
        model_bytes = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
        if cut is not None:
            facts["compact"]["compact_bytes"] = model_bytes
        for item in run.paths.model_files.iterdir():
            if item.name not in ("config.json", "base_model.json"):
                shutil.copy2(item, folder / item.name)
        if trim is not None:
            trim.write_tokenizer(folder)
        if trim is not None or options.onnx:
            dense = load_trained if options.measure_latency and options.onnx else None
            facts["artifacts"] = ship_artifacts(model, run.config, folder, options.onnx, options.int8, tolerance, dense)
        save_sparse(folder / SPARSE_FILE, model_state(model), masks)
        del model
        if (folder / SPARSE_FILE).stat().st_size >= model_bytes:  # a compact ticket's: a third copy, none smaller
            (folder / SPARSE_FILE).unlink()
        facts["sparse_copy"] = (folder / SPARSE_FILE).exists()
        card = render_card(facts, run.config, shareable_rows(run.rows), repo_id, license, existing_card, str(out_dir))
        save_masks(folder / MASKS_FILE, masks)
        rewind = run.load_model(run.paths.rewind_point)
        rewind = rewind if cut is None else cut.cut_model(rewind)
        if trim is not None:
            trim.cut_model(rewind)
        save_sparse(folder / TICKET_FILE, model_state(rewind), masks)
        write_json(folder / FACTS_FILE, facts)
        shutil.copy2(run.paths.plot, folder / run.paths.plot.name)
        (folder / "README.md").write_text(card, encoding="utf-8")

    target = out_dir.resolve()
    lock = target.with_name(f".{target.name}.lock")  # beside the folder, never in what is shipped
    with folder_lock(lock, out_dir, "wait for it to end, or export into another folder"):
        _refuse_non_empty(out_dir)  # again: another export may have written it since
        remove_killed_writes(out_dir)  # no export to it is running: what one left is a killed export's
        if out_dir.exists():
            out_dir.rmdir()  # empty: replaced atomically below
        with disk_full_line(out_dir, lambda: "nothing was written (the folder is written whole or not at all)"):
            write_folder(out_dir, write)
    return facts


def refuse_unshippable(run: FinishedRun, options: ShipOptions) -> str:
    """Refuse, from the run's config and results (before anything is written or reaches the Hub), a ticket whose
    units the export asked for cannot ship; return the unit. The dense level removes nothing, so it ships at the
    dense depth whatever the unit."""
    unit = run.config.prune.unit if run.config.prune else "element"
    if options.compact:
        refuse_uncompactable(unit)
    elif UNIT_TYPES[unit].skips_removed and run.choose_level(options.level, options.tolerance)[0].level > 0:
        raise LotteryError(
            f"a {unit} ticket's removed blocks, zeroed in a model of the dense depth, would still add their biases and "
            "apply their LayerNorms: export it with --compact, which writes the model without them"
        )
    return unit


def _refuse_non_empty(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise LotteryError(f"{out_dir} is a file, not a folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise LotteryError(f"{out_dir} exists and is not empty")
