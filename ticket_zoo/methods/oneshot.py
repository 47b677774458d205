"""``oneshot``: train the dense network once, prune it to every requested density in one step.

Level 0 is IMP's level 0 (the same training budget). Each requested density (the levels ``1..L`` of
the schedule, so the densities are IMP's) takes the largest-magnitude final dense weights under the
same budget rules, and its survivors are rewound to θk. One ticket per density, written without
training: a ticket's source accuracy is unknown (``None``) unless ``train_tickets`` trains each one
as IMP does (the old ``one_shot: true``). Cost: one training (``1 + L`` with ``train_tickets``).

(No torch import at module level: ``ticket-zoo find --help`` lists the methods without loading torch.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import Config, setting
from . import register_method

if TYPE_CHECKING:  # pragma: no cover
    from ..find import FindRun

__all__ = ["OneshotOptions", "run"]


@dataclass
class OneshotOptions(Config):
    """Options of ``oneshot``.

    Example:
        >>> OneshotOptions.from_dict({"train_tickets": True}).train_tickets
        True
    """

    section: ClassVar[str] = "oneshot options"

    train_tickets: bool = setting(
        False, help="also train each ticket on the source to record its accuracy (one training per ticket)"
    )


@register_method(
    "oneshot",
    options=OneshotOptions,
    summary="train dense once, prune by magnitude to each density in one step, rewind to θk",
    cost="one training (levels + 1 with train_tickets)",
)
def run(find: FindRun, options: OneshotOptions) -> None:
    """Level 0 dense (trained); levels ``1..L`` pruned from its final weights."""
    find.level(0, lambda: find.train_level(0, None))
    for level in find.levels:
        find.level(level, lambda level=level: _prune(find, level, options.train_tickets))


def _prune(find: FindRun, level: int, train: bool) -> dict[str, Any]:
    masks = find.schedule.masks(level, find.final_weights(0))
    if train:
        return find.train_level(level, masks, rewind=find.rewind())
    return find.write_ticket(level, masks, find.rewind())
