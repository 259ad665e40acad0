"""Pushing a run's ticket to the Hub as one commit.

``huggingface_hub`` does the work as it is (``create_repo(exist_ok=True)``, one ``upload_folder`` commit); tokens
come from ``HF_TOKEN`` or ``hf auth login`` and are never printed or written by us. Every failure is one
``LotteryError`` line.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, get_token, hf_hub_download, model_info
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from hf_lottery.foundations.errors import LotteryError

from .export import FinishedRun, ShipOptions, export_ticket, refuse_unshippable
from .load import hub_errors


def require_token(token: str | None = None) -> str:
    token = token or get_token()
    if not token:
        raise LotteryError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a write token)")
    return token


def base_model_license(name: str, token: str | None = None) -> str | None:
    """The base model's license from its card, where known; never fails a push."""
    try:
        folder = Path(name)
        if folder.is_dir():
            return ModelCard.load(folder / "README.md").data.license if (folder / "README.md").exists() else None
        card_data = model_info(name, token=token).card_data
        return card_data.license if card_data else None
    except Exception:  # a license is nice to have; a missing one never stops the push
        return None


def push_ticket(
    run_dir: Path,
    repo_id: str,
    options: ShipOptions | None = None,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    **ship,
) -> str:
    """Export one level of ``run_dir`` as ``export_ticket`` does (``options``, or their fields as keywords:
    ``ShipOptions``) and upload it to ``repo_id`` in one commit; return the commit URL."""
    options = ShipOptions.given(options, ship)
    run = FinishedRun.open(run_dir)  # a missing or unfinished run is the first thing to say
    run.choose_level(options.level, options.tolerance)  # then a level it cannot ship: before anything reaches the Hub
    refuse_unshippable(run, options)
    token = require_token(token)
    api = HfApi(token=token)
    with hub_errors(repo_id, revision):
        existing = _existing_card(repo_id, revision, token)
    with tempfile.TemporaryDirectory(prefix="hf-lottery-push-") as tmp:
        folder = Path(tmp) / "repo"
        # written whole before the repository is created: an export refused or failed leaves nothing on the Hub
        facts = export_ticket(
            run_dir, folder, options, repo_id=repo_id, existing_card=existing,
            license=base_model_license(run.config.model.model_name_or_path, token),
        )  # fmt: skip
        message = commit_message or (
            f"Lottery ticket: level {facts['level']}, {facts['sparsity']:.1%} sparse, "
            f"{facts['metric']} {facts['metric_value']:.4f} (dense {facts['dense_metric_value']:.4f})"
        )
        with hub_errors(repo_id, revision):
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            commit = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, commit_message=message)
    return commit.commit_url


def _existing_card(repo_id: str, revision: str | None, token: str) -> str | None:
    """The card the push updates rather than overwrites: the branch's, or the default branch's that a new branch
    starts from; None when the repository or its card does not exist yet (the push creates them)."""
    for rev in dict.fromkeys([revision, None]):
        try:
            return Path(hf_hub_download(repo_id, "README.md", revision=rev, token=token)).read_text("utf-8")
        except RevisionNotFoundError:
            continue
        except (EntryNotFoundError, RepositoryNotFoundError):
            return None
    return None
