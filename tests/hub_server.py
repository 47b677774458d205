"""An in-memory Hugging Face Hub speaking the protocol of the real ``huggingface_hub`` client (2.x).

Tests start one on ``127.0.0.1`` (port 0), point the client at ``server.url`` and then create repos,
upload folders (plain LFS or all-"regular" uploads; no Xet), tag, branch and download exactly as they
would against huggingface.co, without any network. Failures can be injected from Python.

Example::

    server = HubServer().start()
    api = HfApi(endpoint=server.url, token="hf_dummy")
    api.create_repo("me/tickets")
    ...
    server.stop()

Model of a repo: a small git: ``commits`` (sha -> :class:`Commit`, each holding the full file map of
that revision), ``branches`` and ``tags`` (name -> commit sha). LFS objects live in one store per
server keyed by sha256. Only the standard library is used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = [
    "Commit",
    "HubEnv",
    "HubServer",
    "Repo",
    "configure_client",
    "git_blob_sha1",
    "lfs_pointer",
    "parse_range",
]

# Suffixes the real Hub's default .gitattributes routes to LFS.
_LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".npz",
    ".npy",
    ".h5",
    ".onnx",
    ".zip",
    ".gz",
)
_LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub forces LFS above 10 MB
_GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)
USER = "user"  # the account every token belongs to on this server (whoami)
_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_blob_sha1(data: bytes) -> str:
    """Git's blob id of ``data`` (what the Hub reports as a regular file's oid/ETag).

    Example::

        >>> git_blob_sha1(b"")
        'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391'
    """
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git-lfs pointer file that stands in git for an LFS-stored ``data``.

    Example::

        >>> lfs_pointer(b"x").startswith(b"version https://git-lfs")
        True
    """
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


@dataclass
class Commit:
    """One revision: the full file map (path -> bytes) plus which paths are stored through LFS."""

    sha: str
    parent: str | None
    files: dict[str, bytes]
    lfs: frozenset[str]
    title: str
    message: str = ""
    date: str = "2024-01-01T00:00:00.000Z"


@dataclass
class Repo:
    """A repo: commits by sha, branches and tags (name -> commit sha)."""

    repo_id: str
    repo_type: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch, tag or full commit sha names, else None."""
        revision = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and revision in self.commits:
            sha = revision
        return self.commits.get(sha) if sha else None

    def history(self, commit: Commit) -> list[Commit]:
        """``commit`` and its ancestors, newest first."""
        out = [commit]
        while out[-1].parent is not None:
            out.append(self.commits[out[-1].parent])
        return out


class _HubError(Exception):
    """An error answer: HTTP status plus the X-Error-Code the client maps to its exception classes."""

    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class HubServer:
    """An in-memory Hub on ``127.0.0.1``; ``start()`` serves it from a daemon thread, ``stop()`` ends it.

    Test knobs (all settable while it runs):

    - ``fail_next(n, status=500, paths_containing=None, method=None, headers=None)``: the next ``n``
      matching requests answer ``status`` (body read, nothing stored), with extra ``headers`` (e.g.
      ``{"Retry-After": "30"}``; no ``X-Error-Code`` unless given there).
    - ``fault_next(n, kind, paths_containing=None, method=None, seconds=10.0)``: the next ``n`` matching
      requests misbehave at the transport level: ``"hang"`` (no answer at all), ``"stall"`` (headers and
      half the body, then silence), ``"trickle"`` (the body one byte every 0.1 s), ``"short"`` (the full
      Content-Length but half the body, then the connection closes) or ``"wrong_size"`` (a ``/resolve/``
      answer advertising one byte more than the file has). Silences end after ``seconds`` or at
      ``stop()``, whichever comes first, so a misbehaving handler always ends by itself.
    - ``corrupt_downloads = True``: GET bodies of ``/resolve/`` downloads get one byte flipped (headers,
      sizes and ETags unchanged); ``corrupt_paths = {"README.md"}`` does that for those files only.
    - ``all_regular = True``: preupload answers ``"regular"`` for every file (no LFS, no Xet).
    - ``resolve_any_revision = True``: an unknown revision name resolves to main's head, as a hostile
      or broken mirror might (to test that clients never turn a revision into a path).
    - ``requests``: list of ``(method, path)`` (path without query string, still URL-quoted).

    Example::

        >>> server = HubServer().start()
        >>> server.url.startswith("http://127.0.0.1:")
        True
        >>> server.stop()
    """

    def __init__(self, *, all_regular: bool = False, lfs_threshold: int = _LFS_SIZE_THRESHOLD) -> None:
        self.all_regular = all_regular
        self.lfs_threshold = lfs_threshold
        self.corrupt_downloads = False
        self.corrupt_paths: set[str] = set()
        self.resolve_any_revision = False
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.url = ""
        self._failures: list[list[Any]] = []
        self._faults: list[list[Any]] = []
        self._stopping = threading.Event()  # ends injected silences early when the server stops
        self._lock = threading.RLock()
        self._counter = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> HubServer:
        """Bind a free loopback port and serve in a daemon thread; returns ``self``.

        Example::

            >>> server = HubServer().start(); server.stop()
        """
        if self._httpd is not None:
            raise RuntimeError("HubServer already started")
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        # short poll interval: stop() (shutdown) waits for one poll, and tests stop a server each
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections (idempotent).

        Example::

            >>> HubServer().start().stop()
        """
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:  # the client's pooled connections would otherwise keep handler threads alive
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test knobs --------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int,
        status: int = 500,
        paths_containing: str | None = None,
        method: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Make the next ``n`` requests (whose path contains ``paths_containing`` and whose method is
        ``method``, when given) answer ``status`` (plus ``headers``) instead of being served.

        Example::

            >>> server = HubServer(); server.fail_next(2, paths_containing="/resolve/", method="HEAD")
            >>> server.fail_next(1, 429, headers={"Retry-After": "30"})
        """
        if n < 1:
            raise ValueError(f"fail_next needs n >= 1, got {n}")
        with self._lock:
            self._failures.append(
                [n, status, paths_containing, method.upper() if method else None, dict(headers or {})]
            )

    FAULT_KINDS = ("hang", "stall", "trickle", "short", "wrong_size")

    def fault_next(
        self,
        n: int,
        kind: str,
        paths_containing: str | None = None,
        method: str | None = None,
        seconds: float = 10.0,
    ) -> None:
        """Make the next ``n`` matching requests misbehave at the transport level (see the class doc):
        ``kind`` is one of :attr:`FAULT_KINDS`; silences last at most ``seconds`` (or until ``stop()``).

        Example::

            >>> server = HubServer(); server.fault_next(1, "hang", paths_containing="/commit/", seconds=5)
        """
        if n < 1:
            raise ValueError(f"fault_next needs n >= 1, got {n}")
        if kind not in self.FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; choose one of {self.FAULT_KINDS}")
        with self._lock:
            self._faults.append([n, kind, paths_containing, method.upper() if method else None, float(seconds)])

    def clear_failures(self) -> None:
        """Drop the :meth:`fail_next` rules not used up yet (the next requests are served normally).

        Example::

            >>> server = HubServer(); server.fail_next(3); server.clear_failures()
        """
        with self._lock:
            self._failures.clear()

    def count(self, method: str, path_contains: str = "") -> int:
        """How many logged requests had ``method`` and a path containing ``path_contains``.

        Example::

            >>> HubServer().count("GET", "/resolve/")
            0
        """
        with self._lock:
            return sum(1 for m, p in self.requests if m == method.upper() and path_contains in p)

    def reset_log(self) -> None:
        """Forget the request log (handy between the upload and the download half of a test)."""
        with self._lock:
            self.requests.clear()

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        """The stored repo (KeyError if absent), for white-box assertions."""
        return self.repos[(repo_type, repo_id)]

    def _take_failure(self, method: str, path: str) -> tuple[int, dict[str, str]] | None:
        rule = self._take(self._failures, method, path)
        return None if rule is None else (int(rule[1]), rule[4])

    def _take_fault(self, method: str, path: str) -> tuple[str, float] | None:
        rule = self._take(self._faults, method, path)
        return None if rule is None else (rule[1], rule[4])

    def _take(self, rules: list[list[Any]], method: str, path: str) -> list[Any] | None:
        with self._lock:
            for rule in rules:
                n, _, needle, want_method = rule[:4]
                if (needle is None or needle in path) and (want_method is None or want_method == method):
                    rule[0] = n - 1
                    if rule[0] <= 0:
                        rules.remove(rule)
                    return rule
        return None

    # --- model helpers -----------------------------------------------------------------------------

    def _new_commit(
        self,
        repo: Repo,
        parent: Commit | None,
        files: dict[str, bytes],
        lfs: set[str],
        title: str,
        message: str,
    ) -> Commit:
        self._counter += 1  # makes every commit unique even when the content repeats
        digest = hashlib.sha1()
        digest.update(
            json.dumps([repo.repo_id, parent.sha if parent else None, title, self._counter]).encode()
        )
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_sha1(files[path]).encode())
        commit = Commit(
            sha=digest.hexdigest(),
            parent=parent.sha if parent else None,
            files=dict(files),
            lfs=frozenset(p for p in lfs if p in files),
            title=title,
            message=message,
            date=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        )
        repo.commits[commit.sha] = commit
        return commit

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, "RepoNotFound", f"Repository {repo_id!r} not found")
        return repo

    def _get_commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None and self.resolve_any_revision and "main" in repo.branches:
            commit = repo.commits[repo.branches["main"]]
        if commit is None:
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def _upload_mode(self, path: str, size: int, sample: bytes) -> str:
        if self.all_regular or size == 0:
            return "regular"
        if size >= self.lfs_threshold or path.lower().endswith(_LFS_SUFFIXES) or b"\0" in sample:
            return "lfs"
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError as err:
            # a multi-byte char cut at the 512-byte sample boundary is still text
            if err.start < len(sample) - 4:
                return "lfs"
        return "regular"

    def _entry(self, commit: Commit, path: str) -> dict[str, Any]:
        data = commit.files[path]
        if path in commit.lfs:
            pointer = lfs_pointer(data)
            lfs = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}
            return {
                "type": "file",
                "path": path,
                "size": len(data),
                "oid": git_blob_sha1(pointer),
                "lfs": lfs,
            }
        return {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}

    def _repo_info(self, repo: Repo, commit: Commit) -> dict[str, Any]:
        siblings = []
        for path in sorted(commit.files):
            entry = self._entry(commit, path)
            sib: dict[str, Any] = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
            if "lfs" in entry:
                lfs = entry["lfs"]
                sib["lfs"] = {"size": lfs["size"], "sha256": lfs["oid"], "pointerSize": lfs["pointerSize"]}
            siblings.append(sib)
        return {
            "id": repo.repo_id,
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit.sha,
            "lastModified": commit.date,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the in-memory hub; ``hub`` is bound by :meth:`HubServer.start`."""

    hub: HubServer
    _fault: tuple[str, float] | None = None  # the injected transport fault of the current request
    _pending: tuple[str, float, bytes] | None = None  # a body to send badly, after the lock is released
    protocol_version = "HTTP/1.1"  # keep-alive, like the real Hub; every answer carries Content-Length
    timeout = 60  # idle keep-alive connections end on their own

    def setup(self) -> None:
        super().setup()
        # without TCP_NODELAY each small request/response pair waits ~40 ms for delayed ACKs
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.hub._lock:
            self.hub._conns.add(self.request)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.hub._lock:
                self.hub._conns.discard(self.request)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        pass  # keep test output clean

    # one entry point for every method
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- plumbing ----------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        # The body must be consumed fully or the next request on this keep-alive connection breaks.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            kind, seconds = self._fault or (None, 0.0)
            if kind in ("stall", "trickle", "short"):
                # sent by _dispatch once the model lock is released: a slow answer must not block others
                self._pending = (kind, seconds, body)
                return
            self.wfile.write(body)

    def _misbehave(self, kind: str, seconds: float, body: bytes) -> None:
        """Send ``body`` badly (headers already sent, announcing all of it), then end the connection."""
        self.close_connection = True
        stopping, until = self.hub._stopping, time.monotonic() + seconds
        try:
            if kind == "trickle":
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    if stopping.wait(0.1) or time.monotonic() > until:
                        return
                return
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if kind == "stall":
                stopping.wait(seconds)
        except OSError:
            pass  # the client gave up and closed its end

    def _json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path, self.query = split.path, parse_qs(split.query)
        hub = self.hub
        with hub._lock:
            hub.requests.append((method, path))
        self.body = self._read_body()
        self._fault = None
        failure = hub._take_failure(method, path)
        if failure is not None:
            status, extra = failure
            self._json(
                status,
                {"error": f"injected failure {status}"},
                {"X-Error-Message": "injected failure", **extra},
            )
            return
        self._fault = hub._take_fault(method, path)
        if self._fault is not None and self._fault[0] == "hang":
            hub._stopping.wait(self._fault[1])  # read the request, answer nothing, then hang up
            self.close_connection = True
            return
        self._pending = None
        try:
            with hub._lock:  # one request at a time touches the model: simple and race-free
                result = self._route(method, path)
            if self._pending is not None:
                self._misbehave(*self._pending)
            if result is not None:
                self._json(*result)
        except _HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            if err.commit:
                headers["X-Repo-Commit"] = err.commit
            self._json(err.status, {"error": err.message}, headers)
        except (ValueError, KeyError, TypeError) as err:
            self._json(400, {"error": f"bad request: {err!r}"}, {"X-Error-Message": "bad request"})

    def _payload(self) -> Any:
        return json.loads(self.body or b"{}")

    # --- routing -----------------------------------------------------------------------------------

    def _route(self, method: str, path: str) -> tuple | None:
        parts = path.strip("/").split("/")  # still quoted: a revision like refs%2Fpr%2F1 stays one segment
        if parts[:2] == ["api", "repos"] and len(parts) == 3:
            return self._repos_api(method, parts[2])
        if path == "/api/validate-yaml" and method == "POST":
            return 200, {"errors": [], "warnings": []}
        if path == "/api/whoami-v2":
            return 200, {"type": "user", "name": USER, "auth": {"type": "access_token"}}
        if path == "/api/agent-harnesses":
            return 200, {"standardEnvVars": [], "harnesses": {}}
        if parts[0] == "_lfs" and len(parts) >= 3:
            return self._lfs_object(method, parts[1], unquote("/".join(parts[2:])))
        if parts[0] == "api" and len(parts) >= 3 and parts[1] in _REPO_TYPES:
            repo_type = _REPO_TYPES[parts[1]]
            repo_id, rest = self._split_repo(repo_type, parts[2:])
            return self._repo_api(method, repo_type, repo_id, rest)
        # git-LFS batch: /{prefix}{repo}.git/info/lfs/objects/batch
        if path.endswith(".git/info/lfs/objects/batch") and method == "POST":
            repo_type, segs = self._type_from_prefix(parts)
            repo_id = "/".join(segs[: segs.index("info")]).removesuffix(".git")
            return self._lfs_batch(repo_type, unquote(repo_id))
        if "resolve" in parts and method in ("GET", "HEAD"):
            repo_type, segs = self._type_from_prefix(parts)
            i = segs.index("resolve")
            if i >= 1 and len(segs) >= i + 3:  # {repo}/resolve/{rev}/{path...}
                repo_id = unquote("/".join(segs[:i]))
                revision = unquote(segs[i + 1])
                filename = unquote("/".join(segs[i + 2 :]))
                self._resolve(method, repo_type, repo_id, revision, filename)
                return None
        raise _HubError(404, None, f"no route for {method} {path}")

    @staticmethod
    def _type_from_prefix(parts: list[str]) -> tuple[str, list[str]]:
        if parts[0] in ("datasets", "spaces"):
            return _REPO_TYPES[parts[0]], parts[1:]
        return "model", parts

    def _split_repo(self, repo_type: str, segs: list[str]) -> tuple[str, list[str]]:
        # Repo ids are "ns/name" (or a bare "name"); prefer whichever is actually stored.
        two, one = "/".join(segs[:2]), segs[0]
        if (repo_type, one) in self.hub.repos and (repo_type, two) not in self.hub.repos:
            return one, segs[1:]
        return two, segs[2:]

    # --- /api/repos --------------------------------------------------------------------------------

    def _repos_api(self, method: str, action: str) -> tuple:
        hub, payload = self.hub, self._payload()
        name, org = payload["name"], payload.get("organization")
        repo_type = payload.get("type") or "model"
        # like the real Hub, a repo created without a namespace lands in the token owner's ("user")
        repo_id = f"{org or USER}/{name}"
        key = (repo_type, repo_id)
        if action == "create" and method == "POST":
            url = f"{hub.url}/{_URL_PREFIX[repo_type]}{repo_id}"
            if key in hub.repos:
                return 409, {"error": "You already created this model repo", "url": url}
            private = payload.get("visibility", "public") != "public" or bool(payload.get("private"))
            repo = Repo(repo_id=repo_id, repo_type=repo_type, private=private)
            # like the real Hub: a new repo starts with one commit holding .gitattributes
            first = hub._new_commit(
                repo, None, {".gitattributes": _GITATTRIBUTES}, set(), "initial commit", ""
            )
            repo.branches["main"] = first.sha
            hub.repos[key] = repo
            return 200, {"url": url, "name": repo_id, "id": hub._repo_info(repo, first)["_id"]}
        if action == "delete" and method == "DELETE":
            hub._get_repo(repo_type, repo_id)
            del hub.repos[key]
            return 200, {}
        raise _HubError(404, None, f"unknown repos action {action}")

    # --- /api/{type}s/{repo}/... -------------------------------------------------------------------

    def _repo_api(self, method: str, repo_type: str, repo_id: str, rest: list[str]) -> tuple:
        hub = self.hub
        repo = hub._get_repo(repo_type, repo_id)
        action = rest[0] if rest else ""
        arg = unquote(rest[1]) if len(rest) > 1 else "main"
        if method == "GET" and action == "":
            return 200, hub._repo_info(repo, hub._get_commit(repo, "main"))
        if method == "GET" and action == "revision":
            return 200, hub._repo_info(repo, hub._get_commit(repo, arg))
        if method == "GET" and action == "tree":
            return self._tree(repo, hub._get_commit(repo, arg), unquote("/".join(rest[2:])))
        if method == "POST" and action == "paths-info":
            return self._paths_info(repo, hub._get_commit(repo, arg))
        if method == "GET" and action == "refs":
            return self._refs(repo)
        if method == "GET" and action == "commits":
            return self._commits(repo, hub._get_commit(repo, arg))
        if method == "POST" and action == "preupload":
            return self._preupload(repo, hub._get_commit(repo, arg))
        if method == "POST" and action == "commit":
            return self._commit(repo, arg)
        if action == "tag":
            return self._tag(method, repo, arg)
        if action == "branch":
            return self._branch(method, repo, arg)
        if method == "GET" and action == "xet-write-token":
            # This server has no Xet storage: tests must disable Xet or use all_regular uploads.
            raise _HubError(501, None, "Xet is not supported by the test hub; set HF_HUB_DISABLE_XET=1")
        raise _HubError(404, None, f"no route for {method} /api/{repo_type}s/{repo_id}/{'/'.join(rest)}")

    def _tree(self, repo: Repo, commit: Commit, prefix: str) -> tuple:
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = prefix.strip("/")
        base = f"{prefix}/" if prefix else ""
        if prefix and prefix not in commit.files and not any(p.startswith(base) for p in commit.files):
            raise _HubError(404, "EntryNotFound", f"{prefix} does not exist", commit=commit.sha)
        entries: dict[str, dict] = {}
        for path in sorted(commit.files):
            if not path.startswith(base):
                continue
            parts = path[len(base) :].split("/")
            for depth in range(1, len(parts)):  # intermediate folders
                folder = base + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(
                        folder, {"type": "directory", "path": folder, "size": 0, "oid": _tree_oid(folder)}
                    )
            if recursive or len(parts) == 1:
                entries[path] = self.hub._entry(commit, path)
        return 200, [entries[k] for k in sorted(entries)]

    def _paths_info(self, repo: Repo, commit: Commit) -> tuple:
        # sent form-encoded: paths=a&paths=b&expand=False
        form = parse_qs(self.body.decode())
        out = []
        for path in form.get("paths", []):
            if path in commit.files:
                out.append(self.hub._entry(commit, path))
            elif any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
                out.append({"type": "directory", "path": path, "size": 0, "oid": _tree_oid(path)})
        return 200, out

    def _refs(self, repo: Repo) -> tuple:
        def ref(kind: str, name: str, sha: str) -> dict:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}

        out: dict[str, list] = {
            "branches": [ref("heads", n, s) for n, s in sorted(repo.branches.items())],
            "converts": [],
            "tags": [ref("tags", n, s) for n, s in sorted(repo.tags.items())],
        }
        if self.query.get("include_prs"):
            out["pullRequests"] = []
        return 200, out

    def _commits(self, repo: Repo, commit: Commit) -> tuple:
        return 200, [
            {
                "id": c.sha,
                "title": c.title,
                "message": c.message,
                "authors": [{"user": "user"}],
                "date": c.date,
            }
            for c in repo.history(commit)
        ]

    def _preupload(self, repo: Repo, commit: Commit) -> tuple:
        files = []
        for item in self._payload()["files"]:
            path, size = item["path"], int(item["size"])
            mode = self.hub._upload_mode(path, size, base64.b64decode(item.get("sample", "")))
            answer: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
            if path in commit.files:
                # the oid the client compares against: sha256 for LFS, git blob sha1 for regular
                data = commit.files[path]
                answer["oid"] = hashlib.sha256(data).hexdigest() if mode == "lfs" else git_blob_sha1(data)
            files.append(answer)
        return 200, {"files": files}

    def _commit(self, repo: Repo, branch: str) -> tuple:
        hub = self.hub
        if branch not in repo.branches:
            if repo.resolve(branch) is not None:
                raise _HubError(400, None, f"Cannot commit to {branch!r}: not a branch")
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        parent = repo.commits[repo.branches[branch]]
        files, lfs = dict(parent.files), set(parent.lfs)
        title, message = "", ""
        for line in self.body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                title, message = value.get("summary", ""), value.get("description", "")
                wanted = value.get("parentCommit")
                if wanted and wanted != parent.sha:
                    raise _HubError(412, None, f"parentCommit {wanted} is not the head of {branch}")
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise ValueError(f"unsupported encoding {value.get('encoding')}")
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.discard(value["path"])
            elif key == "lfsFile":
                data = hub.lfs_objects.get(value["oid"])
                if data is None or len(data) != int(value["size"]):
                    raise _HubError(422, None, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = data
                lfs.add(value["path"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise _HubError(
                        404, "EntryNotFound", f"{value['path']} does not exist", commit=parent.sha
                    )
                del files[value["path"]]
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(folder)]:
                    del files[path]
            else:
                raise ValueError(f"unknown commit operation {key!r}")
        commit = hub._new_commit(repo, parent, files, lfs, title, message)
        repo.branches[branch] = commit.sha
        url = f"{hub.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{commit.sha}"
        return 200, {"success": True, "commitUrl": url, "commitOid": commit.sha, "pullRequestUrl": None}

    def _tag(self, method: str, repo: Repo, arg: str) -> tuple:
        if method == "DELETE":
            if arg not in repo.tags:
                raise _HubError(404, "RevisionNotFound", f"tag {arg} not found")
            del repo.tags[arg]
            return 200, {}
        tag = self._payload()["tag"]
        commit = self.hub._get_commit(repo, arg)
        if tag in repo.tags:
            raise _HubError(409, None, f"Tag {tag} already exists")
        repo.tags[tag] = commit.sha
        return 200, {}

    def _branch(self, method: str, repo: Repo, name: str) -> tuple:
        if method == "DELETE":
            if name not in repo.branches:
                raise _HubError(404, "RevisionNotFound", f"branch {name} not found")
            del repo.branches[name]
            return 200, {}
        if name in repo.branches:
            raise _HubError(409, None, f"Branch {name} already exists")
        start = self._payload().get("startingPoint") or "main"
        repo.branches[name] = self.hub._get_commit(repo, start).sha
        return 200, {}

    # --- LFS ---------------------------------------------------------------------------------------

    def _lfs_batch(self, repo_type: str, repo_id: str) -> tuple:
        hub = self.hub
        hub._get_repo(repo_type, repo_id)
        payload = self._payload()
        if payload.get("operation") != "upload":
            raise ValueError("only the upload operation is supported")
        objects = []
        for obj in payload["objects"]:
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in hub.lfs_objects:  # no "actions" = already stored, the client skips the upload
                href = f"{hub.url}/_lfs/{quote(repo_id, safe='')}/{oid}"
                entry["actions"] = {"upload": {"href": href}, "verify": {"href": href + "/verify"}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def _lfs_object(self, method: str, repo_quoted: str, rest: str) -> tuple:
        hub = self.hub
        oid, _, verb = rest.partition("/")
        if method == "PUT" and not verb:
            if hashlib.sha256(self.body).hexdigest() != oid:
                raise _HubError(400, None, f"uploaded bytes do not hash to {oid}")
            hub.lfs_objects[oid] = self.body
            return 200, {}
        if method == "POST" and verb == "verify":
            want = self._payload()
            data = hub.lfs_objects.get(oid)
            if data is None or len(data) != int(want["size"]) or want["oid"] != oid:
                raise _HubError(404, None, f"LFS object {oid} not found")
            return 200, {"message": "Everything good"}
        raise _HubError(404, None, f"bad LFS request {method} {rest}")

    # --- downloads ---------------------------------------------------------------------------------

    def _resolve(self, method: str, repo_type: str, repo_id: str, revision: str, filename: str) -> None:
        hub = self.hub
        repo = hub._get_repo(repo_type, repo_id)
        commit = hub._get_commit(repo, revision)
        if filename not in commit.files:
            raise _HubError(
                404, "EntryNotFound", f"{filename} does not exist at {revision}", commit=commit.sha
            )
        data = commit.files[filename]
        entry = hub._entry(commit, filename)
        headers: dict[str, Any] = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{entry["oid"]}"',
            "Accept-Ranges": "bytes",
        }
        if "lfs" in entry:  # the client prefers these over ETag/Content-Length
            headers["X-Linked-Etag"] = f'"{entry["lfs"]["oid"]}"'
            headers["X-Linked-Size"] = len(data)
        status, body = 200, data
        range_header = self.headers.get("Range")
        if range_header:
            start, end = parse_range(range_header, len(data))
            if start is None:
                headers["Content-Range"] = f"bytes */{len(data)}"
                self._send(416, b'{"error": "Requested range not satisfiable"}', headers=headers)
                return
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        if self._fault is not None and self._fault[0] == "wrong_size":
            if "X-Linked-Size" in headers:
                headers["X-Linked-Size"] = len(data) + 1
            elif method == "HEAD":
                headers["Content-Length"] = len(body) + 1  # a HEAD has no body to frame
        if method == "GET" and (hub.corrupt_downloads or filename in hub.corrupt_paths) and body:
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0xFF
            body = bytes(flipped)
        headers.setdefault("Content-Length", len(body))
        self._send(status, body, content_type="application/octet-stream", headers=headers)


def _tree_oid(folder: str) -> str:
    return hashlib.sha1(b"tree " + folder.encode()).hexdigest()


def parse_range(header: str, size: int) -> tuple[int | None, int]:
    """``bytes=N-``, ``bytes=N-M`` or ``bytes=-K`` -> inclusive (start, end); start None if unsatisfiable.

    Example::

        >>> parse_range("bytes=-3", 10), parse_range("items=0-1", 10)
        ((7, 9), (None, 0))
    """
    unit, _, spec = header.partition("=")
    first, _, last = spec.split(",")[0].strip().partition("-")
    if unit.strip() != "bytes":
        return None, 0
    if first == "":
        start, end = max(size - int(last or 0), 0), size - 1
    else:
        start, end = int(first), (int(last) if last else size - 1)
    end = min(end, size - 1)
    if start >= size or start > end:
        return None, 0
    return start, end


# --- pointing the real huggingface_hub client at a HubServer ------------------------------------------

DUMMY_TOKEN = "hf_testtoken000000000000000000000000"


@dataclass
class HubEnv:
    """What :func:`configure_client` set up: the server, the client's cache dir, and two switches."""

    server: HubServer
    cache_dir: Path
    home: Path
    token: str
    _monkeypatch: Any = field(repr=False)

    @property
    def url(self) -> str:
        return self.server.url

    def set_offline(self, offline: bool = True) -> None:
        """Flip ``HF_HUB_OFFLINE`` for the rest of the test (env var and the import-time constant).

        Example (``hf_hub_download`` then answers from the cache only)::

            >>> import os, tempfile, pytest
            >>> from pathlib import Path
            >>> server = HubServer().start()
            >>> with pytest.MonkeyPatch.context() as mp:
            ...     env = configure_client(server, Path(tempfile.mkdtemp()), mp)
            ...     env.set_offline(True)
            ...     os.environ["HF_HUB_OFFLINE"]
            '1'
            >>> server.stop()
        """
        from huggingface_hub import constants

        self._monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
        self._monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)

    def set_xet(self, enabled: bool) -> None:
        """Enable or disable Xet in the client. This server has no Xet storage, so with Xet enabled
        uploads only work when ``server.all_regular`` is True.

        Example ("lfs" preupload answers then go through plain git-LFS)::

            >>> import os, tempfile, pytest
            >>> from pathlib import Path
            >>> server = HubServer().start()
            >>> with pytest.MonkeyPatch.context() as mp:
            ...     env = configure_client(server, Path(tempfile.mkdtemp()), mp, xet=True)
            ...     env.set_xet(False)
            ...     os.environ["HF_HUB_DISABLE_XET"]
            '1'
            >>> server.stop()
        """
        from huggingface_hub import constants

        self._monkeypatch.setenv("HF_HUB_DISABLE_XET", "0" if enabled else "1")
        self._monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", not enabled)


def configure_client(
    server: HubServer, tmp_path: Path, monkeypatch: Any, *, xet: bool = False, offline: bool = False
) -> HubEnv:
    """Point ``huggingface_hub`` (env vars *and* the constants it froze at import) at ``server``,
    with a fresh cache under ``tmp_path``, a dummy token, no telemetry and short timeouts.
    Everything is undone by ``monkeypatch`` at the end of the test.

    Example (in a test, pass the ``tmp_path`` and ``monkeypatch`` fixtures)::

        >>> import tempfile, pytest
        >>> from pathlib import Path
        >>> from huggingface_hub import HfApi
        >>> server = HubServer().start()
        >>> with pytest.MonkeyPatch.context() as mp:
        ...     env = configure_client(server, Path(tempfile.mkdtemp()), mp)
        ...     HfApi().create_repo("me/repo").repo_id, env.url == server.url
        ('me/repo', True)
        >>> server.stop()
    """
    from huggingface_hub import constants

    home, cache = tmp_path / "hf_home", tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    env = {
        "HF_ENDPOINT": server.url,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN": DUMMY_TOKEN,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "5",
    }
    for key, value in env.items():  # for subprocesses, and for code that reads the environment late
        monkeypatch.setenv(key, value)
    # huggingface_hub reads these once at import: patch the module constants the code paths consult.
    patched = {
        "ENDPOINT": server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
        "HF_HUB_DISABLE_TELEMETRY": True,  # also skips the agent-registry fetch in the user agent
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HUB_ETAG_TIMEOUT": 5,
        "HF_HUB_DOWNLOAD_TIMEOUT": 5,
    }
    for name, value in patched.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    hub_env = HubEnv(server=server, cache_dir=cache, home=home, token=DUMMY_TOKEN, _monkeypatch=monkeypatch)
    hub_env.set_offline(offline)
    hub_env.set_xet(xet)
    return hub_env
