"""Random-ticket controls: small pure functions ``Ticket -> Ticket``.

Each control answers one question about a winning ticket by changing exactly one thing:

=================  =====================================  =========================================
control            mask                                   initialization
=================  =====================================  =========================================
``winning``        the ticket's                           the ticket's rewind weights
``random_ticket``  random, each layer's density kept      fresh, from the architecture's initializer
``reinit``         the ticket's                           fresh, from the architecture's initializer
``random_mask``    random, each layer's density kept      the ticket's rewind weights (see below)
``dense``          none (all weights kept, density 1.0)   fresh, from the architecture's initializer
=================  =====================================  =========================================

``random_ticket`` is the control of Morcos et al. (2019): a random structure *and* a random init.
``reinit`` is the "same mask, new init" check of Frankle & Carbin (2019) and Liu et al. (2019).
``dense`` is the unpruned baseline trained from scratch.

Every function is seeded and pure: the same ``(ticket, seed)`` gives the same result, a different
seed a different one, the input ticket is never modified (a new ``Ticket`` is returned) and the
global torch RNG is left exactly as it was. The result's ``meta`` records ``control`` and
``control_seed``; ``meta["ticket_density"]`` keeps the density of the ticket the control was made
from.

Example:
    >>> import ticket_zoo as tz
    >>> from ticket_zoo.controls import get_control
    >>> ticket = tz.load("lenet_300_100-digits04-5pct")
    >>> control = get_control("random_ticket")(ticket, seed=0)
    >>> control.layer_densities == ticket.layer_densities
    True
    >>> control.meta["control"], control.meta["control_seed"], round(control.meta["ticket_density"], 4)
    ('random_ticket', 0, 0.0458)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import ConfigError
from .masks import random_masks
from .registry import Registry
from .ticket import Ticket, create_model

__all__ = [
    "CONTROLS",
    "dense",
    "fresh_init",
    "get_control",
    "random_mask",
    "random_ticket",
    "reinit",
    "winning",
]

# The mask and the fresh init of one control draw from separate streams, so neither is a
# function of the other.
_MASK_OFFSET = 0x3A5C
_INIT_OFFSET = 0x1417


def _stream(seed: int, offset: int) -> int:
    # Never the same number for two (seed, offset) pairs: the offsets differ by a non-multiple of 7919.
    return seed * 7919 + offset


Control = Callable[[Ticket, int], Ticket]

#: Control name -> function ``(ticket, seed) -> ticket``. Info: ``at_full_density`` names the control
#: that is the same run when the ticket keeps every weight (a random mask of density 1.0 is no mask),
#: so the grid trains it once.
CONTROLS: Registry[Control] = Registry("control")


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"control seed must be an int in [0, 2**32), got {seed!r}")
    return seed


def fresh_init(ticket: Ticket, seed: int) -> dict[str, torch.Tensor]:
    """The full ``state_dict`` (parameters and buffers) of a freshly initialised ``ticket.arch``.

    The model is created with the architecture's own initializer under ``torch.manual_seed`` inside
    ``torch.random.fork_rng``, so the global RNG is untouched and the same seed gives the same
    weights.

    Example:
        >>> import ticket_zoo as tz
        >>> ticket = tz.load("lenet_300_100-digits04-5pct")
        >>> rng = torch.random.get_rng_state()
        >>> state = fresh_init(ticket, seed=0)
        >>> set(state) == set(ticket.init)
        True
        >>> torch.equal(state["fc1.weight"], fresh_init(ticket, seed=0)["fc1.weight"])  # same seed, same weights
        True
        >>> torch.equal(state["fc1.weight"], fresh_init(ticket, seed=1)["fc1.weight"])
        False
        >>> torch.equal(rng, torch.random.get_rng_state())  # the global RNG is untouched
        True
    """
    seed = _check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_stream(seed, _INIT_OFFSET))
        model = create_model(ticket.arch, ticket.arch_kwargs)
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def _derived(ticket: Ticket, name: str, seed: int, **changes) -> Ticket:
    meta = dict(ticket.meta)
    meta.setdefault("ticket_density", ticket.density)
    meta.update(control=name, control_seed=seed)
    return ticket.with_(meta=meta, **changes)


@CONTROLS.register("winning")
def winning(ticket: Ticket, seed: int = 0) -> Ticket:
    """The ticket as it is (a copy): its mask and its rewind weights. ``seed`` is recorded only.

    Example:
        >>> import ticket_zoo as tz
        >>> ticket = tz.load("lenet_300_100-digits04-5pct")
        >>> w = winning(ticket, 0)
        >>> all(torch.equal(w.masks[k], ticket.masks[k]) for k in ticket.masks)
        True
        >>> all(torch.equal(w.init[k], ticket.init[k]) for k in ticket.init)
        True
        >>> w.meta["control"], w.masks["fc1.weight"] is ticket.masks["fc1.weight"]  # a copy
        ('winning', False)
    """
    seed = _check_seed(seed)
    return _derived(ticket, "winning", seed)


@CONTROLS.register("random_ticket", at_full_density="dense")
def random_ticket(ticket: Ticket, seed: int = 0) -> Ticket:
    """Random mask with each layer's density kept AND a fresh initialization (Morcos et al. 2019).

    Example:
        >>> import ticket_zoo as tz
        >>> ticket = tz.load("lenet_300_100-digits04-5pct")
        >>> rt = random_ticket(ticket, seed=1)
        >>> rt.layer_densities == ticket.layer_densities
        True
        >>> torch.equal(rt.masks["fc1.weight"], ticket.masks["fc1.weight"])
        False
        >>> torch.equal(rt.masks["fc1.weight"], random_ticket(ticket, seed=1).masks["fc1.weight"])
        True
    """
    seed = _check_seed(seed)
    masks = random_masks(ticket.masks, _stream(seed, _MASK_OFFSET))
    # Ticket.__post_init__ zeroes the positions the new mask prunes.
    return _derived(ticket, "random_ticket", seed, masks=masks, init=fresh_init(ticket, seed))


@CONTROLS.register("reinit", at_full_density="dense")
def reinit(ticket: Ticket, seed: int = 0) -> Ticket:
    """The ticket's mask with a fresh initialization (Frankle & Carbin 2019; Liu et al. 2019).

    Example:
        >>> import ticket_zoo as tz
        >>> ticket = tz.load("lenet_300_100-digits04-5pct")
        >>> r = reinit(ticket, seed=1)
        >>> all(torch.equal(r.masks[k], ticket.masks[k]) for k in ticket.masks)
        True
        >>> torch.equal(r.init["fc1.weight"], ticket.init["fc1.weight"])
        False
    """
    seed = _check_seed(seed)
    return _derived(ticket, "reinit", seed, init=fresh_init(ticket, seed))


@CONTROLS.register("random_mask", at_full_density="winning")
def random_mask(ticket: Ticket, seed: int = 0) -> Ticket:
    """Random mask with each layer's density kept, on the ticket's rewind weights.

    A ticket stores its rewind weights only where its own mask keeps them (``ticket.init`` is zero
    at pruned positions), so the dense rewind values are not available. Positions the random mask
    keeps are therefore filled as follows:

    * kept by the ticket too: the ticket's rewind value (honest: the real θk);
    * pruned in the ticket: a value from the architecture's initializer drawn with ``seed`` (the
      same as :func:`fresh_init`), i.e. what the network would have held at initialization. At
      low density most kept positions are of this kind, so at low density this control is close
      to ``random_ticket``; compare it with that in mind.

    Parameters without a mask (biases, normalization, the head) keep the rewind values.

    Example:
        >>> import ticket_zoo as tz
        >>> ticket = tz.load("lenet_300_100-digits04-5pct")
        >>> rm = random_mask(ticket, seed=2)
        >>> rm.layer_densities == ticket.layer_densities
        True
        >>> both = rm.masks["fc1.weight"] & ticket.masks["fc1.weight"]  # kept by both: the real rewind values
        >>> torch.equal(rm.init["fc1.weight"][both], ticket.init["fc1.weight"][both])
        True
        >>> torch.equal(rm.init["fc1.bias"], ticket.init["fc1.bias"])  # no mask: the rewind values
        True
    """
    seed = _check_seed(seed)
    masks = random_masks(ticket.masks, _stream(seed, _MASK_OFFSET))
    fresh = fresh_init(ticket, seed)
    init = {
        k: torch.where(ticket.masks[k], v, fresh[k].to(v.dtype)) if k in ticket.masks else v.clone()
        for k, v in ticket.init.items()
    }
    return _derived(ticket, "random_mask", seed, masks=masks, init=init)


@CONTROLS.register("dense")
def dense(ticket: Ticket, seed: int = 0) -> Ticket:
    """The unpruned baseline: all-True masks (every layer's density 1.0) and a fresh initialization.

    The masks keep the ticket's layer names, so the control reports per-layer densities of 1.0 and
    an overall density of 1.0; holding an all-True mask while training changes nothing.

    Example:
        >>> import ticket_zoo as tz
        >>> ticket = tz.load("lenet_300_100-digits04-5pct")
        >>> d = dense(ticket, seed=0)
        >>> d.density, set(d.layer_densities.values())
        (1.0, {1.0})
        >>> round(d.meta["ticket_density"], 4)
        0.0458
    """
    seed = _check_seed(seed)
    masks = {k: torch.ones_like(v, dtype=torch.bool) for k, v in ticket.masks.items()}
    return _derived(ticket, "dense", seed, masks=masks, init=fresh_init(ticket, seed))


def get_control(name: str) -> Control:
    """The control function called ``name``; :class:`ConfigError` with a suggestion otherwise.

    Example:
        >>> get_control("reinit").__name__
        'reinit'
        >>> get_control("random")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: unknown control 'random' ...; known: winning, random_ticket, reinit, random_mask, dense
    """
    return CONTROLS.get(name)
