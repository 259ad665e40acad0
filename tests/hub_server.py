"""A small Hugging Face Hub server, so the real ``huggingface_hub`` client can be tested against 127.0.0.1.

It speaks the part of the Hub protocol that huggingface_hub 2.x uses to create model repos, commit to them (regular
and LFS files, branches) and read them back (info, tree, refs, commits, downloads). Repo state lives in memory and is
mirrored to ``<root>/repos/<namespace>/<name>.json``; file contents are stored once, by sha256, in ``<root>/blobs/``.
Only model repos; no pull requests, tags, gating, Xet, pagination or Range requests.

Endpoints (``{repo}`` is ``{namespace}/{name}``; ``{rev}`` a branch or a 40-hex commit sha, URL-encoded):

    GET    /api/whoami-v2
    POST   /api/repos/create                        {"name", "organization", "visibility" or "private", "type"}
    DELETE /api/repos/delete                        {"name", "organization", "type"}
    POST   /api/validate-yaml                       always {"errors": [], "warnings": []}
    GET    /api/agent-harnesses                     an empty registry (the client fetches it, best effort)
    GET    /api/models/{repo}[/revision/{rev}]      model info: sha, siblings (with sizes and LFS), private, cardData
    GET    /api/models/{repo}/tree/{rev}[/{path}]   ?recursive=true; everything in one page
    GET    /api/models/{repo}/refs
    GET    /api/models/{repo}/commits/{rev}
    POST   /api/models/{repo}/preupload/{rev}       upload mode of each file: "lfs" or "regular"
    POST   /api/models/{repo}/commit/{rev}          NDJSON: header, file, lfsFile, deletedFile, deletedFolder
    POST   /api/models/{repo}/branch/{branch}       {"startingPoint": rev}
    DELETE /api/models/{repo}/branch/{branch}
    POST   /{repo}.git/info/lfs/objects/batch       upload actions point to PUT /lfs-upload/{ticket}
    PUT    /lfs-upload/{ticket}                     no auth (like a signed storage URL); body must match the oid
    HEAD   /{repo}/resolve/{rev}/{path}             X-Repo-Commit, ETag, and X-Linked-Etag/-Size for LFS files
    GET    /{repo}/resolve/{rev}/{path}

Errors are answered as the Hub does: a JSON ``{"error": ...}`` body, ``X-Error-Message``, and ``X-Error-Code``
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) where the client keys on it. An unknown token is a 401
"Invalid credentials in Authorization header" everywhere; a write without a token is a 401; a write by somebody who
is not the namespace's user is a 403; a private repo is a 404 ``RepoNotFound`` to everybody but its owner.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

USERS = {"hf_alice_test_token": "alice", "hf_bob_test_token": "bob"}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".npy", ".npz", ".pkl")
LFS_MIN_SIZE = 10 * 1024 * 1024  # like the Hub: bigger files go to LFS whatever their name
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
NAME_RE = re.compile(r"[\w.-]{1,96}")
OID_RE = re.compile(r"[0-9a-f]{64}")
BAD_TOKEN = "Invalid credentials in Authorization header"

Json = dict[str, Any]


class HubError(Exception):
    """An error answer: status, message, the client's ``X-Error-Code`` and extra fields for the JSON body."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra
        self.headers: dict[str, str] = {}


def repo_not_found() -> HubError:
    return HubError(404, "Repository not found", "RepoNotFound")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def lfs_info(entry: Json, oid_key: str) -> Json | None:
    """The ``lfs`` field of a file entry, as model info (``oid_key="sha256"``) or the tree (``"oid"``) gives it."""
    if not entry["lfs"]:
        return None
    pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
    return {oid_key: entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}


@dataclass
class Repo:
    id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit sha
    # sha -> {"parent", "title", "message", "author", "date", "files": {path: {"sha256", "size", "lfs", "oid"}}}
    commits: dict[str, Json] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.id.split("/")[0]


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None  # Content-Length when it differs from len(body) (HEAD)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode(), {"Content-Type": "application/json"})


class Hub:
    """The state of the Hub and the answer to each request (the HTTP plumbing is in `Handler`)."""

    def __init__(self, root: Path, endpoint: str) -> None:
        self.root, self.endpoint = root, endpoint.rstrip("/")
        self.repos: dict[str, Repo] = {}
        self.tickets: dict[str, tuple[str, int]] = {}  # LFS upload ticket -> (sha256, size)
        self.lock = threading.RLock()
        (root / "blobs").mkdir(parents=True, exist_ok=True)

    # ---- storage
    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def store(self, data: bytes, lfs: bool) -> Json:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.blob(sha256).exists():
            tmp = self.blob(f"{sha256}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.blob(sha256))
        return self.entry(sha256, len(data), lfs, data)

    def entry(self, sha256: str, size: int, lfs: bool, data: bytes = b"") -> Json:
        oid = git_oid(lfs_pointer(sha256, size) if lfs else data)
        return {"sha256": sha256, "size": size, "lfs": lfs, "oid": oid}

    def save(self, repo: Repo) -> None:
        path = self.root / "repos" / f"{repo.id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(repo), indent=1))

    # ---- repos, revisions, permissions
    def repo(self, repo_id: str, user: str | None, write: bool = False) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and user != repo.owner):
            raise repo_not_found()
        if write and user is None:
            raise HubError(401, "You must be authenticated to write to a repo")
        if write and user != repo.owner:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    @staticmethod
    def resolve(repo: Repo, rev: str) -> str:
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.commits:
            return rev
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def files(self, repo: Repo, rev: str) -> tuple[str, dict[str, Json]]:
        sha = self.resolve(repo, rev)
        return sha, repo.commits[sha]["files"]

    def new_commit(self, repo: Repo, branch: str, files: dict[str, Json], title: str, message: str, user: str) -> str:
        parent = repo.branches.get(branch)
        sha = hashlib.sha1(f"{repo.id}\0{parent}\0{title}\0{uuid.uuid4()}".encode()).hexdigest()
        repo.commits[sha] = dict(parent=parent, title=title, message=message, author=user, date=now(), files=files)
        repo.branches[branch] = sha
        self.save(repo)
        return sha

    # ---- routing
    def route(
        self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes, user: str | None
    ) -> Response:
        with self.lock:
            match method, parts:
                case "GET", ["api", "whoami-v2"]:
                    return json_response(self.whoami(user))
                case "POST", ["api", "repos", "create"]:
                    return json_response(self.create_repo(load(body), user))
                case "DELETE", ["api", "repos", "delete"]:
                    return json_response(self.delete_repo(load(body), user))
                case "POST", ["api", "validate-yaml"]:
                    return json_response({"errors": [], "warnings": []})
                case "GET", ["api", "agent-harnesses"]:  # the client asks for it once, best effort
                    return json_response({"standardEnvVars": [], "harnesses": {}})
                case _, ["api", "models", ns, name, *rest]:
                    return self.model_api(method, f"{ns}/{name}", rest, query, body, user)
                case _, ["api", ("datasets" | "spaces" | "kernels"), *_]:
                    raise HubError(400, "The test Hub only serves model repos")
                case "POST", [ns, git, "info", "lfs", "objects", "batch"] if git.endswith(".git"):
                    return json_response(self.lfs_batch(self.repo(f"{ns}/{git[:-4]}", user, write=True), load(body)))
                case "PUT", ["lfs-upload", ticket]:
                    return self.lfs_upload(ticket, body)
                case (("GET" | "HEAD"), [ns, name, "resolve", rev, *path]) if path:
                    return self.download(self.repo(f"{ns}/{name}", user), rev, "/".join(path), method == "HEAD")
                case (_, ["api", "models", _]) | (("GET" | "HEAD"), [_, "resolve", *_]):  # no namespace: no such repo
                    raise repo_not_found()
            raise HubError(404, f"No route for {method} /{'/'.join(parts)}")

    def model_api(
        self, method: str, repo_id: str, rest: list[str], query: dict, body: bytes, user: str | None
    ) -> Response:
        write = method != "GET"
        repo = self.repo(repo_id, user, write=write)
        match method, rest:
            case "GET", []:
                return json_response(self.info(repo, "main"))
            case "GET", ["revision", rev]:
                return json_response(self.info(repo, rev))
            case "GET", ["tree", rev, *path]:
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                return json_response(self.tree(repo, rev, "/".join(path), recursive))
            case "GET", ["refs"]:
                refs = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in repo.branches.items()]
                return json_response({"branches": refs, "converts": [], "tags": [], "pullRequests": []})
            case "GET", ["commits", rev]:
                return json_response(self.history(repo, rev))
            case "POST", ["preupload", rev]:
                return json_response(self.preupload(repo, rev, load(body)))
            case "POST", ["commit", rev]:
                if query.get("create_pr"):
                    raise HubError(400, "The test Hub does not support pull requests")
                return json_response(self.commit(repo, rev, body, user or ""))
            case "POST", ["branch", branch]:
                if branch in repo.branches:
                    raise HubError(409, f"Reference already exists: refs/heads/{branch}")
                repo.branches[branch] = self.resolve(repo, load(body).get("startingPoint") or "main")
                self.save(repo)
                return json_response({})
            case "DELETE", ["branch", branch]:
                if branch == "main" or branch not in repo.branches:
                    raise HubError(400 if branch == "main" else 404, f"Cannot delete branch {branch}")
                del repo.branches[branch]
                self.save(repo)
                return json_response({})
        raise HubError(404, f"No route for {method} /api/models/{repo_id}/{'/'.join(rest)}")

    # ---- endpoints
    def whoami(self, user: str | None) -> Json:
        if user is None:
            raise HubError(401, "You must be authenticated")
        token = {"displayName": "test token", "role": "write", "createdAt": "2024-01-01T00:00:00.000Z"}
        auth = {"type": "access_token", "accessToken": token}
        return {"type": "user", "name": user, "fullname": user.title(), "orgs": [], "auth": auth}

    def create_repo(self, body: Json, user: str | None) -> Json:
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        if body.get("type", "model") not in (None, "model"):
            raise HubError(400, "The test Hub only serves model repos")
        namespace, name = body.get("organization") or user, str(body.get("name"))
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a model under the namespace {namespace}")
        if not NAME_RE.fullmatch(name):
            raise HubError(400, f"Invalid repo name: {name}")
        repo_id, url = f"{namespace}/{name}", f"{self.endpoint}/{namespace}/{name}"
        if repo_id in self.repos:
            raise HubError(409, "You already created this model repo", url=url)
        private = body.get("visibility") == "private" or body.get("private") is True
        repo = self.repos[repo_id] = Repo(repo_id, private, now())
        files = {".gitattributes": self.store(GITATTRIBUTES.encode(), lfs=False)}
        self.new_commit(repo, "main", files, "initial commit", "", user)
        return {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}

    def delete_repo(self, body: Json, user: str | None) -> Json:
        repo = self.repo(f"{body.get('organization') or user}/{body.get('name')}", user, write=True)
        del self.repos[repo.id]
        (self.root / "repos" / f"{repo.id}.json").unlink(missing_ok=True)
        return {}

    def info(self, repo: Repo, rev: str) -> Json:
        sha, files = self.files(repo, rev)
        card: Json | None = None
        if "README.md" in files:
            text = self.blob(files["README.md"]["sha256"]).read_text(errors="replace")
            match = re.match(r"---\s*\n(.*?)\n---\s*\n", text, re.DOTALL)
            loaded = yaml.safe_load(match.group(1)) if match else None
            card = loaded if isinstance(loaded, dict) else None
        siblings = [
            {"rfilename": path, "size": e["size"], "blobId": e["oid"], "lfs": lfs_info(e, "sha256")}
            for path, e in sorted(files.items())
        ]
        return {
            "id": repo.id,
            "author": repo.owner,
            "sha": sha,
            "lastModified": repo.commits[sha]["date"],
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "tags": list((card or {}).get("tags") or []),
            "cardData": card,
            "siblings": siblings,
        }

    def tree(self, repo: Repo, rev: str, path: str, recursive: bool) -> list[Json]:
        sha, files = self.files(repo, rev)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries: dict[str, Json] = {}
        for file_path, e in sorted(files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folder = prefix + "/".join(parts[:depth])
                folder_oid = hashlib.sha1(f"{sha}:{folder}".encode()).hexdigest()
                entries.setdefault(folder, {"type": "directory", "oid": folder_oid, "path": folder})
            if recursive or len(parts) == 1:
                file = dict(type="file", path=file_path, oid=e["oid"], size=e["size"], lfs=lfs_info(e, "oid"))
                entries[file_path] = file
        if prefix and not entries:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        return list(entries.values())

    def history(self, repo: Repo, rev: str) -> list[Json]:
        sha: str | None = self.resolve(repo, rev)
        commits = []
        while sha is not None:
            c = repo.commits[sha]
            authors = [{"user": c["author"]}]
            commits.append(
                {"id": sha, "title": c["title"], "message": c["message"], "authors": authors, "date": c["date"]}
            )
            sha = c["parent"]
        return commits

    def preupload(self, repo: Repo, rev: str, body: Json) -> Json:
        sha, files = self.files(repo, rev)
        answers = []
        for item in body.get("files", []):
            path, size, sample = item["path"], int(item["size"]), base64.b64decode(item.get("sample", ""))
            lfs = size >= LFS_MIN_SIZE or path.endswith(LFS_SUFFIXES) or b"\0" in sample
            old = files.get(path)
            oid = None if old is None else old["sha256"] if old["lfs"] else old["oid"]
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return {"files": answers, "commitOid": sha}

    def lfs_batch(self, repo: Repo, body: Json) -> Json:
        if body.get("operation") != "upload":
            raise HubError(400, "The test Hub only supports LFS uploads")
        objects = []
        for obj in body.get("objects", []):
            oid, size = str(obj.get("oid")), int(obj.get("size", -1))
            if not OID_RE.fullmatch(oid):
                objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": "Invalid oid"}})
                continue
            answer: Json = {"oid": oid, "size": size, "authenticated": True}
            if not self.blob(oid).exists():  # else no "actions": the client skips the upload
                ticket = uuid.uuid4().hex
                self.tickets[ticket] = (oid, size)
                answer["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-upload/{ticket}", "header": {}}}
            objects.append(answer)
        return {"transfer": "basic", "objects": objects}

    def lfs_upload(self, ticket: str, body: bytes) -> Response:
        if ticket not in self.tickets:
            raise HubError(403, "Unknown or used LFS upload ticket")
        oid, size = self.tickets[ticket]
        if hashlib.sha256(body).hexdigest() != oid or len(body) != size:
            raise HubError(400, f"Uploaded content does not match oid {oid} and size {size}")
        self.store(body, lfs=True)
        del self.tickets[ticket]
        return Response(200, b"", {"ETag": f'"{oid}"'})

    def commit(self, repo: Repo, rev: str, body: bytes, user: str) -> Json:
        if rev not in repo.branches:
            raise HubError(404, f"Invalid rev id: {rev} (commits go to a branch)", "RevisionNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.branches[rev]:
            raise HubError(412, f"Parent commit {parent} is not the head of {rev}")
        files = dict(repo.commits[repo.branches[rev]]["files"])
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = str(value.get("path", "")).strip("/")
            if not path or ".." in path.split("/"):
                raise HubError(400, f"Invalid path: {path!r}")
            if key == "file":
                files[path] = self.store(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                oid = str(value.get("oid"))
                if not OID_RE.fullmatch(oid) or not self.blob(oid).exists():
                    raise HubError(422, f"LFS object {oid} of {path} was not uploaded")
                files[path] = self.entry(oid, self.blob(oid).stat().st_size, lfs=True)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                inside = [p for p in files if p.startswith(path + "/")]
                if not inside:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in inside:
                    del files[p]
            else:
                raise HubError(400, f"Unsupported commit operation: {key}")
        sha = self.new_commit(repo, rev, files, header.get("summary") or "", header.get("description") or "", user)
        url = f"{self.endpoint}/{repo.id}/commit/{sha}"
        return {"success": True, "commitOid": sha, "commitUrl": url, "hookOutput": "", "pullRequestUrl": None}

    def download(self, repo: Repo, rev: str, path: str, head: bool) -> Response:
        sha, files = self.files(repo, rev)
        e = files.get(path)
        if e is None:
            error = HubError(404, f"Entry not found: {path}", "EntryNotFound")
            error.headers["X-Repo-Commit"] = sha
            raise error
        headers = {"X-Repo-Commit": sha, "ETag": f'"{e["oid"]}"', "Content-Type": "application/octet-stream"}
        if e["lfs"]:
            headers |= {"X-Linked-Etag": f'"{e["sha256"]}"', "X-Linked-Size": str(e["size"])}
        body = b"" if head else self.blob(e["sha256"]).read_bytes()
        return Response(200, body, headers, length=e["size"])


def load(body: bytes) -> Json:
    try:
        data = json.loads(body or b"{}")
    except ValueError as err:
        raise HubError(400, f"Invalid JSON body: {err}") from err
    if not isinstance(data, dict):
        raise HubError(400, "The JSON body must be an object")
    return data


class Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: Hub


class Handler(BaseHTTPRequestHandler):
    """Reads the whole request (also on errors, so the client's connection stays usable), asks `Hub`, answers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: without this, each answer waits ~40 ms
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # the tests want no access log
        pass

    def read_body(self) -> bytes:
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)

    def dispatch(self) -> None:
        body = self.read_body()
        url = urlsplit(self.path)
        parts = [unquote(part) for part in url.path.split("/")[1:]]
        try:
            auth = self.headers.get("Authorization", "")
            user = None
            if auth and not (parts and parts[0] == "lfs-upload"):
                user = USERS.get(auth.removeprefix("Bearer ").strip())
                if user is None:
                    raise HubError(401, BAD_TOKEN)
            response = self.server.hub.route(self.command, parts, parse_qs(url.query), body, user)
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # a malformed request
            response = json_response({"error": f"Bad request: {err!r}"}, 400)
        except HubError as err:
            response = json_response({"error": err.message, **err.extra}, err.status)
            response.headers |= {"X-Error-Message": err.message, **err.headers}
            if err.code:
                response.headers["X-Error-Code"] = err.code
        except Exception as err:  # a bug here: say so rather than drop the connection
            response = json_response({"error": f"Test Hub failure: {err!r}"}, 500)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body) if response.length is None else response.length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = dispatch


@dataclass
class HubServer:
    """What the `hub_server` fixture yields."""

    endpoint: str
    token: str  # user "alice"
    other_token: str  # user "bob"
    root: Path  # storage: blobs/ and repos/
    hub: Hub


@contextmanager
def running_hub(root: Path, endpoint: str) -> Iterator[HubServer]:
    """Serve a Hub storing under `root` on `endpoint` (http://host:port) in a background thread."""
    url = urlsplit(endpoint)
    hub = Hub(root, endpoint)
    server = Server((url.hostname or "127.0.0.1", url.port or 80), Handler)
    server.hub = hub
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="test-hub-server", daemon=True)
    thread.start()
    try:
        yield HubServer(hub.endpoint, "hf_alice_test_token", "hf_bob_test_token", root, hub)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


_RUNNING: dict[str, HubServer] = {}  # endpoint -> the server this process runs there


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A test Hub on the address of ``HF_ENDPOINT`` (set by tests/conftest.py), for the whole session.

    Each module that imports this fixture (conftest.py, a test file) gets its own fixture definition from pytest;
    they share one server, started by the first and stopped with it.
    """
    from huggingface_hub import constants

    # HF_ENDPOINT as the client read it when it was imported: re-running conftest.py (`from tests.conftest import
    # ...` does) sets HF_ENDPOINT anew, but the client keeps talking to the first one.
    endpoint = constants.ENDPOINT.rstrip("/")
    if urlsplit(endpoint).hostname not in ("127.0.0.1", "localhost"):
        raise RuntimeError(
            f"HF_ENDPOINT must be http://127.0.0.1:<port> before huggingface_hub is imported: {endpoint}"
        )
    if endpoint in _RUNNING:
        yield _RUNNING[endpoint]
        return
    with running_hub(tmp_path_factory.mktemp("hub-server"), endpoint) as hub:
        _RUNNING[endpoint] = hub
        try:
            yield hub
        finally:
            del _RUNNING[endpoint]
