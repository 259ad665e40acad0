"""``--keep-weights needed``: a long run keeps every mask and metric but only the trained weights it can still use.

Those are level 0's (the dense model, which the cheaper methods prune), the last IMP trunk level's (the next
level is pruned from it, so the run can be extended) and the best ticket's so far (what ``export`` ships), or,
while no pruned level is within tolerance of dense, the best-scoring pruned level's (what ``export --level best``
names then, and ``--level N`` ships anyway). Anything else is deleted once it is finished: a control's trained
weights are never shipped, and an earlier trunk level can never become the best again, because more levels only
add sparser candidates.

With replicates that no longer holds for replicate 0 (the one exported): the best is chosen by the mean over
the replicates, which moves as later replicates finish, so replicate 0 keeps every ticket level's weights
(IMP's and the methods'); its controls' go all the same.
"""

from __future__ import annotations

from .paths import IMP, RunPaths
from .rows import best_scoring, best_ticket, collect_rows
from .rundir import finished_levels


def needed_levels(paths: RunPaths, replicates: int) -> set[str]:
    """The folders (as the results name them) whose trained weights the run still needs."""
    rows = collect_rows(paths)
    if replicates > 1:  # replicate 0 of several: any ticket level may become the best by the mean
        return {r.path for r in rows if r.is_ticket}
    last = max((r for r in rows if r.on_trunk), key=lambda r: r.level)
    best = best_ticket(rows) or best_scoring(rows)
    return {f"{IMP}/level_0", last.path} | ({best.path} if best else set())


def drop_unneeded_weights(paths: RunPaths, replicates: int) -> None:
    """Delete the trained weights of every finished level the run no longer needs (main process only)."""
    keep = needed_levels(paths, replicates)
    for level in finished_levels(paths):
        if level.name not in keep:
            level.weights.unlink(missing_ok=True)
