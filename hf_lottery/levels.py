"""What every branch does with a level: draw its mask once, from files on disk, and train it from the rewind point.

IMP's trunk, its controls and the cheaper ticket methods (``hf_lottery.methods``) share these steps, so a mask
is computed the same way, on the main process only and broadcast, and a level is saved the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from safetensors.torch import load_model as load_weights_into

from .masks import Mask, apply_mask
from .paths import LevelPaths
from .runs import save_level
from .sparse import pack_mask, unpack_mask
from .strategies import get_strategy

if TYPE_CHECKING:
    from torch import nn

    from .lottery import Run


def shared_mask(accelerator: Accelerator, compute: Callable[[], Mask]) -> Mask:
    """``compute()`` on the main process, broadcast, so every rank holds the same mask."""
    mask = compute() if accelerator.is_main_process else None
    if accelerator.num_processes == 1:
        return mask
    shapes = {name: tuple(m.shape) for name, m in mask.items()} if mask is not None else None
    payload = [shapes, {name: pack_mask(m) for name, m in mask.items()} if mask is not None else None]
    broadcast_object_list(payload, from_process=0)
    shapes, packed = payload
    return {name: unpack_mask(packed[name].cpu(), shape) for name, shape in shapes.items()}


def shared_flag(accelerator: Accelerator, flag: bool | None) -> bool:
    """The main process's ``flag`` on every rank (a decision made from weights only the main process looked at)."""
    if accelerator.num_processes == 1:
        return bool(flag)
    payload = [flag]
    broadcast_object_list(payload, from_process=0)
    return bool(payload[0])


def trained_weights(run: Run, level: LevelPaths) -> dict[str, torch.Tensor]:
    """The prunable weights a finished level trained, loaded into a copy of the model."""
    trained = copy.deepcopy(run.model)
    load_weights_into(trained, str(level.weights))
    return prunable_weights(trained, run.prunable)


def prunable_weights(model: nn.Module, prunable: list[str]) -> dict[str, torch.Tensor]:
    """The model's own prunable parameters (no copies)."""
    names = set(prunable)
    return {name: p for name, p in model.named_parameters() if name in names}


def prune(run: Run, weights: dict[str, torch.Tensor], previous: Mask, density: float, *, what: str) -> Mask:
    """The run's strategy applied to ``weights`` inside ``previous``; warns when a tensor loses every weight."""
    mask = get_strategy(run.prune.scope).prune(weights, previous, density)
    emptied = [name for name, m in mask.items() if not m.any() and previous[name].any()]
    if emptied:
        run.accelerator.print(
            f"warning: {what} removed every weight of {', '.join(emptied[:3])}"
            f"{' and more' if len(emptied) > 3 else ''}: their magnitudes are far below the rest "
            "(an untrained pooler, say); --scope layer or --exclude keeps them"
        )
    return mask


def train_from_rewind(
    run: Run, paths: LevelPaths, mask: Mask, *, level: int, desc: str, start: Callable[[nn.Module], None] | None = None
) -> None:
    """Train ``mask`` from the rewind point (after ``start`` changed the weights, for a control) and save the level."""
    model = copy.deepcopy(run.model)
    if start is not None:
        start(model)
    apply_mask(model, mask)
    metrics = run.train_level(model, mask, level=level, desc=desc, tag=run.tag(paths.name), checkpoint=paths.checkpoint)
    save_level(run.accelerator, paths, model, mask, {**metrics, "command": run.config.to_command()}, run.metric)
