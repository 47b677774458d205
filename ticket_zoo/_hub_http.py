"""HTTP plumbing under :mod:`ticket_zoo.hub`: a time limit, rate-limit waits and cut-short-body
detection for every request huggingface_hub sends on behalf of one ticket_zoo Hub call.

huggingface_hub sends everything through one shared ``httpx2.Client`` (``get_session()``, built by the
factory given to ``set_client_factory``). :func:`install` wraps that client's transports in
:class:`GuardedTransport`. The wrapper acts only inside :func:`scope` (a thread-local :class:`Call`);
requests that other code makes through huggingface_hub pass through untouched.

Inside a scope every request gets:

- per-phase socket timeouts (connect, write, read, pool) of at most the time left until the call's
  deadline, overriding the ``timeout=None`` (no limit) many huggingface_hub calls pass, and read again at
  the start of the response body, so a server that stalls after the headers times out at the deadline;
- a deadline check on every body chunk, so a server that trickles bytes cannot stretch the call (a
  transfer earns ``1 s`` per ``min_rate`` bytes moved, so a large file on a slow link still arrives);
- on HTTP 429 a wait of ``Retry-After`` (capped, bounded number of times), after which huggingface_hub's
  own, uncapped wait is switched off by rewriting the header to ``0``;
- once the deadline has passed, the rate limit persists or a body was cut short, every further request
  of the call fails at once with a :class:`GaveUp` subclass, which huggingface_hub does not retry: its
  internal back-off loops (up to 6 attempts and 23 s of sleeping) end immediately.

Example (offline: an httpx mock transport stands in for the Hub, which answers HTTP 429):
    >>> hub = httpx2.MockTransport(lambda request: httpx2.Response(429, headers={"Retry-After": "30"}))
    >>> client = httpx2.Client(transport=GuardedTransport(hub))
    >>> client.get("https://huggingface.co/api/models/me/t").headers["Retry-After"]  # no scope: untouched
    '30'
    >>> with scope(Call("listing me/t", limit=60, max_rate_limited=0)) as call:
    ...     first = client.get("https://huggingface.co/api/models/me/t")
    ...     client.get("https://huggingface.co/api/models/me/t")
    Traceback (most recent call last):
    ...
    ticket_zoo._hub_http.RateLimited: listing me/t: still rate-limited (HTTP 429)
    >>> first.headers["Retry-After"], call.retry_after, call.spent  # huggingface_hub will not wait 30 s
    ('0', 30.0, 'rate_limited')
    >>> with scope(Call("downloading ticket.safetensors of me/t@main", limit=0)):
    ...     client.get("https://huggingface.co/me/t/resolve/main/ticket.safetensors")
    Traceback (most recent call last):
    ...
    ticket_zoo._hub_http.DeadlineExceeded: downloading ticket.safetensors of me/t@main: time limit of 0 s reached
    >>> client.close()

In ticket_zoo, :mod:`ticket_zoo.hub` installs the guard into huggingface_hub's shared client and opens a
scope around each Hub call, like this (not run here: it needs a Hub server):

    >>> install()  # doctest: +SKIP
    >>> with scope(Call("downloading ticket.safetensors of me/t@main", limit=60)):  # doctest: +SKIP
    ...     hf_hub_download("me/t", "ticket.safetensors")
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

try:
    import httpx2
except ImportError:  # pragma: no cover - huggingface_hub 1.x talks through httpx (same API)
    import httpx as httpx2  # type: ignore[no-redef]

__all__ = [
    "BodyCutShort",
    "Call",
    "DeadlineExceeded",
    "GaveUp",
    "GuardedTransport",
    "RateLimited",
    "current",
    "install",
    "retry_after_seconds",
    "scope",
]

_LOCAL = threading.local()
_INSTALL_LOCK = threading.Lock()
_MARK = "_ticket_zoo_guarded"
_TIMEOUT_KEYS = ("connect", "read", "write", "pool")


class GaveUp(httpx2.TransportError):
    """A request refused because its call already failed for good. Deliberately not a
    ``TimeoutException``/``NetworkError``/``RemoteProtocolError``: huggingface_hub does not retry it."""


class DeadlineExceeded(GaveUp):
    """The call's time limit has passed."""


class RateLimited(GaveUp):
    """The Hub kept answering HTTP 429 after the allowed number of waits."""


class BodyCutShort(GaveUp):
    """A response body of this call ended early (connection closed or reset mid-body)."""


class Call:
    """One logical Hub call (a file download, a commit, ...): its limits and what went wrong so far.

    ``limit`` is the time one attempt may take (the deadline is reset by :meth:`start_attempt`);
    ``max_rate_limited`` the number of HTTP 429 answers waited out before giving up; ``max_wait`` the
    longest single ``Retry-After`` wait; ``min_rate`` the transfer rate (bytes/s) that extends the deadline.
    """

    def __init__(
        self,
        what: str,
        limit: float,
        *,
        max_rate_limited: int = 3,
        max_wait: float = 20.0,
        min_rate: float = 100_000.0,
    ) -> None:
        self.what, self.limit = what, float(limit)
        self.max_rate_limited, self.max_wait, self.min_rate = max_rate_limited, float(max_wait), min_rate
        self.rate_limited = 0  # HTTP 429 answers seen (over all attempts)
        self.retry_after: float | None = None  # what the Hub last asked for, uncapped
        self.spent: str | None = None  # "timeout" | "rate_limited" | "cut_short": no further requests
        self.failed_request = ""  # "METHOD /path" of the request that timed out or was cut short
        self.attempts = 0  # counted by start_attempt()
        self.deadline = time.monotonic() + self.limit

    def start_attempt(self) -> None:
        self.attempts += 1
        self.deadline = time.monotonic() + self.limit
        self.spent = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def allow(self, nbytes: int) -> None:
        """Extend the deadline for ``nbytes`` moved (so big transfers on slow links are not cut)."""
        if nbytes > 0 and self.min_rate > 0:
            self.deadline += nbytes / self.min_rate

    def give_up(self, why: str, request: httpx2.Request | None = None) -> None:
        if self.spent is None:
            self.spent = why
            if request is not None:
                self.failed_request = describe(request)

    def check(self, request: httpx2.Request) -> None:
        """Raise the matching :class:`GaveUp` if this call must not send ``request``."""
        if self.spent is None and self.remaining() <= 0:
            self.give_up("timeout", request)
        if self.spent == "timeout":
            raise DeadlineExceeded(f"{self.what}: time limit of {self.limit:g} s reached", request=request)
        if self.spent == "rate_limited":
            raise RateLimited(f"{self.what}: still rate-limited (HTTP 429)", request=request)
        if self.spent == "cut_short":
            raise BodyCutShort(f"{self.what}: a download was cut short", request=request)


def describe(request: httpx2.Request) -> str:
    """``"HEAD /org/name/resolve/main/ticket.safetensors"`` (at most 160 characters)."""
    text = f"{request.method} {request.url.path}"
    return text if len(text) <= 160 else text[:157] + "..."


def current() -> Call | None:
    """The :class:`Call` active in this thread, if any."""
    return getattr(_LOCAL, "call", None)


@contextlib.contextmanager
def scope(call: Call) -> Iterator[Call]:
    """Make ``call`` the active call of this thread for the duration of the block."""
    previous = current()
    _LOCAL.call = call
    try:
        yield call
    finally:
        _LOCAL.call = previous


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds a 429 answer asks to wait: ``Retry-After`` (seconds or an HTTP date) or the ``t=`` of an
    exhausted ``RateLimit`` header; None when the answer does not say.

    Example:
        >>> retry_after_seconds({"Retry-After": "30"})
        30.0
        >>> retry_after_seconds({}) is None
        True
    """
    value = None
    for key in headers:
        if key.lower() == "retry-after":
            value = str(headers[key]).strip()
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                when = None
            seconds = None if when is None else when.timestamp() - time.time()
        if seconds is not None and math.isfinite(seconds):
            return max(seconds, 0.0)
    from huggingface_hub.utils import parse_ratelimit_headers

    info = parse_ratelimit_headers(headers)
    if info is not None and info.remaining == 0:
        return float(max(info.reset_in_seconds, 0))
    return None


class _LiveTimeouts(dict):
    """The ``timeout`` request extension, recomputed on every read: httpcore reads it when it connects,
    sends, waits for the headers and starts the body, so each phase gets the time left then."""

    def __init__(self, call: Call, requested: Any) -> None:
        requested = requested if isinstance(requested, dict) else {}
        super().__init__({key: requested.get(key) for key in _TIMEOUT_KEYS})
        self._call = call

    def __getitem__(self, key: str) -> float | None:
        requested = super().get(key)
        left = min(max(self._call.remaining(), 0.01), self._call.limit)
        return left if requested is None else min(float(requested), left)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


class _GuardedBody(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, call: Call, request: httpx2.Request) -> None:
        self._inner, self._call, self._request = inner, call, request

    def __iter__(self) -> Iterator[bytes]:
        call = self._call
        try:
            for chunk in self._inner:
                call.allow(len(chunk))
                if call.remaining() <= 0:
                    call.give_up("timeout", self._request)
                    raise DeadlineExceeded(
                        f"{call.what}: time limit of {call.limit:g} s reached while receiving",
                        request=self._request,
                    )
                yield chunk
        except httpx2.TimeoutException:
            if call.remaining() <= 0.05:
                call.give_up("timeout", self._request)
            raise
        except (httpx2.RemoteProtocolError, httpx2.ReadError):
            call.give_up("cut_short", self._request)
            raise

    def close(self) -> None:
        self._inner.close()


class GuardedTransport(httpx2.BaseTransport):
    """Wraps a transport; applies the active :class:`Call`'s limits (see the module doc)."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        call = current()
        if call is None:
            return self._inner.handle_request(request)
        call.check(request)
        length = request.headers.get("content-length", "")
        if length.isdigit():
            call.allow(int(length))
        request.extensions = {**request.extensions, "timeout": _LiveTimeouts(call, request.extensions.get("timeout"))}
        try:
            response = self._inner.handle_request(request)
        except httpx2.TimeoutException:
            if call.remaining() <= 0.05:
                call.give_up("timeout", request)
            raise
        if response.status_code == 429:
            self._rate_limited(call, response)
            return response
        response.stream = _GuardedBody(response.stream, call, request)  # type: ignore[arg-type]
        return response

    @staticmethod
    def _rate_limited(call: Call, response: httpx2.Response) -> None:
        response.read()  # frees the connection while we wait
        wait = retry_after_seconds(response.headers)
        call.rate_limited += 1
        call.retry_after = wait
        if call.rate_limited > call.max_rate_limited:
            call.give_up("rate_limited")
        else:
            pause = max(min(wait if wait is not None else 1.0, call.max_wait), 0.0)
            time.sleep(pause)
            call.deadline += pause  # waiting as asked is not the call being slow
        # We did the waiting; huggingface_hub would wait Retry-After + 1 s again, uncapped.
        response.headers["Retry-After"] = "0"
        for key in ("RateLimit", "RateLimit-Policy"):
            if key in response.headers:
                del response.headers[key]

    def close(self) -> None:
        self._inner.close()


def _guard_client(client: Any) -> Any:
    transport = getattr(client, "_transport", None)
    if transport is not None and not isinstance(transport, GuardedTransport):
        client._transport = GuardedTransport(transport)
    mounts = getattr(client, "_mounts", None)
    if isinstance(mounts, dict):  # proxies from the environment have their own transports
        for pattern, mounted in list(mounts.items()):
            if mounted is not None and not isinstance(mounted, GuardedTransport):
                mounts[pattern] = GuardedTransport(mounted)
    return client


def install() -> None:
    """Make huggingface_hub's shared client guarded (idempotent; keeps a user's own client factory).

    Not run as a doctest: it replaces huggingface_hub's client factory for the rest of the process
    (``ticket_zoo.hub`` calls it before each Hub call).

    Example:
        >>> install(); install()  # doctest: +SKIP
    """
    from huggingface_hub.utils import _http, set_client_factory

    with _INSTALL_LOCK:
        factory = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) or _http.default_client_factory
        if getattr(factory, _MARK, False):
            return

        def guarded_factory() -> Any:
            return _guard_client(factory())

        setattr(guarded_factory, _MARK, True)
        set_client_factory(guarded_factory)  # closes the current shared client; the next one is guarded
