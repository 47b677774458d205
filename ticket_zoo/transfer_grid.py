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
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tqdm.auto import tqdm

from . import _dist
from ._io import atomic_write_text, prepare_out_dir, remove_stale_temps
from .config import Config, apply_overrides, flatten_overrides, parse_set, setting
from .controls import CONTROLS
from .errors import ConfigError, did_you_mean
from .runfiles import append_row, read_rows
from .train import TrainConfig
from .transfer_cells import METRICS, Cell, cell_row, check_input_size, load_ticket, plan, run_cell

__all__ = ["OPTIMIZER_PRESETS", "RESULTS_FILE", "TIMING_FIELDS", "TransferConfig", "register_cli", "transfer"]

#: Optimizers by name for the command line without a recipe (Morcos et al. 2019 defaults, *unverified*).
OPTIMIZER_PRESETS: dict[str, dict[str, Any]] = {
    "sgd": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
    "adam": {"optimizer": "adam", "lr": 3e-4},
}
DEFAULT_CONTROLS = ("winning", "random_ticket", "reinit", "dense")
RESULTS_FILE = "results.jsonl"
#: Fields of a result row that measure the machine, not the experiment.
TIMING_FIELDS = ("train_seconds", "images_per_second", "finished_at")
_BUDGET = ("iterations", "epochs")


# --- config ----------------------------------------------------------------------------------------


@dataclass
class TransferConfig(Config):
    """A transfer grid. Fields are what a recipe's YAML holds.

    ``train`` holds :class:`~ticket_zoo.train.TrainConfig` fields shared by every optimizer; each
    entry of ``optimizers`` holds TrainConfig fields that override them for that optimizer. ``seed``
    is set per cell from ``seeds``, in neither. Overrides (``--set``) follow
    :func:`ticket_zoo.config.apply_overrides`, plus one rule of the grid: setting the budget in
    ``train`` (``train.iterations`` or ``train.epochs``) sets it for every cell, so each optimizer's
    own budget is dropped unless it is overridden too.

    Example:
        >>> cfg = TransferConfig(tickets=["runs/demo/find"], targets=["digits[5-9]"],
        ...                      optimizers={"adam": {"optimizer": "adam", "lr": 1e-3}},
        ...                      train={"iterations": 100})
        >>> cfg.controls
        ['winning', 'random_ticket', 'reinit', 'dense']
        >>> raw = {"tickets": ["t"], "targets": ["digits"], "train": {"epochs": 2},
        ...        "optimizers": {"adam": {"optimizer": "adam", "epochs": 3}}}
        >>> cfg = TransferConfig.from_dict(raw, {"train.iterations": 9})
        >>> cfg.train, cfg.optimizers
        ({'iterations': 9}, {'adam': {'optimizer': 'adam'}})
    """

    section: ClassVar[str] = "transfer config"
    # Mappings of TrainConfig fields: overriding train.iterations drops train.epochs (and per optimizer).
    sections: ClassVar[dict[str, type[Config]]] = {"train": TrainConfig, "optimizers": TrainConfig}

    tickets: list[str] = setting(
        help="tickets: dir, .safetensors, catalogue name, hf-hub:org/name[@rev], or a find OUT (every ticket in it)",
        flag="--ticket", metavar="T",
    )  # fmt: skip
    targets: list[str] = setting(
        help="target datasets, e.g. digits[5-9] cifar10 imagefolder:PATH", flag="--target", metavar="D"
    )
    optimizers: dict[str, dict[str, Any] | None] = setting(
        help="optimizer name -> TrainConfig fields, e.g. {adam: {optimizer: adam, lr: 0.0003}}"
    )
    controls: list[str] = setting(
        default_factory=lambda: list(DEFAULT_CONTROLS),
        help=f"controls to run beside each ticket ({', '.join(CONTROLS.names())})",
        choices=CONTROLS.names, flag="--controls", metavar="C",
    )  # fmt: skip
    seeds: list[int] = setting(
        default_factory=lambda: [0, 1, 2],
        help="one run per seed (head init, control draw, data order)",
        low=0, high=2**32, high_open=True, flag="--seeds", metavar="S",
    )  # fmt: skip
    train: dict[str, Any] = setting(
        default_factory=dict, help="TrainConfig fields shared by all optimizers (budget, batch size, schedule, ...)"
    )
    input_size: tuple[int, int, int] | None = setting(
        None, help="(C, H, W) the target is resized to, C in (1, 3); default: each ticket's own input size"
    )
    new_head: bool = setting(
        True, help="replace the classifier even when the target has as many classes as the source"
    )
    val_fraction: float = setting(
        0.1, help="fraction of the target's train split held out for validation",
        low=0, high=1, low_open=True, high_open=True,
    )  # fmt: skip
    data_seed: int = setting(0, help="seed of the target's val split and subsample (same for every cell)", low=0)
    limit: int | None = setting(
        None, help="read at most N examples per split of each target", low=1, flag="--limit", metavar="N"
    )

    @classmethod
    def recipe_kind(cls) -> str:
        return "transfer"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> TransferConfig:
        """Build from a recipe mapping, ``overrides`` applied (see the class docstring).

        A single name where a list is expected (``tickets: t``, ``seeds: 0``) is a one-item list.

        Example:
            >>> TransferConfig.from_dict({"tickets": "t", "targets": ["digits"],
            ...                           "optimizers": {"adam": {"optimizer": "adam"}}}).tickets
            ['t']
        """
        if not isinstance(d, Mapping):
            return super().from_dict(d)  # the base's one-line error
        data = dict(d)
        if overrides:
            data = apply_overrides(data, overrides, cls)
            _one_budget(data, flatten_overrides(overrides))
        for key in ("tickets", "targets", "controls"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        if isinstance(data.get("seeds"), int) and not isinstance(data.get("seeds"), bool):
            data["seeds"] = [data["seeds"]]
        if "train" in data and data["train"] is None:
            data["train"] = {}
        return super().from_dict(data)

    def train_config(self, optimizer: str, seed: int = 0, target: str | None = None) -> TrainConfig:
        """The effective :class:`~ticket_zoo.train.TrainConfig` of ``optimizer`` for ``seed``.

        ``train`` fields, overridden by the optimizer's own (as :func:`~ticket_zoo.config.apply_overrides`
        says), then ``seed``. Where neither sets ``augment``, a ``target`` brings its dataset's default
        (``"cifar"`` crops and flips for CIFAR, none for digits, whose meaning a flip can change).

        Example:
            >>> cfg = TransferConfig(["t"], ["digits"], {"adam": {"optimizer": "adam", "lr": 1e-3}},
            ...                      train={"iterations": 10})
            >>> cfg.train_config("adam", seed=2).lr
            0.001
        """
        if optimizer not in self.optimizers:
            raise ConfigError(f"optimizers: no optimizer named {optimizer!r}; have {list(self.optimizers)}")
        try:
            merged = apply_overrides(dict(self.train), dict(self.optimizers[optimizer] or {}), TrainConfig)
            merged["seed"] = seed
            if target is not None and "augment" not in merged:
                from .data import get_spec

                merged["augment"] = get_spec(target).augment
            return TrainConfig.from_dict(merged)
        except ConfigError as exc:
            raise ConfigError(f"optimizers.{optimizer}: {exc}") from None

    def check(self) -> None:
        """Rules across fields: nothing empty or listed twice, seeds only from ``seeds``, every
        optimizer's merged train config valid, every target a known dataset.

        Tickets are not read here (:func:`ticket_zoo.transfer_cells.plan` does that), so a config can
        be checked before its tickets exist.

        Example:
            >>> TransferConfig(["t"], ["no_such_data"], {"adam": {"iterations": 5}}).validate()  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ticket_zoo.errors.ConfigError: targets[0]: unknown dataset 'no_such_data'...
            >>> TransferConfig(["t"], ["digits"], {"adam": {"iterations": 5}}, controls=["winnin"]).validate()
            Traceback (most recent call last):
            ...
            ticket_zoo.errors.ConfigError: controls must be one of 'winning', 'random_ticket', 'reinit', 'random_mask', 'dense', got 'winnin' (did you mean 'winning'?)
        """
        for name in ("tickets", "targets", "controls", "seeds"):
            value = getattr(self, name)
            if not value:
                raise ConfigError(f"{name} must list at least one entry")
            twice = sorted({v for v in value if value.count(v) > 1}, key=str)
            if twice:
                raise ConfigError(f"{name} lists {twice[0]!r} twice: {value!r}")
        if "seed" in self.train:
            raise ConfigError("train.seed: seeds come from the 'seeds' list, one run per seed; remove train.seed")
        if not self.optimizers:
            raise ConfigError(
                "optimizers must be a non-empty mapping name -> TrainConfig fields, e.g. "
                "{adam: {optimizer: adam, lr: 0.0003}}"
            )
        for name, opts in self.optimizers.items():
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
                raise ConfigError(f"optimizers: name {name!r} must be letters, digits, '_', '.', '+' or '-'")
            if opts and "seed" in opts:
                raise ConfigError(f"optimizers.{name}.seed: seeds come from the 'seeds' list; remove it")
            tc = self.train_config(name)
            try:
                tc.validate()
            except ConfigError as exc:
                raise ConfigError(f"optimizers.{name}: {exc}") from None
        if self.input_size is not None:
            check_input_size(self.input_size, "input_size")
        from .data import get_spec

        for i, t in enumerate(self.targets):
            try:
                get_spec(t)
            except ConfigError as exc:
                raise ConfigError(f"targets[{i}]: {exc}") from None


def _one_budget(data: dict[str, Any], flat: Mapping[str, Any]) -> None:
    """The grid's override rule: a budget set in ``train`` is every cell's budget, so each optimizer's
    own ``iterations``/``epochs`` is dropped (unless that very key is overridden too)."""
    if not any(flat.get(f"train.{key}") is not None for key in _BUDGET):
        return
    optimizers = data.get("optimizers")
    if not isinstance(optimizers, dict):
        return
    for name, section in optimizers.items():
        if isinstance(section, dict):
            for key in _BUDGET:
                if f"optimizers.{name}.{key}" not in flat:
                    section.pop(key, None)


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
    bar = tqdm(total=len(cells), initial=len(cells) - len(pending), desc="transfer", unit="cell",
               disable=not progress or not ctx.main, dynamic_ncols=True)  # fmt: skip
    splits_key: tuple | None = None
    splits = None
    loaded: tuple[str, Any] | None = None
    try:
        for cell in pending:
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
    finally:
        bar.close()
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
        cfg = TransferConfig.from_dict({"tickets": [], "targets": [], "optimizers": {}}, overrides)
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
    rows = transfer(cfg, args.out, progress=not args.quiet, report=not args.no_report)
    if _dist.is_main():
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

    ``--ticket``, ``--target``, ``--controls``, ``--seeds`` and ``--limit`` come from the
    :class:`TransferConfig` declarations (:meth:`~ticket_zoo.config.Config.add_flags`).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="ticket-zoo")
        >>> register_cli(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["transfer", "--config", "r.yaml", "--out", "o", "--seeds", "0", "1"])
        >>> args.seeds
        [0, 1]
    """
    p = subparsers.add_parser(
        "transfer",
        help="transfer tickets to target datasets against random-ticket controls",
        description=(
            "Run the grid tickets x controls x targets x optimizers x seeds; one row per cell in "
            "OUT/results.jsonl. Re-running the same command resumes."
        ),
    )
    p.add_argument("--config", metavar="RECIPE.yaml",
                   help="transfer recipe: a YAML file or a shipped recipe's name (e.g. transfer-digits)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (results.jsonl, report)")
    TransferConfig.add_flags(p)
    p.add_argument("--optimizers", nargs="+", metavar="NAME", dest="optimizer_names",
                   help=f"optimizers of the recipe to run (or presets: {', '.join(OPTIMIZER_PRESETS)})")  # fmt: skip
    p.add_argument(
        "--iterations",
        type=int,
        metavar="N",
        help="replace the training budget by N iterations (smoke tests)",
    )
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any recipe field, e.g. train.lr=0.01 or optimizers.sgd.lr=0.1 (repeatable)",
    )
    p.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no table")
    p.set_defaults(func=_cli)
