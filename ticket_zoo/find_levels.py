"""IMP's schedule: the rewind point, how much each level keeps, how many levels, and each level's masks.

No files and no training here, only arithmetic on layer sizes and weights, so the schedule is known
(and checked) before any data is loaded:

* :func:`parse_rewind` / :func:`rewind_step`: ``rewind: 500`` (iterations) or ``"2ep"`` (epochs),
  as a training step.
* :func:`density_schedule`: level ``L`` keeps ``(1 - p)^L`` of every layer group (``p`` =
  ``prune_fraction``; the head and ``layer_prune_fractions`` layers compound their own rates).
* :func:`layer_fractions`: those per-layer rates, from glob patterns to parameter names.
* :class:`Schedule`: the schedule of one run: its densities, its last level (from ``levels`` and/or
  ``target_density``) and the magnitude masks of a level.

Example:
    >>> s = Schedule({"fc1.weight": 1000, "head.weight": 100}, scope="global", prune_fraction=0.2,
    ...              layer_fractions={"head.weight": 0.1})
    >>> [round(s.density(level), 4) for level in range(3)]
    [1.0, 0.8091, 0.6555]
    >>> s.last_level(levels=None, target_density=0.7)
    2
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .configs import MAX_LEVELS, parse_rewind  # declared with the recipe fields they check
from .errors import ConfigError

__all__ = ["MAX_LEVELS", "Schedule", "density_schedule", "layer_fractions", "parse_rewind", "rewind_step"]



# --- the rewind point ------------------------------------------------------------------------------


def rewind_step(rewind: Any, steps_per_epoch: int, budget: int) -> int:
    """The training step ``k`` that ``rewind`` names, once the data (``steps_per_epoch``) is known.

    Example:
        >>> rewind_step("2ep", steps_per_epoch=21, budget=100), rewind_step(20, 21, 100)
        (42, 20)
        >>> rewind_step("3ep", 21, 60)
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: rewind '3ep' = 63 iterations is beyond the budget (60)
    """
    kind, value = parse_rewind(rewind)
    step = int(value) if kind == "iterations" else int(round(value * steps_per_epoch))
    if step > budget:
        raise ConfigError(f"rewind {rewind!r} = {step} iterations is beyond the budget ({budget})")
    return step


# --- how much each level keeps ---------------------------------------------------------------------


def density_schedule(
    sizes: Mapping[str, int],
    level: int,
    *,
    scope: str = "global",
    prune_fraction: float = 0.2,
    layer_fractions: Mapping[str, float] | None = None,
) -> tuple[float, dict[str, float]]:
    """The ``(overall density, explicit per-layer densities)`` of pruning level ``level``.

    Every layer group keeps ``(1 - fraction)^level`` of its weights: layers in ``layer_fractions``
    (``layer_prune_fractions``, the head) individually, and the others individually (``layerwise``)
    or pooled (``global``). The returned pair is what :func:`~ticket_zoo.masks.magnitude_masks`
    needs (``density`` and ``fixed_densities``).

    Example:
        >>> d, per_layer = density_schedule({"a": 100, "b": 100}, 2, scope="global", prune_fraction=0.5)
        >>> d, per_layer
        (0.25, {})
    """
    layer_fractions = dict(layer_fractions or {})
    explicit: dict[str, float] = {}
    for name in sizes:
        if name in layer_fractions:
            explicit[name] = (1.0 - layer_fractions[name]) ** level
        elif scope == "layerwise":
            explicit[name] = (1.0 - prune_fraction) ** level
    kept = sum(round(d * sizes[n]) for n, d in explicit.items())
    pooled = sum(n for name, n in sizes.items() if name not in explicit)
    kept += round((1.0 - prune_fraction) ** level * pooled)
    total = sum(sizes.values())
    return kept / total, explicit


def layer_fractions(
    names: list[str],
    patterns: Mapping[str, float],
    *,
    head: Iterable[str] = (),
    head_fraction: float | None = None,
) -> dict[str, float]:
    """``{parameter name: prune fraction}`` for the layers that do not follow ``prune_fraction``.

    ``head`` (the classifier's parameters) follow ``head_fraction`` when it is set; then every
    ``patterns`` entry (a name or a glob, from ``layer_prune_fractions``) sets the layers it matches.
    A pattern that matches no prunable parameter is a :class:`ConfigError`.

    Example:
        >>> layer_fractions(["f.0.weight", "f.1.weight", "head.weight"], {"f.*": 0.1},
        ...                 head=["head.weight", "head.bias"], head_fraction=0.05)
        {'head.weight': 0.05, 'f.0.weight': 0.1, 'f.1.weight': 0.1}
    """
    out: dict[str, float] = {}
    if head_fraction is not None:
        for n in head:
            if n in names:
                out[n] = float(head_fraction)
    for pattern, value in patterns.items():
        hits = [n for n in names if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ConfigError(
                f"layer_prune_fractions: {pattern!r} matches no prunable parameter; prunable are {names[:6]}"
                f"{' ...' if len(names) > 6 else ''}"
            )
        for n in hits:
            out[n] = float(value)
    return out


# --- the schedule of one run -----------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """The pruning schedule of one run: prunable layer ``sizes`` and the rates that apply to them.

    ``layer_fractions`` are per-parameter rates (see :func:`layer_fractions`); every other layer
    follows ``prune_fraction``, pooled (``global``) or per layer (``layerwise``).
    """

    sizes: dict[str, int]
    scope: str = "global"
    prune_fraction: float = 0.2
    layer_fractions: dict[str, float] = field(default_factory=dict)

    def densities(self, level: int) -> tuple[float, dict[str, float]]:
        """:func:`density_schedule` of ``level``: the overall density and the explicit per-layer ones."""
        return density_schedule(
            self.sizes,
            level,
            scope=self.scope,
            prune_fraction=self.prune_fraction,
            layer_fractions=self.layer_fractions,
        )

    def density(self, level: int) -> float:
        """The fraction of the prunable weights that ``level`` keeps."""
        return self.densities(level)[0]

    def last_level(self, levels: int | None, target_density: float | None) -> int:
        """The last level to run: ``levels``, or the first level at or below ``target_density``
        (with both, whichever comes first). Known up front, so an unreachable target fails early.

        Example:
            >>> Schedule({"a": 10}, prune_fraction=0.5).last_level(None, 0.01)
            Traceback (most recent call last):
            ...
            ticket_zoo.errors.ConfigError: target_density 0.01 cannot be reached within 500 levels with prune_fraction 0.5 (rounding stalls it, or layer_prune_fractions/head_prune_fraction hold layers back); raise the fractions
        """
        last = levels if levels is not None else MAX_LEVELS
        if target_density is None:
            return last
        previous = 1.0
        for level in range(last + 1):
            density = self.density(level)
            if density <= target_density:
                return level
            if level > 0 and density >= previous:
                break  # rounding has stalled the schedule: the target cannot be reached
            previous = density
        if levels is not None:
            return last
        raise ConfigError(
            f"target_density {target_density} cannot be reached within {MAX_LEVELS} levels with "
            f"prune_fraction {self.prune_fraction} (rounding stalls it, or layer_prune_fractions/"
            "head_prune_fraction hold layers back); raise the fractions"
        )

    def masks(
        self,
        level: int,
        weights: Mapping[str, torch.Tensor],
        previous: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The masks of ``level``: the largest-magnitude ``weights`` (the previous level's final ones,
        or the dense ones for one-shot), nested in ``previous`` when given.

        Example:
            >>> s = Schedule({"a": 4}, prune_fraction=0.5)
            >>> s.masks(1, {"a": torch.tensor([0.1, -3.0, 2.0, 0.5])})["a"].tolist()
            [False, True, True, False]
        """
        from .masks import magnitude_masks

        density, fixed = self.densities(level)
        chosen = {n: weights[n] for n in self.sizes}
        return magnitude_masks(chosen, density, scope=self.scope, previous=previous, fixed_densities=fixed)
