"""Recovery: the pruned model of each post-training mask (``post-training``) fine-tuned with the mask fixed, so the
table shows it before and after, every kept weight trainable (``recover-adapter`` trains a masked adapter
instead). It starts from level 0's weights under the mask, which is the post-training level's model, and trains
the run's own model (no copy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hf_lottery.foundations.arguments import PruneArguments
from hf_lottery.foundations.storage import load_tensors
from hf_lottery.lottery.paths import IMP, LevelPaths, RunPaths

from .arguments import RecoverArguments
from .base import Method, PlanRow, RunContext

SOURCE = "post-training"  # the branch whose masks are recovered


class Recover(Method):
    name = "recover"
    label = "post-training, recovered (masked fine-tune)"
    style = "^-"
    citation = "the fine-tuning after pruning that Wanda's and SparseGPT's users ask for"
    description = "a post-training mask's pruned model fine-tuned with the mask fixed"
    noun = "fine-tuned post-training mask"
    arguments = RecoverArguments
    trains = SOURCE

    def asked(self) -> bool:
        return self.args.recover

    def settings(self) -> dict[str, Any]:
        return {f"{self.name.replace('-', '_')}_learning_rate": self.learning_rate}

    def plan(self, prune: PruneArguments, steps: int, plugins: Mapping[str, Any]) -> list[PlanRow]:
        return [(1, sparsity, steps, self.name) for sparsity in plugins[SOURCE].post_training]

    def train(self, run: RunContext) -> None:
        self.record_settings(run)
        for source in post_training_levels(run.paths):
            paths = run.paths.level(self.name, 1, clipped_to=source.clipped_to)
            if paths.is_done():
                continue
            mask = load_tensors(source.mask)
            with run.borrowed_model(run.paths.level(IMP, 0)) as model:
                run.train_and_save(
                    paths, model, mask, level=1, desc=f"{self.name} of {source.name}", adapter_rank=self.adapter_rank,
                    learning_rate=self.learning_rate,
                )  # fmt: skip

    @property
    def adapter_rank(self) -> int | None:
        return None

    @property
    def learning_rate(self) -> float | None:
        """Its own peak learning rate, or None for the run's."""
        return self.args.recover_learning_rate


def post_training_levels(paths: RunPaths) -> list[LevelPaths]:
    """The finished post-training levels, sparsest last."""
    return sorted(
        (level for level in map(LevelPaths, (paths.root / SOURCE).glob("level_*")) if level.is_done()),
        key=lambda level: level.clipped_to,
    )
