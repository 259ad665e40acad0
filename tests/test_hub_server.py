"""The test Hub server (tests/hub_server.py), exercised only through the real huggingface_hub client."""

import hashlib
import os
import uuid
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hub_server import HubServer, hub_server  # noqa: F401 - the fixture, for running this file alone

README = "---\nlicense: apache-2.0\ntags:\n- lottery-ticket\n---\n# A tiny model\n"


@pytest.fixture
def hub(hub_server: HubServer) -> HubServer:  # noqa: F811 - the fixture imported above
    return hub_server


@pytest.fixture
def api(hub: HubServer) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=hub.token)


def new_repo(api: HfApi, private: bool = False) -> str:
    return api.create_repo(f"model-{uuid.uuid4().hex[:8]}", private=private).repo_id


def make_folder(folder: Path) -> dict[str, bytes]:
    """A model folder: small text files (regular upload) and binaries (LFS: by suffix, or by a NUL byte)."""
    files = {
        "README.md": README.encode(),
        "config.json": b'{"hidden_size": 32}\n',
        "sub/dir/notes.txt": "ünïcode notes\n".encode(),
        "model.safetensors": os.urandom(200_000),
        "data.dat": b"\0binary" + os.urandom(1000),
    }
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return files


def test_whoami_and_tokens(hub: HubServer, api: HfApi) -> None:
    assert api.whoami()["name"] == "alice"
    assert api.whoami(token=hub.other_token)["name"] == "bob"
    with pytest.raises(HfHubHTTPError) as err:
        api.whoami(token="hf_not_a_token")
    assert err.value.response.status_code == 401


def test_create_repo(hub: HubServer, api: HfApi) -> None:
    name = f"created-{uuid.uuid4().hex[:8]}"  # the server lives for the whole session
    url = api.create_repo(name)  # no namespace: the token's user
    assert url == f"{hub.endpoint}/alice/{name}" and url.repo_id == f"alice/{name}"
    assert api.create_repo(f"alice/{name}", exist_ok=True).repo_id == f"alice/{name}"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(name)
    assert err.value.response.status_code == 409 and err.value.response.json()["url"] == url
    assert api.create_repo(f"{name}-private", private=True).repo_id == f"alice/{name}-private"
    assert api.model_info(f"alice/{name}-private").private is True
    assert api.model_info(f"alice/{name}").private is False
    assert api.list_repo_files(f"alice/{name}") == [".gitattributes"]  # the Hub's initial commit
    for token, status in ((False, 401), ("hf_not_a_token", 401), (hub.other_token, 403)):
        with pytest.raises(HfHubHTTPError) as err:
            api.create_repo(f"alice/{name}-other", token=token)
        assert err.value.response.status_code == status
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(f"alice/{name}-dataset", repo_type="dataset")
    assert err.value.response.status_code == 400


def test_upload_folder_and_download(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    repo_id = new_repo(api)
    files = make_folder(tmp_path / "model")
    commit = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "model", commit_message="Add the model")

    info = api.model_info(repo_id)
    assert info.sha == commit.oid and info.private is False and info.card_data.license == "apache-2.0"
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == set(files) | {".gitattributes"}
    assert siblings["config.json"].lfs is None and siblings["config.json"].size == len(files["config.json"])
    for name in ("model.safetensors", "data.dat"):  # went through the LFS batch API and the PUT
        assert siblings[name].lfs.sha256 == hashlib.sha256(files[name]).hexdigest()
        assert (hub.root / "blobs" / siblings[name].lfs.sha256).read_bytes() == files[name]
    assert api.list_repo_commits(repo_id)[0].title == "Add the model"

    assert sorted(api.list_repo_files(repo_id)) == sorted(siblings)
    top = {entry.path: type(entry).__name__ for entry in api.list_repo_tree(repo_id)}
    assert top["sub"] == "RepoFolder" and top["model.safetensors"] == "RepoFile" and "sub/dir/notes.txt" not in top
    assert [entry.path for entry in api.list_repo_tree(repo_id, path_in_repo="sub/dir")] == ["sub/dir/notes.txt"]

    for name in ("config.json", "sub/dir/notes.txt", "model.safetensors"):
        path = hf_hub_download(repo_id, name, token=hub.token, cache_dir=tmp_path / "cache")
        assert Path(path).read_bytes() == files[name]
    assert api.file_exists(repo_id, "data.dat") and not api.file_exists(repo_id, "missing.txt")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.txt", cache_dir=tmp_path / "cache")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "config.json", revision="no-such-branch", cache_dir=tmp_path / "cache")

    snapshot = Path(snapshot_download(repo_id, cache_dir=tmp_path / "snapshots"))
    assert {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()} == set(siblings)
    assert all((snapshot / name).read_bytes() == content for name, content in files.items())
    only = Path(snapshot_download(repo_id, local_dir=tmp_path / "only", allow_patterns=["*.json", "sub/*"]))
    downloaded = {p.relative_to(only).as_posix() for p in only.rglob("*") if p.is_file() and ".cache" not in p.parts}
    assert downloaded == {"config.json", "sub/dir/notes.txt"}

    again = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "model")  # nothing changed: no new commit
    assert again.oid == commit.oid == api.model_info(repo_id).sha


def test_new_revision_keeps_the_old_one(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    repo_id = new_repo(api)
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="weights.bin", repo_id=repo_id)
    second = api.create_commit(
        repo_id,
        [CommitOperationAdd("weights.bin", b"v2 is longer"), CommitOperationAdd("extra.txt", b"new")],
        commit_message="Second version",
    )
    assert first.oid != second.oid and api.model_info(repo_id).sha == second.oid
    assert api.model_info(repo_id, revision=first.oid).sha == first.oid
    assert sorted(api.list_repo_files(repo_id, revision=first.oid)) == [".gitattributes", "weights.bin"]
    cache = tmp_path / "cache"
    assert Path(hf_hub_download(repo_id, "weights.bin", revision=first.oid, cache_dir=cache)).read_bytes() == b"v1"
    assert Path(hf_hub_download(repo_id, "weights.bin", cache_dir=cache)).read_bytes() == b"v2 is longer"
    titles = [commit.title for commit in api.list_repo_commits(repo_id)]
    assert titles == ["Second version", "Upload weights.bin with huggingface_hub", "initial commit"]

    api.delete_file("extra.txt", repo_id)
    api.create_commit(repo_id, [CommitOperationDelete("weights.bin")], commit_message="Remove the weights")
    assert api.list_repo_files(repo_id) == [".gitattributes"]
    with pytest.raises(EntryNotFoundError):
        api.delete_file("weights.bin", repo_id)


def test_branches(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    repo_id = new_repo(api)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "level-1.txt").write_text("pruned")
    with pytest.raises(RevisionNotFoundError):
        api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "model", revision="levels/1")
    api.create_branch(repo_id, branch="levels/1")
    api.create_branch(repo_id, branch="levels/1", exist_ok=True)
    with pytest.raises(HfHubHTTPError):
        api.create_branch(repo_id, branch="levels/1")
    commit = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "model", revision="levels/1")

    refs = {ref.name: ref.target_commit for ref in api.list_repo_refs(repo_id).branches}
    assert set(refs) == {"main", "levels/1"} and refs["levels/1"] == commit.oid != refs["main"]
    assert api.model_info(repo_id, revision="levels/1").sha == commit.oid
    assert "level-1.txt" not in api.list_repo_files(repo_id)
    path = hf_hub_download(repo_id, "level-1.txt", revision="levels/1", cache_dir=tmp_path / "cache")
    assert Path(path).read_text() == "pruned"
    api.delete_branch(repo_id, branch="levels/1")
    assert [ref.name for ref in api.list_repo_refs(repo_id).branches] == ["main"]


def test_private_repo_and_permissions(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    private, public = new_repo(api, private=True), new_repo(api)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="secret.txt", repo_id=private)
    assert api.model_info(private).private is True
    path = hf_hub_download(private, "secret.txt", token=hub.token, cache_dir=tmp_path / "alice")
    assert Path(path).read_bytes() == b"secret"

    bob = HfApi(endpoint=hub.endpoint, token=hub.other_token)
    anonymous = HfApi(endpoint=hub.endpoint, token=False)
    for other, token in ((bob, hub.other_token), (anonymous, False)):
        with pytest.raises(RepositoryNotFoundError):
            other.model_info(private)
        assert not other.repo_exists(private)
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(private, "secret.txt", token=token, cache_dir=tmp_path / "other")
        with pytest.raises(RepositoryNotFoundError):
            snapshot_download(private, token=token, cache_dir=tmp_path / "other")
        with pytest.raises(RepositoryNotFoundError):
            other.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=private)
        assert other.model_info(public).sha == api.model_info(public).sha  # public: readable by all

    with pytest.raises(HfHubHTTPError) as err:  # bob may read alice's public repo, not write to it
        bob.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=public)
    assert err.value.response.status_code == 403 and not isinstance(err.value, RepositoryNotFoundError)
    with pytest.raises(HfHubHTTPError) as err:
        bob.create_branch(public, branch="bobs")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=public)
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.endpoint, token="hf_not_a_token").model_info(public)
    assert err.value.response.status_code == 401 and not isinstance(err.value, RepositoryNotFoundError)
    assert api.list_repo_files(public) == [".gitattributes"]


def test_model_card_push_and_load(hub: HubServer, api: HfApi) -> None:
    repo_id = new_repo(api)
    ModelCard(README).push_to_hub(repo_id, token=hub.token, commit_message="Add the card")
    card = ModelCard.load(repo_id, token=hub.token)
    assert card.data.license == "apache-2.0" and "# A tiny model" in card.text
    assert api.model_info(repo_id).card_data.tags == ["lottery-ticket"]
