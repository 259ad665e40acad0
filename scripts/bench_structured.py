"""Structured tickets against unstructured ones on CPU: latency ratio to dense, parameters and file size.

    python scripts/bench_structured.py                # BERT-base shape, seq 128, batch 1 and 16, 1 and 2 threads
    python scripts/bench_structured.py --quick        # 2 layers, 3 rounds: a few minutes
    python scripts/bench_structured.py --kernels      # first, one layer's matmul dense vs BSR (32x32) by sparsity

For 50%, 75% and 90% of the encoder's Linear weights removed, four tickets of ``BertModel(BertConfig())``
(random weights, no download), each pruned per tensor so that every layer has the same sparsity:

- element: single weights by magnitude, every pruned layer on CSR (``sparsify_for_inference(min_sparsity=0)``);
- block 32: 32x32 blocks by their norm (``--unit block``), every pruned layer on BSR;
- compact neuron: FFN neurons by their norm (``--unit neuron``), exported compact (``hf_lottery.tickets.compact``): a
  stock ``BertModel`` with a smaller ``intermediate_size``. Neurons span two thirds of the weights, so they
  cannot remove 75% or more;
- compact layers + neurons: a stock ``BertModel`` with fewer layers and a smaller FFN, built from its config
  (the parameter count is what matters for speed, not which weights are kept).

Dense and each variant are timed in interleaved rounds in this one process (medians), so a shared machine slows
both alike; ratios below 1 are faster than dense. File size: the dense ``model.safetensors``; the sparse file
(survivors and a 1-bit mask) for element and block tickets; the compact ``model.safetensors`` for the others.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_inference import median_times, percent  # noqa: E402

from hf_lottery.foundations.arguments import PruneArguments  # noqa: E402
from hf_lottery.lottery.run import run_units  # noqa: E402
from hf_lottery.pruning.masks import apply_mask, default_prunable, prunable_weights, transposed_weights  # noqa: E402
from hf_lottery.pruning.strategies import STRATEGIES, ScoringContext  # noqa: E402
from hf_lottery.tickets.compact import compaction  # noqa: E402
from hf_lottery.tickets.inference import BlockSparseLinear, sparsify_for_inference  # noqa: E402
from hf_lottery.tickets.sparse import save_sparse  # noqa: E402

FFN_SHARE = 2 / 3  # of a BERT layer's Linear weights: 2 x 768 x 3072 of 4 x 768^2 + 2 x 768 x 3072


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 layers and 3 rounds")
    parser.add_argument("--layers", type=int, help="encoder layers (default 12, 2 with --quick)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per measurement (default 5, 3 with --quick)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--kernels", action="store_true", help="first sweep one layer's matmul, dense vs BSR")
    args = parser.parse_args(argv)
    args.layers = args.layers or (2 if args.quick else 12)
    args.rounds = args.rounds or (3 if args.quick else 5)
    return args


def pruned(dense: BertModel, unit: str, density: float) -> tuple[BertModel, dict[str, torch.Tensor]]:
    """A copy of ``dense`` with ``density`` of its ``unit``s kept in every tensor (or block), and its masks."""
    model = copy.deepcopy(dense)
    prunable = default_prunable(model)
    prune = PruneArguments(unit=unit, scope="layer")
    units = run_units(model, prunable, prune, [1.0, density])
    weights = prunable_weights(model, prunable)
    previous = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    context = ScoringContext(weights, previous, density, scope="layer", units=units,
                             transposed=transposed_weights(model, prunable))  # fmt: skip
    masks = STRATEGIES["magnitude"]().prune(context)
    apply_mask(model, masks)
    return model, masks


def variants(dense: BertModel, sparsity: float) -> dict[str, tuple[BertModel | None, Callable[[Path], None] | str]]:
    """Each variant's model at ``sparsity`` of the encoder's Linear weights, and how to write its file (or why there
    is none)."""
    out: dict[str, tuple[BertModel | None, Callable[[Path], None] | str]] = {}
    element, masks = pruned(dense, "element", 1 - sparsity)
    state = {k: v.clone() for k, v in element.state_dict().items()}
    out["element, CSR"] = (sparsify_for_inference(element, 0.0, masks=masks), partial(save_sparse, state=state,
                                                                                     masks=masks))  # fmt: skip
    block, block_masks = pruned(dense, "block", 1 - sparsity)
    block_state = {k: v.clone() for k, v in block.state_dict().items()}
    block = sparsify_for_inference(block, 1.0, masks=block_masks, min_block_sparsity=0.0)
    assert any(isinstance(m, BlockSparseLinear) for m in block.modules())
    out["block 32, BSR"] = (block, partial(save_sparse, state=block_state, masks=block_masks))
    neurons = 1 - sparsity / FFN_SHARE
    if neurons > 0:
        model, masks = pruned(dense, "neuron", neurons)
        small = compaction(model, masks, "neuron").cut_model(model).eval()
        out["compact neuron"] = (small, partial(_save, small))
    else:
        out["compact neuron"] = (None, f"n/a: neurons hold {FFN_SHARE:.0%} of the weights")
    config = copy.deepcopy(dense.config)
    cut = _layers_and_ffn(config.num_hidden_layers, 1 - sparsity)
    if cut is None:
        out["compact layers + neurons"] = (None, f"n/a: no count of {config.num_hidden_layers} layers fits")
        return out
    config.num_hidden_layers, ffn = cut
    config.intermediate_size = round(config.intermediate_size * ffn)
    small = BertModel(config).eval()
    out[f"compact {config.num_hidden_layers} layers + FFN {ffn:.0%}"] = (small, partial(_save, small))
    return out


def _layers_and_ffn(layers: int, density: float) -> tuple[int, float] | None:
    """The most layers (at most half of them) and the FFN share that keep ``density`` of the Linear weights."""
    for kept in range(layers // 2, 0, -1):
        ffn = (density * layers / kept - (1 - FFN_SHARE)) / FFN_SHARE
        if 0 < ffn <= 1:
            return kept, ffn
    return None


def _save(model: BertModel, path: Path) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def file_mb(write: Callable[[Path], None]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        write(path)
        return path.stat().st_size / 1e6


@torch.inference_mode()
def kernel_sweep(rounds: int, tokens: list[int], sparsities: list[float]) -> None:
    """One layer, ``F.linear`` on the dense weight vs ``BlockSparseLinear`` with 32x32 blocks."""
    print(f"\nkernels: BSR (32x32) time / dense F.linear time, one layer (median of {rounds} interleaved rounds)")
    print("| out x in | tokens | dense ms | " + " | ".join(percent(s) for s in sparsities) + " |")
    print("|---|---|---|" + "---|" * len(sparsities))
    generator = torch.Generator().manual_seed(0)
    for out_features, in_features in [(3072, 768), (768, 3072), (768, 768)]:
        weight = torch.randn(out_features, in_features, generator=generator) * 0.02
        bias = torch.randn(out_features, generator=generator) * 0.02
        layers = {}
        for s in sparsities:
            tiles = torch.rand(out_features // 32, in_features // 32, generator=generator) >= s
            alive = tiles.repeat_interleave(32, 0).repeat_interleave(32, 1)
            layers[s] = BlockSparseLinear(weight, bias, alive, 32)
        for n in tokens:
            x = torch.randn(n, in_features, generator=generator)
            fns: dict[str, Callable[[], object]] = {"dense": partial(F.linear, x, weight, bias)}
            fns.update({f"{s}": partial(layer, x) for s, layer in layers.items()})
            med = median_times(fns, rounds, calls=3)
            ratios = " | ".join(f"{med[f'{s}'] / med['dense']:.2f}" for s in sparsities)
            print(f"| {out_features}x{in_features} | {n} | {med['dense'] * 1e3:.2f} | {ratios} |", flush=True)


@torch.inference_mode()
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"torch {torch.__version__}, {args.layers} layers, seq {args.seq}, median of {args.rounds} rounds")
    if args.kernels:
        for threads in args.threads:
            torch.set_num_threads(threads)
            print(f"\n{threads} thread(s)")
            kernel_sweep(args.rounds, [args.seq, 16 * args.seq], [0.3, 0.4, 0.5, 0.6, 0.75, 0.9])
    torch.manual_seed(0)
    dense = BertModel(BertConfig(num_hidden_layers=args.layers)).eval()
    dense_mb = file_mb(partial(_save, dense))
    print("\n| removed | ticket | parameters | file MB | " + " | ".join(
        f"{t} thr, batch {b}" for t in args.threads for b in args.batches) + " |")  # fmt: skip
    print("|---|---|---|---|" + "---|" * (len(args.threads) * len(args.batches)))
    print(f"| 0% | dense | {dense.num_parameters():,} | {dense_mb:.1f} | " + " | ".join(
        "1.00" for _ in args.threads for _ in args.batches) + " |", flush=True)  # fmt: skip
    inputs = {b: torch.randint(0, dense.config.vocab_size, (b, args.seq)) for b in args.batches}
    for sparsity in args.sparsities:
        for name, (model, write) in variants(dense, sparsity).items():
            if model is None:
                print(f"| {percent(sparsity)} | {name} | | | {write} |", flush=True)
                continue
            params = sum(int((p != 0).sum()) for p in model.state_dict().values() if p.layout == torch.strided)
            params += sum(m.values().numel() for m in model.buffers() if m.layout != torch.strided)
            cells = []
            for threads in args.threads:
                torch.set_num_threads(threads)
                for batch in args.batches:
                    ids = inputs[batch]
                    fns = {"dense": partial(dense, input_ids=ids), "ticket": partial(model, input_ids=ids)}
                    med = median_times(fns, args.rounds)
                    cells.append(f"{med['ticket'] / med['dense']:.2f}")
            print(f"| {percent(sparsity)} | {name} | {params:,} | {file_mb(write):.1f} | {' | '.join(cells)} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
