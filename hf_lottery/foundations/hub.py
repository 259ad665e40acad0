"""Whether the Hugging Face Hub answers, asked before a download that would otherwise wait out the client's retries.

When the Hub cannot be reached, huggingface_hub retries every file it has not cached with growing waits, a warning
line each, before it gives up; and loading even a cached model looks for files it does not have (optional tokenizer
files, chat templates). So before a Hub id is loaded the Hub is asked once, without retries, with the timeout the
client gives its own first request (``HF_HUB_ETAG_TIMEOUT``); when it does not answer, the run stops in one line.
With ``HF_HUB_OFFLINE`` set nothing is asked: the libraries read their cache only.
"""

from __future__ import annotations

from pathlib import Path

import httpx2  # huggingface_hub 2.x talks HTTP through it
from huggingface_hub import constants, get_session, hf_hub_url, is_offline_mode, try_to_load_from_cache

from .errors import LotteryError

OFFLINE_HINT = "or download it where the Hub is reachable and run with HF_HUB_OFFLINE=1"


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is a local path rather than a Hub id (``org/name`` or ``name``)."""
    return name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1


def check_reachable(
    repo_id: str, *, what: str, instead: str, repo_type: str = "model", filename: str = "config.json",
    revision: str | None = None,
) -> None:  # fmt: skip
    """Refuse in one line, naming ``what``, when the Hub does not answer a request for ``filename`` (the first file
    the download reads) of the repository ``repo_id``: with the file cached, HF_HUB_OFFLINE=1 uses the cache;
    without, ``instead`` says what to pass in its place."""
    if is_offline_mode() or looks_like_path(repo_id):
        return
    url = hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision)
    try:
        get_session().head(url, timeout=constants.HF_HUB_ETAG_TIMEOUT, follow_redirects=False)
    except httpx2.TransportError as err:  # no answer at all: any HTTP status, even an error, is the Hub answering
        reason = f"the Hugging Face Hub could not be reached ({constants.ENDPOINT}: {type(err).__name__})"
        if isinstance(try_to_load_from_cache(repo_id, filename, revision=revision, repo_type=repo_type), str):
            raise LotteryError(
                f"{what} is in the local cache, but {reason}; run with HF_HUB_OFFLINE=1 to use the cache, or {instead}"
            ) from None
        raise LotteryError(f"{what} is not in the local cache and {reason}; {instead}, {OFFLINE_HINT}") from None
