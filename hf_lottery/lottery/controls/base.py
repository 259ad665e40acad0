"""What a control is: a branch trained beside IMP at every level, rewound like the ticket, that shows whether
the ticket's mask (or its weights) is what wins.

A new control is one module with a subclass of ``Control`` plus one line in ``hf_lottery.lottery.controls.CONTROLS``;
``--control NAME`` runs it. A subclass sets ``name``, ``label`` and ``style`` (the plot's legend and
matplotlib format) and ``description`` (the card's words), optionally ``arguments`` (its own options, see
``Plugin``), and implements ``mask``; ``start`` may change the
weights a level starts from. Both see only files on disk and seeds, so a resumed run computes the same.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from hf_lottery.foundations.registry import Plugin
from hf_lottery.pruning.masks import Mask
from hf_lottery.pruning.units import Units


class Control(Plugin):
    name: ClassVar[str]  # the branch folder and --control value
    label: ClassVar[str]  # the plot's legend
    style: ClassVar[str]  # the plot's matplotlib format string
    description: ClassVar[str]  # for the card: "random pruning with the ticket's per-tensor sparsity"

    def mask(self, *, ticket: Mask, previous: Mask, level: int, seed: int, units: Units) -> Mask:
        """The control's mask at ``level``: from the ticket's mask there and the control's own previous mask, in
        the run's ``units``."""
        raise NotImplementedError

    def start(self, model: nn.Module, prunable: list[str], *, seed: int) -> None:
        """Change the rewound weights a level starts from, in place (before the mask is applied)."""
