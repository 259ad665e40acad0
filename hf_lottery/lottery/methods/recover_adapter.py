"""Recovery through a masked low-rank adapter: each post-training mask's pruned model, frozen, with an update
``(B A) * mask`` trained and merged in after (``hf_lottery.training.adapters``). The optimizer holds the adapters' state
only, and the level it saves is a stock model with every pruned weight still zero, which a LoRA merge would fill
in.
"""

from __future__ import annotations

from hf_lottery.foundations.arguments import PruneArguments, TrainArguments
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.pruning.units import UNIT_TYPES

from .arguments import AdapterRecoverArguments
from .base import RunContext
from .recover import Recover


class RecoverAdapter(Recover):
    name = "recover-adapter"
    label = "post-training, recovered (masked adapter)"
    style = "s-"
    citation = "sparsity-preserving adapters: the update (B A) * mask, merged"
    description = "a post-training mask's pruned model fine-tuned through a masked low-rank adapter, merged in"
    noun = "post-training mask recovered through a masked adapter"
    arguments = AdapterRecoverArguments

    def asked(self) -> bool:
        return self.args.recover_adapter is not None

    def check_run(self, prune: PruneArguments, train: TrainArguments) -> None:
        if UNIT_TYPES[prune.unit].skips_removed:
            raise LotteryError(
                f"--recover-adapter adapts the weights of every block, and --unit {prune.unit} removes whole blocks: "
                "use --recover"
            )

    def train(self, run: RunContext) -> None:
        shapes = {name: p.shape for name, p in run.model.named_parameters() if name in set(run.prunable)}
        name, shape = min(shapes.items(), key=lambda item: min(item[1]))
        if self.adapter_rank > min(shape):
            run.warn(
                f"--recover-adapter {self.adapter_rank} is above the smaller dimension of {name} ({min(shape)}): its "
                f"update is not low-rank there, only larger than the weight; a rank of {min(shape)} or less is"
            )
        super().train(run)

    @property
    def adapter_rank(self) -> int | None:
        return self.args.recover_adapter

    @property
    def learning_rate(self) -> float | None:
        return self.args.recover_adapter_learning_rate
