"""The worked examples of docs/architecture.md ("adding a control", "adding a dataset") run as written:
adding an extension is one registration in one module."""

from __future__ import annotations

import functools
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

import ticket_zoo
from ticket_zoo import controls, data
from ticket_zoo.errors import ConfigError, UnknownDatasetError
from ticket_zoo.registry import Registry
from ticket_zoo.transfer_grid import TransferConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _example(title: str) -> str:
    section = DOC.read_text().split(f"### Worked example: {title}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def shuffled_init():
    namespace = vars(controls)  # the example is code for controls.py: run it there
    exec(compile(_example("adding a control"), str(DOC), "exec"), namespace)
    try:
        yield controls.get_control("shuffled_init")
    finally:  # leave the real registry as it was
        controls.CONTROLS.remove("shuffled_init")
        del namespace["shuffled_init"]


def test_adding_a_control_is_one_registration(shuffled_init):
    ticket = ticket_zoo.load("lenet_300_100-digits04-5pct")
    cfg = TransferConfig(tickets=["lenet_300_100-digits04-5pct"], targets=["digits[5-9]"],
                         optimizers={"adam": {"optimizer": "adam"}}, controls=["winning", "shuffled_init"],
                         train={"iterations": 5})  # fmt: skip
    cfg.validate()  # the transfer config accepts the new name at once
    state = torch.get_rng_state()
    a, b, c = shuffled_init(ticket, 1), shuffled_init(ticket, 1), shuffled_init(ticket, 2)
    assert torch.equal(torch.get_rng_state(), state)
    for name, mask in ticket.masks.items():
        assert torch.equal(a.masks[name], mask)
        assert Counter(a.init[name][mask].tolist()) == Counter(ticket.init[name][mask].tolist())
        assert torch.equal(a.init[name], b.init[name])
    assert any(not torch.equal(a.init[n], c.init[n]) for n in ticket.masks)
    assert a.meta["control"] == "shuffled_init"


def test_without_the_registration_the_name_is_refused():
    with pytest.raises(ConfigError, match="controls must be one of"):
        TransferConfig(tickets=["t"], targets=["digits"], optimizers={"adam": {}},
                       controls=["shuffled_init"]).validate()  # fmt: skip


def test_adding_a_dataset_is_one_registration():
    catalogue: Registry = Registry("dataset", UnknownDatasetError)
    namespace = {**vars(data), "register_dataset": functools.partial(data.register_dataset, registry=catalogue)}
    exec(compile(_example("adding a dataset"), str(DOC), "exec"), namespace)
    spec = data.get_spec("kmnist[0-4]", registry=catalogue)
    assert (spec.hub_id, spec.num_classes, spec.classes) == ("my-org/kmnist", 5, (0, 1, 2, 3, 4))
    with pytest.raises(UnknownDatasetError, match="did you mean 'kmnist'"):
        data.get_spec("kmist", registry=catalogue)
    assert "kmnist" not in data.list_datasets()  # the real catalogue is untouched
