"""A stand-in for the Hugging Face Hub on 127.0.0.1: the endpoints huggingface_hub's downloads use.

What huggingface_hub 2.x asks (hf_api.py model_info, file_download.py get_hf_file_metadata / http_get):

  GET  /api/models/{repo}/revision/{rev}  -> JSON with "sha" (the commit) and "siblings" (the files)
  HEAD /{repo}/resolve/{rev}/{file}       -> X-Repo-Commit, ETag, Content-Length: the cache's keys
  GET  /{repo}/resolve/{rev}/{file}       -> the bytes; "Range: bytes=N-" gets a 206 from byte N

Errors carry X-Error-Code (RepoNotFound, GatedRepo, RevisionNotFound, EntryNotFound) as the
Hub's do; huggingface_hub turns them into its exception classes. Faults for tests: cut a
file's first download after some bytes, then optionally answer 503 ("the network went down");
ignore Range headers.
Every request is recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

# huggingface_hub's log handler keeps the sys.stderr of the moment it is first imported: import
# it here, not first inside a CliRunner invocation whose captured stderr is closed afterwards
import huggingface_hub.file_download  # noqa: F401

RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    token: str | None = None  # when set: no token -> 401, another token -> 403
    gated: bool = False  # with a token: the 401/403 say GatedRepo, as for a gated repo

    @property
    def commit(self) -> str:
        digest = hashlib.sha1(self.repo_id.encode())
        for name in sorted(self.files):
            digest.update(name.encode() + hashlib.sha256(self.files[name]).digest())
        return digest.hexdigest()


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None

    @property
    def filename(self) -> str | None:
        match = re.match(r"/[^/]+/[^/]+/resolve/[^/]+/(.+)$", self.path)
        return unquote(match.group(1)) if match else None


@dataclass
class Faults:
    cut_after: dict[str, int] = field(
        default_factory=dict
    )  # file -> bytes its next GET sends before the connection drops
    down_after_cut: bool = False  # after a cut, every request gets 503 until this is cleared
    down: bool = False
    ignore_range: bool = False  # answer a Range request with the whole file (200), as some CDNs do


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Request] = []
        self.faults = Faults()
        self.bytes_sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- content ----------------------------------------------------------------------
    def add_repo(
        self, repo_id: str, folder: Path | None = None, files: dict[str, bytes] | None = None, **access
    ) -> FakeRepo:
        content = dict(files or {})
        if folder is not None:
            content.update({p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()})
        repo = FakeRepo(repo_id, content, **access)
        self.repos[repo_id.lower()] = repo
        return repo

    # --- what happened ----------------------------------------------------------------
    def gets(self, filename: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and r.filename == filename]

    def file_requests(self) -> list[Request]:
        return [r for r in self.requests if r.filename is not None]

    # --- lifetime ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_HubHandler):
            owner = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Gone, as a network that went down: no new connections, and the open ones cut."""
        if not self.running:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        with self._lock:
            open_connections = list(self._connections)
        for connection in open_connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _HubHandler(BaseHTTPRequestHandler):
    owner: FakeHub
    protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's pooled client expects
    timeout = 10  # a stuck client cannot hold a server thread for longer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._connections.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    # --- routing ----------------------------------------------------------------------
    def _serve(self, body: bool) -> None:
        hub = self.owner
        path = urlsplit(self.path).path
        with hub._lock:
            hub.requests.append(
                Request(self.command, path, self.headers.get("Range"), self.headers.get("Authorization"))
            )
            down = hub.faults.down
        if down:
            return self._error(503, None, "Service unavailable", body)
        api = re.match(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$", path)
        resolve = re.match(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if api:
            return self._model_info(unquote(api.group(1)), unquote(api.group(2) or "main"), body)
        if resolve:
            return self._file(unquote(resolve.group(1)), unquote(resolve.group(2)), unquote(resolve.group(3)), body)
        self._error(404, None, "Not found", body)

    def _repo(self, repo_id: str, revision: str, body: bool) -> FakeRepo | None:
        repo = self.owner.repos.get(repo_id.lower())
        if repo is None:
            # the Hub answers 401 to anonymous requests for a repo it will not confirm exists
            self._error(401, "RepoNotFound", "Repository not found", body)
            return None
        if repo.token is not None:
            given = self.headers.get("Authorization")
            if given != f"Bearer {repo.token}":
                status = 401 if given is None else 403
                code = "GatedRepo" if repo.gated else ("RepoNotFound" if status == 401 else None)
                self._error(status, code, "Access to this repo is restricted", body)
                return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
            return None
        return repo

    # --- endpoints --------------------------------------------------------------------
    def _model_info(self, repo_id: str, revision: str, body: bool) -> None:
        repo = self._repo(repo_id, revision, body)
        if repo is None:
            return
        siblings = []
        for name, data in sorted(repo.files.items()):
            sibling = {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
            if name.endswith((".safetensors", ".gguf")):
                sibling["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(sibling)
        payload = json.dumps(
            {"id": repo.repo_id, "sha": repo.commit, "private": repo.token is not None, "siblings": siblings}
        ).encode()
        self._respond(200, {"Content-Type": "application/json"}, payload, body)

    def _file(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
        repo = self._repo(repo_id, revision, body)
        if repo is None:
            return
        data = repo.files.get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", body, {"X-Repo-Commit": repo.commit})
        headers = {
            "X-Repo-Commit": repo.commit,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        start = 0
        wanted = RANGE.match(self.headers.get("Range") or "")
        if wanted and body and not self.owner.faults.ignore_range:
            start = int(wanted.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        status = 206 if start else 200
        if not body:
            return self._respond(status, headers, data, body=False)
        hub = self.owner
        with hub._lock:
            cut = hub.faults.cut_after.pop(filename, None)
        if cut is None:
            self._respond(status, headers, data[start:], body=True)
            self._count(filename, len(data) - start)
            return
        # announce the whole file, send part of it, and hang up: a dropped connection
        self._respond(status, headers, data[start:], body=True, send=cut)
        self._count(filename, cut)
        with hub._lock:
            if hub.faults.down_after_cut:
                hub.faults.down = True
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- plumbing ---------------------------------------------------------------------
    def _count(self, filename: str, sent: int) -> None:
        with self.owner._lock:
            self.owner.bytes_sent[filename] = self.owner.bytes_sent.get(filename, 0) + sent

    def _respond(self, status: int, headers: dict, payload: bytes, body: bool, send: int | None = None) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload if send is None else payload[:send])
            self.wfile.flush()

    def _error(self, status: int, code: str | None, message: str, body: bool, extra: dict | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._respond(status, headers, json.dumps({"error": message}).encode(), body)


def point_huggingface_hub_at(monkeypatch, hub: FakeHub, hf_home: Path) -> None:
    """Aim huggingface_hub at the fake hub, with its cache and token file under hf_home.

    The environment is set for subprocesses; huggingface_hub itself read HF_ENDPOINT,
    HF_HUB_CACHE, HF_HUB_OFFLINE and the token path once, at import (constants.py), and
    its download functions look them up on `constants` at call time: those are patched.
    """
    from huggingface_hub import constants

    cache = hf_home / "hub"
    for name, value in {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # never the developer's own login token
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(hf_home / ".agent_harnesses.json"))
