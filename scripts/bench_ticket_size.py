"""Ticket size: the sparse safetensors file against the information minimum and against the dense file.

A shipped ticket is worth its format only if the sparse file is close to what its content needs. The
information minimum of a pruned state dict is the survivor values as float32, plus the mask's entropy
(H(p) bits per prunable weight, p the density), plus every unpruned tensor as it is. The goal is a
prunable part at most 1.15x its minimum at 90% sparsity.

A BERT-base-shaped ``BertForSequenceClassification`` (built from ``BertConfig()``, nothing downloaded)
is pruned by global magnitude over its default prunable weights at each sparsity; its state dict, with
the zeros in place, is written with ``hf_lottery.tickets.sparse.save_sparse`` and with
``safetensors.torch.save_file``. The prunable part of the sparse file is the file minus the bytes of the
tensors stored whole, so the safetensors header and metadata count against it. Load times are from the
page cache (the files were just written), medians of interleaved repeats; ``load_file`` only maps the
file, so it is also timed followed by reading every value, as ``load_sparse`` does.

    python scripts/bench_ticket_size.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForSequenceClassification

from hf_lottery.pruning.masks import Mask, default_prunable, dense_mask
from hf_lottery.pruning.selection import magnitude_prune
from hf_lottery.tickets.sparse import load_sparse, save_sparse


def entropy_bits(p: float) -> float:
    """Binary entropy H(p) in bits: the least a mask of density p can cost per weight."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def load_dense_read(path: Path) -> dict[str, torch.Tensor]:
    """``load_file`` maps the file and reads nothing yet; this also reads every value, with the same
    finiteness check ``load_sparse`` runs, so that both loads end with the same data in memory."""
    state = load_file(path)
    for value in state.values():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{path.name} holds NaN or infinite values")
    return state


def load_times(sparse: Path, dense: Path, repeats: int) -> tuple[float, float, float]:
    """Median seconds of ``load_sparse``, ``load_file`` and ``load_file`` + reading, interleaved."""
    loads = [(sparse, load_sparse), (dense, load_file), (dense, load_dense_read)]
    times: list[list[float]] = [[] for _ in loads]
    for i in range(repeats):
        k = i % len(loads)
        for j in list(range(k, len(loads))) + list(range(k)):
            path, load = loads[j]
            t0 = time.perf_counter()
            load(path)
            times[j].append(time.perf_counter() - t0)
    sparse_s, dense_s, dense_read_s = (statistics.median(t) for t in times)
    return sparse_s, dense_s, dense_read_s


def bench(sparsities: list[float], repeats: int, folder: Path) -> list[dict]:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig())
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    names = default_prunable(model)
    weights = {n: state[n] for n in names}
    full: Mask = dense_mask(model, names)
    n_prunable = sum(m.numel() for m in full.values())
    whole_bytes = sum(nbytes(v) for k, v in state.items() if k not in full)
    del model
    rows = []
    for s in sparsities:
        masks = magnitude_prune(weights, full, round(n_prunable * (1 - s)))
        pruned_state = {k: v * masks[k] if k in masks else v for k, v in state.items()}
        sparse_path, dense_path = folder / f"s{s}.sparse.safetensors", folder / f"s{s}.safetensors"
        save_sparse(sparse_path, pruned_state, masks)
        save_file(pruned_state, str(dense_path))
        alive = sum(int(m.sum()) for m in masks.values())
        density = alive / n_prunable
        prunable_min = alive * 4 + entropy_bits(density) * n_prunable / 8
        sparse_bytes, dense_bytes = sparse_path.stat().st_size, dense_path.stat().st_size
        load_s, load_d, load_dr = load_times(sparse_path, dense_path, repeats)
        rows.append(
            {
                "sparsity": 1 - density,
                "sparse": sparse_bytes,
                "dense": dense_bytes,
                "minimum": prunable_min + whole_bytes,
                "prunable": sparse_bytes - whole_bytes,
                "prunable_min": prunable_min,
                "load_sparse": load_s,
                "load_dense": load_d,
                "load_dense_read": load_dr,
            }
        )
        sparse_path.unlink()
        dense_path.unlink()
    return rows


def table(rows: list[dict]) -> str:
    mb = 2**20
    lines = [
        "| sparsity | sparse file MB | dense file MB | sparse/dense | minimum MB | file/minimum | prunable part MB "
        "| its minimum MB | prunable/minimum | load_sparse ms | load_file ms | load_file + read ms "
        "| sparse / (dense + read) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sparsity']:.0%} | {r['sparse'] / mb:.1f} | {r['dense'] / mb:.1f} | {r['sparse'] / r['dense']:.3f}x "
            f"| {r['minimum'] / mb:.1f} | {r['sparse'] / r['minimum']:.3f}x | {r['prunable'] / mb:.1f} "
            f"| {r['prunable_min'] / mb:.1f} | {r['prunable'] / r['prunable_min']:.3f}x "
            f"| {r['load_sparse'] * 1e3:.0f} | {r['load_dense'] * 1e3:.0f} | {r['load_dense_read'] * 1e3:.0f} "
            f"| {r['load_sparse'] / r['load_dense_read']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="90%% sparsity only, fewer load repeats")
    parser.add_argument("--repeats", type=int, default=None, help="loads of each file (default 5, quick 2)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    args = parser.parse_args(argv)
    sparsities = [0.9] if args.quick else [0.5, 0.7, 0.9, 0.95]
    repeats = args.repeats or (2 if args.quick else 5)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = bench(sparsities, repeats, Path(tmp))
    print(table(rows))
    print("minimum: survivors as float32 + H(p) bits per prunable weight + the unpruned tensors as they are")
    print("load_file maps the file lazily; 'load_file + read' also reads every value (load_sparse's isfinite check)")
    r = min(rows, key=lambda r: abs(r["sparsity"] - 0.9))
    print(
        f"summary: at {r['sparsity']:.0%} sparsity the sparse file is {r['prunable'] / r['prunable_min']:.3f}x "
        f"the information minimum (prunable part; {r['sparse'] / r['minimum']:.2f}x whole file) and "
        f"{r['sparse'] / r['dense']:.2f}x the dense file; load_sparse takes {r['load_sparse']:.1f} s, "
        f"{r['load_sparse'] / r['load_dense_read']:.1f}x load_file + reading the dense file"
    )


if __name__ == "__main__":
    main()
