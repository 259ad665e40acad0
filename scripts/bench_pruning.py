"""Pruning cost: wall time and peak memory of one global magnitude-pruning step of IMP.

Every IMP level starts with ``magnitude_prune(weights, mask, keep)`` over all prunable weights at once
(global scope). On a large model this step must not need several copies of the weights: the goal is at
most 1 s on CPU and a peak of at most 1.5x the weights' bytes for a BERT-base-shaped model.

Each measurement runs in a fresh subprocess that holds only the weights (random normal, std 0.02, the
shapes of the default prunable tensors of ``BertModel``: encoder Linear weights and pooler) and an
80%-dense mask (a later IMP level), so that nothing else distorts the memory reading. Peak memory is the
rise of the process's resident set during the call: the kernel's high-water mark (``VmHWM``) is reset
just before the call through ``/proc/self/clear_refs`` and read after it, against ``VmRSS`` just before
(``ru_maxrss`` cannot be reset, so it is the fallback when ``clear_refs`` is not writable). Torch's
allocations do not show in ``tracemalloc``; the RSS does see them, the new mask included.

    python scripts/bench_pruning.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

from hf_lottery.pruning.masks import default_prunable
from hf_lottery.pruning.selection import magnitude_prune

CONFIGS = {
    "BERT-base shape": BertConfig(),
    "BERT-large shape": BertConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),
}
DENSITY = 0.8  # the mask the step starts from
PRUNE_FRACTION = 0.2  # IMP's default: remove 20% of the survivors


def prunable_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the default prunable weights, from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        model = BertModel(config)
    params = dict(model.named_parameters())
    return {name: tuple(params[name].shape) for name in default_prunable(model)}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(name: str, repeats: int) -> dict:
    """Runs in the fresh subprocess: build weights and mask, prune once for memory, then time repeats."""
    shapes = prunable_shapes(CONFIGS[name])
    gen = torch.Generator().manual_seed(0)
    weights = {n: torch.randn(s, generator=gen).mul_(0.02) for n, s in shapes.items()}
    mask = {n: torch.rand(s, generator=gen) < DENSITY for n, s in shapes.items()}
    numel = sum(w.numel() for w in weights.values())
    weight_bytes = sum(w.numel() * w.element_size() for w in weights.values())
    alive = sum(int(m.sum()) for m in mask.values())
    keep = round(alive * (1 - PRUNE_FRACTION))

    resettable = _reset_peak()
    rss_before = _status_kib("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    new = magnitude_prune(weights, mask, keep)
    first = time.perf_counter() - t0
    if resettable:
        peak = _status_kib("VmHWM")
    else:  # the high-water mark of the whole life: only valid if building the inputs peaked lower
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, maxrss_before)
    kept = sum(int(m.sum()) for m in new.values())
    if kept != keep:
        raise AssertionError(f"pruning kept {kept} weights, not {keep}")
    del new
    times = [first]
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        magnitude_prune(weights, mask, keep)
        times.append(time.perf_counter() - t0)
    return {
        "model": name,
        "numel": numel,
        "weight_bytes": weight_bytes,
        "alive": alive,
        "keep": keep,
        "first_s": first,
        "median_s": statistics.median(times),
        "repeats": repeats,
        "peak_extra_bytes": (peak - rss_before) * 1024,
        "peak_method": "VmHWM reset" if resettable else "ru_maxrss",
        "threads": torch.get_num_threads(),
    }


def run_child(name: str, repeats: int, threads: int | None) -> dict:
    command = [sys.executable, __file__, "--child", name, "--repeats", str(repeats)]
    out = subprocess.run(
        command + (["--threads", str(threads)] if threads else []),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        "| model | prunable weights | weights MB | alive -> keep | first call s | median s (n) | peak extra MB "
        "| peak / weights |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['numel'] / 1e6:.1f}M | {r['weight_bytes'] / 2**20:.0f} | "
            f"{r['alive'] / 1e6:.1f}M -> {r['keep'] / 1e6:.1f}M | {r['first_s']:.2f} | "
            f"{r['median_s']:.2f} ({r['repeats']}) | {r['peak_extra_bytes'] / 2**20:.0f} | "
            f"{r['peak_extra_bytes'] / r['weight_bytes']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the BERT-base shape only, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per model (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 5)
    if args.child:
        print(json.dumps(child(args.child, repeats)))
        return
    names = ["BERT-base shape"] if args.quick else list(CONFIGS)
    rows = [run_child(name, repeats, args.threads) for name in names]
    print(table(rows))
    print(f"peak: resident-set rise during the call ({rows[0]['peak_method']}), the new mask included")
    base = rows[0]
    print(
        f"summary: global pruning of {base['numel'] / 1e6:.1f}M weights: {base['median_s']:.2f} s, "
        f"peak rise {base['peak_extra_bytes'] / base['weight_bytes']:.2f}x the weights' bytes"
        + (
            f" ({rows[1]['numel'] / 1e6:.1f}M: {rows[1]['median_s']:.2f} s, "
            f"{rows[1]['peak_extra_bytes'] / rows[1]['weight_bytes']:.2f}x)"
            if len(rows) > 1
            else ""
        )
    )


if __name__ == "__main__":
    main()
