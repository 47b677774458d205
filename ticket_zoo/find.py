"""Find lottery tickets: iterative magnitude pruning (IMP) with rewinding, one ticket per level.

The procedure of Frankle & Carbin (2019) with the late resetting of Frankle et al. (2019) and the
global pruning of Morcos et al. (2019):

1. Level 0: create the dense network (seeded), train it, and keep its state ``θk`` after ``k``
   steps (``rewind``; ``k = 0`` is classic LTH, i.e. ``θ0``).
2. Level ``L >= 1``: prune the *final* weights of level ``L-1`` by magnitude so that every layer
   group keeps ``(1 - p)^L`` of its weights (``p`` = ``prune_fraction``; per-layer ``overrides`` and
   ``head_prune_fraction`` compound the same way), reset the survivors to ``θk``, and retrain with
   the mask held, with the same seed (same data order: only the mask differs).

Each level is written to ``OUT/level_XX/`` as a ticket (``ticket.safetensors`` + ``README.md``)
whose init is ``θk`` with that level's masks, and whose accuracy meta is that of the network trained
from it. The run is resumable at any point: re-running the same command after a kill finishes with
the same results as a run that never stopped.

Example:
    >>> rows = find_tickets("recipes/lenet_300_100-digits.yaml", "runs/lenet-digits")  # doctest: +SKIP
    >>> [round(r["density"], 3) for r in rows][:3]  # doctest: +SKIP
    [1.0, 0.8, 0.64]
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import math
import os
import platform
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from . import _dist
from ._io import atomic_write_bytes, atomic_write_text, os_reason, prepare_out_dir, remove_stale_temps
from ._recipe import read_yaml_file, recipe_hint, resolve_recipe
from .errors import CheckpointError, ConfigError, UnknownArchitectureError, did_you_mean, one_line

__all__ = ["FindConfig", "find_tickets", "register_cli", "density_schedule"]

SCOPES = ("global", "layerwise")
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
REWIND_FILE = "rewind.safetensors"
FINAL_FILE = "final.safetensors"
DONE_FILE = "done.json"
TICKET_FILE = "ticket.safetensors"
_MAX_LEVELS = 500  # a target density that needs more levels than this is a mistake, not a plan
# Fields that change neither the trajectory nor any stored result: a resume may change them.
# (levels/target_density only decide where to stop, so a finished run can be extended.)
_NOT_FINGERPRINTED = ("levels", "target_density")
_TRAIN_NOT_FINGERPRINTED = ("device", "num_workers", "checkpoint_every")
_REWIND_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ep|epochs?|it|iters?|iterations?)?\s*$")


# --- config ----------------------------------------------------------------------------------------


def _train_config_cls():
    from .train import TrainConfig

    return TrainConfig


@dataclass
class FindConfig:
    """Everything that decides an IMP run. ``train`` is a :class:`~ticket_zoo.train.TrainConfig`.

    ``seed`` seeds both the network's initialization and the training data order (``train.seed``
    follows it). ``levels=N`` makes levels ``0..N`` (level 0 is the dense network);
    ``target_density`` stops at the first level whose density is ``<= target`` (with both, whichever
    comes first). ``rewind`` is an iteration count or ``"<x>ep"`` epochs.

    Example:
        >>> from ticket_zoo.train import TrainConfig
        >>> cfg = FindConfig(arch="lenet_300_100", dataset="digits", levels=3,
        ...                  train=TrainConfig(optimizer="adam", lr=1.2e-3, iterations=200, batch_size=60))
        >>> cfg.validate()
    """

    arch: str
    dataset: str
    train: Any  # TrainConfig (typed loosely so importing this module does not import train.py)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int, int] | None = None
    rewind: int | str = 0
    scope: str = "global"
    prune_fraction: float = 0.2
    head_prune_fraction: float | None = None
    overrides: dict[str, float] = field(default_factory=dict)
    include: list[str] | None = None
    exclude: list[str] | None = None
    levels: int | None = None
    target_density: float | None = None
    one_shot: bool = False
    seed: int = 0
    name_prefix: str | None = None

    # -- construction --

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FindConfig:
        """Build from a recipe mapping; unknown keys raise :class:`ConfigError` with a suggestion.

        Example:
            >>> FindConfig.from_dict({"arch": "conv4", "dataset": "digits", "train": {"iterations": 5},
            ...                       "levels": 1, "prune_fracton": 0.2})
            Traceback (most recent call last):
            ...
            ticket_zoo.errors.ConfigError: unknown recipe field 'prune_fracton' (did you mean 'prune_fraction'?)
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"a recipe must be a mapping of fields, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                raise ConfigError(f"unknown recipe field {key!r}{did_you_mean(key, names)}")
        for key in ("arch", "dataset", "train"):
            if key not in d:
                raise ConfigError(f"recipe is missing the required field {key!r}")
        kw = dict(d)
        train = kw["train"]
        if not isinstance(train, Mapping):
            raise ConfigError(f"train must be a mapping of training settings, got {type(train).__name__}")
        train = dict(train)
        seed = kw.get("seed", 0)
        if "seed" in train and train["seed"] != seed:
            raise ConfigError(
                f"train.seed ({train['seed']!r}) differs from seed ({seed!r}): set only the top-level "
                "seed; it seeds both the initialization and the data order"
            )
        train["seed"] = seed if _is_int(seed) else 0  # a bad seed is reported by validate()
        kw["train"] = _train_config_cls().from_dict(train)
        if isinstance(kw.get("input_size"), list):
            kw["input_size"] = tuple(kw["input_size"])
        for key in ("arch_kwargs", "overrides"):
            if kw.get(key) is None:
                kw[key] = {}
        return cls(**kw)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> FindConfig:
        """Read a YAML recipe; ``overrides`` (dotted keys such as ``"train.lr"``) replace its fields.

        ``path`` is a file or the name of a recipe shipped in the package (``"lenet_300_100-digits04"``;
        see :func:`ticket_zoo._recipe.resolve_recipe`).

        Setting ``train.iterations`` drops the recipe's ``train.epochs`` (and the other way round),
        since a budget is exactly one of them.

        Example:
            >>> cfg = FindConfig.from_yaml("recipes/lenet_300_100-digits.yaml",
            ...                            {"levels": 2, "train.iterations": 50})  # doctest: +SKIP
        """
        # A path, or the name of a recipe shipped in the package ("lenet_300_100-digits04").
        path = resolve_recipe(path)
        # Bounded, text-only, alias-bomb-safe: a binary or huge --config is one ConfigError line.
        raw = read_yaml_file(path, what="recipe", hint=recipe_hint("find"))
        if not isinstance(raw, dict):
            raise ConfigError(f"recipe {path} must be a YAML mapping of fields")
        return cls.from_dict(apply_overrides(raw, overrides or {}))

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-ready dict that :meth:`from_dict` reads back (``train.seed`` follows ``seed``).

        Example:
            >>> FindConfig.from_dict(cfg.to_dict()) == cfg  # doctest: +SKIP
            True
        """
        d = dataclasses.asdict(self)
        train = self.train.to_dict() if hasattr(self.train, "to_dict") else dict(self.train)
        train.pop("seed", None)
        d["train"] = train
        if self.input_size is not None:
            d["input_size"] = list(self.input_size)
        return d

    def effective_train(self):
        """The training config each level uses: the recipe's, with ``seed`` set to :attr:`seed`."""
        return dataclasses.replace(self.train, seed=self.seed)

    # -- validation --

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field, before any data is read or trained.

        Checks the dataset and architecture names, the training config, the pruning fields and the
        stop rule. (Checks that need the data size, such as an epoch rewind past the budget, run in
        :func:`find_tickets` before training starts.)

        Example:
            >>> FindConfig(arch="lenet_300_100", dataset="digits", train=TrainConfig(iterations=10),
            ...            levels=2, prune_fraction=1.5).validate()  # doctest: +SKIP
            Traceback (most recent call last):
            ConfigError: prune_fraction must be a fraction in (0, 1), got 1.5
        """
        from .data import get_spec

        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError(
                f"dataset must be a dataset name such as 'digits' or 'cifar10', got {self.dataset!r}"
            )
        try:
            get_spec(self.dataset)
        except ConfigError as exc:
            raise type(exc)(f"dataset: {exc}") from None
        if not isinstance(self.arch, str) or not self.arch:
            raise ConfigError(f"arch must be a timm model name, got {self.arch!r}")
        _check_arch(self.arch)
        if not isinstance(self.arch_kwargs, dict) or not all(isinstance(k, str) for k in self.arch_kwargs):
            raise ConfigError(f"arch_kwargs must be a mapping of keyword arguments, got {self.arch_kwargs!r}")
        from .ticket import check_arch_kwargs

        try:  # the allow-list, before any data is downloaded (create_model enforces it again)
            check_arch_kwargs(self.arch_kwargs)
        except ConfigError as exc:
            raise ConfigError(f"arch_kwargs: {exc}") from None
        if self.input_size is not None:
            size = self.input_size
            if (
                not isinstance(size, (tuple, list))
                or len(size) != 3
                or not all(_is_int(v) and v >= 1 for v in size)
            ):
                raise ConfigError(f"input_size must be [C, H, W] of positive ints, got {size!r}")
        train_cls = _train_config_cls()
        if not isinstance(self.train, train_cls):
            raise ConfigError(
                f"train must be a TrainConfig (or a mapping in a recipe), got {type(self.train).__name__}"
            )
        try:
            self.train.validate()
        except ConfigError as exc:
            raise ConfigError(f"train: {exc}") from None
        rewind_unit, rewind_value = parse_rewind(self.rewind)  # checked here, compared with the budget below
        if self.scope not in SCOPES:
            raise ConfigError(
                f"scope must be one of {SCOPES}, got {self.scope!r}{did_you_mean(self.scope, SCOPES)}"
            )
        _fraction("prune_fraction", self.prune_fraction)
        if self.head_prune_fraction is not None:
            _fraction("head_prune_fraction", self.head_prune_fraction)
        if not isinstance(self.overrides, dict):
            raise ConfigError(
                f"overrides must map layer names or globs to prune fractions, got {self.overrides!r}"
            )
        for pattern, value in self.overrides.items():
            if not isinstance(pattern, str) or not pattern:
                raise ConfigError(f"overrides: keys must be layer names or globs, got {pattern!r}")
            _fraction(f"overrides[{pattern!r}]", value, allow_zero=True)
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p for p in value)
            ):
                raise ConfigError(f"{name} must be a list of parameter name patterns, got {value!r}")
        if self.levels is None and self.target_density is None:
            raise ConfigError("give a stop rule: levels (number of pruning levels) or target_density")
        if self.levels is not None and (not _is_int(self.levels) or not 0 <= self.levels <= _MAX_LEVELS):
            raise ConfigError(f"levels must be an int in [0, {_MAX_LEVELS}], got {self.levels!r}")
        if self.target_density is not None and (
            not _is_real(self.target_density) or not 0 < self.target_density < 1
        ):
            raise ConfigError(f"target_density must be a fraction in (0, 1), got {self.target_density!r}")
        if not isinstance(self.one_shot, bool):
            raise ConfigError(f"one_shot must be true or false, got {self.one_shot!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an int in [0, 2**32), got {self.seed!r}")
        if self.name_prefix is not None and (not isinstance(self.name_prefix, str) or not self.name_prefix):
            raise ConfigError(f"name_prefix must be a non-empty string, got {self.name_prefix!r}")
        if (
            rewind_unit == "iterations"
            and self.train.iterations is not None
            and rewind_value > self.train.iterations
        ):
            raise ConfigError(
                f"rewind ({rewind_value} iterations) is beyond the training budget ({self.train.iterations} iterations)"
            )
        if rewind_unit == "epochs" and self.train.epochs is not None and rewind_value > self.train.epochs:
            raise ConfigError(
                f"rewind ({rewind_value} epochs) is beyond the training budget ({self.train.epochs} epochs)"
            )


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of recipe mapping ``raw`` with dotted-key ``overrides`` applied.

    Example:
        >>> apply_overrides({"train": {"lr": 0.1, "epochs": 3}}, {"train.lr": 0.01, "train.iterations": 9})
        {'train': {'lr': 0.01, 'iterations': 9}}
    """
    out = json.loads(json.dumps(raw, default=_plain))  # deep copy of plain data
    for key, value in overrides.items():
        parts = str(key).split(".")
        if not all(parts):
            raise ConfigError(f"bad override key {key!r}: use field or section.field, e.g. train.lr")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section of the recipe")
            node = child
        node[parts[-1]] = value
        # A budget is iterations XOR epochs: setting one drops the other unless both are overridden.
        if parts[-1] in ("iterations", "epochs") and len(parts) >= 2 and value is not None:
            other = "epochs" if parts[-1] == "iterations" else "iterations"
            if ".".join([*parts[:-1], other]) not in overrides:
                node.pop(other, None)
    return out


def _plain(value: Any) -> Any:
    """JSON stand-in for the few non-JSON values YAML makes (sets, dates, !!binary): validation names them."""
    return sorted(value, key=str) if isinstance(value, (set, frozenset)) else str(value)


def parse_rewind(rewind: Any) -> tuple[str, float | int]:
    """``("iterations", k)`` or ``("epochs", x)`` from a rewind spec such as ``500``, ``"2ep"``.

    Example:
        >>> parse_rewind("2ep"), parse_rewind(500), parse_rewind("0.5ep")
        (('epochs', 2.0), ('iterations', 500), ('epochs', 0.5))
    """
    if _is_int(rewind):
        if rewind < 0:
            raise ConfigError(f"rewind must be >= 0 (iterations) or like '2ep' (epochs), got {rewind!r}")
        return "iterations", int(rewind)
    if isinstance(rewind, str):
        m = _REWIND_RE.match(rewind)
        if m is not None:
            number, unit = m.group(1), m.group(2) or "it"
            if unit.startswith("ep"):
                return "epochs", float(number)
            if "." not in number:
                return "iterations", int(number)
    raise ConfigError(
        f"rewind must be an iteration count (e.g. 500) or epochs such as '1ep' or '0.5ep', got {rewind!r}"
    )


def density_schedule(
    sizes: Mapping[str, int],
    level: int,
    *,
    scope: str = "global",
    prune_fraction: float = 0.2,
    layer_fractions: Mapping[str, float] | None = None,
) -> tuple[float, dict[str, float]]:
    """The ``(overall density, explicit per-layer densities)`` of pruning level ``level``.

    Every layer group keeps ``(1 - fraction)^level`` of its weights: layers in ``layer_fractions``
    (overrides, the head) individually, and the others individually (``layerwise``) or pooled
    (``global``). The returned pair is what :func:`~ticket_zoo.masks.magnitude_masks` needs.

    Example:
        >>> d, per_layer = density_schedule({"a": 100, "b": 100}, 2, scope="global", prune_fraction=0.5)
        >>> d, per_layer
        (0.25, {})
    """
    layer_fractions = dict(layer_fractions or {})
    explicit: dict[str, float] = {}
    for name in sizes:
        if name in layer_fractions:
            explicit[name] = (1.0 - layer_fractions[name]) ** level
        elif scope == "layerwise":
            explicit[name] = (1.0 - prune_fraction) ** level
    kept = sum(round(d * sizes[n]) for n, d in explicit.items())
    pooled = sum(n for name, n in sizes.items() if name not in explicit)
    kept += round((1.0 - prune_fraction) ** level * pooled)
    total = sum(sizes.values())
    return kept / total, explicit


# --- the run ---------------------------------------------------------------------------------------


def find_tickets(
    config: FindConfig | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run IMP with rewinding and write one ticket per level under ``out_dir``; return the summary rows.

    ``config`` is a :class:`FindConfig`, a recipe file or a shipped recipe's name. ``overrides`` are
    what ``ticket-zoo find --set KEY=VALUE`` takes: dotted keys replacing recipe fields, e.g.
    ``{"train.iterations": 50, "levels": 2, "seed": 1}`` (see :func:`apply_overrides`; with a
    :class:`FindConfig` they apply to its :meth:`~FindConfig.to_dict`).

    Each row is ``{level, density, val_acc, test_acc, steps, seconds, path}`` (accuracies in percent,
    of the network trained from that level's ticket; test at the best-val weights). Re-running the
    same call resumes; a different config in the same ``out_dir`` raises :class:`ConfigError`.
    Under torchrun every rank calls it and trains each level together (DDP); rank 0 alone writes.

    Example:
        >>> rows = find_tickets("recipes/lenet_300_100-digits.yaml", "runs/lenet")  # doctest: +SKIP
        >>> import ticket_zoo as tz; tz.load(rows[-1]["path"]).density  # doctest: +SKIP
        0.055
    """
    from tqdm.auto import tqdm

    from .data import load_splits
    from .masks import prunable_names

    if not isinstance(config, FindConfig):
        config = FindConfig.from_yaml(config, overrides)
    elif overrides:
        config = FindConfig.from_dict(apply_overrides(config.to_dict(), overrides))
    # Under torchrun every rank joins the process group here, before anything is read or written;
    # rank 0 alone writes (OUT, config.yaml, tickets, summary) and the others wait where they read.
    ctx = _dist.setup(getattr(config.train, "device", "auto"))
    _dist.together(config.validate)
    # A file in the way, no permission, /proc, a read-only disk: one OutputDirError line, up front.
    # A run of another config in OUT: say so before loading data. (Rank 0 checks; every rank raises.)
    _dist.on_main(_check_out, out_dir, config)
    out = Path(out_dir)

    splits = _dist.together(load_splits, config.dataset, input_size=config.input_size, seed=config.seed)
    train_cfg = config.effective_train()
    steps_per_epoch = len(splits.train) // train_cfg.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"train.batch_size ({train_cfg.batch_size}) is larger than the training set ({len(splits.train)})"
        )
    budget = train_cfg.iterations or max(1, round(train_cfg.epochs * steps_per_epoch))
    kind, value = parse_rewind(config.rewind)
    rewind_step = int(value) if kind == "iterations" else int(round(value * steps_per_epoch))
    if rewind_step > budget:
        raise ConfigError(
            f"rewind {config.rewind!r} = {rewind_step} iterations is beyond the budget ({budget})"
        )
    arch_kwargs = _resolve_arch_kwargs(config, splits.spec.num_classes, splits.input_size)

    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(config.seed)
        dense = _create(config.arch, arch_kwargs)
    names = prunable_names(
        dense,
        include=config.include,
        exclude=config.exclude,
        prune_head=config.head_prune_fraction is not None,
    )
    params = dict(dense.named_parameters())
    sizes = {n: params[n].numel() for n in names}
    fractions = _layer_fractions(config, dense, names)
    n_levels = _count_levels(config, sizes, fractions)
    # Claim OUT only now: every check above (data size, rewind, arch) fails without touching it.
    # (These checks are deterministic, so every rank has raised the same error or none has.)
    _dist.on_main(_claim_and_clean, out, config)
    done_levels = {int(p.parent.name[len("level_") :]) for p in out.glob(f"level_*/{DONE_FILE}")}

    method = f"{'oneshot' if config.one_shot else 'imp'}-{config.scope}"
    prefix = config.name_prefix or f"{config.arch}-{_source_tag(config.dataset)}"
    context = {
        "config": config,
        "splits": splits,
        "train_cfg": train_cfg,
        "arch_kwargs": arch_kwargs,
        "rewind_step": rewind_step,
        "method": method,
        "prefix": prefix,
        "names": names,
        "progress": progress,
    }
    rows: list[dict[str, Any]] = []
    bar = tqdm(
        total=n_levels + 1, desc="IMP levels", disable=not progress or not ctx.main, dynamic_ncols=True
    )
    try:
        for level in range(n_levels + 1):
            if level in done_levels:
                # Checks that the level's ticket is the one it recorded; every rank gets rank 0's row.
                row = _dist.on_main(_done_row, out, level)
            else:
                if level == 0:
                    masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
                    row = _run_level(context, out, 0, masks, dense, rewind=None)
                else:
                    # Every rank reads what rank 0 wrote for the previous level (written before the
                    # barrier that ended it).
                    masks = _dist.together(_level_masks, out, level, config, sizes, fractions)
                    rewind = _dist.together(_load_tensors, out / REWIND_FILE)
                    model = _create(config.arch, arch_kwargs)
                    model.load_state_dict(rewind)
                    row = _run_level(context, out, level, masks, model, rewind=rewind)
            rows.append(row)
            _write_summary(out, config, rows)
            bar.update(1)
            test = "-" if row.get("test_acc") is None else f"{row['test_acc']:.2f}"
            bar.set_postfix(density=f"{row['density']:.4f}", test=test)
    finally:
        bar.close()
    # Stored rows name their level folder relative to OUT (a copied run stays valid); the caller gets
    # paths it can use as they are: OUT/level_XX.
    return [{**row, "path": str(out / row["path"])} for row in rows]


def _run_level(
    ctx: dict[str, Any], out: Path, level: int, masks, model, *, rewind: Mapping[str, torch.Tensor] | None
) -> dict[str, Any]:
    """Train one level from ``model`` (θk already loaded, or the dense init), write its ticket, mark it done.

    ``rewind`` is θk for levels >= 1; level 0 passes ``None`` and captures θk while it trains."""
    import timm

    from . import __version__
    from .api import save
    from .masks import overall_density
    from .ticket import Ticket
    from .train import train

    config: FindConfig = ctx["config"]
    splits = ctx["splits"]
    ldir = out / f"level_{level:02d}"
    ckpt = ldir / ".ckpt"
    capture = rewind is None
    result = train(
        model,
        splits.train,
        splits.val,
        ctx["train_cfg"],
        masks=None if capture else masks,  # level 0 is dense: nothing to hold
        test_set=splits.test,
        capture_at=ctx["rewind_step"] if capture else None,
        checkpoint_dir=ckpt,
        progress=f"level {level}" if ctx["progress"] else False,
        final_model="last",  # the next level prunes the final weights, as in the papers
        # Late resetting: a level >= 1 starts from θk and trains steps k..T of the same run (schedule,
        # data order and evaluation steps continue; the optimizer state starts fresh).
        start_step=0 if capture else ctx["rewind_step"],
    )
    if capture:
        if result.captured is None:
            raise CheckpointError(
                f"training of level 0 returned no rewind state at step {ctx['rewind_step']}"
            )
        rewind = result.captured
    density = overall_density(masks)
    meta = {
        "name": f"{ctx['prefix']}-{_pct(density)}pct",
        "source": config.dataset,
        "source_hub_id": splits.spec.hub_id,
        "level": level,
        "density": density,
        "method": ctx["method"],
        "scope": config.scope,
        "prune_fraction": config.prune_fraction,
        "head_prune_fraction": config.head_prune_fraction,
        "overrides": dict(config.overrides),
        "prunable": list(ctx["names"]),
        "rewind": config.rewind,
        "rewind_step": ctx["rewind_step"],
        "seed": config.seed,
        "source_val_acc": result.best_val_acc,
        "source_test_acc": result.test_acc,
        "source_final_test_acc": result.final_test_acc,
        "train_steps": result.steps,
        "start_step": result.start_step,
        "steps": result.steps,
        "best_step": result.best_step,
        "recipe": config.to_dict(),
        "versions": {
            "ticket_zoo": __version__,
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
        },
        "input_size": list(splits.input_size),
        "num_classes": splits.spec.num_classes,
        # How to feed it (timm's pipeline: input size, mean/std, interpolation, crop_pct); only for
        # photo sets, so tickets of small-image sets (e.g. the embedded digits zoo) keep their bytes.
        **({"data_config": splits.data_config} if splits.data_config is not None else {}),
    }
    row = {
        "level": level,
        "density": density,
        "val_acc": result.best_val_acc,
        "test_acc": result.test_acc,
        "final_test_acc": result.final_test_acc,
        "start_step": result.start_step,
        "steps": result.steps,
        "seconds": result.seconds,
        "path": ldir.name,  # relative to OUT, so a copied or moved run folder stays valid
    }

    def write() -> None:  # rank 0 only; the others wait (on_main is a barrier) and then may read it all
        if capture:
            _save_tensors(out / REWIND_FILE, rewind)
        _save_tensors(ldir / FINAL_FILE, model.state_dict())
        ticket = Ticket.from_model(
            model, masks, arch=config.arch, arch_kwargs=ctx["arch_kwargs"], init_state=rewind, meta=meta
        )
        save(ticket, ldir, name=meta["name"])
        # done.json last: its presence means everything above is complete on disk. It records the
        # ticket's sha256 so that a resume notices a level replaced afterwards (e.g. by a pull).
        record = {"row": row, "ticket_sha256": _sha256_file(ldir / TICKET_FILE), "meta": meta}
        atomic_write_text(ldir / DONE_FILE, json.dumps(record, indent=2, default=str) + "\n")
        shutil.rmtree(ckpt, ignore_errors=True)

    _dist.on_main(write)
    return row


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _redo_hint(out: Path, level: int) -> str:
    """How to redo ``level``: delete its folder and every later level's, then re-run."""
    names = sorted(
        (p.name for p in out.glob("level_*") if p.name[len("level_") :].isdigit()
         and int(p.name[len("level_") :]) >= level),
        key=lambda n: int(n[len("level_") :]),
    )  # fmt: skip
    names = names or [f"level_{level:02d}"]
    listed = names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]}"
    return (
        f"to redo it, delete {out / names[0]}"
        + (f" and the later level folders ({listed})" if len(names) > 1 else "")
        + " and re-run the same command"
    )


def _done_row(out: Path, level: int) -> dict[str, Any]:
    """The summary row of a level marked done, once its ticket is checked against its done record.

    ``done.json`` records the sha256 of the level's ``ticket.safetensors``; one written before that
    field existed is checked by the ticket's own level and density instead. The row's ``path`` is the
    level folder relative to OUT (older runs stored an absolute path)."""
    from .errors import TicketFormatError
    from .format import read_ticket

    ldir = out / f"level_{level:02d}"
    done = ldir / DONE_FILE
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
        row = record["row"]
        if not isinstance(row, dict) or not _is_real(row.get("density")):
            raise ValueError("no row with a density")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        reason = os_reason(exc) if isinstance(exc, OSError) else one_line(exc)
        raise CheckpointError(
            f"{done} cannot be read ({reason}); level {level} cannot be resumed: {_redo_hint(out, level)}"
        ) from None
    ticket_path = ldir / TICKET_FILE
    if not ticket_path.is_file():
        raise CheckpointError(
            f"{ticket_path} is missing although level {level} is marked done; {_redo_hint(out, level)}"
        )
    changed = (
        f"level {level} ({ldir}) was changed after this run finished it: its {TICKET_FILE} is not the "
        "ticket the run wrote (replaced by `ticket-zoo pull --out` or a copy?)"
    )
    recorded = record.get("ticket_sha256")
    if recorded is not None:
        if _sha256_file(ticket_path) != recorded:
            raise CheckpointError(f"{changed}: its sha256 differs from {DONE_FILE}; {_redo_hint(out, level)}")
    else:  # done.json of an older version without the digest: check level and density
        try:
            ticket = read_ticket(ticket_path)
        except TicketFormatError as exc:
            raise CheckpointError(f"{changed}: {exc}; {_redo_hint(out, level)}") from None
        meta_level = ticket.meta.get("level")
        wrong_level = meta_level is not None and meta_level != level
        if wrong_level or abs(ticket.density - float(row["density"])) > 1e-9:
            raise CheckpointError(
                f"{changed}: it is level {meta_level} at density {ticket.density:.4f}, {DONE_FILE} "
                f"recorded level {level} at density {float(row['density']):.4f}; {_redo_hint(out, level)}"
            )
    return {**row, "path": ldir.name}


def _level_masks(out: Path, level: int, config: FindConfig, sizes, fractions) -> dict[str, torch.Tensor]:
    """Masks of ``level``: magnitude pruning of the previous level's final weights (or the dense ones)."""
    from .api import load
    from .masks import magnitude_masks

    source_level = 0 if config.one_shot else level - 1
    sdir = out / f"level_{source_level:02d}"
    final = _load_tensors(sdir / FINAL_FILE)
    previous = None if config.one_shot else load(sdir).masks
    density, explicit = density_schedule(
        sizes, level, scope=config.scope, prune_fraction=config.prune_fraction, layer_fractions=fractions
    )
    weights = {n: final[n] for n in sizes}
    return magnitude_masks(weights, density, scope=config.scope, previous=previous, overrides=explicit)


def _layer_fractions(config: FindConfig, model, names: list[str]) -> dict[str, float]:
    """Per-layer prune fractions for layers that do not follow ``prune_fraction`` (overrides, head)."""
    from .models import classifier_param_names

    out: dict[str, float] = {}
    if config.head_prune_fraction is not None:
        for n in classifier_param_names(model):
            if n in names:
                out[n] = float(config.head_prune_fraction)
    for pattern, value in config.overrides.items():
        hits = [n for n in names if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ConfigError(
                f"overrides: {pattern!r} matches no prunable parameter; prunable are {names[:6]}"
                f"{' ...' if len(names) > 6 else ''}"
            )
        for n in hits:
            out[n] = float(value)
    return out


def _count_levels(config: FindConfig, sizes, fractions) -> int:
    """The last level to run, from ``levels`` and/or ``target_density`` (the schedule is known up front)."""
    last = config.levels if config.levels is not None else _MAX_LEVELS
    if config.target_density is None:
        return last
    previous = 1.0
    for level in range(last + 1):
        density, _ = density_schedule(
            sizes, level, scope=config.scope, prune_fraction=config.prune_fraction, layer_fractions=fractions
        )
        if density <= config.target_density:
            return level
        if level > 0 and density >= previous:
            break  # rounding has stalled the schedule: the target cannot be reached
        previous = density
    if config.levels is not None:
        return last
    raise ConfigError(
        f"target_density {config.target_density} cannot be reached within {_MAX_LEVELS} levels with "
        f"prune_fraction {config.prune_fraction} (overrides/head fractions may stop it); raise the fractions"
    )


# --- arch ------------------------------------------------------------------------------------------


def _check_arch(arch: str) -> None:
    import timm

    from . import models  # noqa: F401  (registers the paper architectures)

    if not timm.is_model(arch):
        hint = did_you_mean(arch, timm.list_models(), n=3) or "; see timm.list_models()"
        raise UnknownArchitectureError(f"arch: unknown architecture {arch!r}{hint}")


def _create(arch: str, arch_kwargs: Mapping[str, Any], device: str | None = None):
    from .ticket import create_model

    try:
        return create_model(arch, arch_kwargs, device=device)
    except ConfigError:
        raise
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
        raise ConfigError(f"arch_kwargs: cannot build {arch!r} with {dict(arch_kwargs)}: {exc}") from None


def _resolve_arch_kwargs(
    config: FindConfig, num_classes: int, input_size: tuple[int, int, int]
) -> dict[str, Any]:
    """The recipe's arch_kwargs plus num_classes / in_chans / img_size from the data (when accepted)."""
    from .ticket import create_model

    kwargs = dict(config.arch_kwargs)
    for key, value in (("num_classes", num_classes), ("in_chans", input_size[0])):
        if key in kwargs and kwargs[key] != value:
            raise ConfigError(
                f"arch_kwargs.{key} is {kwargs[key]!r} but the data ({config.dataset}) needs {value}; "
                f"remove it from arch_kwargs (it is filled in from the data)"
            )
        kwargs[key] = value
    model = _create(config.arch, kwargs, device="meta")  # also checks that the kwargs build
    if "img_size" in kwargs:
        return kwargs
    cfg = getattr(model, "pretrained_cfg", None) or {}
    default = tuple(cfg.get("input_size", ())) if isinstance(cfg, dict) else ()
    h, w = input_size[1], input_size[2]
    if default[1:] != (h, w):
        trial = {**kwargs, "img_size": h if h == w else [h, w]}
        try:  # nets with a global pool take any size and often have no img_size argument
            create_model(config.arch, trial, device="meta")
            kwargs = trial
        except TypeError:
            pass
    return kwargs


# --- files -----------------------------------------------------------------------------------------


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    import safetensors.torch

    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, safetensors.torch.save(data))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    import safetensors.torch

    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing although its level is marked done; the run folder is incomplete: "
            "delete that level's folder (and later ones) and re-run to redo them"
        )
    return safetensors.torch.load_file(str(path))


def _fingerprint(d: Mapping[str, Any]) -> str:
    d = {k: v for k, v in d.items() if k not in _NOT_FINGERPRINTED}
    d["train"] = {k: v for k, v in dict(d.get("train") or {}).items() if k not in _TRAIN_NOT_FINGERPRINTED}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _claim(out: Path, config: FindConfig, *, write: bool = True) -> None:
    """Write OUT/config.yaml, or check that the run already in ``out`` used the same config.

    A run that never finished a unit of work (no level done, no level-0 training checkpoint) does not
    lock its folder: a new config simply replaces its config.yaml. Otherwise a different config is
    refused with the way to start over. ``write=False`` only checks."""
    from .train import CHECKPOINT_NAME

    current = config.to_dict()
    path = out / CONFIG_FILE
    if path.exists():
        try:
            raw = read_yaml_file(path, what="stored config")
            stored = FindConfig.from_dict(raw).to_dict()
            problem = None
            if _fingerprint(stored) != _fingerprint(current):
                problem = f"a run with a different config ({'; '.join(_diff(stored, current)[:5])})"
        except ConfigError as exc:
            problem = f"a run whose {CONFIG_FILE} cannot be read ({exc})"
        if problem is not None:
            done = sorted(p.parent.name for p in out.glob(f"level_*/{DONE_FILE}"))
            partial = out / "level_00" / ".ckpt" / CHECKPOINT_NAME
            if done:
                raise ConfigError(
                    f"{out} holds {problem} with {len(done)} finished level(s) ({', '.join(done[:3])}"
                    f"{', ...' if len(done) > 3 else ''}); re-run with the original recipe to resume, or "
                    f"start over with a new --out (or delete {out})"
                )
            if partial.exists():
                raise ConfigError(
                    f"{out} holds {problem} whose level 0 is partly trained; re-run with the original "
                    f"recipe to resume, or start over: delete {out / 'level_00'} (partial training of the "
                    "old config) or use a new --out"
                )
            # Nothing was finished under the old config (e.g. it failed before training): replace it.
    if write and _dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        header = f"# effective config of this ticket-zoo find run (fingerprint {_fingerprint(current)})\n"
        atomic_write_text(path, header + yaml.safe_dump(current, sort_keys=False))


def _check_out(out_dir: str | os.PathLike, config: FindConfig) -> None:
    """Rank 0, before any data is read: OUT can be written, and holds no run of another config."""
    out = prepare_out_dir(out_dir, what="--out")
    _claim(out, config, write=False)


def _claim_and_clean(out: Path, config: FindConfig) -> None:
    """Rank 0, once every check has passed: write config.yaml and remove a killed run's temporaries."""
    _claim(out, config)
    _remove_stale_temps(out)


def _remove_stale_temps(out: Path) -> None:
    """Delete the ``.NAME.<hex>.tmp`` files of atomic writes that a killed run left in OUT.

    Only where a find run writes (OUT itself and its ``level_XX`` folders, checkpoints included), so an
    ``--out`` pointed at a shared folder never loses another program's temporaries."""
    remove_stale_temps(out, recursive=False)
    for ldir in out.glob("level_*"):
        if ldir.is_dir() and not ldir.is_symlink():
            remove_stale_temps(ldir)


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    skip = _NOT_FINGERPRINTED if prefix == "" else _TRAIN_NOT_FINGERPRINTED
    out = []
    for key in sorted(set(a) | set(b)):
        if key in skip:
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and key == "train":
            out += _diff(va, vb, prefix=f"{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


def _write_summary(out: Path, config: FindConfig, rows: list[dict[str, Any]]) -> None:
    """OUT/summary.json (by rank 0); each row's ``path`` is its level folder relative to OUT (``"level_05"``)."""

    def write() -> None:
        d = config.to_dict()
        doc = {"fingerprint": _fingerprint(d), "config": d, "levels": rows}
        atomic_write_text(out / SUMMARY_FILE, json.dumps(doc, indent=2, default=str) + "\n")

    _dist.on_main(write)


# --- small helpers ---------------------------------------------------------------------------------


def _source_tag(dataset: str) -> str:
    """``"digits[0-4]"`` -> ``"digits04"``; ``"imagefolder:/data/x"`` -> ``"x"``."""
    if ":" in dataset:
        dataset = Path(dataset.split(":", 1)[1].rstrip("/*")).name or "local"
    return re.sub(r"[^A-Za-z0-9_]+", "", dataset) or "data"


def _pct(density: float) -> str:
    """Percent of weights remaining, rounded as in catalogue names (``20``, ``5``, ``0.8``)."""
    pct = 100.0 * density
    if pct >= 1:
        return str(int(round(pct)))
    return f"{pct:.2g}".rstrip("0").rstrip(".") if pct > 0 else "0"


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fraction(name: str, value: Any, allow_zero: bool = False) -> None:
    if not _is_real(value) or not ((value >= 0) if allow_zero else (value > 0)) or not value < 1:
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ConfigError(f"{name} must be a fraction in {interval} (pruned per level), got {value!r}")


# --- CLI -------------------------------------------------------------------------------------------


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write key=value, e.g. --set train.lr=0.01")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
    return out


def _cli(args: argparse.Namespace) -> int:
    overrides = _parse_set(args.set or [])
    if args.levels is not None:
        overrides["levels"] = args.levels
    if args.target_density is not None:
        overrides["target_density"] = args.target_density
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.iterations is not None:
        overrides["train.iterations"] = args.iterations
    config = FindConfig.from_yaml(args.config, overrides)
    rows = find_tickets(config, args.out, progress=not args.quiet)
    if not _dist.is_main():
        return 0
    print(f"{'level':>5}  {'density':>8}  {'val %':>6}  {'test %':>6}  path")
    for r in rows:
        test = "-" if r["test_acc"] is None else f"{r['test_acc']:.2f}"
        print(f"{r['level']:>5}  {r['density']:>8.4f}  {r['val_acc']:>6.2f}  {test:>6}  {r['path']}")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``ticket-zoo find`` to an argparse subparsers object.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="ticket-zoo")
        >>> register_cli(parser.add_subparsers(dest="command"))
        >>> a = parser.parse_args(["find", "--config", "r.yaml", "--out", "o", "--set", "train.lr=0.01"])
        >>> a.config, a.out, a.set
        ('r.yaml', 'o', ['train.lr=0.01'])
    """
    p = subparsers.add_parser(
        "find",
        help="find tickets with iterative magnitude pruning + rewinding (one ticket per level)",
        description=(
            "Run IMP with rewinding from a YAML recipe; writes OUT/level_XX/ tickets, OUT/summary.json "
            "and OUT/config.yaml. Re-run the same command to resume after an interruption."
        ),
    )
    p.add_argument("--config", required=True, metavar="RECIPE.yaml",
                   help="find recipe: a YAML file or a shipped recipe's name (e.g. lenet_300_100-digits04)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (created; resumed if it exists)")
    p.add_argument("--levels", type=int, help="number of pruning levels (overrides the recipe)")
    p.add_argument("--target-density", type=float, help="stop at the first level with density <= this")
    p.add_argument("--seed", type=int, help="seed for the init and the data order")
    p.add_argument("--iterations", type=int, help="training iterations per level (replaces train.epochs)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any recipe field, e.g. train.lr=0.01 (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cli)
