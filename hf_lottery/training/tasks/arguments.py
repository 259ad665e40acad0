"""The options of the task kinds that bring their own, apart from their modules: a registry line names them, so
``--help`` lists them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_lottery.foundations.arguments import help_
from hf_lottery.foundations.errors import LotteryError


@dataclass(frozen=True)
class MaskedLMArguments:
    mlm_probability: float = field(default=0.15, metadata=help_("Share of tokens masked for masked-LM."))

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise LotteryError(f"--mlm-probability must be in (0, 1), got {self.mlm_probability}")
