"""Parallel cells: the thread policy, workers 1 vs 2 bit for bit, SIGKILL of the parent, worker failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ticket_zoo.errors import ConfigError, TicketZooError
from ticket_zoo.runfiles import read_rows
from ticket_zoo.transfer_grid import TIMING_FIELDS, TransferConfig, transfer
from ticket_zoo.workers import UnitRunner, choose, default_threads, parameter_count, torch_threads

REPO = Path(__file__).resolve().parents[1]
TICKET = "lenet_300_100-digits04-5pct"
GRID = {
    "tickets": [TICKET],
    "targets": ["digits[5-9]"],
    "optimizers": {"adam": {"optimizer": "adam", "lr": 1e-3}},
    "controls": ["winning", "random_ticket"],
    "seeds": [0, 1],
    "train": {"iterations": 20, "batch_size": 32, "eval_every": 10, "checkpoint_every": 2},
}


def _stable(rows: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows), key=lambda r: r["cell"])


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The grid in this process (workers=1), one unit per cell (no batching: 4 units for the pool)."""
    out = tmp_path_factory.mktemp("w1")
    return out, transfer(TransferConfig.from_dict(GRID), out, progress=False, report=False, workers=1, batch=False)


# --- the policy --------------------------------------------------------------------------------------------


def test_policy_threads_from_the_model_size_workers_from_the_cores() -> None:
    from ticket_zoo.transfer_cells import TicketRef

    ref = TicketRef(TICKET, TICKET, "lenet_300_100", {"num_classes": 5, "in_chans": 1, "img_size": 8},
                    (1, 8, 8), "digits[0-4]", 0.05, 3, "d", 5)  # fmt: skip
    small = parameter_count(ref)
    assert 10_000 < small < 5_000_000
    assert default_threads([small], cores=8) == 1 and default_threads([small, 6_000_000], cores=8) == 8
    assert choose(workers=None, threads=None, parameters=[small], units=100, cores=8, world_size=1) == (8, 1)
    assert choose(workers=None, threads=None, parameters=[20_000_000], units=100, cores=8, world_size=1) == (1, 8)
    assert choose(workers=None, threads=2, parameters=[small], units=100, cores=8, world_size=1) == (4, 2)
    assert choose(workers=None, threads=None, parameters=[small], units=100, cores=8, gpu=True, world_size=1) == (1, 1)
    assert choose(workers=5, threads=None, parameters=[small], units=3, cores=8, world_size=1) == (3, 1)
    # under torchrun: one worker, threads from the cores each local rank gets
    assert choose(workers=None, threads=None, parameters=[20_000_000], units=9, cores=8, world_size=2)[0] == 1
    with pytest.raises(ConfigError, match=r"^--workers 2 under torchrun: .*workers must be 1") as err:
        choose(workers=2, threads=None, parameters=[small], units=9, cores=8, world_size=2)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="--threads must be a whole number >= 1"):
        choose(workers=1, threads=0, parameters=[small], units=9, cores=8, world_size=1)


def test_threads_are_applied_and_the_callers_count_restored(tmp_path: Path) -> None:
    import torch

    with torch_threads(2):
        seen = []
        real = torch.set_num_threads
        try:  # the in-process path runs on the policy's count, then gives the caller's back
            torch.set_num_threads = lambda n: (seen.append(n), real(n))[1]
            transfer(TransferConfig.from_dict({**GRID, "controls": ["winning"], "seeds": [0]}), tmp_path,
                     progress=False, report=False, workers=1, threads=1)  # fmt: skip
        finally:
            torch.set_num_threads = real
        assert seen[0] == 1 and torch.get_num_threads() == 2


def test_torchrun_refuses_more_workers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="under torchrun"):
        choose(workers=2, threads=None, parameters=[1], units=4, cores=2)


# --- same rows for any number of workers -----------------------------------------------------------------


def test_two_workers_give_the_rows_of_one_bit_for_bit(one_worker, tmp_path: Path) -> None:
    ref_out, ref_rows = one_worker
    rows = transfer(TransferConfig.from_dict(GRID), tmp_path, progress=False, report=False, workers=2, batch=False)
    assert len(rows) == 4 and _stable(rows) == _stable(ref_rows)
    # each cell recorded exactly once, by the parent
    assert sorted(r["cell"] for r in read_rows(tmp_path / "results.jsonl")) == sorted(r["cell"] for r in ref_rows)
    assert not list((tmp_path / "cells").glob("*/ckpt"))  # every recorded run's checkpoint removed


def test_worker_failure_is_the_original_error_in_the_parent(tmp_path: Path) -> None:
    import shutil

    import ticket_zoo
    from ticket_zoo.transfer_cells import group_cells, plan

    ticket_dir = tmp_path / "ticket"
    ticket_zoo.save(ticket_zoo.load(TICKET), ticket_dir)
    cfg = TransferConfig.from_dict({**GRID, "tickets": [str(ticket_dir)]})
    cfg.validate()
    units = group_cells(plan(cfg), batch=False)
    shutil.rmtree(ticket_dir)  # gone after planning: every worker's load fails
    runner = UnitRunner(cfg, tmp_path / "out", workers=2, threads=1, progress=False)
    with pytest.raises(TicketZooError) as err, runner:
        list(runner.run(units))
    assert str(ticket_dir) in str(err.value) and "\n" not in str(err.value)
    assert all(not p.is_alive() for p in runner._procs) and runner._procs == []


def test_a_script_without_a_main_guard_runs_once_with_workers(one_worker, tmp_path: Path) -> None:
    """spawn would re-run the caller's script in every worker; a user's script calling transfer(workers=2)
    with no ``if __name__ == "__main__":`` must run once and get the same rows."""
    marker = tmp_path / "ran.txt"
    script = tmp_path / "my_grid.py"
    script.write_text(
        "import json, sys\n"
        "from ticket_zoo.transfer_grid import TransferConfig, transfer\n"
        f"open({str(marker)!r}, 'a').write('top-level ran\\n')\n"
        f"rows = transfer(TransferConfig.from_dict({GRID!r}), {str(tmp_path / 'out')!r}, progress=False,\n"
        "                report=False, workers=2, threads=1, batch=False)\n"
        "print(json.dumps(rows))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert marker.read_text() == "top-level ran\n"  # once: not again in each of the two workers
    assert _stable(json.loads(done.stdout)) == _stable(one_worker[1])


def test_workers_that_exit_without_their_results_are_an_error_not_a_hang(tmp_path: Path, monkeypatch) -> None:
    from ticket_zoo import workers

    cfg = TransferConfig.from_dict(GRID)
    cfg.validate()
    from ticket_zoo.transfer_cells import group_cells, plan

    units = group_cells(plan(cfg), batch=False)

    class Quiet:  # a worker process that exits at once, cleanly, having sent nothing
        def __init__(self, *a, **k):
            self.name, self.exitcode = "ticket-zoo-worker-1", 0

        def start(self):
            pass

        def is_alive(self):
            return False

        def kill(self):
            pass

        def join(self, timeout=None):
            pass

    import multiprocessing

    real = multiprocessing.get_context

    def fake_context(method):
        ctx = real(method)
        monkeypatch.setattr(ctx, "Process", Quiet)
        return ctx

    monkeypatch.setattr(multiprocessing, "get_context", fake_context)
    runner = workers.UnitRunner(cfg, tmp_path / "out", workers=2, threads=1, progress=False)
    with pytest.raises(RuntimeError, match=r"every transfer worker exited with 4 unit\(s\) left"), runner:
        list(runner.run(units))


# --- kill -9 of the parent -----------------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        kids |= {int(p) for p in task.read_text().split()}
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_the_parent_kills_the_workers_and_a_rerun_finishes_exactly_once(one_worker, tmp_path: Path) -> None:
    _, ref_rows = one_worker
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(GRID))
    out = tmp_path / "out"
    results = out / "results.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ticket_zoo.cli", "transfer", "--config", str(recipe), "--out", str(out),
           "--workers", "2", "--no-batch", "--no-progress", "--no-report"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            workers |= _children(proc.pid)
            if results.exists() and results.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        workers |= _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert workers, "the run should have started worker processes"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers), "a worker outlived its killed parent"
    killed = read_rows(results)
    assert 1 <= len(killed) < 4
    # resumed in this process: the same rows whatever the number of workers
    rows = transfer(recipe, out, progress=False, report=False, workers=1, batch=False)
    final = read_rows(results)
    assert sorted(r["cell"] for r in final) == sorted(r["cell"] for r in ref_rows)  # exactly one row per cell
    assert _stable(final) == _stable(ref_rows) == _stable(rows)
    assert [json.dumps(r, sort_keys=True) for r in final[: len(killed)]] == [
        json.dumps(r, sort_keys=True) for r in killed
    ]
