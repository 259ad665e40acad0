"""Export one level of a finished run as a ticket repository folder (what ``push`` uploads).

The folder is written to a temporary sibling and renamed into place, so it is complete or absent.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model as load_weights_into
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

from . import __version__
from .card import render_card
from .config import FinetuneConfig, TrainingConfig, load_run_config
from .errors import LotteryError
from .paths import IMP, RunPaths
from .sparse import save_masks, save_sparse
from .storage import load_tensors, read_json, write_folder, write_json

DEFAULT_TOLERANCE = 0.01  # "matches dense": within one point of the metric (on a 0-1 scale)
MODEL_FILE, SPARSE_FILE, MASKS_FILE, TICKET_FILE, FACTS_FILE = (
    "model.safetensors", "model.sparse.safetensors", "masks.safetensors", "ticket.safetensors", "ticket.json",
)  # fmt: skip


@dataclass
class FinishedRun:
    paths: RunPaths
    config: TrainingConfig
    rows: list[dict]

    @classmethod
    def open(cls, run_dir: Path) -> FinishedRun:
        paths = RunPaths(Path(run_dir))
        if not paths.config.exists():
            raise LotteryError(f"{run_dir} is not an hf-lottery run directory (no config.json)")
        if not paths.results_json.exists():
            raise LotteryError(f"{run_dir} is not finished: run the same `hf-lottery prune` command again")
        return cls(paths, load_run_config(read_json(paths.config)), read_json(paths.results_json))

    @property
    def metric(self) -> str:
        return self.rows[0]["metric"]

    def choose_level(self, level: int | str, tolerance: float = DEFAULT_TOLERANCE) -> tuple[int, str]:
        """The IMP level to ship and why: a number, or ``best``, the sparsest level within tolerance of dense."""
        imp = {r["level"]: r for r in self.rows if r["branch"] == IMP}
        if level != "best":
            if int(level) not in imp:
                raise LotteryError(f"the run has no level {level}; its levels are 0..{max(imp)}")
            return int(level), f"chosen by hand (`--level {level}`)."
        dense = imp[0][self.metric]
        within = [n for n, r in imp.items() if r[self.metric] >= dense - tolerance]
        best = max(within, key=lambda n: imp[n]["sparsity"])
        return best, (
            f"the sparsest level whose {self.metric} is within {tolerance:g} of the dense model's "
            f"({imp[best][self.metric]:.4f} vs {dense:.4f}): the winning ticket."
        )

    def load_model(self, weights: Path) -> PreTrainedModel:
        config = AutoConfig.from_pretrained(self.paths.model_files)
        model = AutoModelForSequenceClassification.from_config(config)
        load_weights_into(model, str(weights))
        return model

    def facts(self, level: int, reason: str) -> dict:
        row = next(r for r in self.rows if r["branch"] == IMP and r["level"] == level)
        base = read_json(self.paths.model_files / "base_model.json")
        c = self.config
        return {
            "hf_lottery_version": __version__, "base_model": base["name"], "base_model_revision": base["revision"],
            "base_model_commit": base["commit"], "task": c.task, "train_file": c.train_file, "metric": self.metric,
            "level": level, "level_reason": reason, "sparsity": row["sparsity"], "metric_value": row[self.metric],
            "dense_metric_value": self.rows[0][self.metric], "levels": self.rows, "command": c.to_command(),
            "finetuned_from": base["name"] if isinstance(c, FinetuneConfig) else None,
            **{k: getattr(c, k, None) for k in ("rewind_to", "prune_fraction", "scope", "include", "exclude")},
            "controls": getattr(c, "control", []),
        }  # fmt: skip


def model_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """Parameters (a tied one once, under its ``named_parameters()`` name) and persistent buffers."""
    state = dict(model.named_parameters())
    aliases = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    state.update({k: v for k, v in model.state_dict().items() if k not in aliases})
    return state


def export_ticket(
    run_dir: Path,
    out_dir: Path,
    level: int | str = "best",
    tolerance: float = DEFAULT_TOLERANCE,
    repo_id: str | None = None,
    existing_card: str | None = None,
    license: str | None = None,
) -> dict:
    """Write the repository folder of one level; return its facts (also saved as ``ticket.json``)."""
    run = FinishedRun.open(run_dir)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise LotteryError(f"{out_dir} exists and is not empty")
    chosen, reason = run.choose_level(level, tolerance)
    level_paths = run.paths.level(IMP, chosen)
    masks = load_tensors(level_paths.mask)
    trained = run.load_model(level_paths.weights)
    rewind = run.load_model(run.paths.rewind_point)
    facts = run.facts(chosen, reason)
    repo_id = repo_id or out_dir.name
    card = render_card(facts, run.config, run.rows, repo_id, license, existing_card)

    def write(folder: Path) -> None:
        trained.save_pretrained(folder)
        for item in run.paths.model_files.iterdir():
            if item.name not in ("config.json", "base_model.json"):
                shutil.copy2(item, folder / item.name)
        save_masks(folder / MASKS_FILE, masks)
        save_sparse(folder / SPARSE_FILE, model_state(trained), masks)
        save_sparse(folder / TICKET_FILE, model_state(rewind), masks)
        write_json(folder / FACTS_FILE, facts)
        shutil.copy2(run.paths.plot, folder / run.paths.plot.name)
        (folder / "README.md").write_text(card, encoding="utf-8")

    if out_dir.exists():
        out_dir.rmdir()  # empty: replaced atomically below
    write_folder(out_dir, write)
    return facts
