"""``save`` and ``load``: the two calls most users need (the top of the storage layers).

``load`` reads its argument with :func:`ticket_zoo.specs.parse_spec` (the one spec grammar: hf-hub:
prefix, existing path, catalogue name, org/name on the Hub) and dispatches to :mod:`~ticket_zoo.format`
(a path), :func:`load_named` (the catalogue) or :func:`~ticket_zoo.hub.load_from_hub` (the Hub).
Layering: ``specs``/``format`` → ``zoo`` → ``cards`` → ``hub`` → ``api``; nothing imports this module
but the package's lazy names and the stages above the storage layers.

Example:
    >>> import shutil, tempfile
    >>> import ticket_zoo as tz
    >>> ticket = tz.load("lenet_300_100-digits04-5pct")  # a catalogue name
    >>> tmp = tempfile.mkdtemp()
    >>> folder = tz.save(ticket, f"{tmp}/my_ticket")  # my_ticket/ticket.safetensors + my_ticket/README.md
    >>> sorted(p.name for p in folder.iterdir())
    ['README.md', 'ticket.safetensors']
    >>> tz.load(folder).build(num_classes=10).get_classifier().out_features
    10
    >>> shutil.rmtree(tmp)

    A Hub repo at a pinned revision is read the same way; it needs the network, so it is not run here:

    >>> tz.load("hf-hub:org/name@v1")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import zoo
from ._io import atomic_write_text
from .errors import TicketNotPublishedError
from .format import read_ticket, ticket_from_bytes, write_ticket
from .hub import CARD_FILE, explain_fallback, load_from_hub
from .specs import HUB_PREFIX, TICKET_FILE, TicketSpec, parse_hub_spec, parse_spec, ticket_file
from .ticket import Ticket

__all__ = ["CARD_FILE", "TICKET_FILE", "load", "load_named", "save"]


def save(ticket: Ticket, directory: str | os.PathLike, *, name: str | None = None) -> Path:
    """Write ``directory/ticket.safetensors`` and ``directory/README.md`` (model card), atomically.

    Example:
        >>> import shutil, tempfile
        >>> ticket = load("lenet_300_100-digits04-5pct")
        >>> tmp = tempfile.mkdtemp()
        >>> save(ticket, f"{tmp}/my_ticket") == Path(tmp, "my_ticket")
        True
        >>> f'tz.load("{tmp}/my_ticket")' in (Path(tmp) / "my_ticket" / "README.md").read_text()  # the card's load line
        True
        >>> shutil.rmtree(tmp)
    """
    from .cards import render_card  # cards imports huggingface_hub's ModelCard: only needed to write

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(
            f"{directory} exists and is not a directory; pass a directory for the ticket"
        )
    write_ticket(ticket, directory / TICKET_FILE)
    # the card's load line names this directory: a find level is named like a catalogue entry but is not one
    atomic_write_text(directory / CARD_FILE, str(render_card(ticket, name=name, path=directory)))
    return directory


def load(spec: str | os.PathLike | TicketSpec) -> Ticket:
    """Load a ticket from a directory, a ``.safetensors`` file, a catalogue name or ``[hf-hub:]org/name[@rev]``.

    What ``spec`` names is decided by :func:`ticket_zoo.specs.parse_spec` (a local folder named like
    ``org/name`` wins over the Hub; ``hf-hub:`` always means the Hub).

    Example:
        >>> import shutil, tempfile
        >>> load("lenet_300_100-digits04-5pct").arch
        'lenet_300_100'
        >>> tmp = tempfile.mkdtemp()
        >>> folder = save(load("lenet_300_100-digits04-5pct"), f"{tmp}/level_14")
        >>> load(folder).meta["level"], load(folder / "ticket.safetensors").meta["level"]
        (14, 14)
        >>> shutil.rmtree(tmp)
    """
    parsed = parse_spec(spec)
    if parsed.kind == "path":
        return read_ticket(ticket_file(parsed.path))
    if parsed.kind == "catalogue":
        return load_named(parsed.name)
    with explain_fallback(parsed):
        return load_from_hub(parsed)


def load_named(name: str, *, cards_dir: str | os.PathLike | None = None) -> Any:
    """Load a catalogue entry: embedded (read from the package, sha256 checked) or from the Hub at its
    pinned revision (sha256 checked); an unpublished entry raises :class:`TicketNotPublishedError`
    with the commands to build and publish it. (Moved here from ``zoo``: the catalogue never calls the Hub.)

    Example:
        >>> load_named("lenet_300_100-digits04-5pct").build(num_classes=5).get_classifier().out_features
        5
    """
    entry = zoo.info(name, cards_dir=cards_dir)
    if entry["location"] == "embedded":
        return ticket_from_bytes(zoo.read_embedded(entry), source=f"catalogue:{name}")
    if entry["location"] == "hub":
        pinned = parse_hub_spec(f"{HUB_PREFIX}{entry['repo_id']}@{entry['revision']}")
        return load_from_hub(pinned, sha256=entry["sha256"])
    raise TicketNotPublishedError(zoo.unpublished_message(entry))
