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
    OUT/transfer.json            the resolved config of the last run
    OUT/cells/<run>/log.jsonl    the learning curve of each run (one line per evaluation)
    OUT/cells/<run>/ckpt/        the train checkpoint of a run in progress (removed when recorded)

Resuming: re-running the same command skips every cell already in ``results.jsonl`` (cells are
identified by a hash of what decides their result, see :mod:`ticket_zoo.transfer_cells`); a cell
killed mid-way resumes from its train checkpoint; a torn last line left by a killed writer is
dropped before anything is appended (:func:`ticket_zoo.runfiles.read_rows`). One process per ``OUT``
at a time (or one torchrun job, whose rank 0 alone writes).

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
from .runfiles import append_row, read_rows
from .transfer_cells import METRICS, Cell, cell_row, load_ticket, plan, run_cell

__all__ = ["OPTIMIZER_PRESETS", "RESULTS_FILE", "TIMING_FIELDS", "TransferConfig", "register_cli", "transfer"]

RESULTS_FILE = "results.jsonl"
#: Fields of a result row that measure the machine, not the experiment.
TIMING_FIELDS = ("train_seconds", "images_per_second", "finished_at")


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
) -> list[dict[str, Any]]:
    """Run (or resume) the transfer grid into ``out_dir``; return the rows of this grid's cells.

    ``config`` is a :class:`TransferConfig`, the path of a recipe YAML or a shipped recipe's name
    (``"transfer-digits"``). ``overrides`` are the CLI's ``--set KEY=VALUE`` as a mapping, with the
    meaning of :func:`ticket_zoo.config.apply_overrides`, e.g. ``{"train.iterations": 50, "seeds": [0, 1]}``.
    The config is validated, then the grid planned (every ticket loaded once and checked against its
    input size), before anything is written or trained. Cells already in ``out_dir/results.jsonl``
    are skipped; a cell killed mid-way resumes from its checkpoint. With ``report`` the report
    (:mod:`ticket_zoo.report`) is written at the end.

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
    from .data import load_splits

    if not isinstance(config, TransferConfig):
        cfg = TransferConfig.from_yaml(config, overrides)
    elif overrides:
        cfg = TransferConfig.from_dict(config.to_dict(), overrides)
    else:
        cfg = config
    # Under torchrun every rank joins the process group here, before anything is read or written;
    # rank 0 alone writes (transfer.json, results rows, report) and every rank gets its rows.
    train_device = cfg.train.get("device", "auto") if isinstance(cfg.train, Mapping) else "auto"
    ctx = _dist.setup(train_device)
    # together: a failure on any rank (a ticket one rank cannot read) stops every rank.
    _dist.together(cfg.validate)
    cells = _dist.together(plan, cfg)
    out = Path(out_dir)
    results_path = out / RESULTS_FILE
    existing = _dist.on_main(_open_out, out, cfg, cells)
    by_cell = {r["cell"]: r for r in existing if isinstance(r.get("cell"), str)}
    by_run = {r["run"]: r for r in existing if isinstance(r.get("run"), str)}
    pending = [c for c in cells if c.cell_id not in by_cell]
    # A bar on a terminal; in a log file one line per cell and a summary (progress.py).
    show = bool(progress) and ctx.main
    bar = _progress.bar(total=len(cells), initial=len(cells) - len(pending), desc="transfer", unit="cell",
                        enabled=show)  # fmt: skip
    number = {c.cell_id: i for i, c in enumerate(cells, 1)}
    started = time.perf_counter()
    splits_key: tuple | None = None
    splits = None
    loaded: tuple[str, Any] | None = None
    try:
        for cell in pending:
            cell_started = time.perf_counter()
            bar.set_postfix_str(
                f"{cell.control} {cell.target} {cell.optimizer} d={cell.ref.density:.3g} s{cell.seed}"
            )
            done = by_run.get(cell.run_id)
            if done is not None:  # another cell of the same run is recorded: its metrics are this cell's
                metrics = {k: done.get(k) for k in METRICS}
            else:
                key = (cell.target, cell.ref.input_size)
                if key != splits_key:  # cells are ordered by target, so each target loads once per size
                    # together: a failed download on one rank stops every rank instead of leaving it waiting
                    splits = _dist.together(load_splits, cell.target, input_size=cell.ref.input_size,
                                            val_fraction=cfg.val_fraction, seed=cfg.data_seed, limit=cfg.limit)  # fmt: skip
                    splits_key = key
                if loaded is None or loaded[0] != cell.ref.digest:
                    loaded = (cell.ref.digest, load_ticket(cell.ref))
                metrics = run_cell(cell, loaded[1], splits, cfg, out, progress)
            # Rank 0 appends the one row of this cell; every rank keeps that very row (its timing).
            row = _dist.on_main(_record, results_path, cell_row(cell, metrics, cfg), out / "cells" / cell.run_id)
            by_cell[cell.cell_id] = row
            by_run.setdefault(cell.run_id, row)
            bar.update(1)
            took = "same run as a recorded cell" if done is not None else _progress.seconds(time.perf_counter() - cell_started)
            _progress.line(
                f"transfer cell {number[cell.cell_id]}/{len(cells)}: {cell.control} {cell.ref.label} -> {cell.target} "
                f"{cell.optimizer} seed {cell.seed}: test {_progress.percent(metrics.get('test_acc'))} ({took})",
                enabled=show,
            )
    finally:
        bar.close()
    before = f", {len(cells) - len(pending)} recorded before" if len(pending) < len(cells) else ""
    _progress.line(
        f"transfer done: {len(cells)} cells{before} in {_progress.seconds(time.perf_counter() - started)}; "
        f"results in {results_path}",
        enabled=show,
    )
    rows = [by_cell[c.cell_id] for c in cells]
    if report:
        _dist.on_main(_report, out, progress)
    return rows


def _open_out(out: Path, cfg: TransferConfig, cells: list[Cell]) -> list[dict[str, Any]]:
    """Rank 0, before any training: prepare OUT, tidy what a killed run left, write transfer.json;
    return the rows already recorded."""
    # A file in the way, no permission, /proc, a read-only disk: one OutputDirError line, up front.
    prepare_out_dir(out, what="--out")
    # Temporaries of atomic writes a killed run left behind, where the grid writes (not all of OUT,
    # which may be a shared folder holding other programs' files).
    remove_stale_temps(out, recursive=False)
    remove_stale_temps(out / "cells")
    existing = read_rows(out / RESULTS_FILE, repair=True)  # a torn last line is cut before we append
    atomic_write_text(out / "transfer.json", json.dumps(cfg.to_dict(), indent=2, default=str) + "\n")
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
    rows = transfer(cfg, args.out, progress=not args.no_progress, report=not args.no_report)
    if _dist.is_main() and _progress.interactive():  # in a log, the "transfer done" line already says it
        print(f"{len(rows)} cells recorded in {Path(args.out) / RESULTS_FILE}", file=sys.stderr)
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
