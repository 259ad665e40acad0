"""Block Influence (Men et al. 2024, ShortGPT): a transformer block's score is 1 - the mean cosine similarity of
its input and output hidden states over the tokens of a seeded subset of the training examples: a block that
barely turns the hidden states changes the model least when removed. Only whole blocks (``--unit layer``).

Each block's input and output are read by hooks on the block itself, so a final norm that a model applies after
its last block (GPT-2, Llama) does not count as the last block's change; a block removed before is skipped (it
returns its input) and scores 0, and is not alive anyway. Eval mode, float32 cosines, one example per batch (no
padding): deterministic on one process; the run draws on the main process and broadcasts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hf_lottery.pruning.masks import Mask
from hf_lottery.pruning.units import LAYERS_GROUP

from .arguments import BlockInfluenceArguments
from .base import PruningStrategy, ScoringContext


class BlockInfluence(PruningStrategy):
    name = "block-influence"
    description = "by Block Influence, 1 - the cosine of a block's input and output hidden states (ShortGPT)"
    arguments = BlockInfluenceArguments
    calibrated = True
    whole_model = True
    samples_option = "influence_samples"
    units = ("layer",)

    def prune(self, context: ScoringContext) -> Mask:
        return self.keep_units(context, {LAYERS_GROUP: block_influence(context, self.calibration_samples)})


@torch.no_grad()
def block_influence(context: ScoringContext, samples: int) -> torch.Tensor:
    """Per block of ``context.units``, 1 - the mean over all tokens of ``samples`` calibration examples of the
    cosine similarity between the block's input and output hidden states."""
    model, batches = context.model, context.calibration_examples(samples)
    blocks = model.get_submodule(context.units.path)
    totals = torch.zeros(len(blocks), dtype=torch.float64)

    def hook(index: int):
        def record(module, args, kwargs, output) -> None:
            before = args[0] if args else kwargs["hidden_states"]
            after = output[0] if isinstance(output, tuple) else output
            cosine = F.cosine_similarity(before.float(), after.float(), dim=-1)
            totals[index] += cosine.sum().double().cpu()

        return record

    handles = [block.register_forward_hook(hook(i), with_kwargs=True) for i, block in enumerate(blocks)]
    tokens = context.observe(batches, handles)
    return (1.0 - totals / tokens).float()
