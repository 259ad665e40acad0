"""Loading a ticket from the Hub or a folder, as untrusted input: only ``config.json`` and one sparse file are read,
nothing is unpickled, and the model is checked against the file on the meta device before memory is allocated.

Every failure of the Hub client is one ``LotteryError`` line (``hub_errors``, which pushing shares).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Literal

import httpx2  # huggingface_hub 2.x talks HTTP through it
import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    StrictDataclassError,
)
from safetensors.torch import load_file
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from hf_lottery.foundations.errors import LotteryError, NotATicketError
from hf_lottery.foundations.storage import safetensors_read
from hf_lottery.pruning.masks import Mask, check_mask
from hf_lottery.training.tasks import get_task_kind

from .export import FACTS_FILE, MASKS_FILE, MODEL_FILE, SPARSE_FILE, TICKET_FILE, model_state
from .sparse import load_masks, load_sparse, read_plain_header, read_sparse_header

logger = logging.getLogger(__name__)


@contextmanager
def hub_errors(repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Turn the client's exceptions into one line that says what to do."""
    try:
        yield
    except (RepositoryNotFoundError, GatedRepoError):
        raise LotteryError(f"{repo_id}: no such repository, or it is private and your token cannot see it") from None
    except RevisionNotFoundError:
        raise LotteryError(f"{repo_id}: no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise LotteryError(f"{repo_id}: not in the local cache, and the Hub could not be reached (offline?)") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            raise LotteryError("the Hub rejected your token: check HF_TOKEN or run `hf auth login` again") from None
        if status == 403:
            raise LotteryError(f"{repo_id}: your token may not write there (someone else's repository?)") from None
        raise LotteryError(f"{repo_id}: the Hub answered {status}: {str(err).splitlines()[0]}") from None
    except (httpx2.TransportError, ConnectionError) as err:
        raise LotteryError(f"could not reach the Hub ({type(err).__name__}); check your network") from None


def load_ticket(
    repo_or_path: str | Path,
    weights: Literal["trained", "rewind"] = "trained",
    revision: str | None = None,
    token: str | None = None,
    trust_remote_code: bool = False,
    sparse_inference: bool = False,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
) -> tuple[PreTrainedModel, Mask]:
    """A ticket's model (in eval mode, as ``from_pretrained`` gives it) and masks, from a Hub repository or a
    local folder.

    ``weights="trained"`` gives the trained sparse model, ``"rewind"`` the rewind-point weights (the
    ticket's winning initialisation). Only ``config.json`` and one sparse file are downloaded; nothing is
    unpickled, and repository code runs only with ``trust_remote_code=True`` (without, a config.json naming
    some, in ``auto_map``, loads as the stock class, with one warning). ``dtype`` (e.g.
    ``torch.bfloat16``; None keeps the file's) casts the floating tensors, ``device`` (None: CPU) places the
    model. ``sparse_inference=True`` returns the model ready for fast CPU inference
    (``sparsify_for_inference``: no training).

    ``config.json`` is untrusted too: the model is first built on the meta device (no memory) and checked
    against the sparse file's header, so a config claiming a far bigger model is refused before anything is
    allocated; the real model is built only once config and file agree, so memory is bounded by the file.
    """
    if weights not in ("trained", "rewind"):
        raise LotteryError(f"weights must be 'trained' or 'rewind', got {weights!r}")
    target_dtype, target_device = _target_dtype(dtype), _target_device(device)
    filename = SPARSE_FILE if weights == "trained" else TICKET_FILE
    folder = _fetch(str(repo_or_path), ["config.json", filename, FACTS_FILE], revision, token)
    plain = weights == "trained" and not (folder / filename).is_file() and _facts(folder).get("sparse_copy") is False
    if plain:  # a ticket whose sparse copy would be no smaller than its model (a compact one) ships none
        filename = MODEL_FILE
        folder = _fetch(str(repo_or_path), ["config.json", MODEL_FILE, MASKS_FILE, FACTS_FILE], revision, token)
    if not (folder / filename).is_file():
        raise NotATicketError(f"{repo_or_path} is not an hf-lottery ticket: it has no {filename}")
    kind = get_task_kind(ticket_task_kind(folder))
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, StrictDataclassError) as err:
        raise _not_a_model(repo_or_path, err) from None
    if not trust_remote_code and getattr(config, "auto_map", None):
        _note_ignored_code(str(repo_or_path), config.model_type)
    if plain:  # the masks are a bit per weight, read whole; the weights are checked from the header first
        header, header_masks = read_plain_header(folder / filename), load_masks(folder / MASKS_FILE)
    else:
        header, header_masks = read_sparse_header(folder / filename)
    _check_layer_count(config, header, filename)
    file_dtype = config.dtype or _floating_dtype(header)
    try:  # a check only: what torch warns of while building it (zero-sized layers) is said by the refusal, if any
        with torch.device("meta"), _meta_safe_creation_ops(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            skeleton = _from_config(kind.auto_model, copy.deepcopy(config), file_dtype, trust_remote_code)
    except (OSError, ValueError, TypeError, RuntimeError, StrictDataclassError) as err:
        raise _not_a_model(repo_or_path, err) from None
    _check_state(skeleton, header, filename)
    check_mask(header_masks, skeleton, filename)
    del skeleton
    if plain:  # config and file agree: this is the file's own size
        with safetensors_read(folder / filename):
            state, masks = load_file(folder / filename), header_masks
    else:
        state, masks = load_sparse(folder / filename)  # config and file agree: this is the file's own dense size
    model = _from_config(kind.auto_model, config, target_dtype or file_dtype, trust_remote_code)
    model.load_state_dict(state, strict=False)  # tied aliases are filled by the tie, checked above
    del state
    model.to(target_device)
    model.eval()
    if sparse_inference:
        from .inference import sparsify_for_inference

        sparsify_for_inference(model, masks=masks)
    return model, masks


def _not_a_model(repo_or_path: str | Path, err: Exception) -> LotteryError:
    """The refusal of a config.json that no model can be built from, with the reason: a validator's error is
    worded as its cause, on the lines after its own."""
    reason = err.__cause__ if isinstance(err, StrictDataclassError) and err.__cause__ is not None else err
    first = next((line.strip() for line in str(reason).splitlines() if line.strip()), type(reason).__name__)
    return LotteryError(f"{repo_or_path}: config.json does not describe a model: {first}")


@functools.cache  # once per ticket and process, as transformers' warning_once: finetune loads a ticket twice
def _note_ignored_code(where: str, model_type: str) -> None:
    """Say that a ticket's own code was not run: the stock class may not be the model its author meant."""
    logger.warning(
        f"{where}: config.json's auto_map names the repository's own code; it was ignored and the stock transformers "
        f"{model_type} model is loaded (trust_remote_code=False)"
    )


def _check_layer_count(config: PretrainedConfig, header: dict[str, torch.Tensor], filename: str) -> None:
    """Bound the meta build's own cost (Python objects per layer): every layer holds at least one tensor."""
    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(layers, int) and layers > len(header):
        raise LotteryError(
            f"{filename}: does not match config.json, which claims {layers} layers: the file holds only "
            f"{len(header)} tensors"
        )


def _from_config(
    auto_model: type, config: PretrainedConfig, dtype: torch.dtype | None, trust_remote_code: bool
) -> PreTrainedModel:
    """``from_config``, passing ``dtype`` only when given: ``dtype=None`` would overwrite the config's."""
    extra = {"dtype": dtype} if dtype is not None else {}
    return auto_model.from_config(config, trust_remote_code=trust_remote_code, **extra)


def _meta_safe_creation_ops() -> AbstractContextManager:
    """transformers' guard for remote code that reads scalars during ``__init__`` on the meta device."""
    from transformers import initialization

    return getattr(initialization, "meta_device_safe_creation_ops", nullcontext)()


def _floating_dtype(state: dict[str, torch.Tensor]) -> torch.dtype | None:
    """The file's floating dtype when it holds one only, for a config.json that names none."""
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else None


def _target_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    value = getattr(torch, dtype.removeprefix("torch."), None) if isinstance(dtype, str) else dtype
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise LotteryError(f"dtype must be a floating torch dtype such as torch.bfloat16, got {dtype!r}")
    return value


def _target_device(device: str | torch.device | None) -> torch.device:
    try:
        target = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError):
        raise LotteryError(f"device {device!r} is not a torch device (e.g. 'cpu', 'cuda:0')") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise LotteryError(f"device {device!r}: CUDA is not available on this machine")
    return target


def ticket_task_kind(folder: Path) -> str:
    """The task kind a ticket was found for (tickets of hf-lottery 0.1 were all sequence classifiers)."""
    return _facts(folder).get("task_kind") or "sequence-classification"


def _facts(folder: Path) -> dict:
    """A ticket's ``ticket.json``; empty where it has none or it is not a JSON object."""
    facts = folder / FACTS_FILE
    values = json.loads(facts.read_text(encoding="utf-8")) if facts.is_file() else {}
    return values if isinstance(values, dict) else {}


def _fetch(repo_or_path: str, files: list[str], revision: str | None, token: str | None) -> Path:
    folder = Path(repo_or_path).expanduser()
    if folder.is_dir():
        return folder
    if repo_or_path.startswith((".", "/", "~")):
        raise LotteryError(f"{repo_or_path}: no such folder")
    with hub_errors(repo_or_path, revision):
        return Path(snapshot_download(repo_or_path, revision=revision, token=token, allow_patterns=files))


def _check_state(model: PreTrainedModel, state: dict[str, torch.Tensor], filename: str) -> None:
    expected = model_state(model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        which = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which the model does not"
        raise LotteryError(f"{filename}: does not match config.json: it {which}")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape or state[name].dtype != tensor.dtype:
            raise LotteryError(
                f"{filename}: {name} is {state[name].dtype} {list(state[name].shape)}, "
                f"config.json says {tensor.dtype} {list(tensor.shape)}"
            )
