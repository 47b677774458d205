"""Random-ticket controls: densities kept, what changes and what does not, seeding, purity."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import LENET, digits_ticket
from ticket_zoo.controls import CONTROLS, fresh_init, get_control, random_mask, random_ticket, reinit
from ticket_zoo.errors import ConfigError
from ticket_zoo.ticket import Ticket

CONV4 = {"num_classes": 5, "in_chans": 1, "img_size": 8}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ticket() -> Ticket:
    return digits_ticket("lenet_300_100", LENET, 0.3)


@pytest.fixture(scope="module")
def conv_ticket() -> Ticket:
    return digits_ticket("conv4", CONV4, 0.2, steps=0)


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _masks_differ(a: Ticket, b: Ticket) -> bool:
    return any(not torch.equal(a.masks[k], b.masks[k]) for k in a.masks)


@pytest.mark.parametrize("name", list(CONTROLS))
def test_every_control_keeps_layer_densities(ticket: Ticket, conv_ticket: Ticket, name: str) -> None:
    for t in (ticket, conv_ticket):
        c = get_control(name)(t, 3)
        assert set(c.masks) == set(t.masks)
        expected = {k: 1.0 for k in t.masks} if name == "dense" else t.layer_densities
        assert c.layer_densities == expected
        assert c.density == (1.0 if name == "dense" else t.density)
        assert c.meta["control"] == name and c.meta["control_seed"] == 3
        assert c.meta["ticket_density"] == pytest.approx(t.density)
        # Pruned weights are exactly zero in what the control would train.
        for k, m in c.masks.items():
            assert not bool(c.init[k][~m].any())
        model = c.build(num_classes=3, head_seed=3)
        params = dict(model.named_parameters())
        for k, m in c.masks_for(model).items():
            assert not bool(params[k][~m].any())


def test_winning_is_the_ticket(ticket: Ticket) -> None:
    w = get_control("winning")(ticket, 5)
    assert w is not ticket
    assert _same(w.masks, ticket.masks) and _same(w.init, ticket.init)
    assert w.arch == ticket.arch and w.arch_kwargs == ticket.arch_kwargs


def test_reinit_keeps_mask_changes_init(ticket: Ticket) -> None:
    r = reinit(ticket, 0)
    assert _same(r.masks, ticket.masks)
    for k, m in ticket.masks.items():
        assert not torch.equal(r.init[k][m], ticket.init[k][m])
    # The new values come from the architecture's initializer, not from thin air.
    fresh = fresh_init(ticket, 0)
    for k in ticket.init:
        expected = fresh[k].masked_fill(~ticket.masks[k], 0) if k in ticket.masks else fresh[k]
        assert torch.equal(r.init[k], expected)


def test_random_ticket_changes_mask_and_init(ticket: Ticket, conv_ticket: Ticket) -> None:
    for t in (ticket, conv_ticket):
        rt = random_ticket(t, 0)
        assert _masks_differ(rt, t)
        fresh = fresh_init(t, 0)
        for k, m in rt.masks.items():
            assert torch.equal(rt.init[k][m], fresh[k][m])
        bias = next(k for k in t.init if k.endswith("bias"))
        assert torch.equal(rt.init[bias], fresh[bias])


def test_random_mask_uses_rewind_values_where_available(ticket: Ticket) -> None:
    rm = random_mask(ticket, 1)
    assert _masks_differ(rm, ticket)
    fresh = fresh_init(ticket, 1)
    for k, new in rm.masks.items():
        old = ticket.masks[k]
        both, newly = new & old, new & ~old
        assert both.any() and newly.any()
        assert torch.equal(rm.init[k][both], ticket.init[k][both])
        assert torch.equal(rm.init[k][newly], fresh[k][newly])
    unmasked = [k for k in ticket.init if k not in ticket.masks]
    assert unmasked and all(torch.equal(rm.init[k], ticket.init[k]) for k in unmasked)


def test_dense_is_unpruned_and_fresh(ticket: Ticket) -> None:
    d = get_control("dense")(ticket, 0)
    assert all(bool(m.all()) for m in d.masks.values())
    assert _same(d.init, fresh_init(ticket, 0))


@pytest.mark.parametrize("name", ["random_ticket", "reinit", "random_mask", "dense"])
def test_controls_are_seeded(ticket: Ticket, name: str) -> None:
    fn = get_control(name)
    a, b, c = fn(ticket, 7), fn(ticket, 7), fn(ticket, 8)
    assert _same(a.masks, b.masks) and _same(a.init, b.init)
    assert not (_same(a.masks, c.masks) and _same(a.init, c.init))


@pytest.mark.parametrize("name", list(CONTROLS))
def test_controls_are_pure(ticket: Ticket, name: str) -> None:
    masks = {k: v.clone() for k, v in ticket.masks.items()}
    init = {k: v.clone() for k, v in ticket.init.items()}
    meta = dict(ticket.meta)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    get_control(name)(ticket, 2)
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must be left untouched"
    assert _same(ticket.masks, masks) and _same(ticket.init, init) and ticket.meta == meta


def test_unknown_control_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'random_ticket'"):
        get_control("random_tiket")
    with pytest.raises(ConfigError, match="seed"):
        get_control("reinit")(None, -1)  # type: ignore[arg-type]
