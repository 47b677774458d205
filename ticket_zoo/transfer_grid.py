"""The transfer grid: tickets × controls × targets × optimizers × seeds, resumable per cell.

This module owns the grid's config (:class:`TransferConfig`, declared on :mod:`ticket_zoo.config`),
the driver (:func:`transfer`: validate, plan, skip what is recorded, run the rest, record, report),
the output folder and ``ticket-zoo transfer``. What a cell is, how the cells are planned from the
tickets and how one cell runs is :mod:`ticket_zoo.transfer_cells`.

The grid is what Morcos et al. (2019) ran: winning tickets from a source task against random
tickets (random mask *and* random init), same-mask re-initializations and the dense network, on
other datasets and with other optimizers, over several seeds. Each cell fine-tunes its control of a
ticket on the target with a fresh head while pruned weights stay exactly zero, and appends one JSON
line to ``OUT/results.jsonl``.

Layout of ``OUT``::

    OUT/results.jsonl            one row per finished cell (the report reads it)
    OUT/results.shard-K-of-N.jsonl   the rows of shard K of N (--shard K/N), merged by the report
    OUT/plan.json                every planned cell id and its unit (the report names missing cells)
    OUT/transfer.json            the resolved config of the last run
    OUT/submitit/                the jobs' logs of --submit slurm|local
    OUT/cells/<run>/log.jsonl    the learning curve of each run (one line per evaluation)
    OUT/cells/<run>/ckpt/        the train checkpoint of a run in progress (removed when recorded)

Resuming: re-running the same command skips every cell already in ``results.jsonl`` (cells are
identified by a hash of what decides their result, see :mod:`ticket_zoo.transfer_cells`); a cell
killed mid-way resumes from its train checkpoint; a torn last line left by a killed writer is
dropped before anything is appended (:func:`ticket_zoo.runfiles.read_rows`). One process per ``OUT``
and results file at a time (or one torchrun job, whose rank 0 alone writes): shards of one grid
(:mod:`ticket_zoo.shards`) may run at once, each appending to its own file; worker processes
(:mod:`ticket_zoo.workers`) only train, the parent appends every row.

Example (a miniature grid: a catalogue ticket shipped in the package, offline digits, 20 steps a cell):

    >>> cfg = TransferConfig.from_dict({"tickets": ["runs/demo/find"], "targets": ["digits[5-9]"],
    ...                                 "optimizers": {"adam": {"optimizer": "adam", "lr": 1e-3}},
    ...                                 "train": {"iterations": 300, "batch_size": 64}})
    >>> cfg.validate()  # reads no ticket: runs/demo/find need not exist yet
    >>> import tempfile
    >>> cfg = TransferConfig.from_dict(cfg.to_dict(), {"tickets": ["lenet_300_100-digits04-5pct"],
    ...                                "controls": ["winning", "random_ticket"], "seeds": [0], "train.iterations": 20})
    >>> out = tempfile.mkdtemp()
    >>> rows = transfer(cfg, out, progress=False, report=False)
    >>> [(r["control"], r["target"], r["optimizer"], r["seed"], r["steps"]) for r in rows]
    [('winning', 'digits[5-9]', 'adam', 0, 20), ('random_ticket', 'digits[5-9]', 'adam', 0, 20)]
    >>> transfer(cfg, out, progress=False, report=False) == rows  # resumed: every cell is recorded already
    True
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import _dist
from . import progress as _progress
from ._io import atomic_write_text, prepare_out_dir, remove_stale_temps
from .config import parse_set
from .configs import (  # the schema; re-exported here, where it was declared before
    _BUDGET,
    DEFAULT_CONTROLS,  # noqa: F401
    DEFAULT_TRANSFER_TRAIN,
    OPTIMIZER_PRESETS,
    TrainConfig,  # noqa: F401
    TransferConfig,
    transfer_arguments,
)
from .errors import ConfigError, did_you_mean
from .runfiles import append_row
from .shards import (
    RESULTS_FILE,
    TIMING_FIELDS,
    missing_cells,
    parse_shard,
    read_recorded,
    results_name,
    shard_units,
    write_plan,
)
from .transfer_cells import METRICS, Cell, TicketRef, cell_row, group_cells, plan

__all__ = ["OPTIMIZER_PRESETS", "RESULTS_FILE", "TIMING_FIELDS", "TransferConfig", "pending_shards", "register_cli",
           "run_shard", "transfer"]



# --- config ----------------------------------------------------------------------------------------


# TransferConfig is declared in configs.py (torch-free, so the CLI builds --help without torch).


# --- the grid --------------------------------------------------------------------------------------


def transfer(
    config: TransferConfig | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    report: bool = True,
    workers: int | str | None = None,
    threads: int | None = None,
    shard: tuple[int, int] | str | None = None,
    batch: bool = True,
) -> list[dict[str, Any]]:
    """Run (or resume) the transfer grid into ``out_dir``; return the rows of this grid's cells.

    ``config`` is a :class:`TransferConfig`, the path of a recipe YAML or a shipped recipe's name
    (``"transfer-digits"``). ``overrides`` are the CLI's ``--set KEY=VALUE`` as a mapping, with the
    meaning of :func:`ticket_zoo.config.apply_overrides`, e.g. ``{"train.iterations": 50, "seeds": [0, 1]}``.
    The config is validated, then the grid planned (every ticket loaded once and checked against its
    input size), before anything is written or trained. Cells already recorded in any results file
    of ``out_dir`` are skipped; a cell killed mid-way resumes from its checkpoint. With ``report`` the
    report (:mod:`ticket_zoo.report`) is written at the end, by the run that completes the grid.

    Speed (:mod:`ticket_zoo.workers`): every unit of cells trains on ``threads`` torch threads
    (default: 1 for networks under 5M parameters, else all cores), applied to this process too (the
    caller's count is restored), so results do not depend on ``workers``. ``workers=None`` (the
    library default) trains here, in this process; ``workers="auto"`` (the CLI default) uses
    ``cores // threads`` worker processes; an int that many. ``batch`` lets seeds of one (ticket,
    target, optimizer) train as one unit where the architecture allows it
    (:func:`ticket_zoo.transfer_cells.group_cells`; ``--no-batch`` turns it off).

    Shards (:mod:`ticket_zoo.shards`): ``shard=(K, N)`` (or ``"K/N"``) runs only the units whose
    position in the plan is ``K-1`` modulo ``N`` and appends to ``out_dir/results.shard-K-of-N.jsonl``;
    it returns the rows of its own cells.

    Example (the shipped digits recipe, cut down by ``overrides`` to one ticket, one control, one seed and
    20 steps: two cells, one per optimizer of the recipe; the full recipe takes a minute or two):

        >>> import tempfile
        >>> rows = transfer("transfer-digits", tempfile.mkdtemp(), progress=False, report=False,
        ...                 overrides={"tickets": ["lenet_300_100-digits04-5pct"], "controls": ["winning"],
        ...                            "seeds": [0], "train.iterations": 20})
        >>> [(r["ticket"], r["control"], r["optimizer"], r["steps"]) for r in rows]
        [('lenet_300_100-digits04-5pct', 'winning', 'sgd', 20), ('lenet_300_100-digits04-5pct', 'winning', 'adam', 20)]
        >>> all(0 <= r["test_acc"] <= 100 for r in rows)  # accuracies in percent, one per cell
        True
    """
    from . import workers as _workers

    cfg = _resolve(config, overrides)
    shard = parse_shard(shard)
    if workers is not None and workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int)):
        raise ConfigError(f"workers must be a whole number >= 1 or 'auto', got {workers!r}")
    # Under torchrun every rank joins the process group here, before anything is read or written;
    # rank 0 alone writes (transfer.json, results rows, report) and every rank gets its rows.
    train_device = cfg.train.get("device", "auto") if isinstance(cfg.train, Mapping) else "auto"
    ctx = _dist.setup(train_device)
    # together: a failure on any rank (a ticket one rank cannot read) stops every rank.
    _dist.together(cfg.validate)
    cells = _dist.together(plan, cfg)
    # Units (cells that train together) over the whole plan: the shard partition never splits one.
    units = group_cells(cells, batch=batch)
    mine = shard_units(units, shard)
    my_cells = [c for u in mine for c in u]
    out = Path(out_dir)
    results_path = out / results_name(shard)
    existing = _dist.on_main(_open_out, out, cfg, cells, units, shard)
    by_cell: dict[str, dict[str, Any]] = {}
    by_run: dict[str, dict[str, Any]] = {}
    for r in existing:  # first row wins; the report checks that duplicates agree
        if isinstance(r.get("cell"), str):
            by_cell.setdefault(r["cell"], r)
        if isinstance(r.get("run"), str):
            by_run.setdefault(r["run"], r)
    todo = [[c for c in u if c.cell_id not in by_cell] for u in mine]
    todo = [u for u in todo if u]
    pending = sum(len(u) for u in todo)
    # A bar on a terminal; in a log file one line per cell and a summary (progress.py).
    show = bool(progress) and ctx.main
    bar = _progress.bar(total=len(my_cells), initial=len(my_cells) - pending, desc="transfer", unit="cell",
                        enabled=show)  # fmt: skip
    number = {c.cell_id: i for i, c in enumerate(my_cells, 1)}
    started = time.perf_counter()

    def record(cell: Cell, metrics: Mapping[str, Any], took: str) -> None:
        # Rank 0 (the parent, never a worker) appends the one row of this cell; every rank keeps it.
        row = _dist.on_main(_record, results_path, cell_row(cell, metrics, cfg), out / "cells" / cell.run_id)
        by_cell[cell.cell_id] = row
        by_run.setdefault(cell.run_id, row)
        bar.update(1)
        _progress.line(
            f"transfer cell {number[cell.cell_id]}/{len(my_cells)}: {cell.control} {cell.ref.label} -> {cell.target} "
            f"{cell.optimizer} seed {cell.seed}: test {_progress.percent(metrics.get('test_acc'))} ({took})",
            enabled=show,
        )

    how = ""
    try:
        # Cells whose run another recorded cell already trained take its metrics, untrained.
        to_run: list[list[Cell]] = []
        for unit in todo:
            for cell in [c for c in unit if c.run_id in by_run]:
                record(cell, {k: by_run[cell.run_id].get(k) for k in METRICS}, "same run as a recorded cell")
            rest = [c for c in unit if c.run_id not in by_run]
            if rest:
                to_run.append(rest)
        if to_run:
            n_workers, n_threads = _workers.choose(
                workers=None if workers == "auto" else (workers or 1), threads=threads,
                parameters=_parameters([c.ref for u in to_run for c in u]), units=len(to_run),
                gpu=_on_gpu(train_device),
            )  # fmt: skip
            # Said in the summary line, not up front: an error in a worker stays the only line.
            how = f" ({n_workers} workers x {n_threads} thread{'s' if n_threads > 1 else ''})" if n_workers > 1 else ""
            with _workers.UnitRunner(cfg, out, workers=n_workers, threads=n_threads,
                                     progress=bool(progress) and n_workers == 1) as runner:  # fmt: skip
                for i, all_metrics in runner.run(to_run):
                    for cell, metrics in zip(to_run[i], all_metrics, strict=True):
                        seconds = metrics.get("train_seconds")
                        took = _progress.seconds(seconds) if isinstance(seconds, (int, float)) else "done"
                        record(cell, metrics, took)
    finally:
        bar.close()
    before = f", {len(my_cells) - pending} recorded before" if pending < len(my_cells) else ""
    which = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    _progress.line(
        f"transfer done{which}: {len(my_cells)} cells{before} in "
        f"{_progress.seconds(time.perf_counter() - started)}{how}; results in {results_path}",
        enabled=show,
    )
    rows = [by_cell[c.cell_id] for c in cells if c.cell_id in number]  # plan order, whatever ran together
    if report:
        _dist.on_main(_report_if_complete, out, progress, shard is not None)
    return rows


def _resolve(config: TransferConfig | str | os.PathLike, overrides: Mapping[str, Any] | None) -> TransferConfig:
    if not isinstance(config, TransferConfig):
        return TransferConfig.from_yaml(config, overrides)
    if overrides:
        return TransferConfig.from_dict(config.to_dict(), overrides)
    return config


def _parameters(refs: list[TicketRef]) -> list[int]:
    """Parameter counts of the distinct architectures of ``refs`` (for the thread policy)."""
    from .workers import parameter_count

    seen: dict[str, int] = {}
    for ref in refs:
        key = json.dumps([ref.arch, ref.arch_kwargs], sort_keys=True, default=str)
        if key not in seen:
            seen[key] = parameter_count(ref)
    return list(seen.values())


def _on_gpu(device: Any) -> bool:
    if str(device).startswith("cuda"):
        return True
    if str(device) != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def _open_out(
    out: Path, cfg: TransferConfig, cells: list[Cell], units: list[list[Cell]], shard: tuple[int, int] | None
) -> list[dict[str, Any]]:
    """Rank 0, before any training: prepare OUT, tidy what a killed run left, write transfer.json and
    plan.json; return the rows already recorded in every results file of OUT."""
    # A file in the way, no permission, /proc, a read-only disk: one OutputDirError line, up front.
    prepare_out_dir(out, what="--out")
    # Temporaries of atomic writes a killed run left behind, where the grid writes (not all of OUT,
    # which may be a shared folder holding other programs' files). A shard tidies only its own cells:
    # other shards may be writing into OUT right now.
    if shard is None:
        remove_stale_temps(out, recursive=False)
        remove_stale_temps(out / "cells")
    else:
        for unit in shard_units(units, shard):
            for cell in unit:
                remove_stale_temps(out / "cells" / cell.run_id)
    # A torn last line of our own results file is cut before we append.
    existing = read_recorded(out, own=results_name(shard))
    atomic_write_text(out / "transfer.json", json.dumps(cfg.to_dict(), indent=2, default=str) + "\n")
    write_plan(out, [[c.cell_id for c in u] for u in units], shards=None if shard is None else shard[1])
    recorded = {r.get("cell") for r in existing}
    for cell in cells:  # a kill between "recorded" and "checkpoint removed" leaves a stale checkpoint
        if cell.cell_id in recorded:
            shutil.rmtree(out / "cells" / cell.run_id / "ckpt", ignore_errors=True)
    return existing


def _record(results_path: Path, row: dict[str, Any], cell_dir: Path) -> dict[str, Any]:
    """Rank 0: append the cell's row, then drop the run's checkpoint (the row now stands for it)."""
    append_row(results_path, row)
    shutil.rmtree(cell_dir / "ckpt", ignore_errors=True)
    return row


def _report_if_complete(out: Path, show: bool, sharded: bool) -> None:
    """Build the report when every planned cell is recorded (in any results file of OUT); else say
    what is missing (other shards still running) and how to build it later. An unsharded run has
    recorded every cell of its plan: it always builds the report."""
    if not sharded:
        _report(out, show)
        return
    recorded = {r.get("cell") for r in read_recorded(out)}
    missing, _, text = missing_cells(out, [c for c in recorded if isinstance(c, str)])
    if missing:
        print(f"ticket-zoo transfer: no report yet: {text}; `ticket-zoo report {out}` builds one at any time",
              file=sys.stderr)  # fmt: skip
        return
    _report(out, show)


def _report(out: Path, show: bool) -> None:
    from .report import build_report

    build_report(out, show=show)


# --- command line ------------------------------------------------------------------------------------


def _cli(args: argparse.Namespace) -> int:
    if args.config is None and (not args.tickets or not args.targets):
        raise ConfigError("without --config, give at least one --ticket and one --target")
    overrides = TransferConfig.flag_overrides(args)  # --ticket, --target, --controls, --seeds, --limit
    if args.device is not None:
        overrides["train.device"] = args.device
    if args.set:
        overrides.update(parse_set(args.set))
    if args.config is None:
        # No recipe: the documented budget (DEFAULT_TRANSFER_TRAIN) and, below, the optimizer presets.
        base = {"tickets": [], "targets": [], "optimizers": {}, "train": dict(DEFAULT_TRANSFER_TRAIN)}
        cfg = TransferConfig.from_dict(base, overrides)
    else:
        cfg = TransferConfig.from_yaml(args.config, overrides)
    if args.optimizer_names:
        chosen = {}
        for name in args.optimizer_names:
            if name in cfg.optimizers:
                chosen[name] = cfg.optimizers[name]
            elif name in OPTIMIZER_PRESETS:
                chosen[name] = dict(OPTIMIZER_PRESETS[name])
            else:
                known = sorted({*cfg.optimizers, *OPTIMIZER_PRESETS})
                raise ConfigError(
                    f"--optimizers: unknown optimizer {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}"
                )
        cfg = cfg.replace(optimizers=chosen)
    elif not cfg.optimizers:
        cfg = cfg.replace(optimizers=copy.deepcopy(OPTIMIZER_PRESETS))
    if args.iterations is not None:
        cfg = _replace_budget(cfg, args.iterations)
    speed = {"workers": getattr(args, "workers", "auto"), "threads": getattr(args, "threads", None),
             "batch": not getattr(args, "no_batch", False)}  # fmt: skip
    if getattr(args, "submit", None):
        return _submit(cfg, args, speed)
    if getattr(args, "shards", None) is not None:
        raise ConfigError("--shards N goes with --submit slurm|local; to run one shard yourself give --shard K/N")
    shard = parse_shard(getattr(args, "shard", None))
    # Only what differs from transfer()'s defaults (workers: the CLI's is "auto", the library's this process).
    given = {k: v for k, v in (*speed.items(), ("shard", shard)) if v != {"batch": True}.get(k)}
    rows = transfer(cfg, args.out, progress=not args.no_progress, report=not args.no_report, **given)
    if _dist.is_main() and _progress.interactive():  # in a log, the "transfer done" line already says it
        print(f"{len(rows)} cells recorded in {Path(args.out) / results_name(shard)}", file=sys.stderr)
    return 0


# --- shards as jobs (submitit) -----------------------------------------------------------------------


def run_shard(config: dict[str, Any], out: str, options: dict[str, Any], shard: tuple[int, int]) -> int:
    """What one job of ``--submit`` runs: shard ``shard`` of the grid ``config`` (a plain dict, as
    :meth:`TransferConfig.to_dict` gives) into ``out``, no report; the number of its cells.

    Top-level and taking plain data, so submitit pickles it by reference.
    """
    cfg = TransferConfig.from_dict(config)
    return len(transfer(cfg, out, shard=shard, report=False, **options))


def pending_shards(
    cfg: TransferConfig, out: str | os.PathLike, shards: int, *, batch: bool = True
) -> tuple[list[int], int]:
    """Plan the grid, write ``OUT/plan.json`` for ``shards`` shards; ``(shards with missing cells,
    missing cell count)``. What ``--submit`` calls before submitting anything."""
    cfg.validate()
    cells = plan(cfg)
    units = group_cells(cells, batch=batch)
    out = Path(out)
    prepare_out_dir(out, what="--out")
    write_plan(out, [[c.cell_id for c in u] for u in units], shards=shards)
    recorded = {r.get("cell") for r in read_recorded(out)}
    todo: list[int] = []
    missing = 0
    for k in range(1, shards + 1):
        left = sum(c.cell_id not in recorded for u in shard_units(units, (k, shards)) for c in u)
        if left:
            todo.append(k)
            missing += left
    return todo, missing


def _submit(cfg: TransferConfig, args: argparse.Namespace, speed: dict[str, Any]) -> int:
    """``--submit slurm|local --shards N``: one job array, one task per shard with missing cells."""
    from . import submit as _submit_mod
    from .workers import cores

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--submit under torchrun: submit from a plain shell; each job runs on its own")
    if getattr(args, "shard", None):
        raise ConfigError("--submit runs every shard; drop --shard K/N (or drop --submit to run one shard here)")
    n = args.shards
    if n is None:
        raise ConfigError(f"--submit {args.submit} needs --shards N (how many jobs to cut the grid into)")
    out = Path(args.out)
    todo, missing = pending_shards(cfg, out, n, batch=speed["batch"])
    say = (lambda text: print(text, file=sys.stderr)) if _dist.is_main() else (lambda text: None)
    if not todo:
        say(f"ticket-zoo transfer: every cell of the grid is recorded in {out}; nothing to submit")
        if not args.no_report:
            _report(out, not args.no_progress)
        return 0
    ex = _submit_mod.executor(
        args.submit, out, partition=args.slurm_partition, gpus_per_task=args.gpus_per_task or 0,
        cpus_per_task=args.cpus_per_task, timeout_min=args.timeout,
    )  # fmt: skip
    options = dict(speed)
    if args.submit == "local" and options["workers"] == "auto":
        # Local jobs share this machine's cores (a SLURM task sees only its own): one worker each.
        options["workers"] = max(1, cores() // max(1, len(todo)) // (options["threads"] or 1))
    options["progress"] = True
    jobs = _submit_mod.submit_shards(run_shard, (cfg.to_dict(), str(out.resolve()), options), todo, n, ex)
    ids = ", ".join(f"{k}/{n}: {job.job_id}" for k, job in zip(todo, jobs, strict=True))
    say(f"ticket-zoo transfer: submitted {len(jobs)} of {n} shards ({missing} cells to run) as jobs {ids}")
    logs = out / _submit_mod.SUBMITIT_DIR
    if args.submit == "slurm":
        first = str(jobs[0].job_id).split("_")[0]
        say(f"  follow them: squeue -j {first}; logs: {logs}/<job id>_0_log.err")
    else:
        say(f"  logs: {logs}/<job id>_0_log.err")
    if args.submit == "slurm" or args.no_wait:
        say(f"  when they finish: ticket-zoo report {out} (submit the same command again to finish any "
            "cells a killed job left)")  # fmt: skip
        return 0
    _submit_mod.wait(jobs, todo, n)
    say(f"ticket-zoo transfer: {len(jobs)} shard jobs finished")
    if not args.no_report:
        _report_if_complete(out, not args.no_progress, True)
    return 0


def _replace_budget(cfg: TransferConfig, iterations: int) -> TransferConfig:
    """``--iterations N``: a smoke-test budget everywhere. Step milestones (in the old budget's unit)
    cannot carry over, so a step schedule becomes constant; a note says so."""
    budget_keys = (*_BUDGET, "milestones")
    sections = [cfg.train, *[o or {} for o in cfg.optimizers.values()]]
    if any(sec.get("schedule") == "step" for sec in sections) and _dist.is_main():
        print(
            "ticket-zoo transfer: --iterations replaces the step schedule by a constant rate", file=sys.stderr
        )
    fixed = [{k: v for k, v in sec.items() if k not in budget_keys} for sec in sections]
    for sec in fixed:
        if sec.get("schedule") == "step":
            sec["schedule"] = "constant"
    return cfg.replace(
        train={**fixed[0], "iterations": iterations}, optimizers=dict(zip(cfg.optimizers, fixed[1:], strict=True))
    )


def register_cli(subparsers: Any) -> None:
    """Add ``ticket-zoo transfer`` to an argparse subparsers object.

    The options are declared in :func:`ticket_zoo.configs.transfer_arguments` (torch-free, for a quick
    ``--help``); ``--ticket``, ``--target``, ``--controls`` and ``--limit`` come from the
    :class:`TransferConfig` declarations, ``--seeds`` takes ranges and lists (``0-4``, ``0,2,5``).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="ticket-zoo")
        >>> register_cli(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["transfer", "--config", "r.yaml", "--out", "o", "--seeds", "0-1"])
        >>> args.seeds
        [0, 1]
    """
    transfer_arguments(subparsers).set_defaults(func=_cli)
