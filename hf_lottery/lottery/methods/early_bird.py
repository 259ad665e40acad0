"""Early-bird tickets (You et al. 2020; EarlyBERT, Chen et al. 2021): the mask of the next level settles long
before a level's training ends, so IMP's search levels stop there.

Each search level trains its mask from the rewind point and, every ``--early-bird-every`` optimizer steps,
draws the next level's mask from the live weights (the run's strategy, no copy of the model). The distance
between two successive draws is the share of the level's surviving weights whose bit changed; once
``--early-bird-window`` distances in a row are below ``--early-bird-threshold`` the level stops, and the
mask drawn there is the next level's. A level that never settles trains to its end.

Each draw is also compared with the level's step-0 draw, the mask drawn from the rewind weights before any
step. Fine-tuning from pretrained weights may move them too little to change that mask: successive draws then
agree from the start, and the rule stops as early as it can. A level that stops with its draw still under the
threshold from the step-0 draw has *not moved*; the run says so, and its search record keeps it, since the mask
it hands on is the rewind weights' own: early-bird there is one-shot pruning of the rewind weights. A trained
mask that shares more than 98% of its weights with the rewind weights' own is warned of too.

A stopped level's metric would not be comparable, so search levels are search-only: the masks at the asked
sparsities are drawn at the stop of the search level that crosses them (as a clipped IMP level is) and trained
fully from the rewind point; only those enter the table. Level 1's mask comes from the fully trained dense
level 0, which every branch shares. Search levels keep no checkpoints (``--save-steps``): where one stops
depends on every draw before, so a killed search level restarts, and is short anyway.

    early-bird/settings.json        every, window, threshold and the stopping rule: the search depends on them
    early-bird/search_K/            mask.safetensors (what level K trained), search.json (stop step, distances,
                                    whether the mask moved from the step-0 draw)
    early-bird/level_K_to_S/        a trained level at sparsity S, drawn at the stop of search level K-1
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from hf_lottery.foundations.arguments import PruneArguments, TrainArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import atomic_path, load_tensors, read_json, save_tensors, write_json
from hf_lottery.lottery.paths import IMP, RunPaths
from hf_lottery.pruning.masks import Mask, apply_mask, prunable_weights

from .arguments import EarlyBirdArguments
from .base import SETTINGS, Method, PlanRow, RunContext

SEARCH_SETTINGS = ("early_bird_every", "early_bird_window", "early_bird_threshold")
# Recorded beside them: search levels stopped by another rule (hf-lottery before it, with no "stop_rule") are
# never mixed with these.
STOP_RULE = "settled: a window of distances below the threshold; not moved: still below it from the step-0 draw"


RECORD = "search.json"
DISTANCE_PLOT = "early_bird_distances.png"


def mask_distance(a: Mask, b: Mask, alive: int) -> float:
    """The share of ``alive`` weights whose mask bit differs between ``a`` and ``b`` (normalised Hamming)."""
    return sum(int((a[name] ^ b[name]).sum()) for name in a) / max(alive, 1)


class EarlyBird(Method):
    name = "early-bird"
    label = "early-bird IMP"
    style = "v-."
    citation = "You et al. 2020; Chen et al. 2021"
    description = (
        "early-bird IMP: each search level stopped once its next mask settled, the mask at the target trained fully"
    )

    arguments = EarlyBirdArguments
    stops_levels = True

    def asked(self) -> bool:
        return bool(self.args.early_bird)

    def check_run(self, prune: PruneArguments, train: TrainArguments) -> None:
        needed = self.args.early_bird_every * self.args.early_bird_window
        if train.max_steps is not None and train.max_steps < needed:
            raise LotteryError(
                f"--early-bird needs at least --early-bird-every x --early-bird-window = {needed} steps per "
                f"level, but --max-steps is {train.max_steps}"
            )

    def settings(self) -> dict[str, Any]:
        return {**{k: getattr(self.args, k) for k in SEARCH_SETTINGS}, "stop_rule": STOP_RULE}

    def check(self, paths: RunPaths) -> None:
        file = paths.root / self.name / SETTINGS
        if file.is_file() and read_json(file).get("stop_rule") != STOP_RULE:
            raise LotteryError(
                f"{paths.root}'s early-bird levels were searched by an older hf-lottery, with another stopping rule; "
                "give another --output-dir"
            )
        super().check(paths)

    def search_folder(self, paths: RunPaths, level: int) -> Path:
        return paths.root / self.name / f"search_{level}"

    def search_steps(self, paths: RunPaths, level: int) -> int:
        """Steps of the search levels before ``level`` (search level K-1 drew the mask of level K)."""
        return sum(read_json(self.search_folder(paths, k) / RECORD)["stopped_at"] for k in range(1, level))

    def results_section(self, paths: RunPaths) -> str:
        return _results_section(paths)

    def plan(self, prune: PruneArguments, steps: int, plugins: Mapping[str, Any]) -> list[PlanRow]:
        return [("-", sparsity, steps, self.name) for sparsity in self.args.early_bird]

    def search_levels(self, prune: PruneArguments) -> int:
        """At most this many search levels: those before the level that reaches the highest target."""
        return level_of(self.args.early_bird[-1], 1.0 - prune.prune_fraction) - 1

    def train(self, run: RunContext) -> None:
        self.record_settings(run)
        keep = 1.0 - run.prune.prune_fraction
        targets = self.args.early_bird
        for level in range(level_of(targets[-1], keep)):  # search level L draws the masks of level L + 1
            crossed = [t for t in targets if level_of(t, keep) == level + 1]
            if level == 0:  # level 0 is IMP's, trained fully: its weights give level 1's masks
                dense = run.paths.level(IMP, 0)
                if run.accelerator.is_main_process and self._missing(run, 1, crossed):
                    model = run.trained_model(dense)
                    self._draw(run, model, prunable_weights(model, run.prunable), load_tensors(dense.mask), 1, crossed)
                run.accelerator.wait_for_everyone()
            elif self._missing(run, level + 1, crossed) or not (self.search_folder(run.paths, level) / RECORD).exists():
                self._search(run, level, crossed)
        for target in targets:
            paths = run.paths.level(self.name, level_of(target, keep), clipped_to=target)
            if not paths.is_done():
                mask = run.shared_mask(lambda: load_tensors(paths.mask))  # noqa: B023 (called at once)
                run.train_from_rewind(paths, mask, level=paths.number, desc=f"early-bird to {target:.1%}")

    def _outputs(self, run: RunContext, level: int, crossed: list[float]) -> dict[float | None, Path]:
        """The masks drawn for ``level``: the search level's (key None) and those of the targets it crosses."""
        out: dict[float | None, Path] = {None: self.search_folder(run.paths, level) / "mask.safetensors"}
        return out | {t: run.paths.level(self.name, level, clipped_to=t).mask for t in crossed}

    def _missing(self, run: RunContext, level: int, crossed: list[float]) -> bool:
        return not all(path.exists() for path in self._outputs(run, level, crossed).values())

    def _draw(
        self, run: RunContext, model: nn.Module, weights: dict, previous: Mask, level: int, crossed: list[float]
    ) -> None:
        """Save the masks of ``level`` drawn from ``weights`` (those of search level ``level - 1`` where it stopped)."""
        keep = 1.0 - run.prune.prune_fraction
        for target, path in self._outputs(run, level, crossed).items():
            if not path.exists():
                density = keep**level if target is None else 1.0 - target
                mask = run.draw_mask(model, weights, previous, density, what=f"early-bird level {level}")
                if target is not None:
                    run.warn_if_untrained(mask, density, what=f"early-bird to {target:.1%}")
                save_tensors(path, mask)

    def _search(self, run: RunContext, level: int, crossed: list[float]) -> None:
        """Train search level ``level`` until the next mask settles; save what it drew and where it stopped."""
        folder = self.search_folder(run.paths, level)
        prune_args, own = run.prune, self.args
        mask = run.shared_mask(lambda: load_tensors(folder / "mask.safetensors"))
        alive = sum(int(m.sum()) for m in mask.values())
        next_density = (1.0 - prune_args.prune_fraction) ** (level + 1)
        model = copy.deepcopy(run.model)
        apply_mask(model, mask)
        weights = prunable_weights(model, run.prunable)  # the live parameters: each check reads them in place
        seen: dict = {"start": None, "mask": None, "below": 0, "distances": [], "moved": [], "settled": False}

        def check(step: int, _model) -> bool:
            if step % own.early_bird_every:
                return False
            settled = None
            if run.accelerator.is_main_process:
                drawn = run.draw_mask(model, weights, mask, next_density, what=None)
                if seen["mask"] is None:
                    seen["start"] = drawn  # step 0: the mask of the rewind weights
                else:
                    distance = mask_distance(drawn, seen["mask"], alive)
                    seen["distances"].append([step, distance])
                    seen["moved"].append([step, mask_distance(drawn, seen["start"], alive)])
                    seen["below"] = seen["below"] + 1 if distance < own.early_bird_threshold else 0
                seen["mask"] = drawn
                settled = seen["below"] >= own.early_bird_window
            seen["settled"] = run.shared_flag(settled)
            return seen["settled"]

        sparsity = 1.0 - (1.0 - prune_args.prune_fraction) ** level
        desc = f"early-bird search level {level} (sparsity {sparsity:.1%})"
        tag = run.tag(f"{self.name}/search_{level}")
        result = run.train_level(model, mask, level=level, desc=desc, tag=tag, on_step=check)
        if run.accelerator.is_main_process:
            moved = seen["moved"][-1][1] if seen["moved"] else 0.0
            unmoved = seen["settled"] and moved < own.early_bird_threshold
            if unmoved:
                run.warn(
                    f"{desc} settled at step {result['steps']} with its mask at distance {moved:.4f} from the step-0 "
                    f"draw, under the threshold {own.early_bird_threshold:g}: the mask has not moved, so early-bird "
                    "here is one-shot pruning of the rewind weights"
                )
            self._draw(run, model, weights, mask, level + 1, crossed)
            write_json(
                folder / RECORD,
                {"level": level, "sparsity": 1.0 - alive / sum(m.numel() for m in mask.values()),
                 "stopped_at": result["steps"], "settled": seen["settled"], "moved": moved, "unmoved": unmoved,
                 "distances": seen["distances"], "distances_from_start": seen["moved"]},
            )  # fmt: skip
        run.accelerator.wait_for_everyone()


def level_of(target: float, keep: float) -> int:
    """The level whose geometric sparsity first reaches ``target``: its mask is drawn at the stop of the one before."""
    level = 1
    while 1.0 - keep**level < target - 1e-12:
        level += 1
    return level


def _search_records(paths: RunPaths) -> list[dict]:
    folders = (paths.root / EarlyBird.name).glob("search_*")
    return sorted((read_json(f / RECORD) for f in folders if (f / RECORD).exists()), key=lambda r: r["level"])


def _results_section(paths: RunPaths) -> str:
    """The search levels: where each stopped, of how many steps, and the mask distances it saw (and a plot)."""
    records = _search_records(paths)
    if not records:
        return ""
    lines = [
        "## Early-bird search",
        "",
        "Search levels are stopped once the next mask settles; they are not evaluated (search only).",
        "",
        "| search level | sparsity | stopped at step | settled | last mask distances | distance from the step-0 draw |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        last = ", ".join(f"{d:.3f}" for _, d in r["distances"][-5:])
        settled = "not moved" if r.get("unmoved") else "yes" if r["settled"] else "no"
        moved = f"{r['moved']:.3f}" if "moved" in r else "not recorded"  # searched before hf-lottery recorded it
        lines.append(f"| {r['level']} | {r['sparsity']:.1%} | {r['stopped_at']} | {settled} | {last} "
                     f"| {moved} |")  # fmt: skip
    if any(r.get("unmoved") for r in records):
        lines += [
            "",
            "*Not moved*: the level settled with its mask still within the threshold of its step-0 draw, the mask of "
            "the rewind weights, so early-bird there is one-shot pruning of the rewind weights.",
        ]
    _plot_distances(records, paths.root / DISTANCE_PLOT)
    return "\n".join([*lines, "", f"![mask distances]({DISTANCE_PLOT})", ""])


def _plot_distances(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for r in records:
        if r["distances"]:
            steps, distances = zip(*r["distances"], strict=True)
            (line,) = ax.plot(steps, distances, ".-", label=f"search level {r['level']} ({r['sparsity']:.0%})")
            if r.get("distances_from_start"):
                steps, moved = zip(*r["distances_from_start"], strict=True)
                ax.plot(steps, moved, ":", color=line.get_color())
    ax.set_xlabel("optimizer step of the search level")
    ax.set_ylabel("mask distance to the last check\n(dotted: to the step-0 draw)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
