"""The one training loop every level uses, on ``accelerate.Accelerator``: one process or many, same code.

Masks are enforced once per optimizer step, on the gradients: after DDP has synchronised them (so every
rank applies the same update) and before clipping (so the norm is the sparse network's). The weights are
masked once, before the first step, and stay exactly zero from then on: each level gets a fresh AdamW, so
a pruned weight has zero gradient and zero moments, its update is ``lr * 0 / (sqrt(0) + eps) = 0`` and
decoupled weight decay multiplies zero. Masking the weights again after every step cost a full pass over
them for nothing (measured by ``scripts/bench_masking.py``; the numbers are in docs/benchmarks.md); the tests
check the zeros under weight decay, gradient accumulation, mixed precision and several processes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from hf_lottery.foundations.arguments import TrainArguments
from hf_lottery.foundations.errors import Terminated
from hf_lottery.pruning.masks import Mask, MaskEnforcer, apply_mask

from .checkpoint import LevelCheckpoints
from .distill import INDEX, Indexed, Teacher, indexed_collator
from .stopping import stop_requested
from .tasks import PreparedData

logger = get_logger(__name__)


def train(
    model: PreTrainedModel,
    mask: Mask,
    data: PreparedData,
    args: TrainArguments,
    accelerator: Accelerator,
    *,
    seed: int,
    desc: str,
    tag: str = "train",
    on_step: Callable[[int, PreTrainedModel], bool | None] | None = None,
    checkpoint: Path | None = None,
    steps: int | None = None,
    teacher: Teacher | None = None,
) -> dict[str, float]:
    """Train ``model`` in place with ``mask`` fixed; return the validation metrics of the weights it keeps.

    ``on_step(step, model)`` is called after step 0 (before training) and after every optimizer step;
    the IMP driver saves the rewind point with it. When it returns True the level stops there, unevaluated
    (an early-bird search level: only its mask is wanted), and only ``steps`` is returned.

    With trackers on the accelerator, loss, learning rate and evaluations are logged under ``tag`` (the level's
    folder, e.g. ``imp/level_3``) by optimizer step. ``checkpoint`` is the level's folder of checkpoints: training
    resumes from the latest one there (calling ``on_step`` only for the steps after it) and saves one every
    ``--save-steps`` optimizer steps. ``steps`` overrides the level's length (0: score the model as it is).
    ``teacher``, when given, adds its distillation term to the loss (``hf_lottery.training.distill``).
    """
    order, collator = torch.Generator().manual_seed(seed), data.train_collator(seed + accelerator.process_index)
    indexed = teacher is not None and teacher.indexed  # the batches name their examples to a cached teacher
    train_loader = DataLoader(
        Indexed(data.train) if indexed else data.train,
        batch_size=args.batch_size,
        shuffle=True,
        collate_fn=indexed_collator(collator) if indexed else collator,
        generator=order,
    )
    eval_loader = DataLoader(data.validation, batch_size=args.eval_batch_size, collate_fn=data.eval_collator)
    optimizer = adamw(model.parameters(), args.learning_rate, args.weight_decay, accelerator.device)
    total_steps = total_optimizer_steps(args, len(data.train), accelerator.num_processes) if steps is None else steps
    # A prepared scheduler steps once per process on every optimizer step (accelerate's convention).
    scheduler = get_linear_schedule_with_warmup(
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * total_steps) * accelerator.num_processes,
        num_training_steps=total_steps * accelerator.num_processes,
    )
    enforcer = MaskEnforcer(model, mask)
    if teacher is not None:
        teacher.to(accelerator)
    if total_steps:
        enforcer.mask_weights()
    else:  # scored untrained: one tensor at a time, no cached float copy of the masks (a model's worth)
        apply_mask(model, mask)
    prepared, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    checkpoints = LevelCheckpoints(checkpoint, accelerator, order, collator)
    resumed = checkpoints.restore()
    step, best = resumed or (0, None)
    stopped = on_step is not None and resumed is None and bool(on_step(0, model))

    metric = data.metric
    progress = Progress(total_steps, step, desc, shown=accelerator.is_local_main_process)
    while step < total_steps and not stopped:
        for batch in checkpoints.batches(train_loader):
            prepared.train()
            with accelerator.accumulate(prepared):
                index = batch.pop(INDEX, None)
                outputs = prepared(**batch)
                loss = outputs.loss
                if teacher is not None:
                    loss = teacher.loss(outputs.logits, loss, batch, index, accelerator)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    enforcer.mask_gradients()
                    if args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(prepared.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update(loss)
            if accelerator.trackers:
                accelerator.log({f"{tag}/loss": loss.item(), f"{tag}/learning_rate": scheduler.get_last_lr()[0]}, step)
            if on_step is not None and on_step(step, model):
                stopped = True
                break
            if args.eval_steps and step % args.eval_steps == 0 and step < total_steps:
                metrics = data.evaluate(prepared, eval_loader, accelerator)
                accelerator.log({f"{tag}/eval_{k}": v for k, v in metrics.items()}, step)
                if best is None or metric.better(metrics[metric.name], best[0]):
                    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                    best = (metrics[metric.name], metrics, state)
            saved = bool(args.save_steps) and step % args.save_steps == 0 and step < total_steps
            if saved:
                checkpoints.save(step, best)
            if step < total_steps and stop_requested(accelerator):
                if checkpoint is not None and not saved:
                    checkpoints.save(step, best)
                kept = "its checkpoint is saved" if checkpoint is not None else "it starts over"
                raise Terminated(f"stopped by SIGTERM after step {step} of {total_steps} of {desc}: {kept}")
            if step >= total_steps:
                break
    progress.close()
    if stopped:
        accelerator.free_memory()
        return {"steps": step}
    metrics = data.evaluate(prepared, eval_loader, accelerator)
    accelerator.log({f"{tag}/eval_{k}": v for k, v in metrics.items()}, step)
    if best is not None and metric.better(best[0], metrics[metric.name]):
        logger.info(f"{desc}: keeping the weights of the best evaluation ({metric.name} {best[0]:.4f})")
        model.load_state_dict(best[2])
        metrics = best[1]
    accelerator.free_memory()
    return {**metrics, "steps": step, **({"resumed_from_step": resumed[0]} if resumed else {})}


def adamw(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where it has one (CPU, CUDA): one pass per tensor instead of a dozen.

    On CPU the default (one op at a time) is several times slower than fused, and slower again on a sparse
    model: the square root of the zero second moments of pruned weights is a slow path on some CPUs. The
    fused kernel is as fast on zeros as on anything else. The timings, from ``scripts/bench_masking.py``, are
    in docs/benchmarks.md.
    """
    fused = True if device.type in ("cpu", "cuda") else None
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def total_optimizer_steps(args: TrainArguments, num_examples: int, num_processes: int) -> int:
    """Optimizer steps per level: --max-steps, or --epochs over the global batch."""
    if args.max_steps is not None:
        return args.max_steps
    batches_per_process = math.ceil(num_examples / (args.batch_size * num_processes))
    steps_per_epoch = max(1, math.ceil(batches_per_process / args.gradient_accumulation_steps))
    return max(1, math.ceil(args.epochs * steps_per_epoch))


# Without a terminal (a batch job's log), a level's progress is a plain line each tenth of the level, and at least
# this often in between, so that a long level still shows it is alive.
PLAIN_LINE_SECONDS = 300


class Progress:
    """A level's progress on stderr: tqdm's bar on a terminal; elsewhere a plain line each tenth of the level.

    A bar redraws itself after a carriage return, and a log file keeps every redraw, however long the level; tqdm
    has no plain mode (``disable=None`` only turns it off where there is no terminal).
    """

    def __init__(self, total: int, initial: int, desc: str, *, shown: bool) -> None:
        self.total, self.desc, self.step = total, desc, initial
        terminal = shown and sys.stderr is not None and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False) if terminal else None
        self.plain = shown and not terminal
        self.started = self.last_time = time.monotonic()
        self.first = self.last_step = initial

    def update(self, loss: torch.Tensor) -> None:
        """One optimizer step done, with its loss."""
        self.step += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss.item():.4f}")
            return
        now = time.monotonic()
        due = self.step - self.last_step >= self.total / 10 or now - self.last_time >= PLAIN_LINE_SECONDS
        if not self.plain or not (due or self.step == self.total):
            return
        elapsed = now - self.started
        left = elapsed / (self.step - self.first) * (self.total - self.step)
        print(f"{self.desc}: step {self.step}/{self.total}, loss {loss.item():.4f}, "
              f"{tqdm.format_interval(elapsed)} elapsed, {tqdm.format_interval(left)} left",
              file=sys.stderr, flush=True)  # fmt: skip
        self.last_step, self.last_time = self.step, now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
