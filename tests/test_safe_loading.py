"""``load_ticket`` as ``from_pretrained`` behaves (eval mode, ``dtype``, ``device``), and safely: a config.json
that does not describe the sparse file is refused from the file's header, before any model is allocated.
"""

import json
import resource
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification

from hf_lottery import export_ticket, load_ticket
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.lottery.config import RunConfig
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.tickets.sparse import (
    FORMAT_VERSION,
    SPARSE_FORMAT,
    load_sparse,
    pack_mask,
    read_sparse_header,
    save_sparse,
)
from tests.helpers import make_config

HOSTILE = {  # far bigger claims than the 2-layer, 32-wide ticket: deep (caught by the layer count) and wide
    "deep": {"hidden_size": 4096, "num_hidden_layers": 48, "intermediate_size": 16384},
    "wide": {"hidden_size": 16384, "num_hidden_layers": 2, "intermediate_size": 65536},
}


@pytest.fixture(scope="module")
def ticket(tiny_bert, tmp_path_factory) -> Path:
    """A sequence-classification ticket folder: one level, two training steps."""
    out = tmp_path_factory.mktemp("safe") / "run"
    run_lottery(make_config(tiny_bert, out, levels=1, max_steps=2))
    export_ticket(out, out.parent / "ticket", level=1)
    return out.parent / "ticket"


@pytest.fixture(scope="module")
def mlm_ticket(tiny_bert, text_files, tmp_path_factory) -> Path:
    """A masked-LM ticket folder, whose decoder is tied to the word embeddings."""
    out = tmp_path_factory.mktemp("safe-mlm") / "run"
    train, valid = text_files
    config = RunConfig.build(
        "prune", model_name_or_path=str(tiny_bert), train_file=str(train), validation_file=str(valid), levels=1,
        prune_fraction=0.5, max_steps=2, batch_size=8, max_length=32, seed=0, output_dir=str(out),
    )  # fmt: skip
    run_lottery(config)
    export_ticket(out, out.parent / "ticket", level=1)
    return out.parent / "ticket"


def with_config(folder: Path, tmp_path: Path, **changes) -> Path:
    """A copy of the ticket folder whose config.json is changed (a wrong or hostile one)."""
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, **changes}))
    return copy


def logits(model) -> torch.Tensor:
    ids = torch.randint(6, 60, (3, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def refused(folder: Path, *fragments: str) -> str:
    with pytest.raises(LotteryError) as err:
        load_ticket(folder)
    message = str(err.value)
    assert "\n" not in message and all(f in message for f in fragments), message
    return message


def test_a_loaded_ticket_is_in_eval_mode_with_the_logits_of_stock_from_pretrained(ticket):
    model, _ = load_ticket(ticket)
    assert not model.training and not any(m.training for m in model.modules())
    stock = AutoModelForSequenceClassification.from_pretrained(ticket).eval()
    assert torch.equal(logits(model), logits(stock))
    assert torch.equal(logits(model), logits(model))  # no dropout: the same input gives the same logits


def test_dtype_and_device(ticket, tmp_path):
    dense, _ = load_ticket(ticket)
    half, masks = load_ticket(ticket, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16} and half.config.dtype == torch.bfloat16
    assert {p.device for p in half.parameters()} == {torch.device("cpu")} and not half.training
    params = dict(half.named_parameters())
    assert all((params[k][~m] == 0).all() for k, m in masks.items())  # pruned weights stay exact zeros
    assert torch.allclose(logits(half).float(), logits(dense), atol=0.05)
    assert load_ticket(ticket, dtype="bfloat16")[0].dtype == torch.bfloat16
    assert {p.dtype for p in dense.parameters()} == {torch.float32}  # None keeps the file's dtype

    bf16_file = with_config(ticket, tmp_path)  # a bf16 file: a config.json that names no dtype takes the file's
    state, file_masks = load_sparse(bf16_file / "model.sparse.safetensors")
    save_sparse(bf16_file / "model.sparse.safetensors", {k: v.bfloat16() for k, v in state.items()}, file_masks)
    refused(bf16_file, "model.sparse.safetensors: bert.", "is torch.bfloat16", "config.json says torch.float32")
    config = json.loads((bf16_file / "config.json").read_text())
    (bf16_file / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "dtype"}))
    assert load_ticket(bf16_file)[0].dtype == torch.bfloat16

    with pytest.raises(LotteryError, match="dtype must be a floating torch dtype"):
        load_ticket(ticket, dtype=torch.int8)
    with pytest.raises(LotteryError, match="is not a torch device"):
        load_ticket(ticket, device="gpu please")
    if not torch.cuda.is_available():
        with pytest.raises(LotteryError, match="CUDA is not available"):
            load_ticket(ticket, device="cuda:0")


@pytest.mark.parametrize("claim", HOSTILE)
def test_a_hostile_config_is_refused_from_the_header_without_allocating(ticket, tmp_path, claim):
    hostile = with_config(ticket, tmp_path, **HOSTILE[claim])
    with torch.device("meta"):
        claimed = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(hostile))
    claimed_bytes = sum(p.numel() * p.element_size() for p in claimed.parameters())
    assert claimed_bytes > 20e9  # what building the claimed model for real would take
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    start = time.perf_counter()
    message = refused(hostile, "model.sparse.safetensors: ", "config.json")
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(
        f"{claim} claim ({claimed_bytes / 1e9:.0f} GB): refused in {seconds:.2f} s, peak RSS +{grown / 2**20:.1f} MiB"
    )
    print(message)
    assert seconds < 5
    assert grown < 200 * 2**20 and grown < claimed_bytes / 100


@pytest.mark.parametrize(
    ("layers", "fragment"),
    [(3, "lacks bert.encoder.layer.2."), (1, "has bert.encoder.layer.1."), (10**7, "claims 10000000 layers")],
)
def test_a_config_with_more_or_fewer_layers_than_the_file_is_refused(ticket, tmp_path, layers, fragment):
    assert json.loads((ticket / "config.json").read_text())["num_hidden_layers"] == 2
    start = time.perf_counter()
    refused(with_config(ticket, tmp_path, num_hidden_layers=layers), "model.sparse.safetensors:", fragment)
    assert time.perf_counter() - start < 5  # ten million layers are not built, even on the meta device


def test_a_config_wider_than_the_file_is_refused(ticket, tmp_path):
    refused(with_config(ticket, tmp_path, intermediate_size=128), "model.sparse.safetensors:", "config.json says")


def test_tied_weights_and_non_persistent_buffers_survive(mlm_ticket):
    model, masks = load_ticket(mlm_ticket)
    assert masks and not model.training
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    positions = model.bert.embeddings.position_ids
    assert torch.equal(positions, torch.arange(model.config.max_position_embeddings).expand(1, -1))
    stock = AutoModelForMaskedLM.from_pretrained(mlm_ticket).eval()
    assert torch.equal(logits(model), logits(stock))
    rewind, _ = load_ticket(mlm_ticket, weights="rewind", dtype=torch.bfloat16)
    assert rewind.get_output_embeddings().weight.data_ptr() == rewind.get_input_embeddings().weight.data_ptr()


def test_the_header_describes_what_load_sparse_returns(ticket, tmp_path):
    header, header_masks = read_sparse_header(ticket / "model.sparse.safetensors")
    state, masks = load_sparse(ticket / "model.sparse.safetensors")
    assert {k: (v.dtype, v.shape) for k, v in header.items()} == {k: (v.dtype, v.shape) for k, v in state.items()}
    assert {k: (v.dtype, v.shape) for k, v in header_masks.items()} == {k: (v.dtype, v.shape) for k, v in masks.items()}
    assert all(v.is_meta for v in [*header.values(), *header_masks.values()])

    def header_of(values: int, shape: list[int]) -> None:
        metadata = {"format": SPARSE_FORMAT, "format_version": FORMAT_VERSION, "shapes": json.dumps({"w": shape})}
        tensors = {"w.values": torch.zeros(values), "w.mask": pack_mask(torch.ones(4, dtype=torch.bool))}
        save_file(tensors, tmp_path / "bad.sparse.safetensors", metadata=metadata)
        read_sparse_header(tmp_path / "bad.sparse.safetensors")

    header_of(4, [2, 2])
    with pytest.raises(LotteryError, match="w has values of shape \\[5\\], expected 1-D, at most 4 long"):
        header_of(5, [2, 2])  # more survivors than elements: refused from the header alone
    with pytest.raises(LotteryError, match="packed mask of w is torch.uint8 of 1 bytes, expected uint8 of 2"):
        header_of(4, [4, 4])
    with pytest.raises(LotteryError, match="negative dimension"):
        header_of(4, [-2, -2])
