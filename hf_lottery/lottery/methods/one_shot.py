"""One-shot magnitude pruning (OMP, as BERT-Tickets reports beside IMP): the dense level-0 weights pruned straight
to each target, rewound and trained once. A sparsity sweep costs one training per target instead of a level per
pruning step, and shows what the iterations of IMP buy.

Fine-tuning that barely moves the weights (a short one, from pretrained weights) leaves their magnitudes ranked as
before, so the one-shot mask is then the mask of the rewind weights: a draw that shares more than 98% of its
weights with that mask is warned of.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from hf_lottery.foundations.arguments import PruneArguments
from hf_lottery.foundations.storage import load_tensors
from hf_lottery.lottery.paths import IMP, LevelPaths
from hf_lottery.pruning.masks import Mask, prunable_weights

from .arguments import OneShotArguments
from .base import Method, PlanRow, RunContext


class OneShot(Method):
    name = "one-shot"
    label = "one-shot (OMP)"
    style = "D-."
    citation = "Chen et al. 2020 report it beside IMP"
    description = "one-shot pruning of the dense fine-tuned weights to the target, then rewound and trained"

    arguments = OneShotArguments

    def asked(self) -> bool:
        return bool(self.args.one_shot)

    def plan(self, prune: PruneArguments, steps: int, plugins: Mapping[str, Any]) -> list[PlanRow]:
        return [(1, sparsity, steps, self.name) for sparsity in self.args.one_shot]

    def train(self, run: RunContext) -> None:
        dense = run.paths.level(IMP, 0)
        for sparsity in self.args.one_shot:
            paths = run.paths.level(self.name, 1, clipped_to=sparsity)
            if paths.is_done():
                continue
            mask = run.shared_mask(partial(self._draw, run, dense, sparsity))
            run.train_from_rewind(paths, mask, level=1, desc=f"one-shot to {sparsity:.1%}")

    @staticmethod
    def _draw(run: RunContext, dense: LevelPaths, sparsity: float) -> Mask:
        model = run.trained_model(dense)
        weights, previous = prunable_weights(model, run.prunable), load_tensors(dense.mask)
        what = f"one-shot to {sparsity:.1%}"
        mask = run.draw_mask(model, weights, previous, 1.0 - sparsity, what=what)
        run.warn_if_untrained(mask, 1.0 - sparsity, what=what)
        return mask
