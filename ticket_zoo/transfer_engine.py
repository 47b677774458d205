"""The transfer grid: tickets × controls × targets × optimizers × seeds, resumable per cell.

For every cell the engine makes the control ticket (:mod:`ticket_zoo.controls`), builds it with a
fresh head for the target classes, fine-tunes it on the target with :func:`ticket_zoo.train.train`
while pruned weights stay exactly zero, checks that they did, and appends one JSON line to
``OUT/results.jsonl``. The grid is what Morcos et al. (2019) ran: winning tickets from a source task
against random tickets (random mask *and* random init), same-mask re-initializations and the dense
network, on other datasets and with other optimizers, over several seeds.

Layout of ``OUT``::

    OUT/results.jsonl            one row per finished cell (the report reads it)
    OUT/transfer.json            the resolved config of the last run
    OUT/cells/<run>/log.jsonl    the learning curve of each run (one line per evaluation)
    OUT/cells/<run>/ckpt/        the train checkpoint of a run in progress (removed when recorded)

Resuming: re-running the same command skips every cell already in ``results.jsonl`` (cells are
identified by a hash of what decides their result: the ticket's content, control, target,
optimizer, seed, effective train config and data settings); a cell killed mid-way resumes from its
train checkpoint; a truncated last line left by a killed writer is dropped before anything is
appended. One process per ``OUT`` at a time (or one torchrun job, whose rank 0 alone writes).

Deduplication: the ``dense`` control does not depend on the ticket's mask or weights, so it is
trained once per (architecture configuration, target, optimizer, seed) and recorded once per source
(the report groups rows by arch and source). Likewise, on a ticket of density 1.0, ``random_ticket``
and ``reinit`` are the dense run and ``random_mask`` is the winning run; they are not retrained.

Example:
    >>> from ticket_zoo.transfer_engine import TransferConfig, transfer  # doctest: +SKIP
    >>> cfg = TransferConfig(tickets=["runs/demo/find"], targets=["digits[5-9]"],
    ...                      optimizers={"adam": {"optimizer": "adam", "lr": 1e-3}},
    ...                      train={"iterations": 300, "batch_size": 64})  # doctest: +SKIP
    >>> rows = transfer(cfg, "runs/demo/transfer")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import _dist
from ._io import append_line, atomic_write_bytes, atomic_write_text, prepare_out_dir, remove_stale_temps
from .controls import CONTROLS, get_control
from .errors import ConfigError, TicketZooError, did_you_mean
from .ticket import Ticket, create_model

__all__ = ["OPTIMIZER_PRESETS", "TransferConfig", "register_cli", "transfer"]

#: Optimizers by name for the command line without a recipe (Morcos et al. 2019 defaults, *unverified*).
OPTIMIZER_PRESETS: dict[str, dict[str, Any]] = {
    "sgd": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
    "adam": {"optimizer": "adam", "lr": 3e-4},
}
DEFAULT_CONTROLS = ("winning", "random_ticket", "reinit", "dense")
RESULTS_FILE = "results.jsonl"
TICKET_FILE = "ticket.safetensors"
# Bump when the meaning of a cell changes, so old rows are not mistaken for new ones.
_ENGINE_VERSION = 1
# Train fields that do not change a run's result (TrainConfig resumes across them too).
_HOUSEKEEPING = ("device", "num_workers", "checkpoint_every")
# Fields of a result row that measure the machine, not the experiment.
TIMING_FIELDS = ("train_seconds", "images_per_second", "finished_at")


# --- config ----------------------------------------------------------------------------------------


@dataclass
class _TicketRef:
    """What the planner needs to know about one ticket, without holding its tensors."""

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


@dataclass
class TransferConfig:
    """A transfer grid. Fields are what a recipe's YAML holds.

    Attributes:
        tickets: ticket specs for :func:`ticket_zoo.load` (a ticket directory, a ``.safetensors``
            file, a catalogue name, ``hf-hub:org/name[@rev]``) or a ``ticket-zoo find`` output
            directory, which stands for every ticket (``*/ticket.safetensors``) inside it.
        targets: dataset registry names (``"cifar10"``, ``"digits[5-9]"``, ``"imagefolder:PATH"``).
        optimizers: name -> :class:`~ticket_zoo.train.TrainConfig` fields, e.g.
            ``{"sgd": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9}, "adam": {"optimizer": "adam", "lr": 3e-4}}``.
        controls: names from :data:`ticket_zoo.controls.CONTROLS`.
        seeds: one run per seed (head init, control draw, data order).
        train: TrainConfig fields shared by all optimizers (budget, batch size, schedule, ...);
            an optimizer's own fields override them. ``seed`` is set per cell, not here.
        input_size: ``(C, H, W)`` the target data is resized to; default: each ticket's own
            ``meta["input_size"]`` (else its architecture's default input size).
        new_head: replace the classifier with a fresh one for the target even when it has as many
            classes as the source (Morcos et al. always replace it). With ``False`` a target with the
            source's class count keeps the ticket's head.
        val_fraction, data_seed, limit: how the target is split and subsampled
            (:func:`ticket_zoo.data.load_splits`); the same for every cell so cells are comparable.

    Example:
        >>> cfg = TransferConfig(tickets=["runs/demo/find"], targets=["digits[5-9]"],
        ...                      optimizers={"adam": {"optimizer": "adam", "lr": 1e-3}},
        ...                      train={"iterations": 100})
        >>> cfg.controls
        ['winning', 'random_ticket', 'reinit', 'dense']
    """

    tickets: list[str]
    targets: list[str]
    optimizers: dict[str, dict[str, Any]]
    controls: list[str] = field(default_factory=lambda: list(DEFAULT_CONTROLS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    train: dict[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int, int] | None = None
    new_head: bool = True
    val_fraction: float = 0.1
    data_seed: int = 0
    limit: int | None = None
    _refs: list[_TicketRef] | None = field(default=None, init=False, repr=False, compare=False)

    # --- construction -----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> TransferConfig:
        """Build from a mapping (a parsed recipe); unknown keys raise :class:`ConfigError`.

        ``overrides`` are what the CLI takes (``ticket-zoo transfer --set KEY=VALUE``) and mean what
        they mean for :func:`ticket_zoo.find.find_tickets`: a top-level key replaces that field
        (``{"seeds": [0, 1]}``), a dotted key replaces one value inside a section
        (``{"train.iterations": 50}``, ``{"optimizers.sgd.lr": 0.1}``); a ``train`` mapping is
        merged into ``train``. Setting ``train.iterations`` (or ``train.epochs``) sets the budget of
        every cell: the recipe's other budget key is dropped, from ``train`` and from each optimizer.

        Example:
            >>> TransferConfig.from_dict({"tickets": ["t"], "targets": ["digits"],
            ...                           "optimizers": {"adam": {"optimizer": "adam"}}}).seeds
            [0, 1, 2]
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"a transfer recipe must be a mapping of fields, got {type(d).__name__}")
        data = dict(d)
        dotted = {}
        for key, value in (overrides or {}).items():
            if "." in str(key):
                dotted[str(key)] = value
            elif key == "train" and isinstance(value, Mapping):
                data["train"] = {**dict(data.get("train") or {}), **value}
            else:
                data[key] = value
        if dotted:
            data = _apply_dotted(data, dotted)
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        for key in data:
            if key not in names:
                raise ConfigError(
                    f"unknown transfer config key {key!r}{did_you_mean(key, names)}; known keys: {', '.join(names)}"
                )
        for key in ("tickets", "targets", "optimizers"):
            if key not in data:
                raise ConfigError(f"transfer config needs {key!r}")
        for key in ("tickets", "targets", "controls"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        if isinstance(data.get("seeds"), int) and not isinstance(data.get("seeds"), bool):
            data["seeds"] = [data["seeds"]]
        if data.get("train") is None:
            data["train"] = {}
        if isinstance(data.get("input_size"), list):
            data["input_size"] = tuple(data["input_size"])
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> TransferConfig:
        """Read a recipe YAML (the fields of this class at top level), then apply ``overrides``.

        ``path`` is a file or the name of a recipe shipped in the package (``"transfer-digits"``;
        see :func:`ticket_zoo._recipe.resolve_recipe`); ``overrides`` as in :meth:`from_dict`.

        Example:
            >>> cfg = TransferConfig.from_yaml("transfer-digits", {"seeds": [0], "train.iterations": 20})
            >>> cfg.seeds, cfg.train["iterations"]
            ([0], 20)
        """
        from ._recipe import read_yaml_file, recipe_hint, resolve_recipe

        # Bounded, text-only, alias-bomb-safe: a binary or huge --config is one ConfigError line.
        data = read_yaml_file(resolve_recipe(path), what="recipe", hint=recipe_hint("transfer"))
        if data is None:
            data = {}
        return cls.from_dict(data, overrides)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values.

        Example:
            >>> TransferConfig(["t"], ["digits"], {"adam": {}}).to_dict()["targets"]
            ['digits']
        """
        return {
            f.name: copy.deepcopy(getattr(self, f.name))
            if f.name != "input_size" or self.input_size is None
            else list(self.input_size)
            for f in dataclasses.fields(self)
            if f.init
        }

    # --- validation -------------------------------------------------------------------------------

    def train_config(self, optimizer: str, seed: int = 0, target: str | None = None):
        """The effective :class:`~ticket_zoo.train.TrainConfig` of ``optimizer`` for ``seed``.

        ``train`` fields, then the optimizer's own, then ``seed``. Where neither sets ``augment``,
        a ``target`` brings its dataset's default (``"cifar"`` crops and flips for CIFAR, none
        for digits, whose meaning a flip can change).

        Example:
            >>> cfg = TransferConfig(["t"], ["digits"], {"adam": {"optimizer": "adam", "lr": 1e-3}},
            ...                      train={"iterations": 10})
            >>> cfg.train_config("adam", seed=2).lr
            0.001
        """
        from .train import TrainConfig

        if optimizer not in self.optimizers:
            raise ConfigError(f"optimizers: no optimizer named {optimizer!r}; have {list(self.optimizers)}")
        merged = {**dict(self.train), **dict(self.optimizers[optimizer] or {}), "seed": seed}
        if target is not None and "augment" not in merged:
            from .data import get_spec

            merged["augment"] = get_spec(target).augment
        try:
            return TrainConfig.from_dict(merged)
        except ConfigError as exc:
            raise ConfigError(f"optimizers.{optimizer}: {exc}") from None

    def validate(self) -> None:
        """Check everything before any training; raise :class:`ConfigError` naming the field.

        Loads every ticket once (to learn its architecture, input size and content hash) and checks
        that it can take its input size, that every target is a known dataset, every optimizer's
        merged train config is valid and every control exists.

        Example:
            >>> TransferConfig(["t"], ["no_such_data"], {"adam": {}}).validate()  # doctest: +IGNORE_EXCEPTION_DETAIL
            Traceback (most recent call last):
            ...
            ticket_zoo.errors.ConfigError: targets[0]: unknown dataset 'no_such_data' ...
        """
        from .data import get_spec

        for name in ("tickets", "targets", "controls"):
            value = getattr(self, name)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{name} must be a non-empty list of names, got {value!r}")
            if len(set(value)) != len(value):
                raise ConfigError(f"{name} lists an entry twice: {value!r}")
        if not isinstance(self.seeds, list) or not self.seeds:
            raise ConfigError(f"seeds must be a non-empty list of ints, got {self.seeds!r}")
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**31:
                raise ConfigError(f"seeds: each seed must be an int in [0, 2**31), got {s!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds lists a seed twice: {self.seeds!r}")
        for i, c in enumerate(self.controls):
            try:
                get_control(c)
            except ConfigError as exc:
                raise ConfigError(f"controls[{i}]: {exc}") from None
        if not isinstance(self.train, Mapping):
            raise ConfigError(
                f"train must be a mapping of TrainConfig fields, got {type(self.train).__name__}"
            )
        if "seed" in self.train:
            raise ConfigError(
                "train.seed: seeds come from the 'seeds' list, one run per seed; remove train.seed"
            )
        if not isinstance(self.optimizers, Mapping) or not self.optimizers:
            raise ConfigError(
                "optimizers must be a non-empty mapping name -> TrainConfig fields, e.g. "
                "{adam: {optimizer: adam, lr: 0.0003}}"
            )
        for name, opts in self.optimizers.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
                raise ConfigError(f"optimizers: name {name!r} must be letters, digits, '_', '.', '+' or '-'")
            if opts is not None and not isinstance(opts, Mapping):
                raise ConfigError(f"optimizers.{name} must be a mapping of TrainConfig fields, got {opts!r}")
            if opts and "seed" in opts:
                raise ConfigError(f"optimizers.{name}.seed: seeds come from the 'seeds' list; remove it")
            _validate_train(self, name)
        if not isinstance(self.new_head, bool):
            raise ConfigError(f"new_head must be true or false, got {self.new_head!r}")
        if (
            isinstance(self.val_fraction, bool)
            or not isinstance(self.val_fraction, (int, float))
            or not (0 < self.val_fraction < 1)
        ):
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if isinstance(self.data_seed, bool) or not isinstance(self.data_seed, int) or self.data_seed < 0:
            raise ConfigError(f"data_seed must be a non-negative int, got {self.data_seed!r}")
        if self.limit is not None and (
            isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1
        ):
            raise ConfigError(f"limit must be a positive int or null, got {self.limit!r}")
        input_size = None if self.input_size is None else _check_input_size(self.input_size, "input_size")
        for i, t in enumerate(self.targets):
            try:
                get_spec(t)
            except ConfigError as exc:
                raise ConfigError(f"targets[{i}]: {exc}") from None
        refs: list[_TicketRef] = []
        seen: set[str] = set()
        for i, spec in enumerate(self.tickets):
            for one in _expand_ticket_spec(spec, f"tickets[{i}]"):
                ref = _inspect_ticket(one, f"tickets[{i}]", input_size)
                if ref.digest not in seen:  # the same ticket named twice is one ticket
                    seen.add(ref.digest)
                    refs.append(ref)
        self._refs = refs


def _apply_dotted(data: dict[str, Any], dotted: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with dotted-key overrides applied (the rules of :func:`ticket_zoo.find.apply_overrides`)."""
    from .find import apply_overrides

    if not isinstance(data.get("train"), (Mapping, type(None))):
        raise ConfigError(f"train must be a mapping of training settings, got {type(data['train']).__name__}")
    out = apply_overrides(data, dotted)
    budget = [k.split(".", 1)[1] for k in dotted if k in ("train.iterations", "train.epochs")]
    if budget and isinstance(out.get("optimizers"), dict):
        # train.iterations is the budget of every cell: an optimizer's own budget would override it.
        for name, section in out["optimizers"].items():
            if isinstance(section, dict):
                for key in ("iterations", "epochs"):
                    if f"optimizers.{name}.{key}" not in dotted:
                        section.pop(key, None)
    return out


def _validate_train(cfg: TransferConfig, name: str) -> None:
    tc = cfg.train_config(name)
    try:
        tc.validate()
    except ConfigError as exc:
        raise ConfigError(f"optimizers.{name}: {exc}") from None


def _check_input_size(value: Any, what: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in value)
        ok = all(not isinstance(v, bool) and int(v) == v for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok or c not in (1, 3) or h < 1 or w < 1:
        raise ConfigError(f"{what} must be (C, H, W) with C in (1, 3) and H, W >= 1, got {value!r}")
    return (c, h, w)


def _natural_key(path: Path) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.as_posix())]


def _expand_ticket_spec(spec: str, where: str) -> list[str]:
    """A find output directory stands for every ticket inside it (``level_XX/ticket.safetensors``)."""
    path = Path(spec)
    if path.is_dir() and not (path / TICKET_FILE).is_file():
        found = sorted({p.parent for p in [*path.glob(f"*/{TICKET_FILE}"), *path.glob(f"*/*/{TICKET_FILE}")]},
                       key=_natural_key)  # fmt: skip
        if not found:
            raise ConfigError(
                f"{where}: {spec} is a directory with no {TICKET_FILE} in it or in its subdirectories; "
                "pass a ticket directory or a `ticket-zoo find` output directory"
            )
        return [str(p) for p in found]
    if not spec.startswith("hf-hub:") and ("/" in spec or os.sep in spec) and not path.exists():
        raise ConfigError(
            f"{where}: {spec} does not exist (relative paths are from the current directory, "
            f"{Path.cwd()}); make it first (e.g. `ticket-zoo find --config lenet_300_100-digits04 --out {spec}`) "
            "or name catalogue tickets such as lenet_300_100-digits04-5pct (`ticket-zoo list`)"
        )
    return [spec]


def _ticket_digest(ticket: Ticket) -> str:
    """Content hash: architecture, masks and rewind weights (not meta: renaming keeps identity)."""
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


# Recipe fields that only say how a find run was executed, not what it computed.
_RUNTIME_ONLY = frozenset({"device", "num_workers", "checkpoint_every"})


def _ticket_family(ticket: Ticket, label: str) -> str:
    """``NAME-PREFIX@HASH``: the ticket's name without its ``-NNpct`` suffix, plus 8 hex digits of
    its find recipe (``meta["recipe"]`` minus runtime-only fields such as ``device``).

    Every ticket of one ``ticket-zoo find`` run (and of one catalogue family) shares it; two find
    runs with different configs differ even under the same name prefix. Without a recipe it is the
    bare prefix. The report groups rows by it.
    """
    prefix = re.sub(r"-\d+(?:\.\d+)?pct$", "", label) or label
    recipe = ticket.meta.get("recipe")
    if not isinstance(recipe, Mapping):
        return prefix

    def strip(obj: Any) -> Any:
        if isinstance(obj, Mapping):
            return {str(k): strip(v) for k, v in obj.items() if k not in _RUNTIME_ONLY}
        return obj

    text = json.dumps(strip(recipe), sort_keys=True, default=str)
    return f"{prefix}@{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _inspect_ticket(spec: str, where: str, input_size: tuple[int, int, int] | None) -> _TicketRef:
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
    size = _check_input_size(size, f"{where}: input size of {spec!r}")
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
    return _TicketRef(
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


# --- the plan --------------------------------------------------------------------------------------


@dataclass
class _Cell:
    cell_id: str  # one result row
    run_id: str  # one training run (several cells may share it: dense across sources)
    ref: _TicketRef
    control: str
    target: str
    optimizer: str
    seed: int
    train: dict[str, Any]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


# On a ticket of density 1.0 these controls train exactly what another control trains.
_SAME_RUN_AT_FULL_DENSITY = {"random_ticket": "dense", "reinit": "dense", "random_mask": "winning"}


def _plan(cfg: TransferConfig) -> list[_Cell]:
    """Every cell of the grid, in run order (target, ticket, optimizer, control, seed), deduplicated."""
    assert cfg._refs is not None, "validate() first"
    cells: list[_Cell] = []
    seen: set[str] = set()
    for target in cfg.targets:
        # Tickets of one input size together: the target is loaded once per size.
        for ref in sorted(cfg._refs, key=lambda r: r.input_size):
            full = ref.density >= 1.0
            for opt in cfg.optimizers:
                for control in cfg.controls:
                    # Identical trainings share one run (see the module docstring).
                    run_control = _SAME_RUN_AT_FULL_DENSITY.get(control, control) if full else control
                    for seed in cfg.seeds:
                        tc = cfg.train_config(opt, seed, target).to_dict()
                        train = {k: v for k, v in tc.items() if k not in _HOUSEKEEPING}
                        if run_control == "dense":
                            kwargs = dict(ref.arch_kwargs)
                            if cfg.new_head:  # the source head is replaced anyway
                                kwargs.pop("num_classes", None)
                            what: Any = {"dense": {"arch": ref.arch, "arch_kwargs": kwargs}}
                        else:
                            what = {"ticket": ref.digest, "control": run_control}
                        identity = {
                            "engine": _ENGINE_VERSION,
                            **what,
                            "target": target,
                            "optimizer": opt,
                            "seed": seed,
                            "train": train,
                            "input_size": list(ref.input_size),
                            "new_head": cfg.new_head,
                            "val_fraction": cfg.val_fraction,
                            "data_seed": cfg.data_seed,
                            "limit": cfg.limit,
                        }
                        digest = hashlib.sha256(
                            json.dumps(identity, sort_keys=True, default=str).encode()
                        ).hexdigest()[:16]
                        run_id = (
                            f"{_slug(ref.arch)}-{run_control}-{_slug(target)}-{_slug(opt)}-s{seed}-{digest}"
                        )
                        if control == "dense":
                            cell_id = f"{run_id}@{ref.source or '-'}"
                        elif control != run_control:
                            cell_id = f"{run_id}@{control}:{ref.digest[:16]}"
                        else:
                            cell_id = run_id
                        if cell_id in seen:
                            continue
                        seen.add(cell_id)
                        cells.append(_Cell(cell_id, run_id, ref, control, target, opt, seed, tc))
    return cells


# --- results file ----------------------------------------------------------------------------------


def _read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of ``results.jsonl``; a torn last line (killed writer) is dropped and the file rewritten."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    raws = data.split(b"\n")
    good: list[bytes] = []
    rows: list[dict[str, Any]] = []
    nonblank = [i for i, r in enumerate(raws) if r.strip()]
    repaired = bool(data) and not data.endswith(b"\n")
    for i in nonblank:
        try:
            row = json.loads(raws[i].decode("utf-8"))
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except (UnicodeDecodeError, ValueError):
            if i == nonblank[-1]:
                repaired = True
                continue
            raise ConfigError(
                f"{path}: line {i + 1} is not a JSON result row; fix or delete that line, then re-run"
            ) from None
        good.append(raws[i])
        rows.append(row)
    if repaired:
        atomic_write_bytes(path, b"".join(g + b"\n" for g in good))
    return rows


def _versions() -> dict[str, str]:
    import timm

    from . import __version__

    return {
        "ticket_zoo": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }


# --- one cell --------------------------------------------------------------------------------------


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


def _run_cell(
    cell: _Cell, ticket: Ticket, splits, cfg: TransferConfig, out: Path, progress: bool
) -> dict[str, Any]:
    from .train import TrainConfig, train

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

    steps = int(result.steps)
    return {
        "test_acc": result.test_acc,
        "val_acc": result.best_val_acc,
        "final_val_acc": result.final_val_acc,
        "final_test_acc": result.final_test_acc,
        "best_step": int(result.best_step),
        "steps": steps,
        "density": float(made.density),
        "train_seconds": round(float(result.seconds), 3),
        "images_per_second": round(steps * train_cfg.batch_size / max(float(result.seconds), 1e-9), 1),
    }


def _row(cell: _Cell, metrics: Mapping[str, Any], cfg: TransferConfig) -> dict[str, Any]:
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
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


_METRICS = ("test_acc", "val_acc", "final_val_acc", "final_test_acc", "best_step", "steps", "density",
            "train_seconds", "images_per_second")  # fmt: skip


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
    same meaning as for :func:`ticket_zoo.find.find_tickets`, e.g.
    ``{"train.iterations": 50, "seeds": [0, 1]}`` (see :meth:`TransferConfig.from_dict`). Everything is validated
    before any training. Cells already in ``out_dir/results.jsonl`` are skipped; a cell killed
    mid-way resumes from its checkpoint. With ``report`` the report (:mod:`ticket_zoo.report`) is
    written at the end.

    Example:
        >>> rows = transfer("recipes/transfer-digits.yaml", "runs/demo/transfer")  # doctest: +SKIP
        >>> rows[0]["control"], rows[0]["test_acc"]  # doctest: +SKIP
        ('winning', 93.4)
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
    _dist.together(cfg.validate)  # loads every ticket on every rank; a failure anywhere stops all
    out = Path(out_dir)
    results_path = out / RESULTS_FILE
    cells = _plan(cfg)
    existing = _dist.on_main(_open_out, out, cfg, cells)
    by_cell = {r["cell"]: r for r in existing if isinstance(r.get("cell"), str)}
    by_run = {r["run"]: r for r in existing if isinstance(r.get("run"), str)}
    pending = [c for c in cells if c.cell_id not in by_cell]
    bar = tqdm(total=len(cells), initial=len(cells) - len(pending), desc="transfer", unit="cell",
               disable=not progress or not ctx.main, dynamic_ncols=True)  # fmt: skip
    splits_key: tuple | None = None
    splits = None
    loaded: tuple[str, Ticket] | None = None
    try:
        for cell in pending:
            bar.set_postfix_str(
                f"{cell.control} {cell.target} {cell.optimizer} d={cell.ref.density:.3g} s{cell.seed}"
            )
            done = by_run.get(cell.run_id)
            if done is not None:
                metrics = {k: done.get(k) for k in _METRICS}
            else:
                key = (cell.target, cell.ref.input_size)
                if key != splits_key:  # cells are ordered by target, so each target loads once per size
                    # together: a failed download on one rank stops every rank instead of leaving it waiting
                    splits = _dist.together(load_splits, cell.target, input_size=cell.ref.input_size,
                                            val_fraction=cfg.val_fraction, seed=cfg.data_seed, limit=cfg.limit)  # fmt: skip
                    splits_key = key
                if loaded is None or loaded[0] != cell.ref.digest:
                    loaded = (cell.ref.digest, _load(cell.ref.spec))
                    if _ticket_digest(loaded[1]) != cell.ref.digest:
                        raise ConfigError(
                            f"tickets: {cell.ref.spec} changed on disk since the run was validated; re-run"
                        )
                metrics = _run_cell(cell, loaded[1], splits, cfg, out, progress)
            # Rank 0 appends the one row of this cell; every rank keeps that very row (its timing).
            row = _dist.on_main(_record, results_path, _row(cell, metrics, cfg), out / "cells" / cell.run_id)
            by_cell[cell.cell_id] = row
            by_run.setdefault(cell.run_id, row)
            bar.update(1)
    finally:
        bar.close()
    rows = [by_cell[c.cell_id] for c in cells]
    if report:
        _dist.on_main(_report, out, progress)
    return rows


def _open_out(out: Path, cfg: TransferConfig, cells: list[_Cell]) -> list[dict[str, Any]]:
    """Rank 0, before any training: prepare OUT, tidy what a killed run left, write transfer.json;
    return the rows already recorded."""
    # A file in the way, no permission, /proc, a read-only disk: one OutputDirError line, up front.
    prepare_out_dir(out, what="--out")
    # Temporaries of atomic writes a killed run left behind, where this engine writes (not all of OUT,
    # which may be a shared folder holding other programs' files).
    remove_stale_temps(out, recursive=False)
    remove_stale_temps(out / "cells")
    existing = _read_results(out / RESULTS_FILE)
    atomic_write_text(out / "transfer.json", json.dumps(cfg.to_dict(), indent=2, default=str) + "\n")
    recorded = {r.get("cell") for r in existing}
    for cell in cells:  # a kill between "recorded" and "checkpoint removed" leaves a stale checkpoint
        if cell.cell_id in recorded:
            shutil.rmtree(out / "cells" / cell.run_id / "ckpt", ignore_errors=True)
    return existing


def _record(results_path: Path, row: dict[str, Any], cell_dir: Path) -> dict[str, Any]:
    """Rank 0: append the cell's row, then drop the run's checkpoint (the row now stands for it)."""
    append_line(results_path, json.dumps(row, allow_nan=False))
    shutil.rmtree(cell_dir / "ckpt", ignore_errors=True)
    return row


def _report(out: Path, show: bool) -> None:
    from .report import build_report

    build_report(out, show=show)


# --- command line ------------------------------------------------------------------------------------


def _cli(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.config is None and (not args.ticket or not args.target):
        raise ConfigError("without --config, give at least one --ticket and one --target")
    if args.ticket:
        overrides["tickets"] = list(args.ticket)
    if args.target:
        overrides["targets"] = list(args.target)
    if args.controls:
        overrides["controls"] = list(args.controls)
    if args.seeds:
        overrides["seeds"] = list(args.seeds)
    if args.limit is not None:
        overrides["limit"] = args.limit
    if args.device is not None:
        overrides["train"] = {"device": args.device}
    if args.set:
        from .find import _parse_set

        overrides.update(_parse_set(args.set))
    if args.config is None:
        cfg = TransferConfig.from_dict({"tickets": [], "targets": [], "optimizers": {}}, overrides)
    else:
        cfg = TransferConfig.from_yaml(args.config, overrides)
    if args.optimizers:
        chosen = {}
        for name in args.optimizers:
            if name in cfg.optimizers:
                chosen[name] = cfg.optimizers[name]
            elif name in OPTIMIZER_PRESETS:
                chosen[name] = dict(OPTIMIZER_PRESETS[name])
            else:
                known = sorted({*cfg.optimizers, *OPTIMIZER_PRESETS})
                raise ConfigError(
                    f"--optimizers: unknown optimizer {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}"
                )
        cfg.optimizers = chosen
    elif not cfg.optimizers:
        cfg.optimizers = copy.deepcopy(OPTIMIZER_PRESETS)
    if args.iterations is not None:
        _replace_budget(cfg, args.iterations)
    rows = transfer(cfg, args.out, progress=not args.quiet, report=not args.no_report)
    if _dist.is_main():
        print(f"{len(rows)} cells recorded in {Path(args.out) / RESULTS_FILE}", file=sys.stderr)
    return 0


def _replace_budget(cfg: TransferConfig, iterations: int) -> None:
    """``--iterations N``: a smoke-test budget everywhere. Step milestones (in the old budget's unit)
    cannot carry over, so a step schedule becomes constant; a note says so."""
    budget_keys = ("epochs", "iterations", "milestones")
    sections = [cfg.train, *[o or {} for o in cfg.optimizers.values()]]
    if any(sec.get("schedule") == "step" for sec in sections) and _dist.is_main():
        print(
            "ticket-zoo transfer: --iterations replaces the step schedule by a constant rate", file=sys.stderr
        )
    fixed = [{k: v for k, v in sec.items() if k not in budget_keys} for sec in sections]
    for sec in fixed:
        if sec.get("schedule") == "step":
            sec["schedule"] = "constant"
    cfg.train = {**fixed[0], "iterations": iterations}
    cfg.optimizers = dict(zip(cfg.optimizers, fixed[1:], strict=True))


def register_cli(subparsers: Any) -> None:
    """Add ``ticket-zoo transfer`` to an argparse subparsers object.

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
    p.add_argument(
        "--ticket", nargs="+", metavar="T", help="ticket(s): dir, .safetensors, name, hf-hub:id, find OUT"
    )
    p.add_argument("--target", nargs="+", metavar="D", help="target dataset(s), e.g. digits[5-9] cifar10")
    p.add_argument("--optimizers", nargs="+", metavar="NAME",
                   help=f"optimizers of the recipe to run (or presets: {', '.join(OPTIMIZER_PRESETS)})")  # fmt: skip
    p.add_argument("--controls", nargs="+", metavar="C", help=f"controls ({', '.join(CONTROLS)})")
    p.add_argument("--seeds", nargs="+", type=int, metavar="S", help="seeds (default: the recipe's)")
    p.add_argument(
        "--iterations",
        type=int,
        metavar="N",
        help="replace the training budget by N iterations (smoke tests)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="read at most N examples per split of each target")
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
