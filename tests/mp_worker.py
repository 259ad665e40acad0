"""``torchrun -m tests.mp_worker <hf-lottery args>``: the CLI, observed for the multi-process tests.

MP_RECORD_DIR: each rank saves the mask of every training it ran to ``masks_rank<R>.safetensors`` there (keyed
``<the folder it trained>|<parameter>``) and the optimizer steps each ran to ``steps_rank<R>.json``.
MP_STOP_AFTER=N: every rank stops (exit 3) when it is about to start training N+1, as a kill would.
"""

import json
import os
import sys
from pathlib import Path

from accelerate import PartialState
from safetensors.torch import save_file

from hf_lottery.commands.cli import main
from hf_lottery.lottery.run import RunEvents


class Recorder(RunEvents):
    def __init__(self) -> None:
        self.masks: dict = {}
        self.steps: dict = {}
        self.trainings = 0

    def level_started(self, tag, model, mask):
        if self.trainings == int(os.environ.get("MP_STOP_AFTER", "-1")):
            sys.exit(3)
        self.trainings += 1
        self.masks.update({f"{tag}|{name}": m.contiguous() for name, m in mask.items()})

    def level_ended(self, tag, metrics):
        self.steps[tag] = metrics["steps"]


recorder = Recorder()
code = main(sys.argv[1:], events=recorder)
if os.environ.get("MP_RECORD_DIR"):
    folder, rank = Path(os.environ["MP_RECORD_DIR"]), PartialState().process_index
    save_file(recorder.masks, str(folder / f"masks_rank{rank}.safetensors"))
    (folder / f"steps_rank{rank}.json").write_text(json.dumps(recorder.steps))
sys.exit(code)
