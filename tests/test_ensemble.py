"""Batched seeds (issue 12 part 3): the seeds and controls of one (ticket, target, optimizer) trained as
one vmapped ensemble match their sequential runs, hold masks exactly, repeat bit for bit, and fall
back to one-by-one training where they cannot be batched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import digits_ticket
from ticket_zoo.api import save
from ticket_zoo.controls import get_control
from ticket_zoo.data import load_splits
from ticket_zoo.ensemble import Member, architecture_problem, batchable, train_ensemble, why_not_batchable
from ticket_zoo.errors import ConfigError
from ticket_zoo.ticket import create_model
from ticket_zoo.train import TrainConfig
from ticket_zoo.transfer_cells import (
    Cell,
    _build,
    cell_row,
    group_cells,
    load_ticket,
    plan,
    run_cell,
    run_unit,
)
from ticket_zoo.transfer_grid import TIMING_FIELDS, TransferConfig

pytestmark = pytest.mark.usefixtures("one_thread")

LENET_TICKET = "lenet_300_100-digits04-5pct"
OPTIMIZERS = {
    "sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
    "adam": {"optimizer": "adam", "lr": 1e-3},
}


def _config(tickets, opt: str, controls=("winning", "random_ticket"), seeds=(0, 1), **train) -> TransferConfig:
    cfg = TransferConfig.from_dict({
        "tickets": list(tickets), "targets": ["digits[5-9]"], "optimizers": {opt: OPTIMIZERS[opt]},
        "controls": list(controls), "seeds": list(seeds),
        "train": {"iterations": 20, "batch_size": 32, "eval_every": 1, **train},
    })  # fmt: skip
    cfg.validate()
    return cfg


@pytest.fixture(scope="module")
def splits():
    return load_splits("digits[5-9]", input_size=(1, 8, 8))


def _log(out: Path, cell: Cell) -> list[dict]:
    return [json.loads(line) for line in (out / "cells" / cell.run_id / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_each_members_losses_match_its_sequential_run(opt, splits, tmp_path):
    """2 controls x 2 seeds of lenet on digits[5-9]: every step's loss within 1e-5 of train()'s own run
    (eval_every=1: each log line's train_loss is that step's loss), and the rows have the same shape."""
    cfg = _config([LENET_TICKET], opt)
    cells = plan(cfg)
    units = group_cells(cells)
    assert [len(u) for u in units] == [4]  # one unit: 2 controls x 2 seeds
    ticket = load_ticket(cells[0].ref)
    batched = run_unit(units[0], ticket, splits, cfg, tmp_path / "batched", progress=False)
    sequential = [run_cell(c, ticket, splits, cfg, tmp_path / "seq", progress=False) for c in units[0]]

    for cell, b, s in zip(units[0], batched, sequential, strict=True):
        assert set(b) == set(s) and (b["batched"], s["batched"]) == (4, 1)
        assert b["steps"] == s["steps"] == 20 and b["density"] == s["density"]
        log_b, log_s = _log(tmp_path / "batched", cell), _log(tmp_path / "seq", cell)
        assert [list(e) for e in log_b] == [list(e) for e in log_s]  # the same fields in the same order
        assert [e["step"] for e in log_b] == list(range(1, 21))
        for eb, es in zip(log_b, log_s, strict=True):
            assert eb["train_loss"] == pytest.approx(es["train_loss"], rel=1e-5), (cell.control, cell.seed, eb["step"])
            assert eb["lr"] == es["lr"]
        row = cell_row(cell, b, cfg)
        assert row["batched"] == 4 and list(row).index("batched") == list(row).index("images_per_second") + 1


def test_masks_are_held_exactly_in_every_member(splits):
    """Pruned weights stay exactly zero in every member (each with its own mask), kept weights train,
    and members without a mask for a tensor train all of it."""
    ticket = load_ticket(plan(_config([LENET_TICKET], "adam"))[0].ref)
    members, masks = [], []
    for control, seed in (("winning", 0), ("random_mask", 1), ("random_ticket", 2), ("dense", 3)):
        model, m = _build(get_control(control)(ticket, seed), 5, seed, True)
        cfg = TrainConfig(optimizer="adam", lr=1e-2, iterations=15, batch_size=32, eval_every=5, seed=seed)
        members.append(Member(model, cfg, m if any(not bool(v.all()) for v in m.values()) else None))
        masks.append(m)
    before = [{k: v.detach().clone() for k, v in mem.model.named_parameters()} for mem in members]
    results = train_ensemble(members, splits.train, splits.val, final_model="last")
    assert [r.steps for r in results] == [15] * 4
    for mem, m, start in zip(members, masks, before, strict=True):
        params = dict(mem.model.named_parameters())
        for name, keep in m.items():
            assert int(params[name][~keep].count_nonzero()) == 0, name
            assert bool((params[name][keep] != start[name][keep]).any()), name  # kept weights did train
    assert masks[0]["fc1.weight"].ne(masks[1]["fc1.weight"]).any()  # different masks in one ensemble
    assert all(bool(v.all()) for v in masks[3].values())  # dense: nothing pruned, all of it trained
    assert (dict(members[3].model.named_parameters())["fc1.weight"] != before[3]["fc1.weight"]).float().mean() > 0.5


def test_same_config_gives_identical_results(splits, tmp_path):
    cfg = _config([LENET_TICKET], "sgd", iterations=12, eval_every=4)
    unit = group_cells(plan(cfg))[0]
    ticket = load_ticket(unit[0].ref)
    first = run_unit(unit, ticket, splits, cfg, tmp_path / "a", progress=False)
    again = run_unit(unit, ticket, splits, cfg, tmp_path / "b", progress=False)
    strip = [{k: v for k, v in m.items() if k not in TIMING_FIELDS} for m in (*first, *again)]
    assert strip[:4] == strip[4:]
    for cell in unit:
        assert _log(tmp_path / "a", cell) == _log(tmp_path / "b", cell)


def test_losses_are_returned_per_step_and_member(splits):
    ticket = load_ticket(plan(_config([LENET_TICKET], "sgd"))[0].ref)
    members = []
    for seed in (0, 1, 2):
        model, _ = _build(get_control("dense")(ticket, seed), 5, seed, True)
        members.append(Member(model, TrainConfig(optimizer="sgd", lr=0.05, iterations=6, batch_size=32, seed=seed)))
    losses: list[list[float]] = []
    train_ensemble(members, splits.train, splits.val, losses=losses)
    assert len(losses) == 6 and all(len(step) == 3 for step in losses)
    assert losses[0][0] != losses[0][1]  # different inits, different batches


def test_architectures_that_cannot_be_batched_are_named():
    resnet = create_model("resnet20_cifar", {"num_classes": 5, "in_chans": 1}, device="meta")
    assert "buffers" in architecture_problem(resnet)
    dropout_conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Dropout(0.1), nn.Flatten(), nn.LazyLinear(5))
    assert "dropout" in architecture_problem(dropout_conv)
    for arch in ("lenet_300_100", "conv2", "conv4", "conv6"):
        assert architecture_problem(create_model(arch, {"num_classes": 5}, device="meta")) is None, arch

    cfgs = [TrainConfig(iterations=5, seed=s) for s in (0, 1)]
    lin = [nn.Linear(2, 2), nn.Linear(2, 2)]
    assert batchable(lin, cfgs)
    assert not batchable(lin[:1], cfgs[:1])  # one member: nothing to batch
    assert "amp" in why_not_batchable(lin, [TrainConfig(iterations=5, seed=s, amp=True) for s in (0, 1)])
    assert "num_workers" in why_not_batchable(lin, [TrainConfig(iterations=5, seed=s, num_workers=1) for s in (0, 1)])
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from ()

    stream = Stream()
    assert "stream" in why_not_batchable(lin, cfgs, stream)
    with pytest.raises(ConfigError, match="cannot train these 2 runs as one ensemble: .*buffers"):
        bn = [nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)) for _ in range(2)]
        data = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.zeros(8, dtype=torch.long))
        train_ensemble([Member(m, c) for m, c in zip(bn, cfgs, strict=True)], data, data)


def test_batchnorm_networks_train_one_by_one(splits, tmp_path, monkeypatch):
    """resnet20_cifar (BatchNorm): one unit per run, and a unit forced together still runs cell by cell."""
    ticket = digits_ticket("resnet20_cifar", {"num_classes": 5, "in_chans": 1}, 0.5, steps=0)
    save(ticket, tmp_path / "resnet")
    cfg = _config([str(tmp_path / "resnet")], "sgd", controls=("winning",), iterations=3, eval_every=3)
    cells = plan(cfg)
    assert [len(u) for u in group_cells(cells)] == [1, 1]
    calls = []
    monkeypatch.setattr("ticket_zoo.transfer_cells.run_cell", lambda c, *a: calls.append(c) or run_cell(c, *a))
    metrics = run_unit(cells, load_ticket(cells[0].ref), splits, cfg, tmp_path / "out", progress=False)
    assert calls == cells and [m["batched"] for m in metrics] == [1, 1]


def _today(cells: list[Cell]) -> list[list[Cell]]:
    """The grouping before batching: one unit per run, in plan order."""
    units: dict[str, list[Cell]] = {}
    for cell in cells:
        units.setdefault(cell.run_id, []).append(cell)
    return list(units.values())


def test_grouping_without_batch_is_todays_and_with_batch_keeps_runs_together(tmp_path):
    # Two tickets of one architecture from two sources: their dense cells share runs across sources.
    for level, density in ((1, 0.4), (2, 0.15)):
        ticket = digits_ticket("lenet_300_100", {"num_classes": 5, "in_chans": 1, "img_size": 8}, density,
                               steps=0, level=level)  # fmt: skip
        ticket = ticket.with_(meta={**ticket.meta, "source": f"digits-copy{level}"})
        save(ticket, tmp_path / f"level_{level:02d}")
    cfg = TransferConfig.from_dict({
        "tickets": [str(tmp_path)], "targets": ["digits[5-9]"], "optimizers": OPTIMIZERS,
        "controls": ["winning", "reinit", "dense"], "seeds": [0, 1], "train": {"iterations": 4},
    })  # fmt: skip
    cfg.validate()
    cells = plan(cfg)
    assert group_cells(cells, batch=False) == _today(cells)

    units = group_cells(cells)
    assert group_cells(cells) == units  # deterministic
    assert sorted(c.cell_id for u in units for c in u) == sorted(c.cell_id for c in cells)  # each cell once
    assert len(units) == 4  # 2 tickets x 2 optimizers
    firsts = [u[0] for u in units]
    assert firsts == [c for c in cells if c in firsts]  # plan order
    for unit in units:
        own = [c for c in unit if c.ref.digest == unit[0].ref.digest]
        assert {(c.ref.digest, c.target, c.optimizer) for c in unit if c.control != "dense"} == {
            (unit[0].ref.digest, unit[0].target, unit[0].optimizer)
        }
        assert len(own) >= 4
    run_units = {c.run_id: i for i, u in enumerate(units) for c in u}
    assert all(run_units[c.run_id] == i for i, u in enumerate(units) for c in u)  # a run is never split
    dense_shared = [u for u in units if len({c.ref.digest for c in u}) > 1]
    assert dense_shared and all(c.control == "dense" for u in dense_shared for c in u if c.ref.digest != u[0].ref.digest)


def test_a_members_run_does_not_depend_on_the_other_members(splits, tmp_path):
    """A unit resumed with fewer pending runs (some rows recorded) gives the remaining runs the same numbers."""
    cfg = _config([LENET_TICKET], "sgd", seeds=(0, 1, 2), iterations=12, eval_every=4)
    unit = group_cells(plan(cfg))[0]
    ticket = load_ticket(unit[0].ref)
    full = run_unit(unit, ticket, splits, cfg, tmp_path / "full", progress=False)
    part = run_unit(unit[3:], ticket, splits, cfg, tmp_path / "part", progress=False)
    strip = ("batched", *TIMING_FIELDS)
    assert [{k: v for k, v in m.items() if k not in strip} for m in full[3:]] == [
        {k: v for k, v in m.items() if k not in strip} for m in part
    ]
    assert all(_log(tmp_path / "full", c) == _log(tmp_path / "part", c) for c in unit[3:])
