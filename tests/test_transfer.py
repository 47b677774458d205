"""The transfer grid: end to end on real digits, resume after SIGKILL, skipping, bad configs."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import LENET, digits_ticket
from ticket_zoo.api import save
from ticket_zoo.errors import ConfigError
from ticket_zoo.runfiles import read_rows
from ticket_zoo.transfer_cells import plan
from ticket_zoo.transfer_grid import TIMING_FIELDS, TransferConfig, register_cli, transfer

transfer_mod = importlib.import_module("ticket_zoo.transfer_grid")
REPO = Path(__file__).resolve().parents[1]
CONTROLS = ["winning", "random_ticket", "reinit", "dense"]
TRAIN = {"iterations": 12, "batch_size": 32, "eval_every": 6, "checkpoint_every": 3}
OPTIMIZERS = {
    "sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
    "adam": {"optimizer": "adam", "lr": 1e-3},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> Path:
    """A find-style output directory: two lenet tickets of digits[0-4] at 40% and 15%."""
    root = tmp_path_factory.mktemp("find")
    for level, density in ((1, 0.4), (2, 0.15)):
        save(digits_ticket("lenet_300_100", LENET, density, steps=6, level=level), root / f"level_{level:02d}")
    return root


def _config(family: Path, **changes) -> TransferConfig:
    fields = dict(tickets=[str(family)], targets=["digits[5-9]"], optimizers=OPTIMIZERS, controls=CONTROLS,
                  seeds=[0], train=TRAIN)  # fmt: skip
    fields.update(changes)
    return TransferConfig(**fields)


def _stable(rows: list[dict]) -> list[dict]:
    return sorted(
        ({k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows), key=lambda r: r["cell"]
    )


@pytest.fixture(scope="module")
def reference(family: Path, tmp_path_factory) -> tuple[Path, list[dict], list[tuple]]:
    """One uninterrupted run; records (control, model, masks) of every trained cell."""
    import ticket_zoo.train as train_mod

    out = tmp_path_factory.mktemp("ref")
    trained: list[tuple] = []
    real = train_mod.train

    def spy(model, *args, masks=None, **kwargs):
        result = real(model, *args, masks=masks, **kwargs)
        trained.append((model, masks))
        return result

    mp = pytest.MonkeyPatch()
    mp.setattr(train_mod, "train", spy)
    try:
        # One cell at a time (batch=False): the spy sees every training; batched units are test_ensemble's.
        rows = transfer(_config(family), out, progress=False, report=True, batch=False)
    finally:
        mp.undo()
    return out, rows, trained


def test_end_to_end_rows(reference, family: Path) -> None:
    out, rows, trained = reference
    # 2 tickets x 3 ticket controls x 2 optimizers x 1 seed, plus one dense run per optimizer.
    assert len(rows) == 2 * 3 * 2 + 2
    assert len(trained) == len(rows)
    assert [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()] == rows
    assert (out / "report.json").is_file() and (out / "report.png").is_file()
    for r in rows:
        assert r["target"] == "digits[5-9]" and r["source"] == "digits[0-4]" and r["arch"] == "lenet_300_100"
        assert 0 <= r["test_acc"] <= 100 and r["steps"] == 12 and 0 <= r["best_step"] <= 12
        assert r["versions"]["torch"] == torch.__version__
        assert r["train_config"]["seed"] == r["seed"]
        if r["control"] == "dense":
            assert r["density"] == 1.0 and r["ticket_density"] is None and r["ticket"] is None
        else:
            assert r["density"] == pytest.approx(r["ticket_density"])
            assert r["ticket_density"] in (pytest.approx(0.4, abs=1e-3), pytest.approx(0.15, abs=1e-3))
            assert r["ticket"] == f"lenet_300_100-l{r['level']}"  # the ticket's name (else its path)
    # Winning tickets learned the new classes (5 classes: chance is 20%).
    winning = [r["test_acc"] for r in rows if r["control"] == "winning"]
    assert sum(winning) / len(winning) > 50
    # Learning curves are kept; checkpoints of recorded cells are removed.
    assert len(list((out / "cells").glob("*/log.jsonl"))) == len(rows)
    assert not list((out / "cells").glob("*/ckpt/*"))


def test_pruned_weights_exactly_zero_in_every_cell(reference) -> None:
    _, rows, trained = reference
    densities = []
    for model, masks in trained:
        params = dict(model.named_parameters())
        if masks is None:  # dense: nothing pruned
            densities.append(1.0)
            continue
        kept = sum(int(m.sum()) for m in masks.values())
        densities.append(kept / sum(m.numel() for m in masks.values()))
        for name, mask in masks.items():
            assert not bool(params[name][~mask].any()), name
            assert not bool(mask.all())
    assert sorted(round(d, 2) for d in densities) == sorted(round(r["density"], 2) for r in rows)


def test_leaked_weight_fails_loudly(family: Path, tmp_path: Path, monkeypatch) -> None:
    import ticket_zoo.train as train_mod

    real = train_mod.train

    def leaky(model, *args, masks=None, **kwargs):
        result = real(model, *args, masks=masks, **kwargs)
        name, mask = next(iter(masks.items()))
        with torch.no_grad():
            dict(model.named_parameters())[name][~mask] = 0.5
        return result

    monkeypatch.setattr(train_mod, "train", leaky)
    with pytest.raises(RuntimeError, match="pruned weights .* non-zero"):
        transfer(_config(family, controls=["winning"], optimizers={"adam": OPTIMIZERS["adam"]}), tmp_path,
                 progress=False, report=False)  # fmt: skip
    assert not (tmp_path / "results.jsonl").exists() or not (tmp_path / "results.jsonl").read_text()


def test_rerun_skips_finished_cells(reference, family: Path, monkeypatch) -> None:
    out, rows, _ = reference
    before = (out / "results.jsonl").read_bytes()
    import ticket_zoo.train as train_mod

    def boom(*a, **k):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(train_mod, "train", boom)
    again = transfer(_config(family), out, progress=False, report=False)
    assert again == rows
    assert (out / "results.jsonl").read_bytes() == before


def test_sigkill_mid_grid_then_resume_gives_same_results(reference, family: Path, tmp_path: Path) -> None:
    ref_out, ref_rows, _ = reference
    out = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"
    cfg = _config(family).to_dict()
    recipe.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ticket_zoo.cli", "transfer", "--config", str(recipe), "--out", str(out),
           "--quiet", "--no-report", "--no-batch"]  # fmt: skip (cells one by one: each has a checkpoint)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 90

    def recorded_runs() -> set[str]:
        runs = set()
        for line in results.read_bytes().splitlines() if results.exists() else []:
            try:
                runs.add(json.loads(line)["run"])
            except ValueError:  # the writer is mid-line
                pass
        return runs

    try:
        while time.monotonic() < deadline and proc.poll() is None:
            runs = recorded_runs()
            # Kill only when a cell is part-way: it has a checkpoint and no row yet.
            in_flight = {p.parent.parent.name for p in (out / "cells").glob("*/ckpt/checkpoint.safetensors")}
            if len(runs) >= 2 and in_flight - runs:
                break
            time.sleep(0.01)
        assert proc.poll() is None, (
            f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    unfinished = {p.parent.parent.name for p in (out / "cells").glob("*/ckpt/checkpoint.safetensors")}
    assert unfinished - recorded_runs(), "the kill should leave a cell part-way with a checkpoint"
    killed_rows = read_rows(results)
    assert 2 <= len(killed_rows) < len(ref_rows)
    # What a writer killed mid-line leaves behind: a torn last line. It must be dropped, not kept.
    with open(results, "ab") as f:
        f.write(b'{"cell": "torn", "test_a')
    with pytest.warns(UserWarning, match="unreadable last line"):
        rows = transfer(recipe, out, progress=False, report=False)
    assert _stable(rows) == _stable(ref_rows)
    assert _stable(read_rows(results)) == _stable(read_rows(ref_out / "results.jsonl"))
    assert results.read_bytes().endswith(b"\n") and b"torn" not in results.read_bytes()


def test_results_file_repairs_only_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"cell": "a"}\n{"cell": "b"}\n{"cell": "c", "te')
    with pytest.warns(UserWarning, match="last line 3"):
        assert [r["cell"] for r in read_rows(path, repair=True)] == ["a", "b"]  # as transfer resumes
    assert path.read_bytes() == b'{"cell": "a"}\n{"cell": "b"}\n'
    path.write_bytes(b'{"cell": "a"}\nnot json\n{"cell": "b"}\n')
    with pytest.raises(ConfigError, match="line 2"):
        read_rows(path, repair=True)


def test_full_density_controls_share_runs(tmp_path: Path) -> None:
    t = digits_ticket("lenet_300_100", LENET, 1.0, steps=0)
    save(t, tmp_path / "full")
    cfg = TransferConfig(tickets=[str(tmp_path / "full")], targets=["digits[5-9]"], optimizers={"adam": {}},
                         controls=["winning", "random_ticket", "reinit", "random_mask", "dense"], seeds=[0],
                         train={"iterations": 5})  # fmt: skip
    cfg.validate()
    runs = {c.control: c.run_id for c in plan(cfg)}
    assert runs["random_ticket"] == runs["reinit"] == runs["dense"]
    assert runs["random_mask"] == runs["winning"] != runs["dense"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"targets": ["digitz[5-9]"]}, "targets[0]"),
        ({"optimizers": {"ada": {"optimizer": "adagrad"}}}, "optimizers.ada"),
        ({"optimizers": {"adam": {"optimizer": "adam", "lrr": 0.1}}}, "optimizers.adam"),
        ({"controls": ["winning", "random"]}, "controls must be one of"),
        ({"tickets": ["no/such/ticket"]}, "tickets[0]"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"train": {"iterations": 5, "seed": 3}}, "train.seed"),
        ({"train": {}}, "optimizers.sgd"),  # no budget
        ({"input_size": (1, 4, 4)}, "tickets[0]"),  # lenet built for 8x8 cannot take 4x4
        ({"input_size": (3, 8, 8)}, "tickets[0]"),  # a 1-channel ticket
    ],
)
def test_bad_configs_rejected_before_training(
    family: Path, tmp_path: Path, changes: dict, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        transfer(_config(family, **changes), tmp_path / "out", progress=False, report=False)
    assert field in str(info.value)
    assert not (tmp_path / "out").exists()


def test_from_yaml_reads_overrides_and_rejects_unknown_keys(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "tickets: a\ntargets: [digits]\noptimizers: {adam: {optimizer: adam}}\ntrain: {iterations: 3}\n"
    )
    cfg = TransferConfig.from_yaml(recipe, {"train": {"batch_size": 8}, "seeds": [4]})
    assert cfg.tickets == ["a"] and cfg.seeds == [4] and cfg.controls == CONTROLS
    assert cfg.train == {"iterations": 3, "batch_size": 8}  # a train override merges
    assert TransferConfig.from_dict(cfg.to_dict()) == cfg
    recipe.write_text("tickets: [a]\ntargets: [digits]\noptimizers: {adam: {}}\nseed: [0]\n")
    with pytest.raises(ConfigError, match="did you mean 'seeds'"):
        TransferConfig.from_yaml(recipe)
    with pytest.raises(ConfigError, match="does not exist"):
        TransferConfig.from_yaml(tmp_path / "missing.yaml")


def test_cli_parses_and_overrides(monkeypatch, tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="ticket-zoo")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["transfer", "--ticket", "a", "b", "--target", "digits[5-9]", "--out", str(tmp_path),
                              "--optimizers", "adam", "--seeds", "0", "1", "--iterations", "7", "--quiet"])  # fmt: skip
    seen = {}
    monkeypatch.setattr(transfer_mod, "transfer", lambda cfg, out, **kw: seen.update(cfg=cfg, kw=kw) or [])
    assert args.func(args) == 0
    cfg = seen["cfg"]
    assert cfg.tickets == ["a", "b"] and cfg.seeds == [0, 1]
    assert cfg.optimizers == {"adam": transfer_mod.OPTIMIZER_PRESETS["adam"]}
    assert cfg.train_config("adam").iterations == 7
    assert seen["kw"] == {"progress": False, "report": True, "workers": "auto"}  # the CLI's default: parallel
    bad = parser.parse_args(
        ["transfer", "--ticket", "a", "--target", "d", "--out", "o", "--optimizers", "adan"]
    )
    with pytest.raises(ConfigError, match="did you mean 'adam'"):
        bad.func(bad)


# --- validate() reads nothing; plan() reads the tickets --------------------------------------------


def test_validate_reads_no_ticket_and_planning_names_a_missing_one(family: Path, tmp_path: Path, monkeypatch) -> None:
    import dataclasses

    import ticket_zoo.api as api

    def no_loading(*a, **k):
        raise AssertionError("validate() loaded a ticket")

    missing = tmp_path / "runs" / "no_such_find"
    cfg = _config(family, tickets=[str(family), str(missing)])
    before = dataclasses.replace(cfg)
    with monkeypatch.context() as m:
        m.setattr(api, "load", no_loading)
        cfg.validate()  # the missing path is not looked at, nor is the existing find directory read
    assert cfg == before and set(vars(cfg)) == {f.name for f in dataclasses.fields(cfg)}  # no state kept
    with pytest.raises(ConfigError) as info:
        plan(cfg)
    message = str(info.value)
    assert message.startswith(f"tickets[1]: {missing} does not exist") and "\n" not in message
    with pytest.raises(ConfigError, match=r"tickets\[1\]: .*no_such_find does not exist"):
        transfer(cfg, tmp_path / "out", progress=False, report=False)
    assert not (tmp_path / "out").exists()


def test_unknown_control_fails_validate_with_a_suggestion(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("tickets: [t]\ntargets: [digits]\noptimizers: {adam: {optimizer: adam}}\n"
                      "train: {iterations: 3}\ncontrols: [winnin]\n")  # fmt: skip
    cfg = TransferConfig.from_yaml(recipe)
    with pytest.raises(ConfigError, match=r"^controls must be one of .*got 'winnin' \(did you mean 'winning'\?\)"):
        cfg.validate()


def test_seeds_take_the_range_of_train_seeds() -> None:
    cfg = TransferConfig(["t"], ["digits"], {"adam": {"optimizer": "adam"}}, train={"iterations": 3},
                         seeds=[0, 2**32 - 1])  # fmt: skip
    cfg.validate()
    assert cfg.train_config("adam", seed=2**32 - 1).seed == 2**32 - 1
    with pytest.raises(ConfigError, match="^seeds must be"):
        cfg.replace(seeds=[2**32]).validate()
    with pytest.raises(ConfigError, match="^seeds must be"):
        cfg.replace(seeds=[-1]).validate()


def test_overrides_mean_what_apply_overrides_says_plus_one_budget_for_the_grid() -> None:
    raw = {"tickets": ["t"], "targets": ["digits"], "seeds": [0, 1],
           "train": {"epochs": 2, "batch_size": 8},
           "optimizers": {"sgd": {"optimizer": "sgd", "epochs": 3}, "adam": {"optimizer": "adam", "iterations": 4}}}  # fmt: skip
    mapping = TransferConfig.from_dict(raw, {"train": {"iterations": 5}})
    dotted = TransferConfig.from_dict(raw, {"train.iterations": 5})
    assert mapping == dotted
    # train.iterations replaces train.epochs, and is the budget of every cell: optimizers' own budgets go.
    assert dotted.train == {"iterations": 5, "batch_size": 8}
    assert dotted.optimizers == {"sgd": {"optimizer": "sgd"}, "adam": {"optimizer": "adam"}}
    dotted.validate()
    assert dotted.train_config("sgd").iterations == dotted.train_config("adam").iterations == 5
    # ... unless an optimizer's budget is overridden too; then it overrides train's for that optimizer.
    both = TransferConfig.from_dict(raw, {"train.iterations": 5, "optimizers.sgd.epochs": 1})
    assert both.optimizers["sgd"] == {"optimizer": "sgd", "epochs": 1}
    assert both.train_config("sgd").epochs == 1 and both.train_config("sgd").iterations is None
    # Inside one optimizer, a budget replaces the other budget; train is left alone.
    one = TransferConfig.from_dict(raw, {"optimizers.sgd.iterations": 7})
    assert one.optimizers["sgd"] == {"optimizer": "sgd", "iterations": 7} and one.train == raw["train"]
    # A top-level list replaces the recipe's.
    assert TransferConfig.from_dict(raw, {"seeds": [5]}).seeds == [5]
    assert TransferConfig.from_dict(raw, {"targets": ["digits[0-4]"]}).targets == ["digits[0-4]"]


# --- results written before the schema change still resume ------------------------------------------

# Computed by the transfer engine before the config schema (ticket_zoo/transfer_engine.py at b495735):
# (control, ticket label, cell id, run id) of the grid of _OLD_GRID over the embedded 5% ticket and
# a full-density copy of it ("full").
_OLD_IDS = [
    ("winning", "lenet_300_100-digits04-5pct", "lenet_300_100-winning-digits_5-9-sgd-s7-599392b7757543de",
     "lenet_300_100-winning-digits_5-9-sgd-s7-599392b7757543de"),
    ("random_ticket", "lenet_300_100-digits04-5pct", "lenet_300_100-random_ticket-digits_5-9-sgd-s7-3edc624e540451d2",
     "lenet_300_100-random_ticket-digits_5-9-sgd-s7-3edc624e540451d2"),
    ("reinit", "lenet_300_100-digits04-5pct", "lenet_300_100-reinit-digits_5-9-sgd-s7-350ebb6e29bbccfd",
     "lenet_300_100-reinit-digits_5-9-sgd-s7-350ebb6e29bbccfd"),
    ("random_mask", "lenet_300_100-digits04-5pct", "lenet_300_100-random_mask-digits_5-9-sgd-s7-2a9d7d59c18eba38",
     "lenet_300_100-random_mask-digits_5-9-sgd-s7-2a9d7d59c18eba38"),
    ("dense", "lenet_300_100-digits04-5pct", "lenet_300_100-dense-digits_5-9-sgd-s7-e60aff86ca9ed85d@digits[0-4]",
     "lenet_300_100-dense-digits_5-9-sgd-s7-e60aff86ca9ed85d"),
    ("winning", "full", "lenet_300_100-winning-digits_5-9-sgd-s7-b17d0a32f658295b",
     "lenet_300_100-winning-digits_5-9-sgd-s7-b17d0a32f658295b"),
    ("random_ticket", "full", "lenet_300_100-dense-digits_5-9-sgd-s7-e60aff86ca9ed85d@random_ticket:4ac9f2ebe7669fc8",
     "lenet_300_100-dense-digits_5-9-sgd-s7-e60aff86ca9ed85d"),
    ("reinit", "full", "lenet_300_100-dense-digits_5-9-sgd-s7-e60aff86ca9ed85d@reinit:4ac9f2ebe7669fc8",
     "lenet_300_100-dense-digits_5-9-sgd-s7-e60aff86ca9ed85d"),
    ("random_mask", "full", "lenet_300_100-winning-digits_5-9-sgd-s7-b17d0a32f658295b@random_mask:4ac9f2ebe7669fc8",
     "lenet_300_100-winning-digits_5-9-sgd-s7-b17d0a32f658295b"),
]  # fmt: skip
_OLD_GRID = {
    "targets": ["digits[5-9]"],
    "optimizers": {"sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}},
    "controls": ["winning", "random_ticket", "reinit", "random_mask", "dense"],
    "seeds": [7],
    # housekeeping fields are not part of a cell's identity, then as now
    "train": {"iterations": 5, "batch_size": 32, "device": "cpu", "checkpoint_every": 2, "num_workers": 0},
}


def test_cell_ids_and_families_are_those_of_the_engine_before_the_schema(tmp_path: Path, monkeypatch) -> None:
    import ticket_zoo
    import ticket_zoo.train as train_mod

    five = ticket_zoo.load("lenet_300_100-digits04-5pct")
    full = five.with_(masks={k: torch.ones_like(m) for k, m in five.masks.items()}, meta={**five.meta, "name": "full"})
    save(full, tmp_path / "full")
    cfg = TransferConfig.from_dict({"tickets": ["lenet_300_100-digits04-5pct", str(tmp_path / "full")], **_OLD_GRID})
    cfg.validate()
    cells = plan(cfg)
    assert [(c.control, c.ref.label, c.cell_id, c.run_id) for c in cells] == _OLD_IDS
    assert {c.ref.family for c in cells} == {"lenet_300_100-digits04@c96e49b7", "full@c96e49b7"}

    # A results.jsonl with those cells (rows as the old engine wrote them): nothing is trained again.
    out = tmp_path / "out"
    out.mkdir()
    old_rows = [{"cell": cell, "run": run, "control": control, "ticket": label, "test_acc": 50.0 + i}
                for i, (control, label, cell, run) in enumerate(_OLD_IDS)]  # fmt: skip
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old_rows))

    def boom(*a, **k):
        raise AssertionError("a cell recorded before the change was trained again")

    monkeypatch.setattr(train_mod, "train", boom)
    assert transfer(cfg, out, progress=False, report=False) == old_rows


def test_cli_device_and_set_are_overrides(monkeypatch, tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="ticket-zoo")
    register_cli(parser.add_subparsers(dest="command"))
    seen = {}
    monkeypatch.setattr(transfer_mod, "transfer", lambda cfg, out, **kw: seen.update(cfg=cfg) or [])
    args = parser.parse_args(["transfer", "--config", "transfer-digits", "--out", str(tmp_path), "--device", "cpu",
                              "--seeds", "1", "--set", "seeds=[3, 4]", "--set", "optimizers.sgd.lr=0.01",
                              "--limit", "50", "--controls", "winning", "dense"])  # fmt: skip
    assert args.func(args) == 0
    cfg = seen["cfg"]
    assert cfg.train["device"] == "cpu" and cfg.train["iterations"] == 300  # the recipe's train is kept
    assert cfg.seeds == [3, 4]  # --set is applied after the flags
    assert cfg.optimizers["sgd"]["lr"] == 0.01 and cfg.optimizers["adam"]["lr"] == 0.0012
    assert cfg.limit == 50 and cfg.controls == ["winning", "dense"]
    with pytest.raises(SystemExit):  # ranges are checked as the flags are parsed
        parser.parse_args(["transfer", "--out", "o", "--limit", "0"])
