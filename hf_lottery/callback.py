"""Keep a ticket's pruned weights at zero while fine-tuning it with a plain ``transformers.Trainer``.

Trainer clips the gradients before any callback event of the optimizer step, so zeroing ``p.grad`` in
``on_pre_optimizer_step`` would let the pruned positions count towards the clipped norm. The gradients are
therefore masked by a hook on each masked parameter (``Tensor.register_hook``): on a leaf tensor it runs on
every backward, before the gradient is accumulated into ``p.grad``, and so before DDP's reducer (which hooks
the accumulation) reads it. Every micro-batch of gradient accumulation adds a masked gradient, every rank
all-reduces the same zeros, and clipping, the logged ``grad_norm`` and the optimizer see the masked gradient.

Masked gradients alone do not keep the weights at zero: weight decay of a nonzero weight, or Adam momentum
carried over from a dense checkpoint, moves them, so the weights are re-masked after every optimizer step
(and once when training begins, in case the model was loaded dense).

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

from .errors import LotteryError
from .masks import Mask, check_mask, zero_pruned_gradient

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
        self._pruned: dict[str, torch.Tensor] = {}  # ~mask on the parameter's device, built once
        self._params: dict[str, nn.Parameter] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

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
        self._bind(model)
        self._remove_hooks()  # a previous train() that raised left its hooks
        for name, param in self._params.items():
            self._handles.append(param.register_hook(zero_pruned_gradient(self._pruned[name])))
        self._mask_weights()

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._mask_weights()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._remove_hooks()

    def _bind(self, model: nn.Module) -> None:
        """Find the masked parameters on the unwrapped model and move the masks to their devices (once)."""
        model = extract_model_from_parallel(model, keep_fp32_wrapper=True, keep_torch_compile=False)
        names = {name for name, _ in model.named_parameters()}
        masks = {_unwrapped_name(name, names): m for name, m in self.masks.items()}
        check_mask(masks, model, "MaskedTrainingCallback")
        params = dict(model.named_parameters())
        self._params = {name: params[name] for name in masks}
        for name, param in self._params.items():
            pruned = self._pruned.get(name)
            if pruned is None or pruned.device != param.device:
                # A boolean mask and masked_fill rather than a multiply: a quarter of the memory of a float mask,
                # and an inf or NaN at a pruned position becomes 0 instead of NaN.
                self._pruned[name] = (~masks[name]).to(param.device)

    @torch.no_grad()
    def _mask_weights(self) -> None:
        for name, param in self._params.items():
            param.masked_fill_(self._pruned[name], 0)

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _unwrapped_name(name: str, names: set[str]) -> str:
    """A mask name taken from a wrapped model (``module.bert...``) as the unwrapped model names it."""
    while name not in names and name.startswith(_WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name
