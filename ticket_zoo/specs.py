"""What a ticket spec names: the one parser behind ``load``, ``pull``, ``ticket-zoo info`` and transfer.

A *ticket spec* is the text a user writes for a ticket. :func:`parse_spec` reads it by one rule, the
first match winning:

1. ``hf-hub:ORG/NAME[@REV]`` is a Hugging Face Hub repo, always (timm's prefix; ``hf-hub:NAME`` too).
2. An existing file or folder is a path: a ``.safetensors`` file, or a folder holding ``ticket.safetensors``.
3. A bare name (no ``/``; not ``.x``, ``~x`` or ``x.safetensors``) is a catalogue name such as
   ``lenet_300_100-digits04-5pct`` (``ticket-zoo list``); the catalogue refuses a name it does not
   hold, with a did-you-mean.
4. ``ORG/NAME[@REV]`` (a Hub repo id) is a Hub repo. A local folder of that name wins by rule 2, as
   huggingface_hub's ``from_pretrained`` looks for a local folder first.
5. Anything else is a :class:`~ticket_zoo.errors.TicketNotFoundError` saying what was tried and what
   to write.

``REV`` (a branch, tag or commit sha) must pass :func:`validate_revision`, the one revision check: a
revision becomes a path in the Hugging Face cache. A ``pathlib.Path`` (any ``os.PathLike``) is always
a path. Where a list of tickets is expected (transfer), :func:`expand_spec` lets a ``ticket-zoo find``
output folder stand for every ticket inside it.

This module is the bottom of the storage layers (``specs``, ``format`` → ``zoo`` → ``cards`` → ``hub``
→ ``api``): it reads texts and stats paths, never the catalogue or the network.

Examples (the catalogue ships a few tickets inside the package):

    >>> from ticket_zoo import zoo
    >>> name = "lenet_300_100-digits04-5pct"
    >>> name in [e["name"] for e in zoo.list_tickets(published=True)]
    True
    >>> parse_spec(name)                                   # rule 3
    TicketSpec(kind='catalogue', name='lenet_300_100-digits04-5pct')
    >>> parse_spec("hf-hub:me/tickets@v1")                 # rule 1
    TicketSpec(kind='hub', repo_id='me/tickets', revision='v1')
    >>> parse_spec("me/tickets") == parse_spec("hf-hub:me/tickets")  # rule 4: no folder me/tickets here
    True
    >>> import os, tempfile
    >>> from pathlib import Path
    >>> here, tmp = os.getcwd(), tempfile.TemporaryDirectory()
    >>> os.chdir(tmp.name)
    >>> Path("me/tickets").mkdir(parents=True)             # a local folder named like a Hub repo ...
    >>> parse_spec("me/tickets")                           # ... wins (rule 2)
    TicketSpec(kind='path', path='me/tickets')
    >>> parse_spec("hf-hub:me/tickets").kind               # hf-hub: always means the Hub
    'hub'
    >>> for level in ("level_10", "level_2"):              # a `ticket-zoo find` output folder ...
    ...     Path("run", level).mkdir(parents=True)
    ...     Path("run", level, TICKET_FILE).touch()
    >>> expand_spec("run")                                 # ... stands for its tickets, in natural order
    ['run/level_2', 'run/level_10']
    >>> expand_spec(name)                                  # any other spec is itself
    ['lenet_300_100-digits04-5pct']
    >>> parse_spec("me/tickets@../../x")                   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ticket_zoo.errors.ConfigError: invalid Hub revision '../../x': it has a '..' part; use a branch, tag or ...
    >>> parse_spec("runs/x/level_03")                      # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ticket_zoo.errors.TicketNotFoundError: runs/x/level_03 does not exist (relative to ...
    >>> os.chdir(here); tmp.cleanup()
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError, TicketNotFoundError, shorten

__all__ = [
    "HUB_PREFIX",
    "TICKET_FILE",
    "TicketSpec",
    "expand_spec",
    "parse_hub_spec",
    "parse_spec",
    "ticket_file",
    "validate_revision",
]

HUB_PREFIX = "hf-hub:"  # timm's prefix for a Hub model: the spec names a Hub repo, whatever is on disk
TICKET_FILE = "ticket.safetensors"  # a ticket folder holds this file (and README.md, its card)
MAX_REVISION_LENGTH = 255
# Besides control and whitespace characters: what git forbids in ref names, plus what some file systems
# cannot hold (a revision becomes a path in the HF cache: refs/<revision>).
_REVISION_FORBIDDEN = set('\\~^:?*["<>|')
_EXAMPLE_NAME = "lenet_300_100-digits04-5pct"


@dataclass(frozen=True, repr=False)
class TicketSpec:
    """What a spec names: ``kind`` "path" (``path``), "catalogue" (``name``) or "hub" (``repo_id`` and
    ``revision``, None for the default branch). ``text`` is the spec as written (for messages; two specs
    naming the same ticket compare equal however they were written).

    Example:
        >>> spec = parse_spec("hf-hub:me/tickets@v1")
        >>> spec.kind, spec.repo_id, spec.revision, str(spec)
        ('hub', 'me/tickets', 'v1', 'hf-hub:me/tickets@v1')
    """

    kind: Literal["path", "catalogue", "hub"]
    path: Path | None = None
    name: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    text: str = field(default="", compare=False)

    def __str__(self) -> str:
        """The spec in its canonical form (what :func:`parse_spec` reads back as this spec)."""
        if self.kind == "path":
            return str(self.path)
        if self.kind == "catalogue":
            return str(self.name)
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    def __repr__(self) -> str:
        shown = {k: getattr(self, k) for k in ("path", "name", "repo_id", "revision")}
        parts = [f"{k}={(v.as_posix() if isinstance(v, Path) else v)!r}" for k, v in shown.items() if v is not None]
        return f"TicketSpec(kind={self.kind!r}{''.join(', ' + p for p in parts)})"


# --- revisions -------------------------------------------------------------------------------------


def _revision_problem(revision: str) -> str | None:
    if not revision:
        return "it is empty"
    if len(revision) > MAX_REVISION_LENGTH:
        return f"it is longer than {MAX_REVISION_LENGTH} characters"
    for char in revision:
        if char == "\\":
            return "it contains a backslash"
        if unicodedata.category(char)[0] in "CZ":  # controls (NUL, newline, DEL, ...), format, whitespace
            return f"it contains the character {char!r}"
        if char in _REVISION_FORBIDDEN:
            return f"it contains {char!r}"
    if revision.startswith("/"):
        return "it is an absolute path"
    if revision.startswith("-"):
        return "it starts with '-'"
    if "@{" in revision or revision == "@":
        return "git does not allow '@{' or a lone '@'"
    for part in revision.split("/"):
        if part == "":
            return "it has an empty part ('//' or a '/' at the end)"
        if part in (".", ".."):
            return f"it has a {part!r} part"
        if part.startswith("."):
            return "a part starts with '.'"
        if part.endswith(".lock"):
            return "a part ends with '.lock'"
    if ".." in revision:
        return "it contains '..'"
    if revision.endswith("."):
        return "it ends with '.'"
    return None


def validate_revision(revision: Any, what: str = "revision") -> str:
    """Return ``revision`` if it is a safe Hub revision (branch, tag or commit sha), else raise
    :class:`ConfigError`. huggingface_hub stores a branch or tag as ``refs/<revision>`` in its cache, so
    this refuses anything that could name another path (``..``, ``.``, empty parts, absolute paths,
    backslashes), control and whitespace characters, more than 255 characters and what git forbids in
    ref names. Branches with ``/`` (``feature/x``, ``refs/pr/1``), tags (``v1.0``) and shas pass.

    Example:
        >>> validate_revision("refs/pr/1")
        'refs/pr/1'
        >>> validate_revision("../../tmp/x")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: invalid Hub revision '../../tmp/x': it has a '..' part; use a branch, tag or commit sha such as main, v1.0, feature/x or refs/pr/1
    """
    if not isinstance(revision, str):
        raise ConfigError(f"a Hub {what} must be a string, got {type(revision).__name__}")
    problem = _revision_problem(revision)
    if problem is not None:
        shown = revision if len(revision) <= 60 else revision[:60] + "..."
        raise ConfigError(
            f"invalid Hub {what} {shown!r}: {problem}; use a branch, tag or commit sha such as main, v1.0, "
            "feature/x or refs/pr/1"
        )
    return revision


# --- specs -----------------------------------------------------------------------------------------


def _is_repo_id(text: str) -> bool:
    # huggingface_hub's own rule (1-96 characters of [A-Za-z0-9_.-] per part, no '--' or '..'). Imported
    # here, not at the top: huggingface_hub is heavy and `ticket-zoo list` never needs it.
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def parse_hub_spec(spec: str | TicketSpec) -> TicketSpec:
    """Read ``[hf-hub:]ORG/NAME[@REV]`` where only a Hub repo can be meant (``push --repo``,
    :func:`~ticket_zoo.hub.load_from_hub`): rule 1 of :func:`parse_spec`, the prefix optional.

    The revision is checked with :func:`validate_revision`; a malformed repo id or an empty revision
    is a :class:`ConfigError`.

    Example:
        >>> parse_hub_spec("me/tickets@v1")
        TicketSpec(kind='hub', repo_id='me/tickets', revision='v1')
        >>> parse_hub_spec("hf-hub:me/tickets") == parse_hub_spec("me/tickets")
        True
    """
    if isinstance(spec, TicketSpec):
        if spec.kind != "hub":
            raise ConfigError(f"{shorten(spec.text or str(spec))} is a {spec.kind}, not a Hub repo (org/name[@revision])")
        return spec
    text = str(spec).lstrip().removeprefix(HUB_PREFIX)
    repo_id, sep, revision = text.partition("@")
    repo_id = repo_id.strip()  # the revision is checked as given: a stray newline there is refused
    if not sep:
        repo_id = repo_id.rstrip()
    if sep and not revision:
        raise ConfigError(
            f"Hub spec {shorten(str(spec))!r} has an empty revision after '@'; write org/name@v1 or drop the '@'"
        )
    if not _is_repo_id(repo_id):
        shown = repo_id if len(repo_id) <= 100 else repo_id[:100] + "..."
        raise ConfigError(
            f"{shown!r} is not a valid Hub repo id: write it as org/name[@revision] (letters, digits, '-', '_', "
            "'.'; at most 96 characters each)"
        )
    if sep:
        validate_revision(revision)
    return TicketSpec("hub", repo_id=repo_id, revision=revision or None, text=str(spec))


def _exists(text: str) -> bool:
    try:
        return Path(text).exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: nothing there
        return False


def _looks_like_path(text: str) -> bool:
    """Can ``text`` only be a path (it has a separator, starts with '.' or '~', ends in .safetensors)?"""
    seps = {"/", os.sep, os.altsep} - {None}
    return any(s in text for s in seps) or text.startswith((".", "~")) or text.endswith(".safetensors")


def _middle_cut(text: str, limit: int = 120) -> str:
    """A long path for a message: its start and its end (the end names the missing part), on one line."""
    if len(text) <= limit:
        return shorten(text, limit)
    return f"{shorten(text[:24], 24)}...{shorten(text[-(limit - 30):], limit)}"


def _missing(text: str) -> str:
    """The one line for a spec that names nothing: what was tried, what to write."""
    out = text if len(text) <= 40 and text.isprintable() else "DIR"
    return (
        f"{_middle_cut(text)} does not exist (relative to {_middle_cut(os.getcwd())}); make it first (e.g. "
        f"`ticket-zoo find --config lenet_300_100-digits04 --out {out}`), or write a catalogue name such as "
        f"{_EXAMPLE_NAME} (`ticket-zoo list`) or hf-hub:org/name[@rev]"
    )


def parse_spec(spec: str | os.PathLike | TicketSpec) -> TicketSpec:
    """What ``spec`` names, by the rule of this module (hf-hub: prefix, existing path, catalogue name,
    org/name on the Hub, else :class:`TicketNotFoundError`). A :class:`TicketSpec` is returned as is.

    A bad revision is the :class:`ConfigError` of :func:`validate_revision`, whichever rule matched.

    Example:
        >>> parse_spec("conv4-digits04-5pct").kind, parse_spec("me/t@main").revision
        ('catalogue', 'main')
        >>> parse_spec("nowhere/x.safetensors")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.TicketNotFoundError: nowhere/x.safetensors does not exist (...
    """
    if isinstance(spec, TicketSpec):
        return spec
    if isinstance(spec, os.PathLike):  # a Path object is meant as a path, whatever it spells
        text = str(os.fspath(spec))
        if _exists(text):
            return TicketSpec("path", path=Path(text), text=text)
        raise TicketNotFoundError(_missing(text))
    if not isinstance(spec, str):
        raise TicketNotFoundError(
            f"a ticket spec is a path, a catalogue name or hf-hub:org/name[@rev] (a string), got {type(spec).__name__}"
        )
    text = spec
    if text.startswith(HUB_PREFIX):
        return parse_hub_spec(text)
    if not text.strip():
        raise TicketNotFoundError(
            f"the ticket spec is empty: write a path, a catalogue name such as {_EXAMPLE_NAME} (`ticket-zoo list`) "
            "or hf-hub:org/name[@rev]"
        )
    if _exists(text):
        return TicketSpec("path", path=Path(text), text=text)
    if not _looks_like_path(text):
        return TicketSpec("catalogue", name=text, text=text)
    repo_id = text.partition("@")[0]
    if repo_id.count("/") == 1 and not repo_id.endswith(".safetensors") and _is_repo_id(repo_id):
        return parse_hub_spec(text)
    raise TicketNotFoundError(_missing(text))


def ticket_file(path: str | os.PathLike) -> Path:
    """The ``ticket.safetensors`` a path spec names: the file itself, or the one inside a ticket folder
    (a folder without one is a :class:`TicketNotFoundError`).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> run = Path(tempfile.mkdtemp())
        >>> (run / "level_05").mkdir()
        >>> (run / "level_05" / TICKET_FILE).touch()
        >>> ticket_file(run / "level_05").relative_to(run).as_posix()  # a ticket folder: the file in it
        'level_05/ticket.safetensors'
        >>> ticket_file(run / "level_05" / TICKET_FILE) == run / "level_05" / TICKET_FILE  # a file: itself
        True
        >>> ticket_file(run)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.TicketNotFoundError: ... is a directory without ticket.safetensors; is it a ticket directory? (a `ticket-zoo find` output folder holds one per level_XX/)
    """
    path = Path(path)
    if not path.is_dir():
        return path
    if not (path / TICKET_FILE).is_file():
        raise TicketNotFoundError(
            f"{shorten(str(path), 200)} is a directory without {TICKET_FILE}; is it a ticket directory? (a "
            "`ticket-zoo find` output folder holds one per level_XX/)"
        )
    return path / TICKET_FILE


def _natural_key(path: Path) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.as_posix())]


def expand_spec(spec: str | os.PathLike | TicketSpec) -> list[str]:
    """The tickets ``spec`` stands for where a list is expected: a folder without ``ticket.safetensors``
    (a ``ticket-zoo find`` output: ``level_XX/ticket.safetensors``, one or two levels down) stands for
    every ticket folder inside it in natural order (``level_2`` before ``level_10``); any other spec is
    itself. Raises what :func:`parse_spec` raises, and :class:`TicketNotFoundError` for a folder with no
    ticket at all.

    Example:
        >>> expand_spec("hf-hub:me/tickets@v1")
        ['hf-hub:me/tickets@v1']
    """
    parsed = parse_spec(spec)
    text = str(parsed) if isinstance(spec, TicketSpec) else str(os.fspath(spec))
    path = parsed.path
    if path is not None and path.is_dir() and not (path / TICKET_FILE).is_file():
        found = sorted({p.parent for p in [*path.glob(f"*/{TICKET_FILE}"), *path.glob(f"*/*/{TICKET_FILE}")]},
                       key=_natural_key)  # fmt: skip
        if not found:
            raise TicketNotFoundError(
                f"{shorten(text, 200)} is a directory with no {TICKET_FILE} in it or in its subdirectories; "
                "pass a ticket directory or a `ticket-zoo find` output directory"
            )
        return [str(p) for p in found]
    return [text]
