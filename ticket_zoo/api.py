"""``save`` and ``load``: the two calls most users need.

Example:
    >>> import ticket_zoo as tz  # doctest: +SKIP
    >>> tz.save(ticket, "my_ticket")          # my_ticket/ticket.safetensors + my_ticket/README.md  # doctest: +SKIP
    >>> tz.load("my_ticket").build(num_classes=10)  # doctest: +SKIP
    >>> tz.load("lenet_300_100-digits04-5pct")   # a catalogue name  # doctest: +SKIP
    >>> tz.load("hf-hub:org/name@v1")            # a Hub repo at a pinned revision  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from ._io import atomic_write_text
from .errors import TicketNotFoundError, shorten
from .format import read_ticket, write_ticket
from .ticket import Ticket

TICKET_FILE = "ticket.safetensors"
CARD_FILE = "README.md"


def save(ticket: Ticket, directory: str | os.PathLike, *, name: str | None = None) -> Path:
    """Write ``directory/ticket.safetensors`` and ``directory/README.md`` (model card), atomically.

    Example:
        >>> save(ticket, "runs/my_ticket")  # doctest: +SKIP
        PosixPath('runs/my_ticket')
    """
    from .cards import render_card

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(
            f"{directory} exists and is not a directory; pass a directory for the ticket"
        )
    write_ticket(ticket, directory / TICKET_FILE)
    # the card's load line names this directory: a find level is named like a catalogue entry but is not one
    atomic_write_text(directory / CARD_FILE, str(render_card(ticket, name=name, path=directory)))
    return directory


def load(spec: str | os.PathLike) -> Ticket:
    """Load a ticket from a directory, a ``.safetensors`` file, ``hf-hub:org/name[@rev]`` or a catalogue name.

    Example:
        >>> ticket = load("runs/digits/level_05")  # doctest: +SKIP
    """
    text = os.fspath(spec)
    if text.startswith("hf-hub:"):
        from .hub import load_from_hub

        return load_from_hub(text[len("hf-hub:") :])
    path = Path(text)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a path here
        is_dir = is_file = False
    if is_dir:
        if not (path / TICKET_FILE).is_file():
            raise TicketNotFoundError(
                f"{path} is a directory without {TICKET_FILE}; is it a ticket directory?"
            )
        return read_ticket(path / TICKET_FILE)
    if is_file:
        return read_ticket(path)
    looks_like_path = os.sep in text or text.endswith(".safetensors") or text.startswith(".")
    if looks_like_path:
        raise TicketNotFoundError(f"{shorten(text, 200)}: no such file or directory")
    from .zoo import load_named

    return load_named(text)
