"""ticket_zoo: find, store, share and transfer lottery tickets on any timm architecture.

Example:
    >>> import ticket_zoo as tz
    >>> [e["name"] for e in tz.list_tickets(arch="lenet_300_100", source="digits04")][:2]
    ['lenet_300_100-digits04-51pct', 'lenet_300_100-digits04-21pct']
    >>> ticket = tz.load("lenet_300_100-digits04-5pct")  # embedded in the package: no network
    >>> round(ticket.density, 3), ticket.num_classes
    (0.046, 5)
    >>> model = ticket.build(num_classes=10)  # a fresh 10-way head, the pruned body exact
    >>> model.get_classifier().out_features
    10
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import (
    CheckpointError,
    ChecksumMismatchError,
    ConfigError,
    HubError,
    TicketFormatError,
    TicketNotFoundError,
    TicketNotPublishedError,
    TicketZooError,
    UnknownArchitectureError,
    UnknownDatasetError,
)

__version__ = "0.1.0"

# Heavy modules (torch, timm, datasets, huggingface_hub) load on first use, keeping `import ticket_zoo` quick.
_LAZY = {
    "Ticket": "ticket",
    "save": "api",
    "load": "api",
    "magnitude_masks": "masks",
    "random_masks": "masks",
    "mask_overlap": "masks",
    "prunable_names": "masks",
    "apply_masks_": "masked",
    "hold_masks": "masked",
    "find_tickets": "find",
    "transfer": "transfer_grid",
    "build_report": "report",
    "push": "hub",
    "pull": "hub",
    "publish": "hub",
    "list_tickets": "zoo",
    "info": "zoo",
}

__all__ = [
    "ChecksumMismatchError",
    "CheckpointError",
    "ConfigError",
    "HubError",
    "Ticket",
    "TicketFormatError",
    "TicketNotFoundError",
    "TicketNotPublishedError",
    "TicketZooError",
    "UnknownArchitectureError",
    "UnknownDatasetError",
    "__version__",
    "apply_masks_",
    "build_report",
    "find_tickets",
    "hold_masks",
    "info",
    "list_tickets",
    "load",
    "magnitude_masks",
    "mask_overlap",
    "prunable_names",
    "publish",
    "pull",
    "push",
    "random_masks",
    "save",
    "transfer",
]

if TYPE_CHECKING:  # pragma: no cover
    from .api import load, save
    from .find import find_tickets
    from .hub import publish, pull, push
    from .masked import apply_masks_, hold_masks
    from .masks import magnitude_masks, mask_overlap, prunable_names, random_masks
    from .report import build_report
    from .ticket import Ticket
    from .transfer_grid import transfer
    from .zoo import info, list_tickets


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ticket_zoo' has no attribute {name!r}")
