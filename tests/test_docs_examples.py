"""The worked examples of docs/architecture.md ("adding a control", "adding a pruning method", "adding a
dataset") run as written: adding an extension is one registration in one module."""

from __future__ import annotations

import functools
import re
import sys
import types
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


@pytest.fixture
def largest_init():
    import dataclasses
    from typing import ClassVar

    from ticket_zoo.config import Config, setting
    from ticket_zoo.masks import select_masks
    from ticket_zoo.methods import METHODS, register_method

    # The example is a new module of ticket_zoo/methods/: run it as one, with that module's imports.
    module = types.ModuleType("ticket_zoo.methods.largest_init")
    module.__dict__.update(dataclass=dataclasses.dataclass, ClassVar=ClassVar, Config=Config, setting=setting,
                           register_method=register_method, select_masks=select_masks)  # fmt: skip
    sys.modules[module.__name__] = module  # the config schema resolves field types in the class's module
    exec(compile(_example("adding a pruning method"), str(DOC), "exec"), module.__dict__)
    try:
        yield module
    finally:  # leave the real registry as it was
        METHODS.remove("largest_init")
        del sys.modules[module.__name__]


def test_adding_a_pruning_method_is_one_registration(largest_init, tmp_path, capsys):
    from ticket_zoo.cli import main
    from ticket_zoo.configs import FindConfig
    from ticket_zoo.find import find_tickets

    recipe = {"arch": "lenet_300_100", "dataset": "digits[0-4]", "levels": 3, "method": "largest_init",
              "method_options": {"scale": 2.0}, "train": {"iterations": 10, "batch_size": 60}}  # fmt: skip
    rows = find_tickets(FindConfig.from_dict(recipe), tmp_path / "out", progress=False)
    assert [r["level"] for r in rows] == [1, 2, 3]  # no training: level 0 is not written
    ticket = ticket_zoo.load(rows[-1]["path"])
    assert ticket.meta["method"] == "largest_init-global" and ticket.meta["scored_at"] == "init"
    assert ticket.meta["method_options"] == {"scale": 2.0}
    # Independent: θ0 rebuilt from the seed, and the k largest |θ0| over the prunable layers (global).
    from ticket_zoo.ticket import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        theta0 = dict(create_model(ticket.arch, ticket.arch_kwargs).named_parameters())
    names = ["fc1.weight", "fc2.weight"]  # the head is not pruned (no head_prune_fraction)
    assert sorted(n for n in ticket.masks if not bool(ticket.masks[n].all())) == names
    flat = torch.cat([theta0[n].detach().abs().flatten() for n in names])
    expected = torch.zeros_like(flat, dtype=torch.bool)
    expected[torch.topk(flat, round(rows[-1]["density"] * flat.numel())).indices] = True
    assert torch.equal(torch.cat([ticket.masks[n].flatten() for n in names]), expected)
    assert abs(ticket.density - rows[-1]["density"]) < 1e-12
    assert find_tickets(FindConfig.from_dict(recipe), tmp_path / "out", progress=False) == rows  # resumes
    with pytest.raises(ConfigError, match="scale must be"):
        FindConfig.from_dict({**recipe, "method_options": {"scale": 0}}).validate()
    with pytest.raises(SystemExit):
        main(["find", "--help"])
    assert "largest_init" in capsys.readouterr().out
