"""``ticket-zoo find`` and ``ticket-zoo transfer`` under torchrun (2 gloo processes on CPU) against
the same commands in one process: same tickets, same result rows, and rank 0 alone writes.

One torchrun launch (``tests/torchrun_worker.py``) runs three commands in the same two processes, so
imports and the rendezvous are paid once: a tiny find (LeNet-300-100 on digits, 3 levels with late
resetting), a transfer of the *one-process* tickets (so both transfers see the very same tickets and
plan the same cells), and a find of another config into the finished run, which rank 0 refuses
before any training and which must stop both ranks with the same error rather than hang one.

Tolerances. DDP with gloo splits each global batch of B examples into two halves of B/2 and
averages the two half-batch mean gradients in an all-reduce; one process takes one full-batch mean.
The two sums add the same numbers in a different order, so weights differ in the last float bits
(measured: at most ~6e-7 after 40 Adam steps; tests/test_train.py accepts 1e-5 too). That is:
weights (θk and final) within 1e-5; masks and densities identical (magnitude pruning of weights that
close gives the same masks here; a weight within ~1e-6 of the pruning threshold could flip, which
would show up as a mask difference and is the one thing that could legitimately make this test
flaky on another machine); accuracies equal or within one example of the split (100 / n points),
measured equal in every level and cell; losses within 1e-4 relative; everything else (cells, runs,
steps, densities, configs, row count) exactly equal.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import safetensors.torch
import torch
import yaml

import ticket_zoo
from ticket_zoo import _dist
from ticket_zoo.cli import main as cli_main
from ticket_zoo.errors import ConfigError, OutputDirError
from ticket_zoo.transfer_grid import TIMING_FIELDS

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "torchrun_worker.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
LEVELS = 3  # levels 0..2: level 2 prunes the final weights level 1 trained under DDP

FIND = {
    "arch": "lenet_300_100",
    "dataset": "digits",
    "scope": "layerwise",
    "prune_fraction": 0.2,
    "head_prune_fraction": 0.1,
    "rewind": 10,  # late resetting: levels >= 1 read θ10 (rewind.safetensors) that rank 0 wrote
    "levels": LEVELS - 1,
    "seed": 0,
    "train": {"optimizer": "adam", "lr": 1.2e-3, "batch_size": 60, "iterations": 40, "eval_every": 20,
              "checkpoint_every": 20},
}  # fmt: skip
TRANSFER = {
    "targets": ["digits[5-9]"],
    "optimizers": {"adam": {"optimizer": "adam", "lr": 1e-3}},
    "controls": ["winning", "random_ticket"],
    "seeds": [0],
    "train": {"iterations": 24, "batch_size": 32, "eval_every": 6, "checkpoint_every": 3},
}
# 3 tickets x 2 controls; on the dense level-0 ticket random_ticket is the dense run (deduplicated).
N_CELLS = 6
ACCURACIES = ("val_acc", "test_acc", "final_test_acc", "final_val_acc")
FINAL = "final.safetensors"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun")
    find_recipe = root / "find.yaml"
    find_recipe.write_text(yaml.safe_dump(FIND))
    transfer_recipe = root / "transfer.yaml"
    transfer_recipe.write_text(yaml.safe_dump({"tickets": [str(root / "one")], **TRANSFER}))
    torch.set_num_threads(1)

    # One process (in this one): the reference find, whose tickets both transfers use.
    assert cli_main(["find", "--config", str(find_recipe), "--out", str(root / "one"), "--quiet"]) == 0
    commands = [
        ["find", "--config", str(find_recipe), "--out", str(root / "two"), "--quiet"],
        ["transfer", "--config", str(transfer_recipe), "--out", str(root / "t2")],  # bars + table: rank 0
        ["find", "--config", str(find_recipe), "--out", str(root / "two"), "--quiet", "--seed", "5"],
    ]
    torchrun = Path(sys.executable).with_name("torchrun")
    argv = [str(torchrun), "--standalone", "--nproc_per_node=2", str(WORKER), str(root), str(root / "audit")]
    for command in commands:
        argv += ["--", *command]
    proc = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # One cell at a time in plan order, as under torchrun (DDP trains every cell across the ranks: one
    # worker, no batched seeds), so the two results files list the cells in the same order.
    assert cli_main(["transfer", "--config", str(transfer_recipe), "--out", str(root / "t1"), "--quiet",
                     "--no-batch", "--workers", "1"]) == 0  # fmt: skip
    audits = [json.loads((root / "audit" / f"rank{r}.json").read_text()) for r in (0, 1)]
    return SimpleNamespace(root=root, proc=proc, audits=audits)


def one_example(dataset: str, **kwargs) -> dict[str, float]:
    """100 / n of each split: the accuracy step of one example."""
    from ticket_zoo.data import load_splits

    s = load_splits(dataset, **kwargs)
    return {"val": 100 / len(s.val), "test": 100 / len(s.test)}


def close_acc(a: float | None, b: float | None, step: float) -> bool:
    return (a is None and b is None) or abs(a - b) <= step + 1e-9


@pytest.mark.slow
def test_find_two_processes_match_one_process(runs):
    one, two = runs.root / "one", runs.root / "two"
    step = one_example("digits", seed=0)
    # config.yaml written once, by rank 0, with the same effective config (and the refused --seed 5
    # run did not replace it).
    assert (one / "config.yaml").read_text() == (two / "config.yaml").read_text()
    a, b = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert a["fingerprint"] == b["fingerprint"] and a["config"] == b["config"]
    assert len(a["levels"]) == len(b["levels"]) == LEVELS
    for ra, rb in zip(a["levels"], b["levels"], strict=True):
        assert {k: ra[k] for k in ("level", "density", "start_step", "steps", "path")} == {
            k: rb[k] for k in ("level", "density", "start_step", "steps", "path")
        }
        assert close_acc(ra["val_acc"], rb["val_acc"], step["val"])
        for key in ("test_acc", "final_test_acc"):
            assert close_acc(ra[key], rb[key], step["test"]), (ra, rb)

    for level in range(LEVELS):
        ta, tb = (ticket_zoo.load(d / f"level_{level:02d}") for d in (one, two))
        assert ta.density == tb.density
        assert ta.masks.keys() == tb.masks.keys()
        for name in ta.masks:
            assert torch.equal(ta.masks[name], tb.masks[name]), (level, name)
        for name in ta.init:  # θ10 of level 0's run, masked
            torch.testing.assert_close(tb.init[name], ta.init[name], atol=1e-5, rtol=0, msg=name)
        fa, fb = (safetensors.torch.load_file(str(d / f"level_{level:02d}" / FINAL)) for d in (one, two))
        for name in fa:
            torch.testing.assert_close(fb[name], fa[name], atol=1e-5, rtol=0, msg=name)
        assert ta.meta["best_step"] == tb.meta["best_step"]
        assert close_acc(ta.meta["source_test_acc"], tb.meta["source_test_acc"], step["test"])
    assert not list(two.glob("level_*/.ckpt"))  # training checkpoints removed once a level is done


@pytest.mark.slow
def test_transfer_two_processes_match_one_process(runs):
    t1, t2 = runs.root / "t1", runs.root / "t2"
    step = one_example("digits[5-9]", input_size=(1, 8, 8), val_fraction=0.1, seed=0)
    a, b = ([json.loads(line) for line in (d / "results.jsonl").read_text().splitlines()] for d in (t1, t2))
    # Exactly one row per cell, the same cells in the same order.
    assert len(b) == len(a) == N_CELLS
    assert len({r["cell"] for r in b}) == N_CELLS
    assert [r["cell"] for r in b] == [r["cell"] for r in a]
    assert [r["run"] for r in b] == [r["run"] for r in a]
    exact = set(a[0]) - set(TIMING_FIELDS) - set(ACCURACIES) - {"best_step"}
    for ra, rb in zip(a, b, strict=True):
        assert {k: ra[k] for k in exact} == {k: rb[k] for k in exact}
        for key in ACCURACIES:
            assert close_acc(ra[key], rb[key], step["val" if "val" in key else "test"]), (key, ra, rb)
        if ra["val_acc"] == rb["val_acc"]:
            assert ra["best_step"] == rb["best_step"]
        # One learning curve per run, written by rank 0 alone (no duplicated lines).
        la, lb = ((d / "cells" / ra["run"] / "log.jsonl").read_text().splitlines() for d in (t1, t2))
        assert len(lb) == len(la) == 4
        for ha, hb in zip(map(json.loads, la), map(json.loads, lb), strict=True):
            assert ha["step"] == hb["step"]
            assert math.isclose(ha["train_loss"], hb["train_loss"], rel_tol=1e-4)
    assert (t1 / "transfer.json").read_text() == (t2 / "transfer.json").read_text()
    assert json.loads((t2 / "report.json").read_text())["summary"]
    assert not list(t2.glob("cells/*/ckpt"))


@pytest.mark.slow
def test_rank_0_alone_writes_and_prints(runs):
    root = runs.root
    assert [c["code"] for c in runs.audits[0]] == [c["code"] for c in runs.audits[1]] == [0, 0, 2]
    for command in runs.audits[1]:
        assert command["changes"] == [], command["argv"]  # rank 1 created, replaced or deleted nothing
    find, transfer, _ = ({tuple(c) for c in command["changes"]} for command in runs.audits[0])
    replaced = {Path(p) for event, p in find if event == "os.rename"}  # atomic writes end in os.replace
    two = root / "two"
    expected = {two / "config.yaml", two / "summary.json", two / "rewind.safetensors"}
    for level in range(LEVELS):
        ldir = two / f"level_{level:02d}"
        expected |= {ldir / n for n in ("ticket.safetensors", "README.md", "final.safetensors", "done.json")}
        expected.add(ldir / ".ckpt" / "checkpoint.safetensors")
    expected = {p.resolve() for p in expected}
    assert expected <= replaced, sorted(map(str, expected - replaced))
    # Every results row appended once: rank 0 opened results.jsonl for appending once per cell.
    results = str((root / "t2" / "results.jsonl").resolve())
    appends = [c for c in runs.audits[0][1]["changes"] if c == ["open", results]]
    assert len(appends) == N_CELLS
    written = {Path(p).name for e, p in transfer if e == "os.rename"}
    assert {"transfer.json", "report.json", "report.csv"} <= written
    # Tables and bars: printed once (rank 0). find prints its table even with --quiet.
    out = runs.proc.stdout
    assert out.count("level   density") == 1, out
    assert out.count("| ticket family | target |") == 1, out


@pytest.mark.slow
def test_config_error_on_rank_0_stops_every_rank(runs):
    # Rank 0 alone checks OUT (an OutputDirError or a config mismatch would surface there); rank 1
    # raises the same error from the shared outcome instead of waiting in the next collective.
    message = "holds a run with a different config (seed: 0 -> 5)"
    # Both ranks exit with code 2 and print the same line (the two may interleave on one stderr).
    line = f"ticket-zoo: error: {runs.root / 'two'} {message}"
    assert runs.proc.stderr.count(line) == 2, runs.proc.stderr[-3000:]
    assert [c["code"] for c in runs.audits[0]][2] == [c["code"] for c in runs.audits[1]][2] == 2
    assert yaml.safe_load((runs.root / "two" / "config.yaml").read_text())["seed"] == 0


def _as_rank(monkeypatch, rank: int, peer: bytes, fn, *args):
    """``fn(*args)`` (``_dist.on_main`` / ``together``) as ``rank`` of a 2-process group whose other rank
    sends ``peer``: torch.distributed is faked in this process, the exchange itself is _dist's own.
    Returns (the result, or the exception raised; the bytes this rank sent)."""
    dist, sent = torch.distributed, {}

    def all_gather(out, t):  # _dist sends the payload sizes first (int64), then the padded payloads
        other = 1 - rank
        out[rank].copy_(t)
        if t.dtype == torch.int64:
            sent["size"] = int(t[0])
            out[other].fill_(len(peer))
        else:
            sent["bytes"] = bytes(t[: sent["size"]].numpy())
            out[other].zero_()
            if peer:
                out[other][: len(peer)] = torch.frombuffer(bytearray(peer), dtype=torch.uint8)

    with monkeypatch.context() as m:
        m.setattr(dist, "is_available", lambda: True)
        m.setattr(dist, "is_initialized", lambda: True)
        m.setattr(dist, "get_world_size", lambda: 2)
        m.setattr(dist, "get_rank", lambda: rank)
        m.setattr(dist, "get_backend", lambda: "gloo")
        m.setattr(dist, "all_gather", all_gather)
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - the caller checks what was raised
            result = exc
    return result, sent["bytes"]


def _raise(exc: BaseException):
    raise exc


def test_shared_errors_keep_their_class_and_message(monkeypatch):
    """How another rank's failure is raised here (the one-process path is a plain call)."""
    assert _dist.on_main(lambda: {"a": [1]}) == {"a": [1]} and _dist.together(lambda: 2) == 2
    ok = b'{"ok": true}'  # what a rank whose fn returned sends in together()
    # together(): the failing rank raises its own error; the other rank the same class and message.
    for exc in (OutputDirError("--out x: no"), PermissionError(13, "Permission denied", "/x")):
        own, sent = _as_rank(monkeypatch, 0, ok, _dist.together, _raise, exc)
        assert own is exc
        err, _ = _as_rank(monkeypatch, 1, sent, _dist.together, lambda: 2)
        assert type(err) is type(exc) and str(err) == str(exc)
        if isinstance(exc, OSError):
            assert err.errno == 13 and err.filename == "/x"  # OSError picks PermissionError from errno
        else:
            assert isinstance(err, ConfigError)
    # Anything else arrives as a RuntimeError naming the failing rank.
    own, sent = _as_rank(monkeypatch, 1, ok, _dist.together, _raise, ValueError("bad"))
    assert isinstance(own, ValueError)
    err, _ = _as_rank(monkeypatch, 0, sent, _dist.together, lambda: 2)
    assert type(err) is RuntimeError and str(err) == "rank 1 failed with ValueError: bad"
    # on_main(): rank 0 runs fn, the other rank gets its JSON result or its error (and runs nothing).
    value, sent = _as_rank(monkeypatch, 0, b"", _dist.on_main, lambda: {"a": [1]})
    assert value == {"a": [1]}
    assert _as_rank(monkeypatch, 1, sent, _dist.on_main, _raise, AssertionError("ran on rank 1"))[0] == {"a": [1]}
    own, sent = _as_rank(monkeypatch, 0, b"", _dist.on_main, _raise, OutputDirError("--out y: no"))
    err, _ = _as_rank(monkeypatch, 1, sent, _dist.on_main, lambda: 1)
    assert isinstance(own, OutputDirError) and type(err) is OutputDirError and str(err) == "--out y: no"
