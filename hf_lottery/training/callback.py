"""Keep a ticket's pruned weights at zero while fine-tuning it with a plain ``transformers.Trainer``.

Trainer clips the gradients before any callback event of the optimizer step, so zeroing ``p.grad`` in
``on_pre_optimizer_step`` would let the pruned positions count towards the clipped norm. The gradients are
therefore masked by a hook on each masked parameter (``Tensor.register_hook``): on a leaf tensor it runs on
every backward, before the gradient is accumulated into ``p.grad``, and so before DDP's reducer (which hooks
the accumulation) reads it. Every micro-batch of gradient accumulation adds a masked gradient, every rank
all-reduces the same zeros, and clipping, the logged ``grad_norm`` and the optimizer see the masked gradient.

Masked gradients alone do not keep the weights at zero: weight decay of a nonzero weight, or Adam momentum
carried over from a dense checkpoint, moves them, so the weights are re-masked after every optimizer step
(and once when training begins, in case the model was loaded dense). Both use ``masked_fill`` with a boolean
mask (``MaskEnforcer.hook_gradients`` and ``fill_weights``): a quarter of the memory of a float mask, and an inf
or NaN at a pruned position becomes 0 instead of NaN.

FSDP and DeepSpeed (and models sharded at load time) hold shards or flattened copies of the parameters, so
a mask of the full tensor would mask nothing, silently: they are refused.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, extract_model_from_parallel
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.pruning.masks import Mask, MaskEnforcer, check_mask

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP/DataParallel and torch.compile


def check_unsharded(args: Any, model: nn.Module | None = None) -> None:
    """Refuse FSDP, DeepSpeed and parameters sharded at load time, from the arguments and the accelerator state."""
    sharding = None
    if getattr(args, "fsdp", None):
        sharding = "FSDP"
    elif getattr(args, "deepspeed", None):
        sharding = "DeepSpeed"
    else:
        kind = AcceleratorState._shared_state.get("distributed_type")  # set once an Accelerator exists
        if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            sharding = "FSDP" if kind == DistributedType.FSDP else "DeepSpeed"
        elif model is not None and getattr(model, "is_distributed_loading_by_transformers", False):
            sharding = "a model sharded at load time"
        elif model is not None and any(_is_dtensor(p) for p in model.parameters()):
            sharding = "tensor parallelism (DTensor parameters)"
    if sharding:
        raise LotteryError(
            f"{sharding} shards the parameters, so masks cannot hold on to them; "
            "use plain data parallelism (torchrun / accelerate launch --multi_gpu) with MaskedTrainingCallback"
        )


def _is_dtensor(param: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed
        return False
    return isinstance(param, DTensor)


class MaskedTrainingCallback(TrainerCallback):
    """Hold the pruned weights of ``masks`` at exactly zero through ``Trainer.train()``.

    ``masks`` maps ``named_parameters()`` names to boolean tensors of the parameters' shapes (True = kept),
    as ``hf_lottery.load_ticket`` returns them.
    """

    def __init__(self, masks: Mask) -> None:
        self.masks = dict(masks)
        self._enforcer: MaskEnforcer | None = None

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        # Fail when the Trainer is built, not after it has set up training.
        model = kwargs.get("model")
        check_unsharded(args, model)
        if model is not None:
            self._bind(model)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = kwargs["model"]
        check_unsharded(args, model)
        enforcer = self._bind(model)
        enforcer.hook_gradients()
        enforcer.fill_weights()

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._enforcer is not None:
            self._enforcer.fill_weights()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._enforcer is not None:
            self._enforcer.unhook()

    def _bind(self, model: nn.Module) -> MaskEnforcer:
        """A new enforcer of the masks on the unwrapped model; the hooks of the previous one are removed (a
        ``train()`` that raised leaves them)."""
        model = extract_model_from_parallel(model, keep_fp32_wrapper=True, keep_torch_compile=False)
        names = {name for name, _ in model.named_parameters()}
        masks = {_unwrapped_name(name, names): m for name, m in self.masks.items()}
        check_mask(masks, model, "MaskedTrainingCallback")
        if self._enforcer is not None:
            self._enforcer.unhook()
        self._enforcer = MaskEnforcer(model, masks)
        return self._enforcer


def _unwrapped_name(name: str, names: set[str]) -> str:
    """A mask name taken from a wrapped model (``module.bert...``) as the unwrapped model names it."""
    while name not in names and name.startswith(_WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name
