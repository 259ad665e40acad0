"""Masking overhead: one optimizer step of masked training against the same step of dense training.

Every IMP level trains with ``MaskEnforcer`` zeroing the gradients of pruned weights before each AdamW
step (as ``hf_lottery.training.loop.train`` does; the weights are masked once, before the first step, and stay
zero). That is pure overhead on top of dense training, so it has to stay small: the goal is a masked step
at most 1.02x the dense one.

The same model (deep copies of one initialisation, each with its own AdamW) trains on the same batch;
dense and masked steps are interleaved in rounds, in a rotating order, so that other load on the machine
hits both alike. Reported: the median over rounds of the per-round ratio masked/dense, the time of the
masking call itself (timed inside the masked step), which is far less noisy than a difference of two
step times, and the time of ``optimizer.step()`` in both. The optimizer is training's own
(``hf_lottery.training.loop.adamw``, fused); ``--unfused`` uses torch's default AdamW instead, to show why:
it is 6x slower on CPU for a BERT-base model, and slower still on a sparse model on some CPUs (the
square root of the zero second moments of pruned weights is a slow path: twice the time of a nonzero one
on the AMD EPYC this was measured on).

    python scripts/bench_masking.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass

import torch
from transformers import BertConfig, BertForSequenceClassification

from hf_lottery.pruning.masks import Mask, MaskEnforcer, default_prunable, dense_mask
from hf_lottery.pruning.selection import keep_counts, magnitude_prune
from hf_lottery.training.loop import adamw


@dataclass
class Shape:
    """A model shape and the batch it trains on; ``steps`` optimizer steps per timed block.

    Rounds go on until ``rounds`` are done or, after ``min_rounds``, ``budget_s`` seconds are spent, so
    that a loaded machine makes the run less precise rather than longer.
    """

    name: str
    config: BertConfig
    batch: tuple[int, int]
    steps: int
    rounds: int
    budget_s: float
    min_rounds: int = 3


def shapes(quick: bool) -> list[Shape]:
    # The demo's tiny BERT (hf_lottery/commands/demo.py): steps take milliseconds, so Python overhead shows.
    tiny = BertConfig(
        vocab_size=70,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    if quick:
        return [
            Shape("tiny BERT", tiny, (32, 32), steps=10, rounds=9, budget_s=6),
            Shape("BERT-base shape", BertConfig(), (2, 32), steps=1, rounds=5, budget_s=15),
        ]
    return [
        Shape("tiny BERT", tiny, (32, 32), steps=20, rounds=21, budget_s=60),
        Shape("BERT-base shape", BertConfig(), (8, 128), steps=1, rounds=11, budget_s=600),
    ]


@dataclass
class Runner:
    """One copy of the model with its own optimizer; ``enforcer`` is None for the dense baseline."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    enforcer: MaskEnforcer | None
    mask: Mask | None
    step_times: list[float]
    mask_times: list[float]
    opt_times: list[float]

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        """One optimizer step in the order of training.py; returns the seconds in the mask call and in AdamW."""
        loss = self.model(**batch).loss
        loss.backward()
        masking = 0.0
        if self.enforcer is not None:
            t0 = time.perf_counter()
            self.enforcer.mask_gradients()
            masking += time.perf_counter() - t0
        t0 = time.perf_counter()
        self.optimizer.step()
        optimizer = time.perf_counter() - t0
        self.optimizer.zero_grad()
        return masking, optimizer

    def block(self, batch: dict[str, torch.Tensor], steps: int) -> None:
        t0 = time.perf_counter()
        parts = [self.step(batch) for _ in range(steps)]
        self.step_times.append((time.perf_counter() - t0) / steps)
        self.mask_times.append(sum(m for m, _ in parts) / steps)
        self.opt_times.append(sum(o for _, o in parts) / steps)


def magnitude_mask(model: torch.nn.Module, sparsity: float) -> Mask:
    """A global magnitude mask of the default prunable weights, as level 1..n of IMP would produce."""
    names = default_prunable(model)
    mask = dense_mask(model, names)
    if sparsity == 0.0:
        return mask
    params = dict(model.named_parameters())
    weights = {n: params[n].detach() for n in names}
    keep = keep_counts(mask, 1.0 - sparsity, "global")
    assert isinstance(keep, int)
    return magnitude_prune(weights, mask, keep)


def bench_shape(shape: Shape, sparsities: list[float], unfused: bool) -> list[dict]:
    torch.manual_seed(0)
    base = BertForSequenceClassification(shape.config)
    base.train()  # dropout on, as in training
    batch_size, seq_len = shape.batch
    batch = {
        "input_ids": torch.randint(0, shape.config.vocab_size, (batch_size, seq_len)),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
        "labels": torch.randint(0, 2, (batch_size,)),
    }

    def runner(mask: Mask | None) -> Runner:
        model = copy.deepcopy(base)
        enforcer = None
        if mask is not None:
            enforcer = MaskEnforcer(model, mask)
            enforcer.mask_weights()
        if unfused:
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
        else:
            optimizer = adamw(model.parameters(), 1e-5, 0.01, torch.device("cpu"))
        return Runner(model, optimizer, enforcer, mask, [], [], [])

    dense = runner(None)
    masked = {s: runner(magnitude_mask(base, s)) for s in sparsities}
    runners = [dense, *masked.values()]
    for r in runners:  # warm-up: AdamW allocates its state on the first step
        r.block(batch, 1)
        r.step_times.clear()
        r.mask_times.clear()
        r.opt_times.clear()
    start = time.perf_counter()
    for i in range(shape.rounds):
        if i >= shape.min_rounds and time.perf_counter() - start > shape.budget_s:
            break
        k = i % len(runners)
        for r in runners[k:] + runners[:k]:
            r.block(batch, shape.steps)

    check_zeros(masked)
    rows = []
    dense_median = statistics.median(dense.step_times)
    for s, r in masked.items():
        ratios = [m / d for m, d in zip(r.step_times, dense.step_times, strict=True)]
        rows.append(
            {
                "model": shape.name,
                "batch": f"{batch_size}x{seq_len}",
                "sparsity": s,
                "dense_ms": dense_median * 1e3,
                "masked_ms": statistics.median(r.step_times) * 1e3,
                "ratio": statistics.median(ratios),
                "mask_ms": statistics.median(r.mask_times) * 1e3,
                "share": statistics.median(r.mask_times) / dense_median,
                "rounds": len(ratios),
                "adam_dense_ms": statistics.median(dense.opt_times) * 1e3,
                "adam_masked_ms": statistics.median(r.opt_times) * 1e3,
            }
        )
    return rows


def check_zeros(masked: dict[float, Runner]) -> None:
    """The timings are only worth something if masking still works: pruned weights are exactly 0."""
    for r in masked.values():
        assert r.mask is not None
        params = dict(r.model.named_parameters())
        for name, m in r.mask.items():
            if bool(params[name].detach()[~m].ne(0).any()):
                raise AssertionError(f"a pruned weight of {name} is not zero after training")


def table(rows: list[dict]) -> str:
    header = (
        "| model | batch | mask sparsity | rounds | dense step ms | masked step ms | masked/dense "
        "| mask call ms | mask call / dense step | AdamW ms dense | AdamW ms masked |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['sparsity']:.0%} | {r['rounds']} | {r['dense_ms']:.1f} "
            f"| {r['masked_ms']:.1f} | {r['ratio']:.3f}x | {r['mask_ms']:.2f} | {r['share']:.2%} "
            f"| {r['adam_dense_ms']:.1f} | {r['adam_masked_ms']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small batches and few rounds (under a minute)")
    parser.add_argument("--unfused", action="store_true", help="torch's default AdamW, not training's fused one")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--sparsity", type=float, nargs="+", default=None, help="mask sparsities (default 0 0.5 0.9; quick: 0 0.9)"
    )
    args = parser.parse_args(argv)
    sparsities = args.sparsity or ([0.0, 0.9] if args.quick else [0.0, 0.5, 0.9])
    if not all(0.0 <= s < 1.0 for s in sparsities):
        parser.error(f"--sparsity takes values in [0, 1), got {sparsities}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict] = []
    for shape in shapes(args.quick):
        rows += bench_shape(shape, sparsities, args.unfused)
        print(f"# {shape.name} done", flush=True)
    print(table(rows))
    big = [r for r in rows if r["model"] == "BERT-base shape"]
    worst = max(big, key=lambda r: r["ratio"])
    print(
        f"summary: masked/dense optimizer step = {worst['ratio']:.2f}x (BERT-base shape, batch {worst['batch']}, "
        f"worst of masks {'/'.join(f'{s:.0%}' for s in sparsities)} sparse; there the mask call is "
        f"{worst['share']:.1%} of the dense step and AdamW takes "
        f"{worst['adam_masked_ms'] / worst['adam_dense_ms']:.2f}x its dense time)"
    )


if __name__ == "__main__":
    main()
