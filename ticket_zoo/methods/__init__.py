"""Ways to find a ticket, as plug-ins: the :data:`METHODS` registry and what a method is given.

A *method* turns (model, data, config) into masks at the densities a find run asks for, and writes
them as ordinary tickets (same format, card, catalogue, transfer and report) into the run's OUT
folder, in the layout IMP uses (``OUT/rewind.safetensors``, ``OUT/summary.json``, ``OUT/level_XX/``).
Every method shares the selection: it computes *scores*, the run's
:class:`~ticket_zoo.find_levels.Schedule` gives each level's budget (global or layerwise, the head's
and ``layer_prune_fractions``' own rates) and :func:`ticket_zoo.masks.select_masks` keeps the exact
top-k with deterministic ties.

A recipe names its method and that method's options::

    method: snip              # default imp
    method_options: {batches: 2}

Adding a method is one new module in this package (its options, declared on
:class:`ticket_zoo.config.Config`, and a ``run`` function registered with :func:`register_method`)
and one import line below. A method module imports no torch at import time (torch is imported
inside its functions), so ``ticket-zoo find --help`` can list the methods without loading torch.

What ``run(find, options)`` is given, ``find`` (a :class:`ticket_zoo.find.FindRun`):

* ``find.config`` (the :class:`~ticket_zoo.configs.FindConfig`), ``find.train`` (the effective
  :class:`~ticket_zoo.configs.TrainConfig`), ``find.splits`` (the source data), ``find.names`` (the
  prunable parameters), ``find.rewind_step`` (``k``), ``find.schedule`` and ``find.levels`` (the
  levels ``1..L`` whose densities are asked for; ``find.schedule.densities(level)`` is the
  ``(density, fixed_densities)`` pair :func:`~ticket_zoo.masks.select_masks` takes).
* ``find.dense_model()``: the seeded dense network at θ0 (the same one for every method).
* ``find.level(level, make)``: the row of ``level``: its recorded row if the level is done (a resumed
  run), else ``make()``'s row; either way recorded in ``summary.json`` and the progress display.
* ``find.train_level(level, masks, rewind=None)``: train ``level`` and write its ticket (level 0:
  the dense network, capturing θk into ``OUT/rewind.safetensors``; else from θk with ``masks``).
* ``find.train_dense(on_epoch_end=None)``: train the dense network as level 0 does, without writing
  a ticket; ``on_epoch_end(step, model) -> bool`` may stop it early. Returns the
  :class:`~ticket_zoo.train.TrainResult` (``captured`` is θk).
* ``find.write_ticket(level, masks, rewind, meta=None)``: write ``level``'s ticket without training
  it (its source accuracies are ``None``); ``meta`` adds fields such as a stop step.
* ``find.save_rewind(state)`` / ``find.rewind()``: θk, written to / read from ``OUT/rewind.safetensors``.
* ``find.final_weights(level)`` and ``find.masks_of(level)``: what a trained level left.
* ``find.train_batches(n)``: the first ``n`` training batches ``(x, y)`` in the run's data order.

Example:
    >>> METHODS.names()
    ('imp', 'oneshot', 'early_bird', 'snip', 'synflow')
    >>> options_for("imp", {})
    ImpOptions()
    >>> options_for("imp", {"rounds": 3})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ticket_zoo.errors.ConfigError: method_options: unknown imp options field 'rounds'...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..config import Config
from ..errors import ConfigError
from ..registry import Registry

__all__ = ["METHODS", "method_names", "options_for", "register_method"]

#: Pruning methods by name; each entry is ``run(find, options)``, its info holds ``options`` (the
#: options class), ``summary`` (one line for ``--help`` and the docs) and ``trains`` (what it costs).
METHODS: Registry[Callable[..., Any]] = Registry("pruning method")


def register_method(
    name: str, *, options: type[Config], summary: str, cost: str, writes: str = "all"
) -> Callable:
    """Register ``run(find, options)`` as the method ``name`` with its options class.

    ``summary`` is one line for ``ticket-zoo find --help``; ``cost`` says what it trains (for the docs);
    ``writes`` which levels it writes, for the progress bar: ``"all"`` (``0..L``, level 0 the dense
    network), ``"pruned"`` (``1..L``) or ``"last"`` (``L`` only).
    """
    if writes not in ("all", "pruned", "last"):
        raise ValueError(f"writes must be 'all', 'pruned' or 'last', got {writes!r}")
    return METHODS.register(name, options=options, summary=summary, cost=cost, writes=writes)


def method_names() -> tuple[str, ...]:
    """The registered methods, in registration order (``imp`` first)."""
    return METHODS.names()


def options_for(name: str, raw: Mapping[str, Any] | None) -> Config:
    """The validated options of method ``name`` from a recipe's ``method_options`` mapping."""
    cls = METHODS.info(name)["options"]
    try:
        options = cls.from_dict(dict(raw or {}))
        options.validate()
    except ConfigError as exc:
        raise type(exc)(f"method_options: {exc}") from None
    return options


# One line per method: importing the module registers it (torch-free imports, see above).
from . import imp, oneshot, early_bird, snip, synflow  # noqa: E402,F401,I001
