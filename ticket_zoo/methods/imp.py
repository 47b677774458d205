"""``imp``: iterative magnitude pruning with rewinding (Frankle & Carbin 2019; late resetting,
Frankle et al. 2019; global pruning, Morcos et al. 2019). The default method.

Level 0 trains the dense network and keeps θk. Level ``L >= 1`` prunes the *final* weights of
level ``L-1`` by magnitude, nested in its mask, to the schedule's density (every layer group keeps
``(1 - p)^L``), resets the survivors to θk and trains steps ``k..T`` with the mask held, with the same
seed. Cost: one training per level, ``L + 1`` in all (about 19 to reach 1.5% with ``p = 0.2``).

(No torch import at module level: ``ticket-zoo find --help`` lists the methods without loading torch.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import Config
from . import register_method

if TYPE_CHECKING:  # pragma: no cover
    from ..find import FindRun

__all__ = ["ImpOptions", "run"]


@dataclass
class ImpOptions(Config):
    """IMP has no options of its own: ``prune_fraction``, ``scope``, ``rewind`` and the rest are the
    find config's."""

    section: ClassVar[str] = "imp options"


@register_method(
    "imp",
    options=ImpOptions,
    summary="iterative magnitude pruning with rewinding: train, prune by magnitude, rewind to θk, repeat",
    cost="one training per level (levels + 1 trainings)",
)
def run(find: FindRun, options: ImpOptions) -> None:
    """Levels ``0..L``: level 0 dense; each later level prunes the previous level's final weights."""
    find.level(0, lambda: find.train_level(0, None))
    for level in find.levels:
        find.level(level, lambda level=level: _prune_and_train(find, level))


def _prune_and_train(find: FindRun, level: int) -> dict[str, Any]:
    masks = find.schedule.masks(level, find.final_weights(level - 1), previous=find.masks_of(level - 1))
    return find.train_level(level, masks, rewind=find.rewind())
