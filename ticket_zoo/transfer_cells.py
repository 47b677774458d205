"""The cells of a transfer grid: planning them from a config and running one.

A *cell* is one (ticket, control, target, optimizer, seed) of the grid and one row of
``results.jsonl``. This module owns what a cell is and how it runs; :mod:`ticket_zoo.transfer_grid`
owns the config, the order of work, the output folder and the command line.

* :func:`plan` is the step after :meth:`TransferConfig.validate`: it expands ticket specs, loads
  each ticket once to learn what the cells need (architecture, input size, content digest, family),
  checks that the network takes its input size, and lists every cell in run order. It is the only
  place a ticket is loaded before training; validation reads no ticket.
* A cell's identity (``Cell.cell_id``, ``Cell.run_id``) is a hash of what decides its result: the
  ticket's content (or, for ``dense``, only the architecture), the control, target, optimizer, seed,
  the effective train config without its housekeeping fields (``TrainConfig`` declares them
  ``fingerprint=False``) and the data settings. Re-running a grid skips the cells whose id already
  has a row.
* Identical trainings share one run: ``dense`` ignores the ticket's mask and weights, so it is trained
  once per (architecture configuration, target, optimizer, seed) and recorded once per source; on a
  ticket of density 1.0 a control is the run its registry entry names (``at_full_density`` in
  :data:`ticket_zoo.controls.CONTROLS`: ``random_ticket`` and ``reinit`` are ``dense``,
  ``random_mask`` is ``winning``).
* :func:`run_cell` makes the control ticket, builds it with a fresh head for the target, fine-tunes it
  with :func:`ticket_zoo.train.train` while pruned weights stay exactly zero, checks that they did and
  returns its metrics; :func:`cell_row` is the row recorded for it.
* :func:`group_cells` makes units of work: the runs of one (ticket, target, optimizer) on a small
  network without BatchNorm or dropout (lenet_300_100, conv2/4/6) are one unit, which
  :func:`run_unit` trains as one vmapped ensemble (:mod:`ticket_zoo.ensemble`); a row says how many
  runs trained together in ``batched``.

Example:
    >>> from ticket_zoo.transfer_grid import TransferConfig
    >>> cfg = TransferConfig(tickets=["lenet_300_100-digits04-5pct"], targets=["digits[5-9]"],
    ...                      optimizers={"adam": {"optimizer": "adam", "lr": 1e-3}},
    ...                      controls=["winning", "dense"], seeds=[0], train={"iterations": 10})
    >>> cfg.validate()
    >>> [(c.control, c.ref.label) for c in plan(cfg)]
    [('winning', 'lenet_300_100-digits04-5pct'), ('dense', 'lenet_300_100-digits04-5pct')]
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .configs import FindConfig, TrainConfig, check_input_size
from .controls import CONTROLS, get_control
from .errors import ConfigError, TicketZooError
from .runfiles import fingerprint
from .specs import expand_spec
from .ticket import Ticket, create_model

if TYPE_CHECKING:  # pragma: no cover
    from .transfer_grid import TransferConfig

__all__ = [
    "METRICS",
    "Cell",
    "TicketRef",
    "cell_row",
    "check_input_size",
    "group_cells",
    "inspect_tickets",
    "load_ticket",
    "plan",
    "run_cell",
    "run_unit",
]

TICKET_FILE = "ticket.safetensors"
# Bump when the meaning of a cell changes, so old rows are not mistaken for new ones.
_ENGINE_VERSION = 1
# The metrics of a row that a cell sharing its run takes over (see transfer_grid.transfer). "batched"
# is how many runs trained together as one ensemble (1: alone; see group_cells).
METRICS = ("test_acc", "val_acc", "final_val_acc", "final_test_acc", "best_step", "steps", "density",
           "train_seconds", "images_per_second", "batched")  # fmt: skip


# --- tickets -----------------------------------------------------------------------------------------


@dataclass
class TicketRef:
    """What the cells need to know about one ticket, without holding its tensors."""

    spec: str  # how to load it (ticket_zoo.load)
    label: str  # name or path, for rows
    arch: str
    arch_kwargs: dict[str, Any]
    input_size: tuple[int, int, int]
    source: str | None
    density: float
    level: int | None
    digest: str  # content hash of arch + masks + init
    num_classes: int
    family: str = ""  # the find run / catalogue family the ticket came from (see _ticket_family)


def _ticket_digest(ticket: Ticket) -> str:
    """Content hash: architecture, masks and rewind weights (not meta: renaming keeps identity).

    Tensors are hashed by their bytes in their own dtype (rewind weights are not masks), which is why
    this is not :func:`ticket_zoo.runfiles.fingerprint`.
    """
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"arch": ticket.arch, "arch_kwargs": ticket.arch_kwargs}, sort_keys=True, default=str
        ).encode()
    )
    for prefix, tensors in (("mask", ticket.masks), ("init", ticket.init)):
        for name in sorted(tensors):
            t = tensors[name].detach().to("cpu").contiguous()
            h.update(f"{prefix}.{name}:{t.dtype}:{list(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _ticket_input_size(ticket: Ticket, model: torch.nn.Module) -> tuple[int, int, int] | None:
    size = ticket.meta.get("input_size")
    if size is None:
        size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    return None if size is None else tuple(int(v) for v in size)


def _load(spec: str) -> Ticket:
    from .api import load

    return load(spec)


def _housekeeping() -> frozenset[str]:
    """Train fields that only say how a run was executed (TrainConfig's ``fingerprint=False``)."""
    return frozenset(TrainConfig().to_dict()) - frozenset(TrainConfig().fingerprint_dict())


_FIRST_NAME = {new: old for old, new in FindConfig.renamed.items()}


def _ticket_family(ticket: Ticket, label: str) -> str:
    """``NAME-PREFIX@HASH``: the ticket's name without its ``-NNpct`` suffix, plus 8 hex digits of
    its find recipe (``meta["recipe"]`` without the train config's housekeeping fields such as ``device``).

    Every ticket of one ``ticket-zoo find`` run (and of one catalogue family) shares it; two find
    runs with different configs differ even under the same name prefix. Without a recipe it is the
    bare prefix. The report groups rows by it.

    Example:
        >>> from types import SimpleNamespace
        >>> _ticket_family(SimpleNamespace(meta={}), "conv4-digits04-12.5pct")
        'conv4-digits04'
    """
    prefix = re.sub(r"-\d+(?:\.\d+)?pct$", "", label) or label
    recipe = ticket.meta.get("recipe")
    if not isinstance(recipe, Mapping):
        return prefix
    # Stripped at every level, as recipes written before the schema nest them differently.
    skip = _housekeeping()
    # A field renamed since (FindConfig.renamed) is hashed under its first name, so tickets of one
    # recipe found before and after a rename stay one family.
    recipe = {_FIRST_NAME.get(k, k): v for k, v in recipe.items()}
    # Recipes before pruning methods said `one_shot: false|true`; since, `method: imp` or `method:
    # oneshot` with `train_tickets: true`. The same run is the same family: hash the old spelling.
    recipe = _old_method_spelling(recipe)

    def strip(obj: Any) -> Any:
        if isinstance(obj, Mapping):
            return {str(k): strip(v) for k, v in obj.items() if k not in skip}
        return obj

    return f"{prefix}@{fingerprint(strip(recipe))[:8]}"


def _old_method_spelling(recipe: dict[str, Any]) -> dict[str, Any]:
    """``method: imp`` (no options) as ``one_shot: false``, ``method: oneshot`` with trained tickets as
    ``one_shot: true``: what a find recipe said before methods, so families keep their hash."""
    method, options = recipe.get("method"), recipe.get("method_options") or {}
    one_shot = {("imp", ()): False, ("oneshot", (("train_tickets", True),)): True}.get(
        (method, tuple(sorted(options.items()))) if isinstance(options, Mapping) else None
    )
    if one_shot is None:
        return recipe
    rest = {k: v for k, v in recipe.items() if k not in ("method", "method_options")}
    return {**rest, "one_shot": one_shot}


def _inspect_ticket(spec: str, where: str, input_size: tuple[int, int, int] | None) -> TicketRef:
    try:
        ticket = _load(spec)
    except TicketZooError as exc:
        raise ConfigError(f"{where}: cannot load ticket {spec!r}: {exc}") from exc
    model = create_model(ticket.arch, ticket.arch_kwargs)
    size = input_size or _ticket_input_size(ticket, model)
    if size is None:
        raise ConfigError(
            f"{where}: ticket {spec!r} has no meta input_size and {ticket.arch!r} declares none; "
            "set input_size: [C, H, W] in the transfer config"
        )
    size = check_input_size(size, f"{where}: input size of {spec!r}")
    in_chans = ticket.arch_kwargs.get("in_chans")
    if in_chans is not None and int(in_chans) != size[0]:
        raise ConfigError(
            f"{where}: ticket {spec!r} takes {in_chans}-channel input but input_size is {list(size)}; "
            "target images are converted to the ticket's channels, so leave input_size unset or match it"
        )
    # One forward pass on a zero image: the only reliable test that the network takes this size.
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *size))
    except Exception as exc:  # noqa: BLE001 - any failure here means "this input size cannot work"
        raise ConfigError(
            f"{where}: ticket {spec!r} ({ticket.arch}) cannot take input of size {list(size)}: {exc}"
        ) from None
    level = ticket.meta.get("level")
    label = str(ticket.meta.get("name") or spec)
    return TicketRef(
        spec=spec,
        label=label,
        arch=ticket.arch,
        arch_kwargs=dict(ticket.arch_kwargs),
        input_size=size,
        source=None if ticket.meta.get("source") is None else str(ticket.meta.get("source")),
        density=float(ticket.density),
        level=int(level) if isinstance(level, (int, float)) and not isinstance(level, bool) else None,
        digest=_ticket_digest(ticket),
        num_classes=ticket.num_classes,
        family=_ticket_family(ticket, label),
    )


def inspect_tickets(cfg: TransferConfig) -> list[TicketRef]:
    """Every ticket of ``cfg.tickets`` (find directories expanded), loaded once; the same ticket named
    twice is one ticket. A ticket that cannot be loaded or cannot take its input size is a
    :class:`ConfigError` naming its ``tickets[i]`` entry."""
    input_size = None if cfg.input_size is None else check_input_size(cfg.input_size, "input_size")
    refs: list[TicketRef] = []
    seen: set[str] = set()
    for i, spec in enumerate(cfg.tickets):
        try:  # the one spec grammar (ticket_zoo.specs): a find folder stands for all its tickets
            expanded = expand_spec(spec)
        except TicketZooError as exc:  # TicketNotFoundError, or ConfigError for a bad revision
            raise ConfigError(f"tickets[{i}]: {exc}") from None
        for one in expanded:
            ref = _inspect_ticket(one, f"tickets[{i}]", input_size)
            if ref.digest not in seen:
                seen.add(ref.digest)
                refs.append(ref)
    return refs


def load_ticket(ref: TicketRef) -> Ticket:
    """The ticket ``ref`` was planned from; a :class:`ConfigError` if its content changed since."""
    ticket = _load(ref.spec)
    if _ticket_digest(ticket) != ref.digest:
        raise ConfigError(f"tickets: {ref.spec} changed on disk since the grid was planned; re-run")
    return ticket


# --- the plan ----------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One cell of the grid: one result row (``cell_id``) of one training run (``run_id``)."""

    cell_id: str  # one result row
    run_id: str  # one training run (several cells may share it: dense across sources)
    ref: TicketRef
    control: str
    target: str
    optimizer: str
    seed: int
    train: dict[str, Any]  # the effective TrainConfig, as recorded in the row


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


def plan(cfg: TransferConfig) -> list[Cell]:
    """Every cell of the grid, in run order (target, ticket, optimizer, control, seed), deduplicated.

    ``cfg`` must be valid (:meth:`TransferConfig.validate`); the tickets are loaded here, once each
    (:func:`inspect_tickets`). Tickets of one input size come together so each target is loaded once
    per size.
    """
    refs = inspect_tickets(cfg)
    cells: list[Cell] = []
    seen: set[str] = set()
    for target in cfg.targets:
        for ref in sorted(refs, key=lambda r: r.input_size):
            full = ref.density >= 1.0
            for opt in cfg.optimizers:
                for control in cfg.controls:
                    # Identical trainings share one run (see the module docstring).
                    same = CONTROLS.info(control).get("at_full_density") if full else None
                    run_control = same or control
                    for seed in cfg.seeds:
                        tc = cfg.train_config(opt, seed, target)
                        run_id = _run_id(cfg, ref, run_control, target, opt, seed, tc)
                        if control == "dense":
                            cell_id = f"{run_id}@{ref.source or '-'}"
                        elif control != run_control:
                            cell_id = f"{run_id}@{control}:{ref.digest[:16]}"
                        else:
                            cell_id = run_id
                        if cell_id in seen:
                            continue
                        seen.add(cell_id)
                        cells.append(Cell(cell_id, run_id, ref, control, target, opt, seed, tc.to_dict()))
    return cells


def _run_id(
    cfg: TransferConfig, ref: TicketRef, control: str, target: str, opt: str, seed: int, tc: TrainConfig
) -> str:
    """``ARCH-CONTROL-TARGET-OPT-sSEED-HASH``: the hash covers everything that decides the run."""
    if control == "dense":
        kwargs = dict(ref.arch_kwargs)
        if cfg.new_head:  # the source head is replaced anyway
            kwargs.pop("num_classes", None)
        what: dict[str, Any] = {"dense": {"arch": ref.arch, "arch_kwargs": kwargs}}
    else:
        what = {"ticket": ref.digest, "control": control}
    identity = {
        "engine": _ENGINE_VERSION,
        **what,
        "target": target,
        "optimizer": opt,
        "seed": seed,
        "train": tc.fingerprint_dict(),
        "input_size": list(ref.input_size),
        "new_head": cfg.new_head,
        "val_fraction": cfg.val_fraction,
        "data_seed": cfg.data_seed,
        "limit": cfg.limit,
    }
    return f"{_slug(ref.arch)}-{control}-{_slug(target)}-{_slug(opt)}-s{seed}-{fingerprint(identity)[:16]}"


# --- one cell ----------------------------------------------------------------------------------------


def _build(ticket: Ticket, num_classes: int, seed: int, new_head: bool):
    """The model for a target with ``num_classes`` classes and the masks that apply to it."""
    from .models import classifier_param_names, replace_head

    model = ticket.build(num_classes=num_classes, head_seed=seed)
    masks = ticket.masks_for(model)
    if num_classes == ticket.num_classes and new_head:
        head = set(classifier_param_names(model))
        replace_head(model, num_classes, seed=seed)
        masks = {k: v for k, v in masks.items() if k not in head}
    return model, masks


@torch.no_grad()
def _assert_pruned_zero(model: torch.nn.Module, masks: Mapping[str, torch.Tensor], run_id: str) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        value = params[name].detach().to("cpu")
        leaked = int((value[~mask] != 0).sum())
        if leaked:
            raise RuntimeError(
                f"cell {run_id}: {leaked} pruned weights of {name!r} are non-zero after training; "
                "masks were not held (a bug in ticket_zoo: please report it)"
            )


def run_cell(
    cell: Cell, ticket: Ticket, splits: Any, cfg: TransferConfig, out: Path, progress: bool
) -> dict[str, Any]:
    """Train ``cell`` (its control of ``ticket``) on ``splits``; its metrics (the :data:`METRICS`).

    The learning curve goes to ``out/cells/<run>/log.jsonl`` and the train checkpoint to
    ``out/cells/<run>/ckpt/`` (a killed cell resumes from it).
    """
    from .train import train  # looked up at call time, so tests can watch every training

    made = get_control(cell.control)(ticket, cell.seed)
    model, masks = _build(made, splits.spec.num_classes, cell.seed, cfg.new_head)
    cell_dir = out / "cells" / cell.run_id
    train_cfg = TrainConfig.from_dict(cell.train)
    held = masks if any(not bool(m.all()) for m in masks.values()) else None  # all-True masks hold nothing
    result = train(
        model,
        splits.train,
        splits.val,
        train_cfg,
        masks=held,
        test_set=splits.test,
        checkpoint_dir=cell_dir / "ckpt",
        log_path=cell_dir / "log.jsonl",
        progress=f"{cell.control} s{cell.seed}" if progress else False,
        final_model="best",  # check the very weights whose test accuracy is reported
    )
    _assert_pruned_zero(model, masks, cell.run_id)
    return _metrics(result, made, train_cfg, float(result.seconds), batched=1)


def _metrics(result: Any, made: Ticket, train_cfg: TrainConfig, seconds: float, batched: int) -> dict[str, Any]:
    """The :data:`METRICS` of one run; ``seconds`` is its training time (its share of an ensemble's)."""
    steps = int(result.steps)
    return {
        "test_acc": result.test_acc,
        "val_acc": result.best_val_acc,
        "final_val_acc": result.final_val_acc,
        "final_test_acc": result.final_test_acc,
        "best_step": int(result.best_step),
        "steps": steps,
        "density": float(made.density),
        "train_seconds": round(seconds, 3),
        "images_per_second": round(steps * train_cfg.batch_size / max(seconds, 1e-9), 1),
        "batched": batched,
    }


# --- units of work -----------------------------------------------------------------------------------


def _arch_problem(arch: str, arch_kwargs: Mapping[str, Any]) -> str | None:
    """:func:`ticket_zoo.ensemble.architecture_problem` of ``arch`` built on the meta device (cached)."""
    key = (arch, json.dumps(arch_kwargs, sort_keys=True, default=str))
    if key not in _ARCH_PROBLEMS:
        from .ensemble import architecture_problem

        try:
            _ARCH_PROBLEMS[key] = architecture_problem(create_model(arch, arch_kwargs, device="meta"))
        except Exception as exc:  # noqa: BLE001 - not buildable here: train it the ordinary way
            _ARCH_PROBLEMS[key] = f"cannot be built on the meta device ({exc})"
    return _ARCH_PROBLEMS[key]


_ARCH_PROBLEMS: dict[tuple[str, str], str | None] = {}


def _batch_key(cell: Cell) -> tuple | None:
    """What the runs batched with ``cell``'s must share, or None if its run trains alone.

    The ticket, target and optimizer, and the train config without its seed; the architecture and
    the config must pass :func:`ticket_zoo.ensemble.why_not_batchable`'s checks that need no data.
    """
    train = {k: v for k, v in cell.train.items() if k != "seed"}
    if train.get("amp") or train.get("channels_last") or train.get("num_workers"):
        return None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    if _arch_problem(cell.ref.arch, cell.ref.arch_kwargs) is not None:
        return None
    return (cell.ref.digest, cell.target, cell.optimizer, fingerprint(train))


def group_cells(cells: list[Cell], *, batch: bool = True) -> list[list[Cell]]:
    """The pending ``cells`` as units of work, in plan order (of each unit's first cell).

    Cells sharing a ``run_id`` are always in one unit (the run trains once; the others take its
    metrics). Without ``batch`` that is all: one unit per run. With ``batch`` (the default) the runs
    of one (ticket, target, optimizer, train config but the seed) whose architecture can be vmapped
    (:func:`ticket_zoo.ensemble.architecture_problem`: lenet_300_100 and conv2/4/6, not networks
    with BatchNorm or dropout) form one unit: all their seeds and controls, trained as one ensemble
    by :func:`run_unit`. A dense run shared across sources joins the unit of its first cell. The
    grouping depends on the cells only (not on workers or the machine's load), so every process of
    a grid makes the same units.

    Example:
        >>> from types import SimpleNamespace
        >>> ref = SimpleNamespace(arch="lenet_300_100", arch_kwargs={"num_classes": 5}, digest="d1")
        >>> cells = [Cell(f"c{s}{c}", f"r{s}{c}", ref, c, "digits[5-9]", "sgd", s, {"seed": s})
        ...          for c in ("winning", "dense") for s in (0, 1)]
        >>> [[c.cell_id for c in unit] for unit in group_cells(cells)]
        [['c0winning', 'c1winning', 'c0dense', 'c1dense']]
        >>> [[c.cell_id for c in unit] for unit in group_cells(cells, batch=False)]
        [['c0winning'], ['c1winning'], ['c0dense'], ['c1dense']]
    """
    units: list[list[Cell]] = []
    unit_of_run: dict[str, int] = {}
    unit_of_key: dict[tuple, int] = {}
    for cell in cells:
        index = unit_of_run.get(cell.run_id)
        if index is None:
            key = _batch_key(cell) if batch else None
            index = unit_of_key.get(key) if key is not None else None
            if index is None:
                index = len(units)
                units.append([])
                if key is not None:
                    unit_of_key[key] = index
            unit_of_run[cell.run_id] = index
        units[index].append(cell)
    return units


def run_unit(
    unit: list[Cell], ticket: Ticket, splits: Any, cfg: TransferConfig, out: Path, progress: bool
) -> list[dict[str, Any]]:
    """Train one unit of :func:`group_cells` (``ticket`` is ``unit[0]``'s); the metrics of each cell, in order.

    A unit of two or more runs that :func:`ticket_zoo.ensemble.why_not_batchable` accepts trains as one
    ensemble (:func:`ticket_zoo.ensemble.train_ensemble`): each run's metrics say ``"batched": K``
    and its ``train_seconds`` is its share (1/K) of the ensemble's time. Otherwise the runs train one
    by one with :func:`run_cell` (``"batched": 1``). Each run writes ``out/cells/<run>/log.jsonl``.
    An ensemble keeps no checkpoint: a unit killed mid-way trains again from step 0 when the grid
    resumes (its rows are only written once it finishes, so none is written twice).
    """
    first: dict[str, Cell] = {}
    for cell in unit:
        first.setdefault(cell.run_id, cell)
    by_run = _run_batched(list(first.values()), ticket, splits, cfg, out, progress) if len(first) > 1 else None
    if by_run is None:
        by_run = {}
        for cell in unit:
            if cell.run_id not in by_run:
                by_run[cell.run_id] = run_cell(cell, ticket, splits, cfg, out, progress)
    return [dict(by_run[cell.run_id]) for cell in unit]


def _run_batched(
    runs: list[Cell], ticket: Ticket, splits: Any, cfg: TransferConfig, out: Path, progress: bool
) -> dict[str, dict[str, Any]] | None:
    """Train ``runs`` (one cell per run) as one ensemble; their metrics by run id, or None if they
    cannot be batched (then the caller trains them one by one)."""
    from .ensemble import Member, train_ensemble, why_not_batchable

    made, members, held = [], [], []
    for cell in runs:
        control = get_control(cell.control)(ticket, cell.seed)
        model, masks = _build(control, splits.spec.num_classes, cell.seed, cfg.new_head)
        train_cfg = TrainConfig.from_dict(cell.train)
        keep = masks if any(not bool(m.all()) for m in masks.values()) else None  # as run_cell
        made.append(control)
        held.append(masks)
        members.append(Member(model, train_cfg, keep, out / "cells" / cell.run_id / "log.jsonl"))
    if why_not_batchable([m.model for m in members], [m.config for m in members], splits.train) is not None:
        return None
    label = f"{len(runs)} runs batched" if progress else False
    results = train_ensemble(members, splits.train, splits.val, test_set=splits.test, final_model="best",
                             progress=label)  # fmt: skip
    k = len(runs)
    metrics = {}
    for cell, control, member, masks, result in zip(runs, made, members, held, results, strict=True):
        _assert_pruned_zero(member.model, masks, cell.run_id)  # every member's best weights
        metrics[cell.run_id] = _metrics(result, control, member.config, float(result.seconds) / k, batched=k)
    return metrics


def _versions() -> dict[str, str]:
    import timm

    from . import __version__

    return {
        "ticket_zoo": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }


def cell_row(cell: Cell, metrics: Mapping[str, Any], cfg: TransferConfig) -> dict[str, Any]:
    """The ``results.jsonl`` row of ``cell`` (what :mod:`ticket_zoo.report` reads)."""
    ref = cell.ref
    is_dense = cell.control == "dense"
    density = 1.0 if is_dense else metrics["density"]
    return {
        "cell": cell.cell_id,
        "run": cell.run_id,
        "ticket": None if is_dense else ref.label,
        "ticket_hash": None if is_dense else ref.digest[:16],
        # Dense rows keep the family too: dense is trained beside each family it is compared with.
        "family": ref.family or f"{ref.arch}-{ref.source}",
        "source": ref.source,
        "arch": ref.arch,
        "level": None if is_dense else ref.level,
        "density": density,
        "ticket_density": None if is_dense else ref.density,
        "control": cell.control,
        "target": cell.target,
        "optimizer": cell.optimizer,
        "seed": cell.seed,
        "test_acc": metrics["test_acc"],
        "val_acc": metrics["val_acc"],
        "final_val_acc": metrics["final_val_acc"],
        "final_test_acc": metrics["final_test_acc"],
        "best_step": metrics["best_step"],
        "steps": metrics["steps"],
        "input_size": list(ref.input_size),
        "new_head": cfg.new_head,
        "data_split": {"val_fraction": cfg.val_fraction, "data_seed": cfg.data_seed, "limit": cfg.limit},
        "train_config": cell.train,
        "train_seconds": metrics["train_seconds"],
        "images_per_second": metrics["images_per_second"],
        "batched": metrics.get("batched") or 1,  # rows recorded before batching trained alone
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
