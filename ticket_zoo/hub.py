"""Share tickets through the Hugging Face Hub: ``push``, ``load_from_hub``, ``pull``, ``publish``.

Everything goes through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, tokens).
On top of it this module adds what a shared ticket needs: revisions checked before they reach the
client (they become cache paths), a time limit on every Hub call (``TICKET_ZOO_HUB_TIMEOUT`` seconds,
default 60, or ``timeout=``), bounded retries of server errors the client does not retry (download GETs,
commits), of rate limits (honouring ``Retry-After`` up to a cap) and, for downloads only, one retry of a
timeout or a cut-short body; a digest check of every downloaded file (the ticket and its card; the client
only checks sizes), eviction of a corrupt download from the cache, and errors that say what to do.

Specs are read by :mod:`ticket_zoo.specs` (one grammar for load, pull and transfer); revisions pass
its :func:`validate_revision` (importable from here too). Layering: this module imports ``specs``,
``_io``, ``format``, ``zoo`` and ``cards``, never ``api``.

Examples (offline: revisions and repo ids are checked before anything reaches the network):

    >>> validate_revision("v1.0")
    'v1.0'
    >>> parse_hub_spec("hf-hub:me/lenet-digits-33pct@v1")
    TicketSpec(kind='hub', repo_id='me/lenet-digits-33pct', revision='v1')
    >>> sha256_hex(b"ticket")[:12]  # what a catalogue card pins: the sha256 of ticket.safetensors
    '14069429150a'
    >>> hub_timeout(30)
    30.0

With a Hub server and a token (``hf auth login``), so skipped here:

    >>> import ticket_zoo as tz
    >>> sha = tz.push("runs/digits/level_05", "me/lenet-digits-33pct")  # doctest: +SKIP
    >>> ticket = tz.load(f"hf-hub:me/lenet-digits-33pct@{sha}")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import zoo
from ._io import atomic_write_bytes, atomic_write_text, prepare_out_dir, sha256_hex
from .errors import (
    ChecksumMismatchError,
    ConfigError,
    HubError,
    HubFileNotFoundError,
    HubOfflineError,
    HubPermissionError,
    HubRateLimitedError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    HubServerError,
    HubTimeoutError,
    HubUploadError,
    OutputDirError,
    TicketFormatError,
    TicketNotFoundError,
    TicketNotPublishedError,
    one_line,
    shorten,
)
from .specs import HUB_PREFIX, TICKET_FILE, TicketSpec, parse_hub_spec, parse_spec, validate_revision

__all__ = [
    "explain_fallback",
    "hub_timeout",
    "load_from_hub",
    "publish",
    "pull",
    "push",
    "register_cli",
    "sha256_hex",
    "validate_revision",
]

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
# Recipe and results files uploaded beside the ticket when the ticket directory (or, for a find run's
# level_XX directory, the run directory above it) has them.
EXTRA_FILES = ("config.yaml", "recipe.yaml", "summary.json", "results.json", "done.json")
# Pauses between attempts for server errors the client itself does not retry (GET, commit).
# Bounded: a Hub that keeps failing gets HubServerError after len(RETRY_DELAYS) + 1 attempts.
RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1.0)
# The time one Hub call (one file download, one commit, ...) may take, in seconds: ``timeout=`` of the
# public functions, else this environment variable, else DEFAULT_TIMEOUT. Transfers earn 1 s more per
# MIN_TRANSFER_RATE bytes moved, so a large ticket on a slow link is not cut off.
TIMEOUT_ENV = "TICKET_ZOO_HUB_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
MIN_TRANSFER_RATE = 100_000
# HTTP 429: wait as the Hub asks (Retry-After), at most RATE_LIMIT_MAX_WAIT s a time and
# RATE_LIMIT_RETRIES times per call, then HubRateLimitedError.
RATE_LIMIT_RETRIES = 3
RATE_LIMIT_MAX_WAIT = 20.0
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


# --- small helpers ---------------------------------------------------------------------------------


def _git_blob_sha1(data: bytes) -> str:
    # What the Hub reports as the ETag of a regular (non-LFS) file.
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hub_timeout(timeout: float | None = None) -> float:
    """The time limit of one Hub call in seconds: ``timeout`` if given, else ``$TICKET_ZOO_HUB_TIMEOUT``,
    else 60. Transfers get 1 s more per 100 kB moved.

    Example:
        >>> hub_timeout(5)
        5.0
    """
    source = "timeout"
    if timeout is None:
        raw = os.environ.get(TIMEOUT_ENV, "").strip()
        if not raw:
            return DEFAULT_TIMEOUT
        source = TIMEOUT_ENV
        try:
            timeout = float(raw)
        except ValueError:
            timeout = math.nan
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        shown = repr(os.environ.get(TIMEOUT_ENV, "")[:40]) if source == TIMEOUT_ENV else repr(timeout)
        raise ConfigError(f"{source} must be a number of seconds > 0 (e.g. 120), got {shown}")
    return float(timeout)


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


def _failed_request(exc: BaseException | None) -> str:
    """``"METHOD /path"`` of the first request in ``exc``'s chain that failed (``""`` if unknown)."""
    for err in _chain(exc):
        for holder in (getattr(err, "response", None), err):
            try:
                request = getattr(holder, "request", None)
            except RuntimeError:  # httpx raises when the attribute was never set
                request = None
            if request is not None and hasattr(request, "url"):
                return f"{request.method} {request.url.path}"
    return ""


def _error_code(exc: BaseException | None) -> str | None:
    for err in _chain(exc):
        headers = getattr(getattr(err, "response", None), "headers", None)
        if headers is not None:
            return headers.get("X-Error-Code")
    return None


def _transport_errors() -> tuple[type, ...]:
    # huggingface_hub 2.x talks through httpx2 (older releases through httpx); both raise TransportError.
    out: list[type] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            out.append(__import__(name).TransportError)
    return tuple(out)


def _timeout_errors() -> tuple[type, ...]:
    # _hub_http imports httpx: loaded with the first Hub call, not with `import ticket_zoo.hub`
    from . import _hub_http

    out: list[type] = [TimeoutError, _hub_http.DeadlineExceeded]
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            out.append(__import__(name).TimeoutException)
    return tuple(out)


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return endpoint or constants.ENDPOINT


def _problem(exc: BaseException, call: Any) -> str | None:
    """What kind of failure ``exc`` is: "timeout", "rate_limited", "cut_short", "wrong_size", or None."""
    from . import _hub_http  # imports httpx: loaded with the first Hub call

    chain = list(_chain(exc))
    if any(isinstance(e, _timeout_errors()) for e in chain):
        return "timeout"
    if any(isinstance(e, _hub_http.RateLimited) for e in chain) or (call is not None and call.spent == "rate_limited"):
        return "rate_limited"
    if any(isinstance(e, _hub_http.BodyCutShort) for e in chain) or (call is not None and call.spent == "cut_short"):
        return "cut_short"
    # huggingface_hub's own size check after a download: a bare OSError without an errno (a real
    # file-system error always has one)
    if any(type(e) is OSError and e.errno is None and "size" in str(e) for e in chain):
        return "wrong_size"
    return None


def _is_upload_stage(exc: BaseException) -> bool:
    """Did ``exc`` come from uploading file contents (LFS batch/PUT/verify, preupload), not the commit?"""
    for err in _chain(exc):
        if type(err) is RuntimeError and "uploading" in str(err).lower():  # huggingface_hub's LFS wrapper
            return True
    request = _failed_request(exc)
    return "/info/lfs/" in request or "/preupload/" in request


@contextlib.contextmanager
def _hub_errors(
    repo_id: str,
    revision: str | None,
    filename: str | None = None,
    endpoint: str | None = None,
    *,
    writing: bool = False,
) -> Iterator[None]:
    """Translate huggingface_hub's (and httpx's) exceptions into ticket_zoo's one-line errors that say
    what to do. ``writing``: the block pushes (permissions and upload failures are worded for it)."""
    try:
        yield
    except HubError:
        raise
    except Exception as exc:
        error = _translate(exc, repo_id, revision, filename, endpoint, writing)
        if error is None:
            raise
        raise error from None


def _translate(
    exc: BaseException, repo_id: str, revision: str | None, filename: str | None, endpoint: str | None, writing: bool
) -> HubError | None:
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

    chain = list(_chain(exc))
    call = getattr(exc, "_ticket_zoo_call", None)
    where = f"{repo_id}@{revision or 'main'}"
    what = call.what if call is not None else f"the request for {where}"
    hub = f"the Hub at {_endpoint(endpoint)}"
    problem = _problem(exc, call)
    status = _status(exc)
    local_miss = isinstance(exc, LocalEntryNotFoundError)
    not_cached = " and the file is not cached" if local_miss else ""

    if problem == "timeout":
        limit = call.limit if call is not None else hub_timeout()
        request = (call.failed_request if call is not None else "") or _failed_request(exc)
        maybe = (
            "; the commit may or may not have been made: check the repo's history before pushing again"
            if writing and "/commit/" in request
            else ""
        )
        tries = f", {call.attempts} attempts" if call is not None and call.attempts > 1 else ""
        return HubTimeoutError(
            f"{what} did not finish within {limit:g} s ({request or 'no answer'}{tries}): {hub} is slow or "
            f"unreachable{maybe}. "
            f"Try again, or allow more time with {TIMEOUT_ENV}={max(2 * limit, 120):g}"
        )
    if problem == "rate_limited" or status == 429:
        wait = call.retry_after if call is not None else None
        after = f"retry after {math.ceil(wait)} s" if wait is not None else "retry in a minute"
        times = f" {call.rate_limited} times" if call is not None and call.rate_limited > 1 else ""
        return HubRateLimitedError(f"{hub} rate-limited {what} (HTTP 429{times}); {after}")
    if problem in ("cut_short", "wrong_size"):
        how = "ended early" if problem == "cut_short" else "did not have the size the Hub announced"
        return ChecksumMismatchError(
            f"{what}: the download {how}, also when retried; nothing was kept in the cache. The connection or "
            f"{hub} is unreliable: try again later"
        )
    if any(isinstance(e, OfflineModeIsEnabled) for e in chain) or (local_miss and constants.HF_HUB_OFFLINE):
        if local_miss:
            return HubOfflineError(
                f"{filename or 'the ticket'} of {where} is not in the local Hugging Face cache and offline mode "
                "is on (HF_HUB_OFFLINE=1): run once online to cache it, or set HF_HUB_OFFLINE=0"
            )
        return HubOfflineError(
            f"offline mode is on (HF_HUB_OFFLINE=1) and {where} needs the network: set HF_HUB_OFFLINE=0"
        )
    if any(isinstance(e, GatedRepoError) for e in chain):
        return HubPermissionError(
            f"{repo_id} is gated: accept its terms on the Hub and log in (`hf auth login` or HF_TOKEN)"
        )
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return HubRepoNotFoundError(
            f"Hub repo {repo_id!r} not found at {_endpoint(endpoint)}: check the id (org/name); if it is private, "
            "log in with `hf auth login` or set HF_TOKEN"
        )
    if any(isinstance(e, RevisionNotFoundError) for e in chain):
        return HubRevisionNotFoundError(
            f"revision {revision!r} does not exist in {repo_id}: check the tag, branch or commit sha "
            f"(list them with `huggingface_hub.list_repo_refs({repo_id!r})`)"
        )
    # (LocalEntryNotFoundError is an EntryNotFoundError too: "not cached and the Hub did not answer")
    if any(isinstance(e, EntryNotFoundError) and not isinstance(e, LocalEntryNotFoundError) for e in chain):
        return HubFileNotFoundError(
            f"{where} has no {filename or 'such file'}: is it a ticket repo? (push one with `ticket-zoo push DIR "
            f"--repo {repo_id}`)"
        )
    if status in (401, 403):
        if writing:
            need = f"a token that may write to {repo_id} (a write token, with access to its organisation)"
        else:
            need = f"a token that may read {repo_id}"
        return HubPermissionError(
            f"{hub} refused {what} (HTTP {status}): log in with `hf auth login` or set HF_TOKEN to {need}"
        )
    if status == 404:
        if "/resolve/" in _failed_request(exc):
            return HubFileNotFoundError(
                f"{where} has no {filename or 'such file'} ({hub} answered HTTP 404): check the repo id, revision "
                "and file; if the repo is private, log in with `hf auth login` or set HF_TOKEN"
            )
        return HubRepoNotFoundError(
            f"{hub} answered HTTP 404 for {what}: check that {repo_id!r} exists (org/name) and, if it is private, "
            "log in with `hf auth login` or set HF_TOKEN"
        )
    unusable = [e for e in chain if isinstance(e, ValueError) and not isinstance(e, HfHubHTTPError)]
    if writing and unusable:
        # huggingface_hub's word for an answer it cannot use, e.g. "LFS batch API returned errors: ..."
        detail = one_line(unusable[0], 160)
        return HubUploadError(
            f"{hub} gave an answer that {what} cannot use ({detail}); check the repo's history, then try again"
        )
    if writing and _is_upload_stage(exc):
        detail = f"HTTP {status}" if status is not None else one_line(f"{type(exc).__name__}: {exc}", 120)
        return HubUploadError(
            f"uploading the files of {what} failed ({detail}) even after retries; the commit was not made: "
            "try again later"
        )
    if status is not None and status >= 500:
        return HubServerError(
            f"{hub} answered HTTP {status} for {where} even after retries{not_cached}; try again later"
        )
    if any(isinstance(e, _transport_errors()) for e in chain) or local_miss:
        return HubOfflineError(
            f"cannot reach {hub} and {filename or 'the ticket'} of {where} is not cached: check your connection "
            "(and HF_ENDPOINT), then try again"
            if local_miss
            else f"cannot reach {hub} ({type(exc).__name__}): check your connection and HF_ENDPOINT"
        )
    if isinstance(exc, HfHubHTTPError):
        if writing:
            return HubUploadError(f"{hub} refused {what} (HTTP {status}): {_server_message(exc)}")
        return HubError(f"{hub} refused the request for {where} (HTTP {status}): {_server_message(exc)}")
    return None


def _server_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    message = getattr(response, "headers", {}).get("X-Error-Message") if response is not None else None
    return one_line(message or str(exc).split("\n")[0], 160)


def _retry_delay(
    exc: BaseException, call: Any, kind: str, server_delays: Iterator[float], once: dict[str, bool]
) -> float | None:
    """How long to wait before the next attempt of ``call`` after ``exc``, or None to give up.

    Downloads (``kind="download"``) and idempotent API calls (``"api"``) are retried on 5xx (the
    RETRY_DELAYS, bounded) and once on a timeout; downloads also once when cut short. A commit is retried
    only when the commit request itself answered 5xx or 429 (the uploads before it are retried by
    huggingface_hub, and a commit that timed out may have been made). HTTP 429 is retried while the call
    has waits left (the transport already waited as asked)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(exc, HubError):
        return None
    problem = _problem(exc, call)
    first = RETRY_DELAYS[0] if RETRY_DELAYS else 0.0
    if problem == "timeout" and kind != "commit" and once.pop("timeout", False):
        return first
    if problem in ("cut_short", "wrong_size") and kind == "download" and once.pop("cut_short", False):
        return first
    if problem is not None:
        return None
    status = _status(exc)
    commit_request = "/commit/" in _failed_request(exc)
    if kind == "commit" and not commit_request:
        return None
    if status == 429:
        return 0.0 if call.rate_limited <= call.max_rate_limited else None
    if status is not None and status >= 500 and not isinstance(exc, LocalEntryNotFoundError):
        # (a LocalEntryNotFoundError means the client's own HEAD retries already failed)
        return next(server_delays, None)
    return None


def _attempts(what: str, kind: str, timeout: float | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one Hub call ``fn(*args, **kwargs)`` under the time limit, with the retries its ``kind``
    allows (see :func:`_retry_delay`). The final exception carries the call for :func:`_hub_errors`."""
    from . import _hub_http  # imports httpx: loaded with the first Hub call

    _hub_http.install()
    call = _hub_http.Call(
        what,
        hub_timeout(timeout),
        max_rate_limited=RATE_LIMIT_RETRIES,
        max_wait=RATE_LIMIT_MAX_WAIT,
        min_rate=MIN_TRANSFER_RATE,
    )
    server_delays = iter(RETRY_DELAYS)
    once = {"timeout": True, "cut_short": True}
    while True:
        call.start_attempt()
        try:
            with _hub_http.scope(call):
                return fn(*args, **kwargs)
        except Exception as exc:
            delay = _retry_delay(exc, call, kind, server_delays, once)
            if delay is None:
                with contextlib.suppress(AttributeError, TypeError):
                    exc._ticket_zoo_call = call  # type: ignore[attr-defined]
                raise
            log.warning("%s: %s; retrying in %.1f s", what, one_line(exc, 160), delay)
        time.sleep(delay)


# --- download --------------------------------------------------------------------------------------


MAX_CARD_BYTES = 1024 * 1024  # a model card is a page of text; anything larger is not one


def _read_small(pointer: Path, where: str, filename: str) -> bytes:
    with open(pointer, "rb") as f:
        data = f.read(MAX_CARD_BYTES + 1)
    if len(data) > MAX_CARD_BYTES:
        raise TicketFormatError(f"{where}: {filename} is larger than {MAX_CARD_BYTES} bytes; not a model card")
    return data


def _evict(pointer: Path) -> None:
    """Remove a downloaded file from the HF cache: the snapshot entry and the blob it points to."""
    blob = Path(os.path.realpath(pointer))
    for path in (pointer, blob):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _commit_of(pointer: Path, where: str) -> str:
    """The commit a cached file belongs to (the cache layout is ``snapshots/<commit>/<file>``). The
    commit id comes from the server's answer: refuse anything but a 40-hex sha before using it again."""
    commit = pointer.parent.name
    if pointer.parent.parent.name != "snapshots" or not _COMMIT_RE.fullmatch(commit):
        raise HubError(
            f"{where}: the Hub answered an invalid commit id {commit[:50]!r} for {pointer.name}; is HF_ENDPOINT "
            "a Hugging Face Hub?"
        )
    return commit


def _hub_digest(
    pointer: Path, repo_id: str, token: Any, endpoint: str | None, timeout: float | None = None
) -> str | None:
    """The digest the Hub reports for a cached file: its ETag, which is the sha256 for LFS files and the
    git blob sha1 for regular ones. The cache names blobs by it; where the cache holds copies instead
    of symlinks (no symlink support), ask the Hub for it at the cached commit (None when offline)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    blob = Path(os.path.realpath(pointer))
    if blob.parent.name == "blobs":
        return blob.name.lower()
    if constants.HF_HUB_OFFLINE:
        return None
    commit = _commit_of(pointer, f"hf-hub:{repo_id}")
    url = hf_hub_url(repo_id, pointer.name, revision=commit, endpoint=endpoint)
    with _hub_errors(repo_id, commit, pointer.name, endpoint):
        metadata = _attempts(
            f"asking for the digest of {pointer.name} of {repo_id}@{commit[:10]}",
            "download",
            timeout,
            get_hf_file_metadata,
            url,
            token=token,
            endpoint=endpoint,
        )
    return metadata.etag.lower() if metadata.etag else None


def _verify(
    pointer: Path,
    data: bytes,
    expected_sha256: str | None,
    etag: str | None,
    where: str,
    filename: str = TICKET_FILE,
) -> None:
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
            f"{where}: the downloaded {filename} has {problem}; it was corrupted in transit or the pin is "
            "wrong. The bad copy was removed from the cache: try again; if it persists, check the revision"
        )


def _download(
    repo_id: str, filename: str, revision: str | None, token: Any, endpoint: str | None, timeout: float | None = None
) -> Path:
    from huggingface_hub import hf_hub_download

    with _hub_errors(repo_id, revision, filename, endpoint):
        path = _attempts(
            f"downloading {filename} of {repo_id}@{revision or 'main'}",
            "download",
            timeout,
            hf_hub_download,
            repo_id,
            filename,
            revision=revision,
            token=token,
            endpoint=endpoint,
        )
    return Path(path)


def _fetch(
    repo_id: str,
    filename: str,
    revision: str | None,
    where: str,
    sha256: str | None,
    token: Any,
    endpoint: str | None,
    timeout: float | None = None,
) -> tuple[Path, bytes]:
    """Download (or take from the cache) ``filename`` and verify it: (cache path, bytes).

    A catalogue pin ``sha256`` is checked when given; otherwise the digest the Hub reports (which
    costs a request only where the cache holds copies instead of symlinks)."""
    from .format import read_ticket_bytes  # format imports torch: only on first use (keeps hub light)

    pointer = _download(repo_id, filename, revision, token, endpoint, timeout)
    _commit_of(pointer, where)
    try:
        # Bounded reads: a ticket is read only once its header accounts for every byte; a card is small.
        data = read_ticket_bytes(pointer) if filename == TICKET_FILE else _read_small(pointer, where, filename)
    except TicketFormatError:
        _evict(pointer)  # never leave something that is not a ticket where the next load would find it
        raise
    etag = None if sha256 is not None else _hub_digest(pointer, repo_id, token, endpoint, timeout)
    _verify(pointer, data, sha256, etag, where, filename)
    return pointer, data


def load_from_hub(
    spec: str | TicketSpec,
    *,
    sha256: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    timeout: float | None = None,
) -> Any:
    """Download (or take from the HF cache) ``ticket.safetensors`` of ``[hf-hub:]org/name[@revision]``, verify
    it, read it. ``spec`` is read by :func:`ticket_zoo.specs.parse_hub_spec` (a Hub repo, never a path).

    The revision may be a branch, a tag or a commit sha; a pinned one gives exactly that version.
    ``sha256`` (a catalogue pin) is checked when given, else the digest the Hub reports.
    ``timeout`` (seconds; default ``$TICKET_ZOO_HUB_TIMEOUT`` or 60) bounds each Hub call; a timed-out
    or cut-short download is retried once, then raises :class:`~ticket_zoo.errors.HubTimeoutError` /
    :class:`~ticket_zoo.errors.ChecksumMismatchError`.
    The ticket's ``meta["hub"]`` records ``repo_id``, ``revision`` and the resolved ``commit``.

    Example (a revision that could name another path is refused before any download):

        >>> load_from_hub("me/lenet-digits@../v1")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: invalid Hub revision '../v1': it has a '..' part; use a branch, tag or commit sha such as main, v1.0, feature/x or refs/pr/1

    With a Hub server (it downloads), so skipped here:

        >>> ticket = load_from_hub("me/lenet-digits@v1")  # doctest: +SKIP
        >>> ticket.meta["hub"]["commit"]  # doctest: +SKIP
        '3f1c...'
    """
    from .format import ticket_from_bytes  # format imports torch: only on first use (keeps hub light)

    hub_spec = parse_hub_spec(spec)
    repo_id, revision = hub_spec.repo_id, hub_spec.revision
    where = f"hf-hub:{repo_id}@{revision or 'main'}"
    pointer, data = _fetch(repo_id, TICKET_FILE, revision, where, sha256, token, endpoint, timeout)
    ticket = ticket_from_bytes(data, source=where)
    ticket.meta["hub"] = {"repo_id": repo_id, "revision": revision or "main", "commit": _commit_of(pointer, where)}
    return ticket


@contextlib.contextmanager
def explain_fallback(spec: TicketSpec) -> Iterator[None]:
    """Around fetching a spec the user wrote: ``org/name`` without ``hf-hub:`` is read as a Hub repo only
    because no such local file or folder exists (rule 4 of :mod:`ticket_zoo.specs`), so when the Hub has
    no such repo either (or cannot be reached), the error says both. Used by ``load`` and ``pull``.

    Example (the Hub's answer is simulated here; ``load("me/tickets")`` raises it for real):

        >>> with explain_fallback(parse_spec("me/tickets")):  # doctest: +ELLIPSIS
        ...     raise HubRepoNotFoundError("Hub repo 'me/tickets' not found at https://huggingface.co: check the id")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.HubRepoNotFoundError: me/tickets is no file or folder here (...), so it was read as a Hub repo: Hub repo 'me/tickets' not found at https://huggingface.co: check the id
    """
    try:
        yield
    except (HubRepoNotFoundError, HubOfflineError) as exc:
        if spec.kind != "hub" or not spec.text or spec.text.lstrip().startswith(HUB_PREFIX):
            raise
        raise type(exc)(
            f"{shorten(spec.text)} is no file or folder here ({shorten(os.getcwd(), 80)}), so it was read as a Hub "
            f"repo: {exc}"
        ) from None


def pull(
    spec: str | os.PathLike | TicketSpec,
    local_dir: str | os.PathLike | None = None,
    *,
    token: str | bool | None = None,
    endpoint: str | None = None,
    force: bool = False,
    timeout: float | None = None,
) -> Path:
    """Fetch a ticket directory (``ticket.safetensors`` + ``README.md``) for a catalogue name or a Hub repo.

    ``spec`` is read as :func:`ticket_zoo.load` reads it (:func:`ticket_zoo.specs.parse_spec`): a catalogue
    name, ``hf-hub:org/name[@rev]`` or ``org/name[@rev]``. A local file or folder is refused (it is
    already here: load it as it is). Hub tickets and their cards are verified like :func:`load_from_hub`
    (each file against the digest the Hub reports, the ticket also against a catalogue pin). Without
    ``local_dir`` a Hub ticket stays in the HF cache and its snapshot directory is returned; catalogue
    tickets embedded in the package are written to ``local_dir`` (default ``./NAME``). A ``local_dir``
    that already holds a different ``ticket.safetensors`` is refused
    (:class:`~ticket_zoo.errors.OutputDirError`) unless ``force``; the same bytes again are fine.

    Example (a ticket embedded in the package: offline):

        >>> import tempfile
        >>> from pathlib import Path
        >>> out = Path(tempfile.mkdtemp(), "lenet")
        >>> pull("lenet_300_100-digits04-5pct", out) == out
        True
        >>> sorted(p.name for p in out.iterdir())
        ['README.md', 'ticket.safetensors']
        >>> pull(tempfile.gettempdir())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.TicketNotFoundError: ... is a local file or folder (...), not something to pull: ...

    From a Hub repo (it downloads), so skipped here:

        >>> pull("hf-hub:me/lenet-digits@v1", "tickets/lenet")  # doctest: +SKIP
        PosixPath('tickets/lenet')
    """
    parsed = parse_spec(spec)
    if parsed.kind == "path":
        text = parsed.text or str(parsed.path)
        shown = shorten(text)
        # a local path wins (rule 2 of specs); say how to name the other thing the text could mean
        if text.count("/") == 1 and not text.startswith((".", "/", "~")):
            other = f"for the Hub repo write hf-hub:{shown}"
        elif "/" not in text and os.sep not in text:
            other = "for the catalogue ticket of that name, pull from another folder"
        else:
            other = "pull fetches a catalogue name or hf-hub:org/name[@rev]"
        raise TicketNotFoundError(
            f"{shown} is a local file or folder ({shorten(str(parsed.path.resolve()), 100)}), not something to pull: "
            f"load it as it is (ticket_zoo.load({shown!r})); {other}"
        )
    if parsed.kind == "hub":
        with explain_fallback(parsed):
            return _pull_hub(parsed, local_dir, token=token, endpoint=endpoint, force=force, timeout=timeout)
    from .cards import render_card  # cards and format import torch: only on first use (keeps hub light)
    from .format import ticket_from_bytes, ticket_to_bytes

    name = parsed.name
    entry = zoo.info(name)
    if entry["location"] == "hub":
        pinned = parse_hub_spec(f"{HUB_PREFIX}{entry['repo_id']}@{entry['revision']}")
        return _pull_hub(
            pinned, local_dir, token=token, endpoint=endpoint, sha256=entry["sha256"], force=force, timeout=timeout
        )
    if entry["location"] != "embedded":
        raise TicketNotPublishedError(zoo.unpublished_message(entry))
    ticket = ticket_from_bytes(zoo.read_embedded(entry), source=f"catalogue:{name}")  # sha256 checked
    out = prepare_out_dir(local_dir if local_dir is not None else name)
    data = ticket_to_bytes(ticket)
    _check_replace(out, data, force, f"catalogue:{name}")
    atomic_write_bytes(out / TICKET_FILE, data)
    # the card's load line names this directory, as ticket_zoo.save writes it
    atomic_write_text(out / CARD_FILE, str(render_card(ticket, name=name, path=out)))
    return out


def _check_replace(out: Path, data: bytes, force: bool, source: str) -> None:
    """Refuse to overwrite a different ticket already in ``out`` (unless ``force``)."""
    existing = out / TICKET_FILE
    if force or not existing.is_file():
        return
    try:
        old = existing.read_bytes()
    except OSError:
        return  # unreadable: writing will say what is wrong
    if old == data:
        return
    what = f"sha256 {sha256_hex(old)[:12]}"
    with contextlib.suppress(Exception):
        from .format import ticket_from_bytes

        ticket = ticket_from_bytes(old, source=str(existing))
        what = f"{ticket.name or ticket.arch} ({100 * ticket.density:.1f}% remaining, {what})"
    raise OutputDirError(
        f"--out {out} already holds a different ticket, {what}; {source} has sha256 {sha256_hex(data)[:12]}. "
        "Choose another folder, or pass --force (force=True) to replace it"
    )


def _pull_hub(
    spec: TicketSpec,
    local_dir: str | os.PathLike | None,
    *,
    token: Any,
    endpoint: str | None,
    sha256: str | None = None,
    force: bool = False,
    timeout: float | None = None,
) -> Path:
    from .format import ticket_from_bytes  # format imports torch: only on first use (keeps hub light)

    repo_id, revision = spec.repo_id, spec.revision
    where = f"hf-hub:{repo_id}@{revision or 'main'}"
    out = prepare_out_dir(local_dir) if local_dir is not None else None  # before any download: fail fast
    pointer, data = _fetch(repo_id, TICKET_FILE, revision, where, sha256, token, endpoint, timeout)
    ticket_from_bytes(data, source=where)  # refuse to hand over something that is not a valid ticket
    commit = _commit_of(pointer, where)
    card: bytes | None
    try:
        # the same commit as the ticket, so the two files always belong together; verified the same way
        card = _fetch(repo_id, CARD_FILE, commit, where, None, token, endpoint, timeout)[1]
    except HubFileNotFoundError:
        card = None
    if out is None:
        return pointer.parent
    _check_replace(out, data, force, where)
    atomic_write_bytes(out / TICKET_FILE, data)
    if card is not None:
        atomic_write_bytes(out / CARD_FILE, card)
    return out


# --- upload ----------------------------------------------------------------------------------------


def _stage(ticket_or_dir: Any, tmp: Path) -> tuple[dict[str, Path], Any]:
    """The files to upload but the card ({path in repo: local path}) and the ticket; a Ticket is written
    into ``tmp`` first. Nothing is sent: a missing ticket fails before any Hub call."""
    # format and ticket import torch: only on first use (keeps hub light)
    from .format import read_ticket, write_ticket
    from .ticket import Ticket

    if isinstance(ticket_or_dir, Ticket):
        ticket = ticket_or_dir
        directory = tmp / "ticket"
        write_ticket(ticket, directory / TICKET_FILE)
    else:
        directory = Path(ticket_or_dir)
        if directory.is_file() and directory.name == TICKET_FILE:
            directory = directory.parent
        if not (directory / TICKET_FILE).is_file():
            raise TicketNotFoundError(
                f"{directory} has no {TICKET_FILE}; pass a ticket directory (e.g. runs/NAME/level_05) or a Ticket"
            )
        ticket = read_ticket(directory / TICKET_FILE)
    files = {TICKET_FILE: directory / TICKET_FILE}
    if (directory / CARD_FILE).is_file():
        files[CARD_FILE] = directory / CARD_FILE  # rewritten by _stage_card to name the Hub repo
    # A find run keeps its recipe and summary one level up from level_XX/.
    search = [directory]
    if directory.name.startswith("level_"):
        search.append(directory.parent)
    for name in EXTRA_FILES:
        for folder in search:
            if (folder / name).is_file():
                files[name] = folder / name
                break
    return files, ticket


def _stage_card(files: dict[str, Path], ticket: Any, repo_id: str, revision: str, tmp: Path) -> None:
    """Put the card the repo gets into ``files``: its load line is ``hf-hub:REPO_ID@REVISION``.

    A directory's own README.md keeps its text, with its load lines (which name the folder it was
    saved in) and the Hub's YAML keys rewritten (:func:`ticket_zoo.cards.retarget_card`); without one
    the card is rendered. ``revision`` is the tag when one is given, else the branch: the commit sha
    is only known once the commit (which holds the card) is made.
    """
    from .cards import render_card, retarget_card  # cards imports torch: only on first use (keeps hub light)

    local = files.get(CARD_FILE)
    try:
        own = local.read_text(encoding="utf-8") if local is not None else None
    except UnicodeDecodeError:  # not text the Hub can show: the rendered card replaces it
        own = None
    if own is not None:
        text = retarget_card(own, ticket, repo_id=repo_id, revision=revision)
    else:
        text = str(render_card(ticket, name=ticket.name, repo_id=repo_id, revision=revision))
    card = tmp / CARD_FILE
    card.write_text(text, encoding="utf-8")
    files[CARD_FILE] = card


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
    timeout: float | None = None,
) -> str:
    """Upload a ticket (a :class:`~ticket_zoo.Ticket` or a ticket directory) to a Hub repo; return the commit sha.

    Uploads ``ticket.safetensors``, ``README.md`` (the model card: the directory's own with its load
    lines rewritten, else rendered; it names ``hf-hub:REPO@TAG`` when ``tag`` is given, else
    ``hf-hub:REPO@BRANCH``, since the card is part of the commit whose sha it cannot know) and, when
    present, the recipe (``config.yaml``/``recipe.yaml``) and results (``summary.json``/``results.json``/
    ``done.json``). The repo is created if needed; ``revision`` names the branch (created
    from main if new). Pushing unchanged files makes no commit and returns the current head. ``tag``
    also tags the commit (pin it in a catalogue with the returned sha or the tag).

    Each Hub call is bounded by ``timeout`` seconds (default ``$TICKET_ZOO_HUB_TIMEOUT`` or 60, plus 1 s
    per 100 kB uploaded). A commit is retried only when the Hub answers it with 5xx or 429 (never after a
    timeout: it may have been made); failures raise one ``HubError`` subclass each
    (``HubUploadError``, ``HubPermissionError``, ``HubRateLimitedError``, ``HubTimeoutError``, ...).

    Example (a bad tag is refused before anything is staged or sent):

        >>> push("runs/digits/level_05", "me/lenet-digits-33pct", tag="v1 final")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: invalid Hub tag 'v1 final': it contains the character ' '; use a branch, tag or commit sha such as main, v1.0, feature/x or refs/pr/1

    With a Hub server and a token (it uploads), so skipped here:

        >>> sha = push("runs/digits/level_05", "me/lenet-digits-33pct", tag="v1")  # doctest: +SKIP
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    hub_spec = parse_hub_spec(repo_id)
    repo_id, at = hub_spec.repo_id, hub_spec.revision
    if revision is not None:
        validate_revision(revision)
    if tag is not None:
        validate_revision(tag, "tag")
    if at is not None:
        if revision is not None and revision != at:
            raise ConfigError(f"two revisions given: {repo_id}@{at} and revision={revision!r}; give one")
        revision = at
    branch = revision or "main"
    hub_timeout(timeout)  # a bad limit fails before anything is staged or sent
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="ticket_zoo_push_") as tmp:
        files, ticket = _stage(ticket_or_dir, Path(tmp))
        message = commit_message or f"Upload ticket ({', '.join(sorted({*files, CARD_FILE}))}) with ticket-zoo"
        with _hub_errors(repo_id, branch, endpoint=endpoint, writing=True):
            url = _attempts(
                f"creating {repo_id} on the Hub",
                "api",
                timeout,
                api.create_repo,
                repo_id,
                private=private,
                exist_ok=True,
            )
            repo_id = url.repo_id  # "name" without an org becomes the token owner's
            # the card names the resolved repo and the tag (a pin) or the branch (the sha comes with the commit)
            _stage_card(files, ticket, repo_id, tag or branch, Path(tmp))
            if branch != "main":
                _attempts(
                    f"creating branch {branch} of {repo_id}",
                    "api",
                    timeout,
                    api.create_branch,
                    repo_id,
                    branch=branch,
                    exist_ok=True,
                )

            def commit() -> Any:
                # fresh operations each attempt: they carry upload state from the previous one
                ops = [
                    CommitOperationAdd(path_in_repo=k, path_or_fileobj=str(v))
                    for k, v in sorted(files.items())
                ]
                return api.create_commit(repo_id, operations=ops, commit_message=message, revision=branch)

            info = _attempts(f"the commit to {repo_id}@{branch}", "commit", timeout, commit)
            sha = str(info.oid)
            if not _COMMIT_RE.fullmatch(sha):
                raise HubError(
                    f"the Hub at {_endpoint(endpoint)} answered the commit to {repo_id} with an invalid commit id "
                    f"{sha[:50]!r}; is HF_ENDPOINT a Hugging Face Hub?"
                )
            if tag:
                _tag(api, repo_id, tag, sha, timeout)
    return sha


def _tag(api: Any, repo_id: str, tag: str, sha: str, timeout: float | None = None) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        _attempts(f"tagging {repo_id}@{sha[:10]} as {tag}", "api", timeout, api.create_tag, repo_id, tag=tag, revision=sha)
    except HfHubHTTPError as exc:
        if _status(exc) != 409:
            raise
        refs = _attempts(f"listing the tags of {repo_id}", "api", timeout, api.list_repo_refs, repo_id)
        current = {t.name: t.target_commit for t in refs.tags}.get(tag)
        if current != sha:
            raise HubError(
                f"tag {tag!r} of {repo_id} already points at {current}, not at the pushed commit {sha}; "
                "choose a new tag (tags pin versions and are never moved)"
            ) from None


# --- publish: push + catalogue card ---------------------------------------------------------------


def publish(
    ticket_dir: str | os.PathLike,
    repo_id: str,
    *,
    name: str | None = None,
    cards_dir: str | os.PathLike | None = None,
    recipe: str | None = None,
    revision: str | None = None,
    tag: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """Push a ticket directory to ``repo_id`` and write its catalogue card pinned to the new commit + sha256.

    ``name`` defaults to the ticket's own name; an existing card of that name (e.g. an unpublished
    slot, in ``cards_dir`` or in the installed catalogue) keeps its source and recipe
    (:func:`ticket_zoo.zoo.draft_entry`). Returns the new catalogue entry.

    The card is written to ``cards_dir``; by default ``$TICKET_ZOO_CARDS`` when set, else ``./cards``
    (in a clone of the repository, its catalogue: commit the card there). It is never written into the
    installed package.

    Example (offline: the card pins the commit the push makes, so ``--repo`` takes no revision):

        >>> import tempfile
        >>> from pathlib import Path
        >>> ticket_dir = pull("lenet_300_100-digits04-5pct", Path(tempfile.mkdtemp(), "lenet"))
        >>> publish(ticket_dir, "me/lenet-digits04-5pct@v1")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: --repo must be org/name without a revision (the card pins the commit), got 'me/lenet-digits04-5pct@v1'

    With a Hub server and a token (it uploads), so skipped here:

        >>> publish("runs/vgg19-imagenet/level_07", "me/vgg19-imagenet-20pct", name="vgg19-imagenet-20pct")  # doctest: +SKIP
    """
    from .format import ticket_from_bytes  # format imports torch: only on first use (keeps hub light)

    directory = Path(ticket_dir)
    if not (directory / TICKET_FILE).is_file():
        raise TicketNotFoundError(
            f"{directory} has no {TICKET_FILE}; pass a ticket directory such as runs/X/level_07"
        )
    hub_spec = parse_hub_spec(repo_id)
    if "/" not in hub_spec.repo_id or hub_spec.revision is not None:
        raise ConfigError(
            f"--repo must be org/name without a revision (the card pins the commit), got {repo_id!r}"
        )
    data = (directory / TICKET_FILE).read_bytes()
    # one read: the sha256 the card pins is of exactly the bytes validated here
    ticket = ticket_from_bytes(data, source=str(directory / TICKET_FILE))
    cards = zoo.writable_cards_dir(cards_dir)
    entry = zoo.draft_entry(ticket, sha256_hex(data), name=name, cards_dir=cards, recipe=recipe, where=str(directory))
    sha = push(
        directory,
        hub_spec.repo_id,
        revision=revision,
        tag=tag,
        private=private,
        commit_message=commit_message,
        token=token,
        endpoint=endpoint,
    )
    zoo.write_card({**entry, "repo_id": hub_spec.repo_id, "revision": sha}, cards)
    return zoo.info(entry["name"], cards_dir=cards)


# --- CLI -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress_bars_closed_on_error() -> Iterator[None]:
    """huggingface_hub leaves an upload/download progress bar open when the transfer fails, and the
    error line would then be glued to it: close (finish the line of) any open bar first."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            from tqdm import tqdm

            for bar in list(getattr(tqdm, "_instances", ())):
                bar.close()
        raise


def _cli_publish(args: argparse.Namespace) -> int:
    with _progress_bars_closed_on_error():
        entry = publish(
            args.dir,
            args.repo,
            name=args.name,
            cards_dir=args.cards_dir,
            recipe=args.recipe,
            revision=args.revision,
            tag=args.tag,
            private=args.private,
            commit_message=args.message,
        )
    print(f"published {entry['name']} to {entry['repo_id']}@{entry['revision']}; card: {entry['card']}")
    return 0


def _cli_pull(args: argparse.Namespace) -> int:
    with _progress_bars_closed_on_error():
        path = pull(args.spec, args.out, force=args.force)
    print(path)
    return 0


def _cli_push(args: argparse.Namespace) -> int:
    with _progress_bars_closed_on_error():
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
    """Add ``ticket-zoo publish``, ``ticket-zoo pull`` and ``ticket-zoo push`` (``list`` and ``info`` are in
    :mod:`ticket_zoo.zoo`, registered just before these).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="ticket-zoo")
        >>> register_cli(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["push", "runs/x/level_03", "--repo", "me/t"]).repo
        'me/t'
    """
    p = subparsers.add_parser(
        "publish",
        help="push a ticket directory to the Hub and write its catalogue card (pinned commit + sha256)",
    )
    p.add_argument("dir", metavar="DIR", help="ticket directory, e.g. runs/vgg19-imagenet/level_07")
    p.add_argument("--repo", required=True, metavar="ORG/NAME")
    p.add_argument("--name", help="catalogue name (default: the ticket's own name)")
    p.add_argument("--cards-dir", default=None, metavar="DIR", help="where to write the card (default: $TICKET_ZOO_CARDS, else ./cards)")
    p.add_argument("--recipe", help="recipe path to record (default: the existing card's)")
    p.add_argument("--revision", metavar="BRANCH", help="branch to commit to (default main)")
    p.add_argument("--tag", help="also tag the commit, e.g. v1")
    p.add_argument("--private", action="store_true")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=_cli_publish)

    p = subparsers.add_parser(
        "pull",
        help="download a ticket (catalogue name or [hf-hub:]org/name[@rev]) into a directory",
        description=(
            "Fetch ticket.safetensors and README.md, each verified against the digest the Hub reports (and the "
            "ticket against the catalogue's sha256 pin), into --out (or print the HF cache path). The spec is read "
            "as ticket_zoo.load reads it (a local path is refused: it is already here). Each Hub call "
            "is limited to $TICKET_ZOO_HUB_TIMEOUT seconds (default 60)."
        ),
    )
    p.add_argument("spec", metavar="NAME|[hf-hub:]ORG/NAME[@REV]")
    p.add_argument("--out", metavar="DIR", help="directory to write the ticket into")
    p.add_argument(
        "--force", action="store_true", help="replace a different ticket.safetensors already in --out"
    )
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
