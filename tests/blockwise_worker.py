"""``torchrun -m tests.blockwise_worker FOLDER``: one rank of a two-process ``blockwise_masks`` (gloo).

FOLDER holds ``model/`` (a saved tiny Llama) and ``batches.pt``; rank R calibrates on every other batch, from
the R-th, summing the statistics over the ranks, and saves the mask and the norms it drew from to
``rankR.safetensors`` (keys ``mask:<weight>`` and ``norms:<weight>``).
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

from hf_lottery.pruning.calibration import blockwise_masks
from tests.test_blockwise import block_weights, wanda


def summed(tensor: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(tensor)
    return tensor


folder = Path(sys.argv[1])
dist.init_process_group("gloo")
rank, size = dist.get_rank(), dist.get_world_size()
model = LlamaForCausalLM.from_pretrained(folder / "model")
share = torch.load(folder / "batches.pt")[rank::size]
norms: dict[str, torch.Tensor] = {}


def draw(weights, block_norms):
    norms.update(block_norms)
    return wanda(model)(weights, block_norms)


mask = blockwise_masks(model, block_weights(model), share, torch.device("cpu"), draw=draw, reduce=summed)
save_file({**{f"mask:{n}": m for n, m in mask.items()}, **{f"norms:{n}": v for n, v in norms.items()}},
          str(folder / f"rank{rank}.safetensors"))  # fmt: skip
dist.destroy_process_group()
