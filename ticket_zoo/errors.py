"""Every failure a user can meet, as one named exception class each.

All errors derive from :class:`TicketZooError`, so ``except ticket_zoo.TicketZooError`` catches
anything the toolkit raises on purpose. Messages say what is wrong and what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str], n: int = 1) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``: the tail of an error message.

    Example:
        >>> did_you_mean("momentun", ["momentum", "lr"])
        " (did you mean 'momentum'?)"
    """
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


_CONTROL_CHARS = dict.fromkeys([*range(0x20), 0x7F], "?")


def shorten(value: object, limit: int = 80) -> str:
    """``value`` for an error message: ``repr`` of a non-string, cut to about ``limit`` characters, on one line.

    Messages that echo user data (a name, a field of a file) must stay one short line however big
    or odd the data is: the tail is replaced by ``...[N chars]`` and control characters by ``?``.

    Example:
        >>> shorten("x" * 200, 10)
        'xxxxxxxxxx...[200 chars]'
        >>> shorten([1, 2])
        '[1, 2]'
    """
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:  # a repr that fails (or recurses too deep) must not hide the real error
        text = f"<{type(value).__name__}>"
    head = text[:limit].translate(_CONTROL_CHARS)
    return head if len(text) <= limit else f"{head}...[{len(text)} chars]"


def one_line(value: object, limit: int = 200) -> str:
    """``str(value)`` with its whitespace (newlines included) collapsed, cut to ``limit`` characters.

    For wrapping another library's error text into one line; an exception whose text is empty gives
    its class name.

    Example:
        >>> one_line("a    b")
        'a b'
        >>> one_line("x" * 10, 6)
        'xxx...'
    """
    text = " ".join(str(value).split())
    if not text and isinstance(value, BaseException):
        text = type(value).__name__
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


class TicketZooError(Exception):
    """Base class of every error ticket_zoo raises on purpose."""


class TicketFormatError(TicketZooError, ValueError):
    """A ticket file is malformed, truncated, of an unknown version, or does not fit its architecture."""


class ConfigError(TicketZooError, ValueError):
    """A recipe, config or argument is invalid. The message names the offending field."""


class UnknownArchitectureError(ConfigError):
    """An architecture name that timm's registry does not know."""


class UnknownDatasetError(ConfigError):
    """A dataset name that the data registry does not know."""


class OutputDirError(ConfigError):
    """An output folder (``--out``) cannot be created or written, or holds something that must not be replaced."""


class CheckpointError(TicketZooError):
    """A training checkpoint cannot be used to resume (corrupt, or from a different run)."""


# --- catalogue -------------------------------------------------------------------------------------


class TicketNotFoundError(TicketZooError, LookupError):
    """A name that is neither a catalogue entry, a local path nor an ``hf-hub:`` id."""


class TicketNotPublishedError(TicketZooError):
    """A catalogue entry that exists as a card but whose ticket has not been published yet."""


# --- Hub -------------------------------------------------------------------------------------------


class HubError(TicketZooError):
    """Base class of errors talking to the Hugging Face Hub (wrapping huggingface_hub's own)."""


class HubRepoNotFoundError(HubError):
    """The Hub repository does not exist or is not visible with the current token."""


class HubRevisionNotFoundError(HubError):
    """The repository exists but the requested revision (branch, tag or commit) does not."""


class HubFileNotFoundError(HubError):
    """The repository and revision exist but do not contain the ticket file."""


class HubOfflineError(HubError):
    """Offline mode (``HF_HUB_OFFLINE=1``) or no connection, and the ticket is not in the cache."""


class HubServerError(HubError):
    """The Hub answered with a server error even after retries."""


class HubPermissionError(HubError):
    """The Hub refused access (HTTP 401/403): not logged in, or the token lacks the permission."""


class HubRateLimitedError(HubError):
    """The Hub rate-limited the requests (HTTP 429) even after waiting as it asked."""


class HubTimeoutError(HubError):
    """A Hub call did not finish within its time limit (``TICKET_ZOO_HUB_TIMEOUT``)."""


class HubUploadError(HubError):
    """Uploading files to the Hub failed (the commit was not made)."""


class ChecksumMismatchError(HubError):
    """A downloaded file does not match the sha256 the catalogue or the Hub says it should have."""
