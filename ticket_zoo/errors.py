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


class ChecksumMismatchError(HubError):
    """A downloaded file does not match the sha256 the catalogue or the Hub says it should have."""
