"""Dense vs sparse (CSR) CPU inference of a BERT-base-shaped encoder, and the kernel sweep behind the break-even.

    python scripts/bench_inference.py               # 12 layers, batch 1 and 16, seq 128: a few minutes on 2 cores
    python scripts/bench_inference.py --quick       # 2 layers, fewer rounds: under a minute
    python scripts/bench_inference.py --kernels     # first, one layer's matmul dense vs CSR at 50-95% sparsity
    python scripts/bench_inference.py --threads 1   # torch.set_num_threads(1)

The model is ``BertModel(BertConfig())`` built from its config (random weights, no download). For each
sparsity a copy has its encoder's Linear weights magnitude-pruned per tensor and goes through
``sparsify_for_inference`` with the default threshold, so below it the "sparse" model is the dense one (the
ratio then shows the noise); ``--force-csr`` swaps every pruned layer instead, to show why the threshold is
where it is (slower: at 50% sparsity a CSR layer takes 2-3.5× the dense time). Dense and sparse
forwards are interleaved round by round, since the machine may be shared, and medians are reported.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hf_lottery.pruning.masks import apply_mask, default_prunable  # noqa: E402
from hf_lottery.tickets.inference import DEFAULT_MIN_SPARSITY, SparseLinear, sparse_layers, sparsify_for_inference  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 layers and 3 rounds: under a minute")
    parser.add_argument("--layers", type=int, help="encoder layers (default 12, 2 with --quick)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per measurement (default 5, 3 with --quick)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.9, 0.95])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seq", type=int, default=128, help="sequence length (default 128)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--force-csr", action="store_true", help="CSR for every pruned layer, below threshold too")
    parser.add_argument("--kernels", action="store_true", help="first sweep one layer's matmul, dense vs CSR")
    args = parser.parse_args(argv)
    args.layers = args.layers or (2 if args.quick else 12)
    args.rounds = args.rounds or (3 if args.quick else 5)
    for s in args.sparsities:
        if not 0.0 <= s < 1.0:
            parser.error(f"sparsity {s} is not in [0, 1)")
    return args


def median_times(fns: dict[str, Callable[[], object]], rounds: int, calls: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, timed in interleaved rounds after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[key].append((time.perf_counter() - start) / calls)
    return {key: statistics.median(values) for key, values in times.items()}


def percent(s: float) -> str:
    return f"{s * 100:g}%"


@torch.inference_mode()
def kernel_sweep(rounds: int, tokens: list[int], sparsities: list[float]) -> None:
    """One layer, ``F.linear`` on the dense weight vs ``SparseLinear``: where CSR starts to pay."""
    shapes = [(3072, 768), (768, 3072), (768, 768)]  # (out, in): FFN in, FFN out, attention
    print(f"\nkernels: SparseLinear time / dense F.linear time, one layer (median of {rounds} interleaved rounds)")
    print("| out x in | tokens | dense ms | " + " | ".join(percent(s) for s in sparsities) + " |")
    print("|---|---|---|" + "---|" * len(sparsities))
    generator = torch.Generator().manual_seed(0)
    for out_features, in_features in shapes:
        weight = torch.randn(out_features, in_features, generator=generator) * 0.02
        bias = torch.randn(out_features, generator=generator) * 0.02
        layers = {
            s: SparseLinear(weight * (torch.rand(weight.shape, generator=generator) >= s), bias) for s in sparsities
        }
        for n in tokens:
            x = torch.randn(n, in_features, generator=generator)
            fns: dict[str, Callable[[], object]] = {"dense": partial(F.linear, x, weight, bias)}
            fns.update({f"{s}": partial(layer, x) for s, layer in layers.items()})
            start = time.perf_counter()
            fns["dense"]()
            calls = max(1, int(0.05 / max(time.perf_counter() - start, 1e-6)))  # >= 50 ms per sample
            med = median_times(fns, rounds, calls)
            ratios = " | ".join(f"{med[f'{s}'] / med['dense']:.2f}" for s in sparsities)
            print(f"| {out_features}x{in_features} | {n} | {med['dense'] * 1e3:.2f} | {ratios} |", flush=True)


@torch.no_grad()
def prune_encoder(model: torch.nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Magnitude-prune each encoder Linear weight to ``sparsity`` (per tensor); return the masks."""
    params = dict(model.named_parameters())
    masks = {}
    for name in default_prunable(model):
        if name.startswith("encoder."):
            weight = params[name]
            keep = round(weight.numel() * (1.0 - sparsity))
            alive = torch.zeros(weight.numel(), dtype=torch.bool)
            alive[weight.abs().flatten().topk(keep, sorted=False).indices] = True
            masks[name] = alive.view_as(weight)
    apply_mask(model, masks)
    return masks


@torch.inference_mode()
def encoder_bench(args: argparse.Namespace) -> list[dict]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    dense = BertModel(BertConfig(num_hidden_layers=args.layers)).eval()
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in dense.modules())
    models: dict[str, torch.nn.Module] = {"dense": dense}
    for s in args.sparsities:
        model = copy.deepcopy(dense)
        masks = prune_encoder(model, s)
        threshold = max(0.0, s - 0.01) if args.force_csr else None  # forced: the pruned layers, not the pooler
        models[f"{s}"] = sparsify_for_inference(model, threshold, masks=masks)
    rows = []
    for batch in args.batches:
        ids = torch.randint(0, dense.config.vocab_size, (batch, args.seq), generator=torch.Generator().manual_seed(1))
        med = median_times({key: partial(m, input_ids=ids) for key, m in models.items()}, args.rounds)
        for s in args.sparsities:
            csr = f"{len(sparse_layers(models[f'{s}']))}/{n_linear}"
            rows.append({"sparsity": s, "batch": batch, "dense": med["dense"], "sparse": med[f"{s}"], "csr": csr})
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; BERT-base shape, {args.layers} layers, "
        f"seq {args.seq}; medians of {args.rounds} interleaved rounds"
    )
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if torch.get_num_threads() > 1 and load >= cpus:
        print(
            f"note: load average {load:.1f} on {cpus} CPUs: other work competes for the cores, so multi-threaded "
            "timings mostly measure waiting (try --threads 1, or OMP_WAIT_POLICY=PASSIVE in the environment)"
        )
    if args.kernels:
        tokens = [args.seq] if args.quick else [args.seq, 16 * args.seq]
        grid = [0.5, 0.7, 0.8, 0.9, 0.95] if args.quick else [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
        kernel_sweep(args.rounds, tokens, grid)
    rows = encoder_bench(args)
    how = "every pruned layer forced to CSR" if args.force_csr else f"default threshold {DEFAULT_MIN_SPARSITY:g}"
    print(f"\nBertModel forward (embeddings + encoder + pooler), {how}")
    print("| sparsity | batch | dense ms | sparse ms | sparse/dense | dense tok/s | sparse tok/s | Linear as CSR |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        tokens = r["batch"] * args.seq
        print(
            f"| {percent(r['sparsity'])} | {r['batch']} | {r['dense'] * 1e3:.1f} | {r['sparse'] * 1e3:.1f} | "
            f"{r['sparse'] / r['dense']:.2f} | {tokens / r['dense']:.0f} | {tokens / r['sparse']:.0f} | {r['csr']} |"
        )
    print(f"({time.perf_counter() - start:.0f} s)")
    target = 0.9 if 0.9 in args.sparsities else max(args.sparsities)
    batch = min(args.batches)
    row = next(r for r in rows if r["sparsity"] == target and r["batch"] == batch)
    print(
        f"summary: at {percent(target)} sparsity the sparse encoder takes {row['sparse'] / row['dense']:.2f}x the "
        f"dense latency (batch {batch}, seq {args.seq}, {args.layers} layers, {torch.get_num_threads()} threads; "
        f"{row['csr']} Linear as CSR, {how})"
    )


if __name__ == "__main__":
    main()
