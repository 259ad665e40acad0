"""What a pruning strategy is: the scoring rule that ranks a level's weights for the next level's mask.

A new strategy is one module with a subclass of ``PruningStrategy`` plus one line in
``hf_lottery.pruning.strategies.STRATEGIES``; ``--strategy NAME`` chooses it. A subclass sets ``name`` and
``description`` (the card's words for it), optionally ``arguments`` (a dataclass of its own options, see ``Plugin``),
and implements ``scores``: one non-negative score per weight, higher kept. The run allocates the kept share among
the scores (``--scope``: one global threshold, the same fraction per tensor, or per output row), only among
weights still alive (masks only shrink), keeping exactly the survivors the density asks for, with ties broken by
position, never by chance, so that a resumed run computes the same mask. A strategy that needs more than a rule
over scores overrides ``prune`` (one that scores whole units from what they output hands its unit scores to
``keep_units``). A calibrated strategy (``calibrated``, scoring from training examples) names the option that says
how many in ``samples_option``; the run refuses, before anything is written, more than the data holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.registry import Plugin
from hf_lottery.pruning.masks import Mask
from hf_lottery.pruning.selection import keep_counts, magnitude_prune, nm_prune, row_prune
from hf_lottery.pruning.units import ELEMENT, Units


@dataclass(frozen=True)
class ScoringContext:
    """Everything one draw of a mask may score from.

    ``weights`` are the parameters being pruned (the trained weights of the level before, or the live weights
    of an early-bird check), ``previous`` the mask they are pruned inside, ``density`` the share of the prunable
    weights (or units) to keep, ``units`` what is kept or removed as one (``hf_lottery.pruning.units``; single weights
    by default), ``pattern`` an N:M pattern that replaces the scope's allocation. ``input_norms``
    gives, on request, calibration statistics of the same weights (see its docstring).
    """

    weights: Mapping[str, torch.Tensor]
    previous: Mask
    density: float
    scope: str = "global"
    units: Units = ELEMENT
    transposed: frozenset[str] = frozenset()  # weights stored (in, out), as GPT-2's Conv1D: rows are columns
    pattern: tuple[int, int] | None = None  # N:M: keep N of every M consecutive inputs instead of ``scope``
    inputs: Callable[[int], dict[str, torch.Tensor]] | None = None
    model: nn.Module | None = None  # the model ``weights`` belong to, for a strategy that runs it on data
    examples: Callable[[int], list[dict[str, torch.Tensor]]] | None = None

    def calibration_examples(self, samples: int) -> list[dict[str, torch.Tensor]]:
        """``samples`` training examples, one per batch, on the model's device: the same seeded subset as
        ``input_norms`` reads. A strategy runs ``model`` on them itself, inside ``units.skipping``."""
        if self.examples is None or self.model is None:
            raise LotteryError(
                "this pruning strategy runs the whole model on training examples, which this draw has none of "
                "(find_ticket's train_fn keeps its data; post-training masks are drawn block by block)"
            )
        return self.examples(samples)

    def observe(self, batches: list[dict[str, torch.Tensor]], handles: list) -> int:
        """Run ``model`` in eval mode over ``batches`` (labels dropped) as the ticket ``previous`` runs, for the hooks
        behind ``handles`` to record, and remove them; return the tokens seen."""
        model, tokens = self.model, 0
        was_training = model.training
        model.eval()
        try:
            with self.units.skipping(model, self.previous):
                for batch in batches:
                    model(**{k: v for k, v in batch.items() if k != "labels"})
                    tokens += int(batch["input_ids"].numel())
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
        return tokens

    def input_norms(self, samples: int) -> dict[str, torch.Tensor]:
        """Per prunable weight, the L2 norm of each of its input features over the tokens of ``samples``
        calibration examples, shaped to broadcast against the weight (Wanda's ``||X||``).

        Computed for this draw's weights, in eval mode and float32, on a fixed seeded subset of the run's
        training data, on the accelerator's device (``hf_lottery.pruning.calibration``).
        """
        if self.inputs is None:
            raise LotteryError("this pruning strategy needs calibration data, which this run has none of")
        return self.inputs(samples)


class PruningStrategy(Plugin):
    name: ClassVar[str]
    description: ClassVar[str]  # for the card: "by magnitude"
    calibrated: ClassVar[bool] = False  # scores from calibration data (``ScoringContext.input_norms``)
    units: ClassVar[tuple[str, ...] | None] = None  # the --unit kinds it can score (None: every kind)
    samples_option: ClassVar[str | None] = None  # a calibrated strategy's option: how many examples it scores from
    whole_model: ClassVar[bool] = False  # runs the whole model on examples, so it cannot draw one block at a time

    @property
    def calibration_samples(self) -> int:
        """How many calibration examples a calibrated strategy scores from (its ``samples_option``): the run
        gathers them itself when it calibrates block by block (post-training pruning)."""
        return getattr(self.args, self.samples_option)

    def check(self, train_examples: int) -> None:
        """Refuse, in one line and before anything is written, a run this strategy cannot score (it has
        ``train_examples`` training examples): a calibrated one asking for more examples than there are."""
        if self.samples_option is not None and self.calibration_samples > train_examples:
            raise LotteryError(
                f"--{self.samples_option.replace('_', '-')} {self.calibration_samples} is more than the "
                f"{train_examples} training examples"
            )

    def scores(self, context: ScoringContext) -> Mapping[str, torch.Tensor]:
        """One non-negative score per prunable weight, by parameter name; the highest are kept."""
        raise NotImplementedError

    def prune(self, context: ScoringContext) -> Mask:
        """The mask that keeps ``context.density`` of the prunable weights, chosen among those alive in
        ``context.previous`` by their scores, allocated by ``context.scope`` (or ``context.pattern``); for units
        other than single weights, ``context.density`` is the share of units kept, each scored by the L2 norm of its
        weights' scores."""
        scores = dict(self.scores(context))
        if context.pattern is not None:
            return nm_prune(scores, context.previous, *context.pattern, context.transposed)
        if context.scope == "row":
            return row_prune(scores, context.previous, context.density, context.transposed)
        return self.keep_units(context, context.units.scores(scores))

    @staticmethod
    def keep_units(context: ScoringContext, scores: Mapping[str, torch.Tensor]) -> Mask:
        """The mask keeping ``context.density`` of the units alive in ``context.previous``, by their ``scores`` (per
        group of ``context.units``), allocated by ``context.scope``: a strategy that scores units directly (from
        what they output, not from their weights) prunes through this."""
        units = context.units
        alive = units.alive(context.previous)
        kept = magnitude_prune(dict(scores), alive, keep_counts(alive, context.density, context.scope))
        return units.expand(kept, context.previous)
