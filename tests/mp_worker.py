"""``torchrun -m tests.mp_worker <hf-lottery args>``: the CLI, instrumented for the multi-process tests.

MP_RECORD_DIR: each rank saves the mask of every training it ran to ``masks_rank<R>.safetensors`` there (keyed
``<progress description>|<parameter>``) and the optimizer steps each ran to ``steps_rank<R>.json``.
MP_STOP_AFTER=N: every rank stops (exit 3) when it is about to train level run N+1, as a kill would.
"""

import json
import os
import sys
from pathlib import Path

from accelerate import PartialState
from safetensors.torch import save_file

from hf_lottery import imp
from hf_lottery.cli import main

recorded: dict = {}
steps: dict = {}
trainings = 0
real_train = imp.train


def recording_train(model, mask, *args, desc, **kwargs):
    global trainings
    if trainings == int(os.environ.get("MP_STOP_AFTER", "-1")):
        sys.exit(3)
    trainings += 1
    recorded.update({f"{desc}|{name}": m.contiguous() for name, m in mask.items()})
    metrics = real_train(model, mask, *args, desc=desc, **kwargs)
    steps[desc] = metrics["steps"]
    return metrics


imp.train = recording_train
code = main(sys.argv[1:])
if os.environ.get("MP_RECORD_DIR"):
    folder, rank = Path(os.environ["MP_RECORD_DIR"]), PartialState().process_index
    save_file(recorded, str(folder / f"masks_rank{rank}.safetensors"))
    (folder / f"steps_rank{rank}.json").write_text(json.dumps(steps))
sys.exit(code)
