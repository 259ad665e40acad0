"""The card's "What runs where": the trimmed vocabulary, a table of the shipped artifacts (file, size, scores) and
how to run the ONNX files in onnxruntime and Transformers.js. Empty for an export that ships none of them."""

from __future__ import annotations

from pathlib import Path

from .vocab import token_change

JS_TASKS = {"sequence-classification": "text-classification", "token-classification": "token-classification",
            "masked-lm": "fill-mask", "causal-lm": "text-generation"}  # fmt: skip


def runtimes_section(facts: dict, repo_id: str | None, folder: str) -> str:
    """Markdown for the card, from what export recorded in ``facts`` (``vocabulary``, ``artifacts``)."""
    vocabulary, artifacts = facts.get("vocabulary"), facts.get("artifacts")
    if vocabulary is None and artifacts is None:
        return ""
    parts = ["## What runs where"]
    if vocabulary is not None:
        parts.append(vocabulary_sentence(vocabulary))
    if artifacts is not None:
        parts.append(_table(artifacts))
        if "onnx" in artifacts:
            parts.append(_usage(artifacts, facts["task_kind"], repo_id or folder, repo_id is not None))
    return "\n\n".join(parts) + "\n\n"


def vocabulary_sentence(vocabulary: dict) -> str:
    source = vocabulary["source"]
    source = source if isinstance(source, str) else "the text of " + ", ".join(f"`{s}`" for s in source)
    fallback = ", the special tokens and the single-character pieces" if vocabulary["fallback_pieces"] else ""
    changes = {split: token_change(counts) for split, counts in vocabulary["splits"].items()}
    splits = "; ".join(
        f"on the {split} data {unknown:.2%} of the tokens are unknown ({before:.2%} before), {change:+.1%} tokens"
        for split, (unknown, before, change) in changes.items()
    )
    return (
        f"The vocabulary is **trimmed** to the token ids of {source}{fallback}: {vocabulary['kept_ids']:,} of the "
        f"{vocabulary['vocab_size']:,} token ids, {vocabulary.get('parameters_removed', 0):,} parameters fewer. "
        f"Text with other words still runs: they read as `[UNK]` or as shorter pieces: {splits} (at the "
        "run's --max-length)."
    )


def _table(artifacts: dict) -> str:
    metric, rows = artifacts["metric"], artifacts["rows"]
    splits = list(rows[0]["scores"])
    latency = artifacts.get("latency")
    header = ["artifact", "file", "size", *(f"{split} {metric}" for split in splits)]
    header += ["latency vs dense PyTorch"] if latency else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["name"], f"`{row['file']}`", f"{row['bytes'] / 1e6:.2f} MB"]
        cells += [f"{row['scores'][split]:.4f}" for split in splits]
        cells += [f"{row['latency']:.2f}×"] if latency else []
        lines.append("| " + " | ".join(cells) + " |")
    text = "Each artifact scored at export on the run's data, read by this repository's tokenizer:\n\n" + "\n".join(
        lines
    )
    onnx = artifacts.get("onnx")
    if onnx is not None:
        text += (
            f"\n\nThe ONNX model was checked in onnxruntime against PyTorch at export: logits within "
            f"{onnx['parity_max_abs_diff']:.1e} on validation batches (at most {onnx['parity_tolerance']:g} allowed); "
            "batch and sequence length are dynamic."
        )
    if latency:
        text += (
            "\n\nLatency: each artifact's forward time over the dense masked PyTorch model's "
            f"({latency['dense_ms']:.1f} ms here), timed at export on CPU: {latency['threads']} thread, "
            f"batch {latency['batch']}, {latency['sequence_length']} tokens, medians of {latency['repeats']} passes "
            "taking turns in one process. The ratio carries to other machines better than the times."
        )
    if artifacts.get("int8_warning"):
        text += f"\n\n**Note:** {artifacts['int8_warning']}."
    return text


def _usage(artifacts: dict, task_kind: str, where: str, on_hub: bool) -> str:
    names = artifacts["onnx"]["inputs"]
    quantized = any(row["name"] == "ONNX int8" for row in artifacts["rows"])
    file = "onnx/model_quantized.onnx" if quantized else "onnx/model.onnx"
    path = (
        f'hf_hub_download("{where}", "{file}")' if on_hub else f'"{where}/{file}"'  # a local export
    )
    download = "from huggingface_hub import hf_hub_download\n" if on_hub else ""
    dtype = "q8" if quantized else "fp32"
    model_id, local, js_import = where, "", "pipeline"
    if not on_hub:  # Transformers.js reads a local model as a folder name under env.localModelPath
        model_id, js_import = Path(where).name, "pipeline, env"
        local = f'\nenv.allowRemoteModels = false;\nenv.localModelPath = "{Path(where).parent}";'
    return f"""With onnxruntime in Python:

```python
import onnxruntime
{download}from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{where}")
session = onnxruntime.InferenceSession({path})
inputs = tokenizer(["A sentence to score."], return_tensors="np")
logits = session.run(["logits"], {{name: inputs[name] for name in {names!r}}})[0]
```

With Transformers.js, in Node or the browser (`npm install @huggingface/transformers`; `dtype: "{dtype}"` reads
`{file}`{', `"fp32"` reads `onnx/model.onnx`' if quantized else ""}):

```js
import {{ {js_import} }} from "@huggingface/transformers";{local}
const run = await pipeline("{JS_TASKS[task_kind]}", "{model_id}", {{ dtype: "{dtype}" }});
console.log(await run("A sentence to score."));
```"""
