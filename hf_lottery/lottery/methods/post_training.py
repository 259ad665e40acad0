"""Post-training pruning, the way methods such as Wanda (Sun et al. 2023) are used on models too big for IMP: one
mask drawn straight from level 0's weights (the pretrained ones with ``--train-dense false``) by the run's
strategy, and the pruned model scored as it is, with no training. It is a one-shot mask, not a ticket that IMP
found: nothing is rewound or retrained, and the recovery methods (``recover``, ``recover-adapter``) train it after.

The model is pruned in place (the run's own, borrowed), so a model is never held twice. With a calibrated strategy
the statistics are gathered block by block over the pruned blocks before (``Run.draw_by_block``). An N:M pattern
(``--nm``) is drawn the same way, N kept of every M inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from hf_lottery.foundations.arguments import PruneArguments, TrainArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.lottery.paths import IMP
from hf_lottery.pruning.masks import prunable_weights, transposed_weights
from hf_lottery.pruning.selection import check_nm

from .arguments import PostTrainingArguments
from .base import Method, PlanRow, RunContext


class PostTraining(Method):
    name = "post-training"
    label = "post-training (no retraining)"
    style = "v:"
    citation = "Wanda (Sun et al. 2023) and SparseGPT (Frantar & Alistarh 2023) prune pretrained models this way"
    description = (
        "a one-shot mask drawn from the dense weights and scored without any training: a post-training mask, "
        "not an IMP ticket"
    )
    noun = "one-shot post-training mask"
    arguments = PostTrainingArguments
    scores_untrained = True
    by_block = True

    def asked(self) -> bool:
        return bool(self.args.post_training)

    def check_run(self, prune: PruneArguments, train: TrainArguments) -> None:
        if self.args.nm is None:
            return
        if prune.unit != "element":
            raise LotteryError(f"--nm {self.args.nm} groups single weights; it does not take --unit {prune.unit}")
        if prune.levels or prune.target_sparsity is not None:
            raise LotteryError(
                f"--nm {self.args.nm} is a pattern of post-training masks; IMP's levels cannot keep it: drop "
                "--levels and --target-sparsity"
            )

    def check_model(self, model: nn.Module, prunable: list[str]) -> None:
        if self.args.pattern is not None:
            shapes = {name: p.shape for name, p in prunable_weights(model, prunable).items()}
            check_nm(shapes, *self.args.pattern, transposed_weights(model, prunable))

    def settings(self) -> dict[str, Any]:
        return {"nm": self.args.nm}

    def plan(self, prune: PruneArguments, steps: int, plugins: Mapping[str, Any]) -> list[PlanRow]:
        return [(1, sparsity, 0, self.name) for sparsity in self.args.post_training]

    def train(self, run: RunContext) -> None:
        self.record_settings(run)
        for sparsity in self.args.post_training:
            paths = run.paths.level(self.name, 1, clipped_to=sparsity)
            if paths.is_done():
                continue
            what = f"post-training to {sparsity:.1%}"
            with run.borrowed_model(run.paths.level(IMP, 0)) as model:
                mask = run.draw_by_block(model, 1.0 - sparsity, what=what, pattern=self.args.pattern)
                run.evaluate_and_save(paths, model, mask, desc=what)
