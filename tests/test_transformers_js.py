"""An exported ticket in Transformers.js (`@huggingface/transformers` on npm), run by Node from its local folder with
remote models off: the labels and scores PyTorch gives, from `onnx/model.onnx` and `onnx/model_quantized.onnx`.

The package is installed into a temporary folder (nothing under the repository); without `node`, `npm` or the npm
registry the test is skipped and says which.
"""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_lottery import export_ticket
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import make_config

ort = pytest.importorskip("onnxruntime", reason='the onnx extra is not installed: pip install "hf-lottery[onnx]"')
pytestmark = pytest.mark.slow

TEXTS = ["the film was good", "a dull and messy story", "brilliant", "the plot is flat but the cast is warm"]
SCRIPT = """import { pipeline, env } from "@huggingface/transformers";
const [folder, name, dtype, texts] = process.argv.slice(2);
env.allowRemoteModels = false;
env.localModelPath = folder;
const classify = await pipeline("text-classification", name, { dtype });
const out = [];
for (const text of JSON.parse(texts)) out.push((await classify(text))[0]);
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def node_package(tmp_path_factory):
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run Transformers.js")
    folder = tmp_path_factory.mktemp("transformers-js")
    env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL_CUDA": "skip"}  # CPU binaries ship in the package
    for command in (["npm", "init", "-y"], ["npm", "install", "--no-audit", "--no-fund", "@huggingface/transformers"]):
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"npm could not install @huggingface/transformers: {done.stderr.strip().splitlines()[-1:]}")
    (folder / "classify.mjs").write_text(SCRIPT)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)  # hundreds of MB


@pytest.fixture(scope="module")
def ticket(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("js-ticket")
    run_lottery(make_config(tiny_bert, root / "run", levels=1, epochs=3))
    export_ticket(root / "run", root / "ticket", level=1, onnx=True, int8=True)
    return root / "ticket"


def javascript(node_package, ticket, dtype: str) -> list[dict]:
    done = subprocess.run(
        ["node", str(node_package / "classify.mjs"), str(ticket.parent), ticket.name, dtype, json.dumps(TEXTS)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def python(ticket, onnx_file: str | None) -> list[tuple[str, float]]:
    """Label and score as PyTorch (onnx_file None) or onnxruntime gives them."""
    tokenizer = AutoTokenizer.from_pretrained(ticket)
    model = AutoModelForSequenceClassification.from_pretrained(ticket).eval()
    inputs = tokenizer(TEXTS, padding=True, return_tensors="pt")
    if onnx_file is None:
        with torch.no_grad():
            logits = model(**inputs).logits
    else:
        session = ort.InferenceSession(str(ticket / onnx_file))
        feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
        logits = torch.from_numpy(session.run(["logits"], feed)[0])
    probabilities = logits.softmax(-1)
    return [(model.config.id2label[int(p.argmax())], float(p.max())) for p in probabilities]


@pytest.mark.parametrize(("dtype", "onnx_file"), [("fp32", None), ("q8", "onnx/model_quantized.onnx")])
def test_transformers_js_gives_the_labels_and_scores_of_python(node_package, ticket, dtype, onnx_file):
    """fp32 reads onnx/model.onnx and is held to PyTorch; q8 reads onnx/model_quantized.onnx, held to PyTorch's
    labels and to onnxruntime's scores of the same int8 file."""
    got = javascript(node_package, ticket, dtype)
    expected = python(ticket, onnx_file)
    assert [g["label"] for g in got] == [label for label, _ in python(ticket, None)]
    np.testing.assert_allclose([g["score"] for g in got], [score for _, score in expected], atol=1e-3, rtol=0)
