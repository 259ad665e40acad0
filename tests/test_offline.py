"""Offline: a Hub model or data set fails at once, in one line that says what to do, when the Hub does not answer;
with HF_HUB_OFFLINE=1 a cached model loads without a connection. The commands run in a fresh process pointed at an
address where nothing answers (the client reads HF_ENDPOINT once, when it is imported)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download

from hf_lottery.commands.demo import DEMO_DATA

REPO = Path(__file__).resolve().parent.parent
# The CLI in a fresh process, once per command of argv[1] (a JSON list): on stdout, each one's exit status and how
# long its main() took, start-up left out; on stderr, what each printed, ended by a line of SEPARATOR.
SEPARATOR = "-- next command --"
TIMED = f"""
import json, sys, time
from hf_lottery.commands.cli import main
results = []
for args in json.loads(sys.argv[1]):
    start = time.monotonic()
    code = main(args)
    results.append({{"code": code, "seconds": time.monotonic() - start}})
    sys.stderr.write("{SEPARATOR}\\n")
    sys.stderr.flush()
print(json.dumps(results))
"""
FILES = ["--train-file", str(DEMO_DATA / "train.tsv"), "--validation-file", str(DEMO_DATA / "dev.tsv"), "--levels",
         "1", "--max-train-samples", "16", "--max-eval-samples", "8", "--max-steps", "1", "--dry-run"]  # fmt: skip


def closed_address() -> str:
    """An address on 127.0.0.1 where nothing listens: a port bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def cli(commands: list[list[str]], endpoint: str, **env: str) -> tuple[list[tuple[int, list[str], float]], str]:
    """``hf-lottery ARGS`` for each of ``commands``, in one process with the Hub at ``endpoint`` and neither
    HF_HUB_OFFLINE nor HF_DATASETS_OFFLINE set unless given: each one's exit status, the lines it printed on stderr
    and how long its main() took; and what they printed on stdout."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")},
           "HF_ENDPOINT": endpoint, "PYTHONPATH": str(REPO), **env}  # fmt: skip
    command = [sys.executable, "-c", TIMED, json.dumps(commands)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    *printed, results = done.stdout.splitlines()
    errors = [[line for line in err.splitlines() if line.strip()] for err in done.stderr.split(SEPARATOR + "\n")]
    ran = [(r["code"], lines, r["seconds"]) for r, lines in zip(json.loads(results), errors, strict=False)]
    return ran, "\n".join(printed)


def test_an_unreachable_hub_fails_at_once_in_one_line_and_writes_nothing(tiny_bert, tmp_path):
    """The client would retry six times, sleeping 1+2+4+8+8 s, before the one line."""
    out = tmp_path / "out"
    named = ["model 'some-org/model'", "the default corpus Salesforce/wikitext"]
    commands = [["prune", "some-org/model", "--output-dir", str(out)],
                ["prune", str(tiny_bert), "--output-dir", str(out)]]  # no data: the default corpus  # fmt: skip
    ran, _ = cli(commands, closed_address())
    for (code, lines, seconds), name in zip(ran, named, strict=True):
        assert code == 1 and len(lines) == 1, lines
        assert lines[0].startswith("hf-lottery: error: ") and name in lines[0]
        assert "could not be reached" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]
        assert seconds < 10, f"{name}: {seconds:.1f} s"
    assert not out.exists()


def test_with_hf_hub_offline_a_cached_model_loads_without_a_connection(tiny_bert, hub_server):
    api = HfApi(token=hub_server.token)
    repo_id = api.create_repo("offline-bert", exist_ok=True).repo_id
    api.upload_folder(repo_id=repo_id, folder_path=tiny_bert)
    snapshot_download(repo_id)  # into the cache the test processes share (HF_HOME)
    with socket.socket() as listening:  # connections would wait here, unanswered: counted below
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        endpoint = f"http://127.0.0.1:{listening.getsockname()[1]}"
        [(code, lines, _)], stdout = cli([["prune", repo_id, *FILES]], endpoint, HF_HUB_OFFLINE="1")
        assert code == 0, lines
        assert "| level | sparsity | runs | optimizer steps |" in stdout  # the plan: model and data were read
        listening.setblocking(False)
        try:
            listening.accept()
            connected = True
        except BlockingIOError:
            connected = False
    assert not connected, "the run tried the network"
    # Without HF_HUB_OFFLINE the client would retry every optional file it looks for, cached model or not.
    [(code, lines, seconds)], _ = cli([["prune", repo_id, *FILES]], closed_address())
    assert code == 1 and len(lines) == 1, lines
    assert "is in the local cache" in lines[0] and "run with HF_HUB_OFFLINE=1 to use the cache" in lines[0]
    assert seconds < 10, f"{seconds:.1f} s"
