"""``torchrun -m tests.mp_worker <hf-lottery args>``: the CLI, instrumented for the multi-process tests.

MP_RECORD_DIR: each rank saves the masks it trained with to ``masks_rank<R>.safetensors`` there.
MP_STOP_AFTER=N: every rank stops (exit 3) when it is about to train level run N+1, as a kill would.
"""

import os
import sys
from pathlib import Path

from accelerate import PartialState
from safetensors.torch import save_file

from hf_lottery import lottery
from hf_lottery.cli import main

recorded: dict = {}
trainings = 0
real_mask_for, real_train = lottery._mask_for, lottery.train


def recording_mask_for(run, branch, level):
    mask = real_mask_for(run, branch, level)
    recorded.update({f"{branch}/{level}/{name}": m.contiguous() for name, m in mask.items()})
    return mask


def stopping_train(*args, **kwargs):
    global trainings
    if trainings == int(os.environ.get("MP_STOP_AFTER", "-1")):
        sys.exit(3)
    trainings += 1
    return real_train(*args, **kwargs)


lottery._mask_for, lottery.train = recording_mask_for, stopping_train
code = main(sys.argv[1:])
if os.environ.get("MP_RECORD_DIR"):
    save_file(
        recorded, str(Path(os.environ["MP_RECORD_DIR"]) / f"masks_rank{PartialState().process_index}.safetensors")
    )
sys.exit(code)
