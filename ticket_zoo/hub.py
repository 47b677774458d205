"""Share tickets through the Hugging Face Hub: ``push``, ``load_from_hub``, ``pull``.

Everything goes through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, tokens).
On top of it this module adds what a shared ticket needs: bounded retries of server errors the client
does not retry (download GETs, commits), a sha256 check of every downloaded ticket (the client only
checks sizes), eviction of a corrupt download from the cache, and errors that say what to do.

Example:
    >>> import ticket_zoo as tz  # doctest: +SKIP
    >>> sha = tz.push("runs/digits/level_05", "me/lenet-digits-33pct")  # doctest: +SKIP
    >>> ticket = tz.load(f"hf-hub:me/lenet-digits-33pct@{sha}")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._io import atomic_write_bytes
from .errors import (
    ChecksumMismatchError,
    ConfigError,
    HubError,
    HubFileNotFoundError,
    HubOfflineError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    HubServerError,
    TicketNotFoundError,
)

__all__ = ["load_from_hub", "parse_spec", "pull", "push", "register_cli", "sha256_hex"]

log = logging.getLogger(__name__)

TICKET_FILE = "ticket.safetensors"
CARD_FILE = "README.md"
# Recipe and results files uploaded beside the ticket when the ticket directory (or, for a find run's
# level_XX directory, the run directory above it) has them.
EXTRA_FILES = ("config.yaml", "recipe.yaml", "summary.json", "results.json", "done.json")
# Pauses between attempts for server errors the client itself does not retry (GET, commit).
# Bounded: a Hub that keeps failing gets HubServerError after len(RETRY_DELAYS) + 1 attempts.
RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1.0)


# --- small helpers ---------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data`` (the digest catalogue cards pin).

    Example:
        >>> sha256_hex(b"")[:12]
        'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


def _git_blob_sha1(data: bytes) -> str:
    # What the Hub reports as the ETag of a regular (non-LFS) file.
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"org/name[@revision]"`` (an optional ``hf-hub:`` prefix is accepted) into (repo_id, revision).

    Example:
        >>> parse_spec("hf-hub:me/tickets@v1")
        ('me/tickets', 'v1')
        >>> parse_spec("me/tickets")
        ('me/tickets', None)
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(spec).strip().removeprefix("hf-hub:")
    repo_id, sep, revision = text.partition("@")
    if sep and not revision:
        raise ConfigError(
            f"Hub spec {spec!r} has an empty revision after '@'; write org/name@v1 or drop the '@'"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigError(
            f"{repo_id!r} is not a valid Hub repo id ({exc}); write it as org/name[@revision]"
        ) from None
    return repo_id, (revision or None)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and its causes (or contexts), at most 10 deep so a cyclic chain cannot loop forever."""
    for _ in range(10):
        if exc is None:
            return
        yield exc
        exc = exc.__cause__ or exc.__context__


def _status(exc: BaseException | None) -> int | None:
    """The HTTP status of the first error in ``exc``'s cause chain that has a response."""
    for err in _chain(exc):
        code = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(code, int):
            return code
    return None


def _transport_errors() -> tuple[type, ...]:
    # huggingface_hub 2.x talks through httpx2 (older releases through httpx); both raise TransportError.
    out: list[type] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            out.append(__import__(name).TransportError)
    return tuple(out)


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return endpoint or constants.ENDPOINT


@contextlib.contextmanager
def _hub_errors(
    repo_id: str, revision: str | None, filename: str | None = None, endpoint: str | None = None
) -> Iterator[None]:
    """Translate huggingface_hub's exceptions into ticket_zoo's, with messages that say what to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}"
    try:
        yield
    except HubError:
        raise
    except LocalEntryNotFoundError as exc:
        # The HEAD failed (offline, no connection, Hub down) and the cache has nothing to fall back on.
        if constants.HF_HUB_OFFLINE or any(isinstance(e, OfflineModeIsEnabled) for e in _chain(exc)):
            raise HubOfflineError(
                f"{filename or 'the ticket'} of {where} is not in the local Hugging Face cache and offline mode "
                "is on (HF_HUB_OFFLINE=1): run once online to cache it, or set HF_HUB_OFFLINE=0"
            ) from None
        status = _status(exc.__cause__)
        if status is not None and status >= 500:
            raise HubServerError(
                f"the Hub at {_endpoint(endpoint)} answered HTTP {status} for {where} even after retries, and the "
                "file is not cached; try again later"
            ) from None
        raise HubOfflineError(
            f"cannot reach the Hub at {_endpoint(endpoint)} and {filename or 'the ticket'} of {where} is not cached: "
            "check your connection (and HF_ENDPOINT), then try again"
        ) from None
    except GatedRepoError:
        raise HubRepoNotFoundError(
            f"{repo_id} is gated: accept its terms on the Hub and log in (`hf auth login` or HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise HubRepoNotFoundError(
            f"Hub repo {repo_id!r} not found at {_endpoint(endpoint)}: check the id (org/name); if it is private, "
            "log in with `hf auth login` or set HF_TOKEN"
        ) from None
    except RevisionNotFoundError:
        raise HubRevisionNotFoundError(
            f"revision {revision!r} does not exist in {repo_id}: check the tag, branch or commit sha "
            f"(list them with `huggingface_hub.list_repo_refs({repo_id!r})`)"
        ) from None
    except EntryNotFoundError:
        raise HubFileNotFoundError(
            f"{where} has no {filename or 'such file'}: is it a ticket repo? (push one with `ticket-zoo push DIR "
            f"--repo {repo_id}`)"
        ) from None
    except OfflineModeIsEnabled:
        raise HubOfflineError(
            f"offline mode is on (HF_HUB_OFFLINE=1) and {where} needs the network: set HF_HUB_OFFLINE=0"
        ) from None
    except HfHubHTTPError as exc:
        status = _status(exc)
        if status is not None and status >= 500:
            raise HubServerError(
                f"the Hub at {_endpoint(endpoint)} answered HTTP {status} for {where} even after retries; "
                "try again later"
            ) from None
        if status in (401, 403):
            raise HubRepoNotFoundError(
                f"not allowed to access {repo_id} (HTTP {status}): log in with `hf auth login` or pass a token "
                "with the needed permission"
            ) from None
        raise HubError(f"the Hub refused the request for {where}: {exc}") from None
    except _transport_errors() as exc:
        raise HubOfflineError(
            f"cannot reach the Hub at {_endpoint(endpoint)} ({type(exc).__name__}): check your connection "
            "and HF_ENDPOINT"
        ) from None


def _with_retries(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; on an HTTP 5xx wait ``RETRY_DELAYS`` and try again (bounded), else re-raise."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    for delay in (*RETRY_DELAYS, None):
        try:
            return fn(*args, **kwargs)
        except LocalEntryNotFoundError:
            raise  # the client already retried its HEAD with backoff
        except HfHubHTTPError as exc:
            status = _status(exc)
            if status is None or status < 500 or delay is None:
                raise
            log.warning("%s: Hub answered HTTP %s; retrying in %.1f s", what, status, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


# --- download --------------------------------------------------------------------------------------


def _evict(pointer: Path) -> None:
    """Remove a downloaded file from the HF cache: the snapshot entry and the blob it points to."""
    blob = Path(os.path.realpath(pointer))
    for path in (pointer, blob):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _hub_digest(pointer: Path, repo_id: str, token: Any, endpoint: str | None) -> str | None:
    """The digest the Hub reports for a cached file: its ETag, which is the sha256 for LFS files and the
    git blob sha1 for regular ones. The cache names blobs by it; where the cache holds copies instead
    of symlinks (no symlink support), ask the Hub for it at the cached commit (None when offline)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    blob = Path(os.path.realpath(pointer))
    if blob.parent.name == "blobs":
        return blob.name.lower()
    if constants.HF_HUB_OFFLINE:
        return None
    url = hf_hub_url(repo_id, pointer.name, revision=pointer.parent.name, endpoint=endpoint)
    with _hub_errors(repo_id, pointer.parent.name, pointer.name, endpoint):
        etag = get_hf_file_metadata(url, token=token, endpoint=endpoint).etag
    return etag.lower() if etag else None


def _verify(pointer: Path, data: bytes, expected_sha256: str | None, etag: str | None, where: str) -> None:
    """Check ``data`` against the Hub's own digest ``etag`` (sha256 for LFS files, git blob sha1 for
    regular ones) and against ``expected_sha256`` (a catalogue pin); evict and raise on mismatch."""
    digest = sha256_hex(data)
    problem = None
    if expected_sha256 is not None and digest != expected_sha256.lower():
        problem = f"sha256 {digest} but the catalogue pins {expected_sha256}"
    elif etag is not None and len(etag) == 64 and digest != etag:
        problem = f"sha256 {digest} but the Hub reports {etag}"
    elif etag is not None and len(etag) == 40 and (blob_sha1 := _git_blob_sha1(data)) != etag:
        problem = f"git blob sha1 {blob_sha1} but the Hub reports {etag}"
    if problem is not None:
        _evict(pointer)  # never leave a bad file in the cache where the next load would trust it
        raise ChecksumMismatchError(
            f"{where}: the downloaded {TICKET_FILE} has {problem}; it was corrupted in transit or the pin is "
            "wrong. The bad copy was removed from the cache: try again; if it persists, check the revision"
        )


def _download(repo_id: str, filename: str, revision: str | None, token: Any, endpoint: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    with _hub_errors(repo_id, revision, filename, endpoint):
        path = _with_retries(
            f"download {repo_id}/{filename}",
            hf_hub_download,
            repo_id,
            filename,
            revision=revision,
            token=token,
            endpoint=endpoint,
        )
    return Path(path)


def _fetch_ticket(
    repo_id: str, revision: str | None, where: str, sha256: str | None, token: Any, endpoint: str | None
) -> tuple[Path, bytes]:
    """Download (or take from the cache) ``ticket.safetensors`` and verify it: (cache path, bytes).

    A catalogue pin ``sha256`` is checked when given; otherwise the digest the Hub reports (which
    costs a request only where the cache holds copies instead of symlinks)."""
    pointer = _download(repo_id, TICKET_FILE, revision, token, endpoint)
    data = pointer.read_bytes()
    etag = None if sha256 is not None else _hub_digest(pointer, repo_id, token, endpoint)
    _verify(pointer, data, sha256, etag, where)
    return pointer, data


def load_from_hub(
    spec: str,
    *,
    sha256: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> Any:
    """Download (or take from the HF cache) ``ticket.safetensors`` of ``org/name[@revision]``, verify it, read it.

    The revision may be a branch, a tag or a commit sha; a pinned one gives exactly that version.
    ``sha256`` (a catalogue pin) is checked when given, else the digest the Hub reports.
    The ticket's ``meta["hub"]`` records ``repo_id``, ``revision`` and the resolved ``commit``.

    Example:
        >>> ticket = load_from_hub("me/lenet-digits@v1")  # doctest: +SKIP
        >>> ticket.meta["hub"]["commit"]  # doctest: +SKIP
        '3f1c...'
    """
    from .format import ticket_from_bytes

    repo_id, revision = parse_spec(spec)
    where = f"hf-hub:{repo_id}@{revision or 'main'}"
    pointer, data = _fetch_ticket(repo_id, revision, where, sha256, token, endpoint)
    ticket = ticket_from_bytes(data, source=where)
    # The cache layout is snapshots/<commit>/<file>: the commit the revision resolved to.
    ticket.meta["hub"] = {"repo_id": repo_id, "revision": revision or "main", "commit": pointer.parent.name}
    return ticket


def pull(
    spec: str,
    local_dir: str | os.PathLike | None = None,
    *,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> Path:
    """Fetch a ticket directory (``ticket.safetensors`` + ``README.md``) for a catalogue name or a Hub spec.

    Hub tickets are verified like :func:`load_from_hub`. Without ``local_dir`` a Hub ticket stays in the
    HF cache and its snapshot directory is returned; catalogue tickets embedded in the package are
    written to ``local_dir`` (default ``./NAME``).

    Example:
        >>> pull("hf-hub:me/lenet-digits@v1", "tickets/lenet")  # doctest: +SKIP
        PosixPath('tickets/lenet')
    """
    text = str(spec)
    if not text.startswith("hf-hub:") and "/" not in text:
        from . import zoo
        from .api import save

        entry = zoo.info(text)
        if entry["location"] == "hub":
            spec_at = f"{entry['repo_id']}@{entry['revision']}"
            return _pull_hub(spec_at, local_dir, token=token, endpoint=endpoint, sha256=entry["sha256"])
        ticket = zoo.load_named(text)  # embedded (verified) or raises TicketNotPublishedError
        return save(ticket, Path(local_dir) if local_dir is not None else Path(text), name=text)
    return _pull_hub(text, local_dir, token=token, endpoint=endpoint)


def _pull_hub(
    spec: str,
    local_dir: str | os.PathLike | None,
    *,
    token: Any,
    endpoint: str | None,
    sha256: str | None = None,
) -> Path:
    from .format import ticket_from_bytes

    repo_id, revision = parse_spec(spec)
    where = f"hf-hub:{repo_id}@{revision or 'main'}"
    pointer, data = _fetch_ticket(repo_id, revision, where, sha256, token, endpoint)
    ticket_from_bytes(data, source=where)  # refuse to hand over something that is not a valid ticket
    commit = pointer.parent.name
    card: Path | None
    try:
        # the same commit as the ticket, so the two files always belong together
        card = _download(repo_id, CARD_FILE, commit, token, endpoint)
    except HubFileNotFoundError:
        card = None
    if local_dir is None:
        return pointer.parent
    out = Path(local_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    atomic_write_bytes(out / TICKET_FILE, data)
    if card is not None:
        atomic_write_bytes(out / CARD_FILE, card.read_bytes())
    return out


# --- upload ----------------------------------------------------------------------------------------


def _stage(ticket_or_dir: Any, repo_id: str, tmp: Path) -> dict[str, Path]:
    """The files to upload: {path in repo: local path}. A Ticket is saved into ``tmp`` first."""
    from .api import save
    from .cards import render_card
    from .format import read_ticket
    from .ticket import Ticket

    if isinstance(ticket_or_dir, Ticket):
        directory = save(ticket_or_dir, tmp / "ticket", name=ticket_or_dir.name)
        # the card of a pushed Ticket tells readers how to load it from this repo
        (directory / CARD_FILE).write_text(
            str(render_card(ticket_or_dir, name=ticket_or_dir.name, repo_id=repo_id)), encoding="utf-8"
        )
    else:
        directory = Path(ticket_or_dir)
        if directory.is_file() and directory.name == TICKET_FILE:
            directory = directory.parent
        if not (directory / TICKET_FILE).is_file():
            raise TicketNotFoundError(
                f"{directory} has no {TICKET_FILE}; pass a ticket directory (e.g. runs/NAME/level_05) or a Ticket"
            )
    files = {TICKET_FILE: directory / TICKET_FILE}
    if (directory / CARD_FILE).is_file():
        files[CARD_FILE] = directory / CARD_FILE
    else:
        ticket = read_ticket(directory / TICKET_FILE)
        card = tmp / CARD_FILE
        card.write_text(str(render_card(ticket, name=ticket.name, repo_id=repo_id)), encoding="utf-8")
        files[CARD_FILE] = card
    # A find run keeps its recipe and summary one level up from level_XX/.
    search = [directory]
    if directory.name.startswith("level_"):
        search.append(directory.parent)
    for name in EXTRA_FILES:
        for folder in search:
            if (folder / name).is_file():
                files[name] = folder / name
                break
    return files


def push(
    ticket_or_dir: Any,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    tag: str | None = None,
) -> str:
    """Upload a ticket (a :class:`~ticket_zoo.Ticket` or a ticket directory) to a Hub repo; return the commit sha.

    Uploads ``ticket.safetensors``, ``README.md`` (the model card; rendered when the directory has none)
    and, when present, the recipe (``config.yaml``/``recipe.yaml``) and results (``summary.json``/
    ``results.json``/``done.json``). The repo is created if needed; ``revision`` names the branch (created
    from main if new). Pushing unchanged files makes no commit and returns the current head. ``tag``
    also tags the commit (pin it in a catalogue with the returned sha or the tag).

    Example:
        >>> sha = push("runs/digits/level_05", "me/lenet-digits-33pct", tag="v1")  # doctest: +SKIP
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    repo_id, at = parse_spec(repo_id)
    if at is not None:
        if revision is not None and revision != at:
            raise ConfigError(f"two revisions given: {repo_id}@{at} and revision={revision!r}; give one")
        revision = at
    branch = revision or "main"
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="ticket_zoo_push_") as tmp:
        files = _stage(ticket_or_dir, repo_id, Path(tmp))
        message = commit_message or f"Upload ticket ({', '.join(sorted(files))}) with ticket-zoo"
        with _hub_errors(repo_id, branch, endpoint=endpoint):
            url = _with_retries(f"create {repo_id}", api.create_repo, repo_id, private=private, exist_ok=True)
            repo_id = url.repo_id  # "name" without an org becomes the token owner's
            if branch != "main":
                _with_retries(f"branch {branch}", api.create_branch, repo_id, branch=branch, exist_ok=True)

            def commit() -> Any:
                # fresh operations each attempt: they carry upload state from the previous one
                ops = [
                    CommitOperationAdd(path_in_repo=k, path_or_fileobj=str(v))
                    for k, v in sorted(files.items())
                ]
                return api.create_commit(repo_id, operations=ops, commit_message=message, revision=branch)

            info = _with_retries(f"commit to {repo_id}", commit)
            sha = info.oid
            if tag:
                _tag(api, repo_id, tag, sha)
    return sha


def _tag(api: Any, repo_id: str, tag: str, sha: str) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_tag(repo_id, tag=tag, revision=sha)
    except HfHubHTTPError as exc:
        if _status(exc) != 409:
            raise
        current = {t.name: t.target_commit for t in api.list_repo_refs(repo_id).tags}.get(tag)
        if current != sha:
            raise HubError(
                f"tag {tag!r} of {repo_id} already points at {current}, not at the pushed commit {sha}; "
                "choose a new tag (tags pin versions and are never moved)"
            ) from None


# --- CLI -------------------------------------------------------------------------------------------


def _cli_pull(args: argparse.Namespace) -> int:
    path = pull(args.spec, args.out)
    print(path)
    return 0


def _cli_push(args: argparse.Namespace) -> int:
    sha = push(
        args.dir,
        args.repo,
        revision=args.revision,
        private=args.private,
        commit_message=args.message,
        tag=args.tag,
    )
    print(f"pushed {args.dir} to {args.repo} at commit {sha}")
    print(f"load it with: ticket_zoo.load('hf-hub:{args.repo}@{sha}')")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``ticket-zoo pull`` and ``ticket-zoo push`` (``publish`` is in :mod:`ticket_zoo.zoo`).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="ticket-zoo")
        >>> register_cli(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["push", "runs/x/level_03", "--repo", "me/t"]).repo
        'me/t'
    """
    p = subparsers.add_parser(
        "pull",
        help="download a ticket (catalogue name or hf-hub:org/name[@rev]) into a directory",
        description="Fetch ticket.safetensors and README.md, verified by sha256, into --out (or print the HF cache path).",
    )
    p.add_argument("spec", metavar="NAME|hf-hub:ORG/NAME[@REV]")
    p.add_argument("--out", metavar="DIR", help="directory to write the ticket into")
    p.set_defaults(func=_cli_pull)

    p = subparsers.add_parser(
        "push",
        help="upload a ticket directory to a Hugging Face Hub repo",
        description="Upload ticket.safetensors, README.md and the recipe/results files of a ticket directory.",
    )
    p.add_argument("dir", metavar="DIR", help="ticket directory, e.g. runs/digits/level_05")
    p.add_argument("--repo", required=True, metavar="ORG/NAME")
    p.add_argument("--revision", metavar="BRANCH", help="branch to commit to (default main; created if new)")
    p.add_argument("--tag", help="also tag the commit, e.g. v1")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=_cli_push)
