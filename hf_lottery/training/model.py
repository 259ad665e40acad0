"""Finding a pretrained model's config and tokenizer by Hub id or local path, with one-line errors.

The model itself, with its task head, is built by the run's task kind (``hf_lottery.training.tasks``)."""

from __future__ import annotations

from pathlib import Path

import httpx2  # huggingface_hub 2.x talks HTTP through it
from huggingface_hub import is_offline_mode
from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.hub import OFFLINE_HINT, check_reachable, looks_like_path


def load_model_config(name: str, revision: str | None = None):
    """The model's ``PretrainedConfig``; every way of not finding it becomes one clear line, at once when the Hub
    does not answer (``hub.check_reachable``)."""
    local = "pass the path of a local folder saved with save_pretrained"
    if looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise LotteryError(f"model folder {name!r} does not exist")
        if not (folder / "config.json").is_file():
            raise LotteryError(f"model folder {name!r} has no config.json (save it with save_pretrained)")
    check_reachable(name, what=f"model {name!r}", instead=local, revision=revision)
    try:
        config = AutoConfig.from_pretrained(name, revision=revision)
    except (RepositoryNotFoundError, GatedRepoError):
        raise LotteryError(
            f"model {name!r} is not on the Hugging Face Hub or not visible to you (a typo? a private repo "
            "needs `hf auth login`); a local model is given as a folder path"
        ) from None
    except RevisionNotFoundError:
        raise LotteryError(f"model {name!r} has no revision {revision!r}") from None
    except (OSError, ValueError) as err:
        if is_offline_mode():
            raise LotteryError(f"model {name!r} is not in the local cache (HF_HUB_OFFLINE is set); {local}") from None
        if _unreachable(err):
            raise LotteryError(
                f"model {name!r} is not in the local cache and the Hugging Face Hub could not be reached; {local}, "
                f"{OFFLINE_HINT}"
            ) from None
        raise LotteryError(f"cannot load model {name!r}: {str(err).splitlines()[0]}") from None
    return config


def _unreachable(err: BaseException | None) -> bool:
    """Whether the Hub could not be reached: the error, or one it was raised from, is a connection failure."""
    while err is not None:
        if isinstance(err, (LocalEntryNotFoundError, httpx2.TransportError, ConnectionError)):
            return True
        err = err.__cause__ or err.__context__
    return False


def load_tokenizer(name: str, model: PreTrainedModel, revision: str | None = None):
    """The model's tokenizer; decoder models get their end-of-text token as padding."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    except (OSError, ValueError) as err:
        raise LotteryError(f"cannot load the tokenizer of {name!r}: {str(err).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise LotteryError(f"the tokenizer of {name!r} has neither a padding nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer
