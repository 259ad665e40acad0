"""Bounded-memory calibration: time and peak memory of ``blockwise_masks`` (Wanda per output row, 50%) on
Llama-shaped models of growing size, random weights, float32, on the CPU.

Block-by-block calibration holds one block and the activations of all the calibration sequences at its input,
beside the model, instead of a whole-model forward's activations; this measures what that costs in memory and
how its time grows with the model. Each size runs in a fresh subprocess (random-token sequences, one per batch,
as a run's calibration examples), so that the child's peak resident set (``ru_maxrss``, its whole life: the
model's construction included) belongs to that size alone; the peak of the calibration alone is the kernel's
high-water mark (``VmHWM``) reset through ``/proc/self/clear_refs`` just before it. "Block + activations" is
the largest block's bytes plus the float32 hidden states of every sequence, the part the bound says must be
resident at once.

    python scripts/bench_calibration.py [--quick] [--sizes 100M,300M,1B] [--samples N] [--seq-len T]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from hf_lottery.foundations.storage import save_bool_tensors
from hf_lottery.pruning.calibration import blockwise_masks
from hf_lottery.pruning.masks import mask_shapes
from hf_lottery.pruning.strategies import STRATEGIES, ScoringContext

VOCAB = 32000
# Llama-3.2-1B's shape (hidden 2048, intermediate 8192, 16 layers, 32 heads, 8 KV heads), scaled down; untied
# embeddings and a 32000-token vocabulary.
SIZES = {
    "100M": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=8, num_attention_heads=12,
                 num_key_value_heads=4),
    "300M": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=16, num_attention_heads=16,
                 num_key_value_heads=4),
    "1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8),
}  # fmt: skip


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class WandaRows:
    """A ``draw``: Wanda per output row at density 0.5, through the strategy a run uses; counts its own time,
    which grows with the weights, not with the calibration tokens."""

    def __init__(self) -> None:
        self.strategy = STRATEGIES["wanda"](STRATEGIES["wanda"].arguments(calibration_samples=1))
        self.seconds = 0.0

    def __call__(self, weights: dict[str, torch.Tensor], norms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        previous = {n: torch.ones((), dtype=torch.bool).expand(w.shape) for n, w in weights.items()}
        mask = self.strategy.prune(ScoringContext(weights, previous, 0.5, scope="row", inputs=lambda samples: norms))
        self.seconds += time.perf_counter() - t0
        return mask


def child(size: str, samples: int, seq_len: int) -> dict:
    """Runs in the fresh subprocess: build the model, calibrate and prune it block by block once."""
    baseline = _status_kib("VmRSS") * 1024
    torch.manual_seed(0)
    t0 = time.perf_counter()
    config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=max(seq_len, 2048), **SIZES[size])
    model = LlamaForCausalLM(config)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    prunable = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in n]
    generator = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(VOCAB, (1, seq_len), generator=generator)} for _ in range(samples)]
    block_bytes = max(sum(p.numel() * p.element_size() for p in b.parameters()) for b in model.model.layers)
    held = samples * seq_len * config.hidden_size * 4
    build_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS") * 1024
    t0 = time.perf_counter()
    draw = WandaRows()
    mask = blockwise_masks(model, prunable, batches, torch.device("cpu"), draw=draw)
    calibrate_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as folder:  # as a run saves it: one tensor unpacked at a time
        save_bool_tensors(Path(folder) / "mask.safetensors", mask, mask_shapes(mask))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    calibration_peak = _status_kib("VmHWM") * 1024
    kept = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    if abs(kept - 0.5) > 1e-6:
        raise AssertionError(f"the mask keeps {kept:.4f} of the weights, not 0.5")
    return {
        "size": size,
        "params": params,
        "model_bytes": model_bytes,
        "block_params": sum(p.numel() for p in model.model.layers.parameters()),
        "baseline_bytes": baseline,
        "before_bytes": before,
        "peak_bytes": peak,
        "build_peak_bytes": build_peak,
        "calibration_peak_bytes": calibration_peak,
        "mask_bytes": sum(math.ceil(math.prod(shape) / 8) for shape in mask_shapes(mask).values()),
        "block_bytes": block_bytes,
        "held_bytes": held,
        "build_s": build_s,
        "calibrate_s": calibrate_s,
        "draw_s": draw.seconds,
        "samples": samples,
        "seq_len": seq_len,
        "threads": torch.get_num_threads(),
    }


def run_child(size: str, samples: int, seq_len: int) -> dict:
    command = [sys.executable, __file__, "--child", size, "--samples", str(samples), "--seq-len", str(seq_len)]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def per_k(row: dict) -> float:
    """Seconds of the forwards (calibration but the draws) per thousand calibration tokens, to compare runs of
    different lengths."""
    return (row["calibrate_s"] - row["draw_s"]) / (row["samples"] * row["seq_len"] / 1000)


def table(rows: list[dict]) -> str:
    gib = 2**30
    lines = [
        "| size | parameters | model GiB | samples x seq | RSS imports / +model GiB | peak RSS GiB | peak - model GiB "
        "| peak / model | build peak GiB | calibration rise GiB | mask GiB | block + activations MiB | build s "
        "| calibrate s | of it draws s | forwards s / 1k tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['params'] / 1e6:.0f}M | {r['model_bytes'] / gib:.2f} | "
            f"{r['samples']} x {r['seq_len']} | {r['baseline_bytes'] / gib:.2f} / {r['before_bytes'] / gib:.2f} | "
            f"{r['peak_bytes'] / gib:.2f} | "
            f"{(r['peak_bytes'] - r['model_bytes']) / gib:.2f} | {r['peak_bytes'] / r['model_bytes']:.2f}x | "
            f"{r['build_peak_bytes'] / gib:.2f} | {(r['calibration_peak_bytes'] - r['before_bytes']) / gib:.2f} | "
            f"{r['mask_bytes'] / gib:.2f} | "
            f"{r['block_bytes'] / 2**20:.0f} + {r['held_bytes'] / 2**20:.0f} | {r['build_s']:.0f} | "
            f"{r['calibrate_s']:.0f} | {r['draw_s']:.0f} | {per_k(r):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100M on 4 sequences of 64 tokens")
    parser.add_argument("--sizes", default=None, help=f"comma-separated, of {', '.join(SIZES)} (default all)")
    parser.add_argument("--samples", type=int, default=None, help="calibration sequences, one per batch (16)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (256)")
    parser.add_argument("--child", choices=list(SIZES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    samples = args.samples or (4 if args.quick else 16)
    seq_len = args.seq_len or (64 if args.quick else 256)
    if args.child:
        print(json.dumps(child(args.child, samples, seq_len)))
        return
    sizes = (args.sizes or ("100M" if args.quick else ",".join(SIZES))).split(",")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size {unknown[0]}; choose among {', '.join(SIZES)}")
    rows = []
    for size in sizes:
        rows.append(run_child(size, samples, seq_len))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    print(
        f"threads: {rows[0]['threads']}; peak RSS: ru_maxrss of the child, its whole life; build peak: ru_maxrss "
        "after the model's construction; calibration rise: VmHWM (reset just before blockwise_masks, read after the "
        "mask is saved) minus the RSS then; mask: the returned mask, packed, one bit a weight"
    )
    small, large = rows[0], rows[-1]
    growth = (
        f"; from {small['size']} to {large['size']}: block parameters x"
        f"{large['block_params'] / small['block_params']:.1f}, draw time x{large['draw_s'] / small['draw_s']:.1f}, "
        f"forward time per token x{per_k(large) / per_k(small):.1f}"
        if len(rows) > 1
        else ""
    )
    print(
        f"summary: {large['size']}: peak {large['peak_bytes'] / large['model_bytes']:.2f}x the model, calibration "
        f"rise {(large['calibration_peak_bytes'] - large['before_bytes']) / 2**30:.2f} GiB, "
        f"{large['calibrate_s']:.0f} s{growth}"
    )


if __name__ == "__main__":
    main()
