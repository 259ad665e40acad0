"""The sparse file format: bit-exact round trips, the documented layout, and untrusted files refused."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import save_bool_tensors
from hf_lottery.pruning.masks import PackedMask, mask_shapes
from hf_lottery.tickets.sparse import load_masks, load_sparse, pack_mask, save_masks, save_sparse, unpack_mask


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (9,), (13, 5), (3, 4, 5)])
def test_pack_unpack_round_trip(shape):
    torch.manual_seed(0)
    mask = torch.rand(shape) > 0.5
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(mask.numel() / 8)
    assert torch.equal(unpack_mask(packed, shape), mask)


def test_bit_order_is_least_significant_first():
    mask = torch.tensor([True, False, False, False, False, False, False, False, True, True])
    assert pack_mask(mask).tolist() == [1, 3]


def _sparse(tmp_path, density=0.1):
    torch.manual_seed(0)
    weight = torch.randn(64, 48)
    mask = torch.rand(64, 48) < density
    mask[0, 0] = True
    weight = weight * mask
    weight[0, 0] = 0.0  # a survivor that is exactly zero: the mask, not the value, says it is alive
    state = {"enc.weight": weight, "enc.bias": torch.randn(64), "ids": torch.arange(5)}
    path = tmp_path / "model.sparse.safetensors"
    save_sparse(path, state, {"enc.weight": mask})
    return path, state, mask


def test_sparse_state_round_trips_bit_exactly(tmp_path):
    path, state, mask = _sparse(tmp_path)
    loaded, masks = load_sparse(path)
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) and loaded[k].dtype == state[k].dtype for k in state)
    assert torch.equal(masks["enc.weight"], mask) and masks["enc.weight"][0, 0]
    raw = load_file(path)  # the documented layout, readable without this package
    assert set(raw) == {"enc.weight.values", "enc.weight.mask", "enc.bias", "ids"}
    assert raw["enc.weight.values"].numel() == int(mask.sum())


def test_masks_file_round_trips(tmp_path):
    masks = {"a.weight": torch.rand(10, 3) > 0.5, "b.weight": torch.rand(17) > 0.9}
    save_masks(tmp_path / "masks.safetensors", masks)
    loaded = load_masks(tmp_path / "masks.safetensors")
    assert all(torch.equal(loaded[k], masks[k]) for k in masks)


def test_sparse_file_is_close_to_the_information_minimum(tmp_path):
    """At 90% sparsity: survivor values plus 1 bit per weight, plus a small header."""
    torch.manual_seed(0)
    weight = torch.randn(768, 3072)
    mask = weight.abs() >= weight.abs().flatten().kthvalue(int(0.9 * weight.numel())).values
    path = tmp_path / "w.sparse.safetensors"
    save_sparse(path, {"w": weight}, {"w": mask})
    values_and_bits = int(mask.sum()) * 4 + weight.numel() / 8
    p = mask.float().mean().item()
    entropy_bytes = weight.numel() * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / 8
    size = path.stat().st_size
    assert size <= values_and_bits + 1024
    assert size / (int(mask.sum()) * 4 + entropy_bytes) < 1.15  # vs survivor values + the mask's entropy


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("truncate", "not a readable safetensors file"),
        ("format", "not an hf-lottery-sparse file"),
        ("more_survivors", "survivors in its mask but"),
        ("nan", "holds NaN or infinite values"),
        ("padding", "bits set past its"),
        ("shapes", "packed mask of enc.weight is torch.uint8 of"),
        ("no_values", "lacks its .values or .mask tensor"),
    ],
)
def test_untrusted_sparse_files_are_refused_with_the_file_name(tmp_path, tamper, message):
    path, _, mask = _sparse(tmp_path)
    tensors = load_file(path)
    with open(path, "rb") as fh:
        from safetensors import safe_open

        metadata = safe_open(str(path), "pt").metadata()
        data = fh.read()
    if tamper == "truncate":
        path.write_bytes(data[: len(data) - 100])
    else:
        if tamper == "format":
            metadata["format"] = "something-else"
        elif tamper == "more_survivors":
            tensors["enc.weight.values"] = tensors["enc.weight.values"][:-1]
        elif tamper == "nan":
            tensors["enc.weight.values"][1] = float("nan")
        elif tamper == "padding":
            tensors["enc.weight.mask"] = torch.cat(
                [tensors["enc.weight.mask"][:-1], torch.tensor([255], dtype=torch.uint8)]
            )
            metadata["shapes"] = json.dumps({"enc.weight": [64 * 48 - 3]})
        elif tamper == "shapes":
            metadata["shapes"] = json.dumps({"enc.weight": [64, 49]})
        elif tamper == "no_values":
            del tensors["enc.weight.values"]
        save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(LotteryError, match=message) as err:
        load_sparse(path)
    assert str(err.value).startswith("model.sparse.safetensors: ")


@pytest.mark.parametrize("packed", [False, True])
def test_mask_files_written_one_tensor_at_a_time_round_trip(tmp_path, packed):
    """A run's mask file, written tensor by tensor from a mask held packed or as plain tensors, is a safetensors
    file any reader loads back bit for bit."""
    generator = torch.Generator().manual_seed(0)
    shapes = {"a.weight": (7, 13), "b.weight": (3,), "c.weight": (0, 4), "d.weight": (64, 33)}
    plain = {name: torch.rand(shape, generator=generator) > 0.5 for name, shape in shapes.items()}
    mask = PackedMask() if packed else dict(plain)
    if packed:
        for name, m in plain.items():
            mask[name] = m
    save_bool_tensors(tmp_path / "mask.safetensors", mask, mask_shapes(mask))
    loaded = load_file(tmp_path / "mask.safetensors")
    assert list(loaded) == sorted(plain) and all(torch.equal(loaded[n], plain[n]) for n in plain)
    assert all(loaded[n].dtype == torch.bool and loaded[n].shape == plain[n].shape for n in plain)
