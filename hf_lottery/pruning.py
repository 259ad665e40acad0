"""Pruning strategies: the level schedule, magnitude pruning (IMP) and random pruning (a control).

Every strategy only removes weights that are still alive, so masks only ever shrink, and removes an
exact count: ties at the magnitude threshold are broken by position, never by chance.
"""

from __future__ import annotations

import math

import torch

from .config import LotteryConfig
from .masks import Mask


def level_densities(config: LotteryConfig) -> list[float]:
    """Density of the prunable weights at each level, level 0 (dense) first.

    Each level keeps (1 - prune_fraction) of the survivors; the last level keeps less so that
    ``target_sparsity`` is hit exactly.
    """
    keep = 1.0 - config.prune_fraction
    densities = [1.0]
    max_levels = config.levels if config.levels is not None else math.inf
    target = config.target_sparsity
    while len(densities) - 1 < max_levels:
        if target is not None and 1.0 - densities[-1] >= target - 1e-12:
            break
        next_density = densities[-1] * keep
        if target is not None and 1.0 - next_density >= target - 1e-12:
            next_density = 1.0 - target
        densities.append(next_density)
    return densities


def keep_counts(mask: Mask, density: float, scope: str) -> dict[str, int] | int:
    """How many weights survive at ``density``: one total (global scope) or one count per tensor."""
    if scope == "layer":
        return {name: round(m.numel() * density) for name, m in mask.items()}
    return round(sum(m.numel() for m in mask.values()) * density)


def magnitude_prune(weights: dict[str, torch.Tensor], mask: Mask, keep: dict[str, int] | int) -> Mask:
    """Keep the ``keep`` largest-magnitude alive weights, globally (int) or per tensor (dict)."""
    if isinstance(keep, int):
        return _prune_group(weights, mask, list(mask), keep)
    new: Mask = {}
    for name in mask:
        new.update(_prune_group(weights, mask, [name], keep[name]))
    return new


@torch.no_grad()
def _prune_group(weights: dict[str, torch.Tensor], mask: Mask, names: list[str], keep: int) -> Mask:
    alive = sum(int(mask[n].sum()) for n in names)
    remove = alive - keep
    if remove <= 0:
        return {n: mask[n].clone() for n in names}
    # Magnitudes of the alive weights only; the threshold is the remove-th smallest of them.
    scores = {n: weights[n].detach().float().abs().cpu() for n in names}
    threshold = torch.cat([scores[n][mask[n]] for n in names]).kthvalue(remove).values
    below = {n: mask[n] & (scores[n] < threshold) for n in names}
    ties_to_remove = remove - sum(int(b.sum()) for b in below.values())
    new: Mask = {}
    for n in names:
        pruned = below[n]
        if ties_to_remove > 0:
            ties = (mask[n] & (scores[n] == threshold)).flatten().nonzero().squeeze(1)[:ties_to_remove]
            pruned = pruned.flatten().clone()
            pruned[ties] = True
            pruned = pruned.view_as(mask[n])
            ties_to_remove -= len(ties)
        new[n] = mask[n] & ~pruned
    return new


def random_prune(mask: Mask, keep: dict[str, int], generator: torch.Generator) -> Mask:
    """Keep ``keep[name]`` weights of each tensor, drawn uniformly among its alive weights."""
    new: Mask = {}
    for name, m in mask.items():
        alive = m.flatten().nonzero().squeeze(1)
        chosen = alive[torch.randperm(len(alive), generator=generator)[: keep[name]]]
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[chosen] = True
        new[name] = flat.view_as(m)
    return new
