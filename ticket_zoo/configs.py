"""The recipe schema of every stage: :class:`TrainConfig`, :class:`FindConfig`, :class:`TransferConfig`.

Declared on :mod:`ticket_zoo.config` and free of torch (as open_lth's ``hparams.py``): the command
line builds ``find --help`` and ``transfer --help`` from these declarations without loading torch,
timm or ``datasets``. What a rule needs that is heavy (the optimizer registry, timm's architectures,
CUDA, the dataset catalogue) is imported inside :meth:`~ticket_zoo.config.Config.check` or the
``choices`` function that needs it. ``ticket_zoo.train``, ``ticket_zoo.find`` and
``ticket_zoo.transfer_grid`` re-export their config, so ``from ticket_zoo.train import TrainConfig``
keeps working.

Besides the configs: the defaults of a run without a recipe (:data:`DEFAULT_FIND_TRAIN`,
:data:`DEFAULT_TRANSFER_TRAIN`, :data:`OPTIMIZER_PRESETS`), the one seed-list parser
(:func:`parse_seeds`: ``0-4``, ``0,2,5``, ``0-2 7``) and :func:`number`, the range-checked argparse
type of options that are not config fields.

Example:
    >>> parse_seeds("0-4")
    [0, 1, 2, 3, 4]
    >>> TransferConfig.from_dict({"tickets": ["t"], "targets": ["digits"], "seeds": "0-2,7",
    ...                           "optimizers": {"adam": {"optimizer": "adam"}}}).seeds
    [0, 1, 2, 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .config import Config, Setting, _arg_type, _is_int, apply_overrides, flatten_overrides, setting
from .errors import ConfigError, UnknownArchitectureError, did_you_mean, shorten

__all__ = [
    "DEFAULT_CONTROLS",
    "DEFAULT_FIND_TRAIN",
    "DEFAULT_TRANSFER_TRAIN",
    "MAX_LEVELS",
    "OPTIMIZER_PRESETS",
    "FindConfig",
    "TrainConfig",
    "TransferConfig",
    "number",
    "find_arguments",
    "check_input_size",
    "parse_rewind",
    "parse_seeds",
    "report_arguments",
    "transfer_arguments",
]

#: Levels at most; a target density that needs more levels than this is a mistake, not a plan.
MAX_LEVELS = 500
_REWIND_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ep|epochs?|it|iters?|iterations?)?\s*$")


def parse_rewind(rewind: Any) -> tuple[str, float | int]:
    """``("iterations", k)`` or ``("epochs", x)`` from a rewind spec such as ``500``, ``"2ep"``.

    Example:
        >>> parse_rewind("2ep"), parse_rewind(500), parse_rewind("0.5ep")
        (('epochs', 2.0), ('iterations', 500), ('epochs', 0.5))
        >>> parse_rewind("soon")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: rewind must be an iteration count (e.g. 500) or epochs such as '1ep' or '0.5ep', got 'soon'
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

SCOPES = ("global", "layerwise")
_FRACTION = {"low": 0, "low_open": True, "high": 1, "high_open": True}  # a fraction in (0, 1)
SEED_HIGH = 2**32  # seeds are uint32: torch.Generator and numpy take them as they are

#: ``ticket-zoo find`` without ``--config``: how every level trains (Frankle & Carbin's LeNet
#: settings, those of the shipped ``lenet_300_100-digits04`` recipe: Adam 1.2e-3, batch 60, 1000
#: iterations; a digits run takes seconds a level on a CPU). Flags such as ``--iterations`` override it.
DEFAULT_FIND_TRAIN: dict[str, Any] = {"optimizer": "adam", "lr": 1.2e-3, "batch_size": 60, "iterations": 1000}

#: ``ticket-zoo transfer`` without ``--config``: what every cell shares (300 iterations of batch 64 with
#: a cosine schedule, as the shipped ``transfer-digits`` recipe: a digits cell takes about a second
#: on a CPU; give ``--iterations``/``--set train.epochs=E`` for real datasets).
DEFAULT_TRANSFER_TRAIN: dict[str, Any] = {"iterations": 300, "batch_size": 64, "schedule": "cosine"}

#: Optimizers by name for the command line without a recipe (Morcos et al. 2019 defaults, *unverified*).
OPTIMIZER_PRESETS: dict[str, dict[str, Any]] = {
    "sgd": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
    "adam": {"optimizer": "adam", "lr": 3e-4},
}
DEFAULT_CONTROLS = ("winning", "random_ticket", "reinit", "dense")
_BUDGET = ("iterations", "epochs")


# --- command-line values ---------------------------------------------------------------------------


def number(
    kind: type = float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], Any]:
    """A range-checked argparse ``type`` for an option that is not a config field, with the schema's
    wording (so ``--max-density 5`` and ``--levels -1`` read alike).

    Example:
        >>> fraction = number(float, low=0, high=1)
        >>> fraction("0.05")
        0.05
        >>> fraction("5")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: 5 is out of range: must be a number in [0, 1]
    """
    return _arg_type(kind, Setting(help="", low=low, high=high, low_open=low_open, high_open=high_open), "")


_SEED_TOKEN = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def parse_seeds(value: str | int | Iterable[str | int]) -> list[int]:
    """Seeds from ``0-4`` (a range, both ends in), ``0,2,5``, ``0 1 2``, ``0-2 7`` or a list of such.

    Every seed must be an int in [0, 2**32); a range must run upwards. One :class:`ConfigError` line
    says what is wrong otherwise.

    Example:
        >>> parse_seeds("0-2 7"), parse_seeds(["0,2", "5"]), parse_seeds(3)
        ([0, 1, 2, 7], [0, 2, 5], [3])
        >>> parse_seeds("4-0")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: seeds: range '4-0' runs downwards; write it low-high, e.g. 0-4
        >>> parse_seeds("-1")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: seeds: '-1' is not a seed: give ints in [0, 2**32), ranges (0-4) or lists (0,2,5)
    """
    if isinstance(value, bool):
        raise ConfigError(f"seeds: {value!r} is not a seed: give ints in [0, 2**32), ranges (0-4) or lists (0,2,5)")
    if isinstance(value, int):
        items: list[str | int] = [value]
    elif isinstance(value, str):
        items = [value]
    else:
        items = list(value)
    seeds: list[int] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            tokens = [str(item)]
        elif isinstance(item, str):
            tokens = [t for t in re.split(r"[,\s]+", item.strip()) if t] or [item]
        else:
            tokens = [repr(item)]
        for token in tokens:
            m = _SEED_TOKEN.fullmatch(token)
            if m is None:
                raise ConfigError(
                    f"seeds: {shorten(token)!r} is not a seed: give ints in [0, 2**32), ranges (0-4) or lists (0,2,5)"
                )
            lo = int(m.group(1))
            hi = lo if m.group(2) is None else int(m.group(2))
            if hi < lo:
                raise ConfigError(f"seeds: range {token!r} runs downwards; write it low-high, e.g. {hi}-{lo}")
            if hi >= SEED_HIGH:
                raise ConfigError(f"seeds: {shorten(token)!r} is out of range: seeds are ints in [0, 2**32)")
            if hi - lo >= 10_000:
                raise ConfigError(f"seeds: range {token!r} has {hi - lo + 1} seeds; at most 10000 in one range")
            seeds.extend(range(lo, hi + 1))
    return seeds


class SeedsAction(argparse.Action):
    """``--seeds 0-4`` / ``--seeds 0,2,5`` / ``--seeds 0 1 2``: every token through :func:`parse_seeds`."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        try:
            setattr(namespace, self.dest, parse_seeds(values))
        except ConfigError as exc:
            parser.error(f"argument {option_string}: {str(exc).removeprefix('seeds: ')}")


# --- train ------------------------------------------------------------------------------------------


# The registries live beside the code they name (torch); they are read when a config is validated.


def _optimizer_names() -> tuple[str, ...]:
    from .optim import OPTIMIZERS

    return OPTIMIZERS.names()


def _schedule_names() -> tuple[str, ...]:
    from .optim import SCHEDULES

    return SCHEDULES.names()


def _augment_names() -> tuple[str, ...]:
    from .augment import AUGMENTATIONS

    return AUGMENTATIONS.names()


@dataclass
class TrainConfig(Config):
    """Everything that decides a training run (with the data, model, masks and seed).

    The budget is exactly one of ``iterations`` or ``epochs`` (an epoch is
    ``len(train_set) // batch_size`` iterations: the last partial batch is dropped so every step
    sees a full global batch). ``milestones`` are in the budget's unit. ``warmup`` is in iterations.

    Example:
        >>> TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05, epochs=2, schedule="cosine").validate()
        >>> TrainConfig.from_dict({"lr": 0.05, "iterations": 10}).lr
        0.05
        >>> TrainConfig(iterations=10, augment="cifr").validate()
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: augment must be one of 'none', 'cifar', got 'cifr' (did you mean 'cifar'?)
    """

    section: ClassVar[str] = "train config"

    optimizer: str = setting("sgd", help="optimizer", choices=_optimizer_names)
    lr: float = setting(0.1, help="peak learning rate", low=0, low_open=True, flag="--lr", metavar="LR")
    momentum: float = setting(0.0, help="SGD momentum", low=0)
    nesterov: bool = setting(False, help="Nesterov momentum (SGD with momentum > 0)")
    weight_decay: float = setting(0.0, help="weight decay (decoupled for adamw)", low=0)
    betas: tuple[float, float] = setting((0.9, 0.999), help="Adam betas", low=0, high=1, high_open=True)
    eps: float = setting(1e-8, help="Adam epsilon", low=0, low_open=True)
    schedule: str = setting("constant", help="learning-rate schedule", choices=_schedule_names)
    milestones: tuple[float, ...] = setting((), help="step-schedule milestones, in the budget's unit", low=0, low_open=True)
    gamma: float = setting(0.1, help="step-schedule decay factor", low=0, low_open=True)
    warmup: int = setting(0, help="linear warmup, in iterations", low=0)
    iterations: int | None = setting(
        None, help="training budget in iterations", low=1, flag="--iterations", metavar="N", replaces=("epochs",)
    )
    epochs: float | None = setting(
        None, help="training budget in epochs", low=0, low_open=True, flag="--epochs", metavar="E",
        replaces=("iterations",),
    )
    batch_size: int = setting(64, help="global batch size", low=1, flag="--batch-size", metavar="N")
    eval_every: int | None = setting(None, help="evaluate every N iterations (default: once per epoch)", low=1)
    seed: int = setting(0, help="seed of the data order, augmentation and dropout", low=0, high=2**32, high_open=True)
    augment: str = setting("none", help="batch augmentation", choices=_augment_names)
    amp: bool = setting(False, help="mixed precision on CUDA")
    channels_last: bool = setting(False, help="channels-last memory format on CUDA")
    device: str = setting("auto", help="auto, cpu, cuda or cuda:N", fingerprint=False)
    num_workers: int = setting(0, help="data loader worker processes", low=0, fingerprint=False)
    checkpoint_every: int | None = setting(None, help="checkpoint every N iterations", low=1, fingerprint=False)

    @classmethod
    def recipe_kind(cls) -> str:
        return "find"

    def check(self) -> None:
        """The rules that relate fields (the declarations checked types, names and ranges).

        Example:
            >>> TrainConfig(lr=-1, iterations=5).validate()
            Traceback (most recent call last):
            ...
            ticket_zoo.errors.ConfigError: lr must be a positive number, got -1
        """
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ConfigError("nesterov needs optimizer 'sgd' with momentum > 0")
        if (self.iterations is None) == (self.epochs is None):
            raise ConfigError("give exactly one budget: iterations or epochs (got both or neither)")
        budget = self.iterations if self.iterations is not None else self.epochs
        ms = tuple(self.milestones)
        if self.schedule == "step" and not ms:
            raise ConfigError("milestones must not be empty for schedule 'step' (e.g. milestones: [80, 120])")
        if self.schedule != "step" and ms:
            raise ConfigError(f"milestones only apply to schedule 'step', but schedule is {self.schedule!r}")
        if any(b <= a for a, b in zip(ms, ms[1:], strict=False)):
            raise ConfigError(f"milestones must be positive and strictly increasing, got {list(ms)}")
        if ms and ms[-1] > budget:
            raise ConfigError(
                f"milestones {list(ms)} go past the budget ({budget}); they are in the budget's unit"
            )
        if self.iterations is not None and self.warmup >= self.iterations:
            raise ConfigError(f"warmup ({self.warmup}) must be shorter than iterations ({self.iterations})")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.device.startswith("cuda") and not _cuda_available():
            raise ConfigError(f"device is {self.device!r} but CUDA is not available; use device: auto or cpu")


def _cuda_available() -> bool:
    import torch  # only a cuda device needs the answer

    return torch.cuda.is_available()


# --- find -------------------------------------------------------------------------------------------


def _method_names() -> tuple[str, ...]:
    from .methods import method_names  # torch-free: method modules import torch inside their functions

    return method_names()


@dataclass
class FindConfig(Config):
    """Everything that decides a find run; ``train`` is how every training of it goes.

    ``method`` is how tickets are found (:mod:`ticket_zoo.methods`: ``imp``, the default, is
    iterative magnitude pruning with rewinding; ``oneshot``, ``early_bird``, ``snip`` and ``synflow``
    are cheaper) and ``method_options`` that method's own options. Every method writes tickets at the
    densities of the same schedule (``prune_fraction``, ``scope``, ``levels``/``target_density``,
    ``head_prune_fraction``, ``layer_prune_fractions``).

    ``seed`` seeds both the network's initialization and the training data order: ``train.seed``
    follows it (a recipe sets only ``seed``; ``to_dict`` leaves ``train.seed`` out). ``levels=N``
    makes levels ``0..N`` (level 0 is the dense network); ``target_density`` stops at the first
    level whose density is ``<= target`` (with both, whichever comes first). Neither is part of the
    run's fingerprint, so a finished run can be extended. ``rewind`` is an iteration count or
    ``"<x>ep"`` epochs.

    Example:
        >>> cfg = FindConfig(arch="lenet_300_100", dataset="digits", levels=3,
        ...                  train=TrainConfig(optimizer="adam", lr=1.2e-3, iterations=200, batch_size=60))
        >>> cfg.validate()
        >>> FindConfig.from_dict({**cfg.to_dict(), "seed": 7}).train.seed
        7
        >>> FindConfig.from_dict({"arch": "conv4", "dataset": "digits", "train": {"iterations": 5},
        ...                       "levels": 1, "prune_fracton": 0.2})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: unknown find config field 'prune_fracton' (did you mean 'prune_fraction'?); ...
    """

    section: ClassVar[str] = "find config"
    # Run folders and recipes written before the rename still load (and resume).
    renamed: ClassVar[dict[str, str]] = {"overrides": "layer_prune_fractions"}

    arch: str = setting(help="timm architecture name, e.g. lenet_300_100, conv4, resnet50", flag="--arch", metavar="A")
    dataset: str = setting(
        help="dataset name (digits, cifar10, ...) or imagefolder:/parquet: path", flag="--dataset", metavar="D"
    )
    train: TrainConfig = setting(help="how every level trains (train.seed follows seed)")
    arch_kwargs: dict[str, Any] = setting(
        default_factory=dict, help="extra constructor arguments of the architecture (an allow-list)"
    )
    input_size: tuple[int, int, int] | None = setting(
        None, help="[C, H, W] the images are resized to (default: the dataset's)", low=1
    )
    rewind: int | str = setting(0, help="rewind point: iterations (e.g. 500) or epochs ('2ep'); 0 is θ0")
    scope: str = setting("global", help="rank weights across all layers or within each", choices=SCOPES)
    prune_fraction: float = setting(0.2, help="fraction of the surviving weights pruned per level", **_FRACTION)
    head_prune_fraction: float | None = setting(
        None, help="prune the classifier head too, at this rate per level (default: never)", **_FRACTION
    )
    layer_prune_fractions: dict[str, float] = setting(
        default_factory=dict, help="per-layer prune fractions {layer name or glob: fraction in [0, 1)}"
    )
    include: list[str] | None = setting(None, help="prune only parameters matching these glob patterns")
    exclude: list[str] | None = setting(None, help="never prune parameters matching these glob patterns")
    levels: int | None = setting(
        None,
        help="number of pruning levels (level 0 is the dense network)",
        low=0,
        high=MAX_LEVELS,
        fingerprint=False,
        flag="--levels",
        metavar="N",
    )
    target_density: float | None = setting(
        None,
        help="stop at the first level with density <= this",
        fingerprint=False,
        flag="--target-density",
        metavar="DENSITY",
        **_FRACTION,
    )
    method: str = setting(
        "imp",
        help="how tickets are found: imp, oneshot, early_bird, snip, synflow (see ticket_zoo.methods)",
        choices=_method_names,
        flag="--method",
        metavar="NAME",
    )
    method_options: dict[str, Any] = setting(
        default_factory=dict, help="the method's own options, e.g. {batches: 2} for snip (checked by the method)"
    )
    seed: int = setting(
        0,
        help="seed of the initialization and the data order",
        low=0,
        high=2**32,
        high_open=True,
        flag="--seed",
        metavar="N",
    )
    name_prefix: str | None = setting(None, help="ticket name prefix (default: ARCH-DATASET)")

    # -- construction: train.seed follows seed --

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> FindConfig:
        """:meth:`Config.from_dict`, with ``train.seed`` set from ``seed`` unless the recipe sets it
        (then :meth:`validate` refuses a different value), and ``null`` for a mapping field meaning empty."""
        if not isinstance(d, Mapping):
            return super().from_dict(d)  # refuses it in one line
        data = apply_overrides(d, overrides, cls) if overrides else dict(d)
        for key in ("arch_kwargs", "layer_prune_fractions", "method_options"):
            if key in data and data[key] is None:
                del data[key]
        if "one_shot" in data:  # before methods: `one_shot: true` was oneshot with every ticket trained
            one_shot = data.pop("one_shot")
            if one_shot is True and data.get("method", "oneshot") == "oneshot":
                data["method"] = "oneshot"
                data["method_options"] = {"train_tickets": True, **dict(data.get("method_options") or {})}
            elif one_shot not in (False, None):
                raise ConfigError(
                    f"one_shot is the old spelling of method: oneshot; got one_shot: {one_shot!r} with "
                    f"method: {data.get('method')!r}; write method: oneshot instead"
                )
        seed, train = data.get("seed", 0), data.get("train")
        if isinstance(train, Mapping) and "seed" not in train:
            # A bad seed is reported by validate() as the top-level field, not as train.seed.
            data["train"] = {**train, "seed": seed if _is_int(seed) and 0 <= seed < 2**32 else 0}
        return super().from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """:meth:`Config.to_dict` without ``train.seed`` (it follows ``seed``), with the method's
        options spelled out (defaults included), so a recipe records exactly what ran."""
        return self._as_recorded(super().to_dict())

    def fingerprint_dict(self) -> dict[str, Any]:
        """Without ``train.seed``, so a changed seed is named once (as ``seed``); the method's options
        with their defaults, so writing a default out does not make another run."""
        return self._as_recorded(super().fingerprint_dict())

    def _as_recorded(self, d: dict[str, Any]) -> dict[str, Any]:
        """``d`` without ``train.seed`` and with the method's options in full (both views record a run)."""
        if isinstance(d.get("train"), dict):
            d["train"].pop("seed", None)
        d["method_options"] = self._full_method_options()
        return d

    def _full_method_options(self) -> dict[str, Any]:
        from .methods import options_for

        try:
            return options_for(self.method, self.method_options).to_dict()
        except ConfigError:  # an invalid method or option: validate() reports it; keep what was written
            return dict(self.method_options) if isinstance(self.method_options, Mapping) else self.method_options

    def effective_train(self) -> TrainConfig:
        """The training config each level uses: the recipe's, with ``seed`` set to :attr:`seed`."""
        return self.train.replace(seed=self.seed)

    # -- cross-field rules --

    def check(self) -> None:
        """The rules that relate fields or need a registry (declarations are checked before).

        Checks that need the data size, such as an epoch rewind past an iteration budget, run in
        :func:`find_tickets` before training starts.

        Example:
            >>> FindConfig(arch="lenet_300_100", dataset="digits", levels=2,
            ...            train=TrainConfig(iterations=10), rewind=20).validate()
            Traceback (most recent call last):
            ...
            ticket_zoo.errors.ConfigError: rewind (20 iterations) is beyond the training budget (10 iterations)
            >>> FindConfig(arch="lenet_300_100", dataset="digits", train=TrainConfig(iterations=10)).validate()
            Traceback (most recent call last):
            ...
            ticket_zoo.errors.ConfigError: give a stop rule: levels (number of pruning levels) or target_density
        """
        from .data import get_spec
        from .ticket import check_arch_kwargs

        try:
            get_spec(self.dataset)
        except ConfigError as exc:
            raise type(exc)(f"dataset: {exc}") from None
        _check_arch(self.arch)
        check_arch_kwargs(self.arch_kwargs)  # before any data is downloaded (create_model checks it again)
        if self.train.seed != self.seed:
            raise ConfigError(
                f"train.seed ({self.train.seed!r}) differs from seed ({self.seed!r}): set only the top-level "
                "seed; it seeds both the initialization and the data order"
            )
        for pattern, value in self.layer_prune_fractions.items():
            if not 0 <= value < 1:
                raise ConfigError(
                    f"layer_prune_fractions[{pattern!r}] must be a fraction in [0, 1) (pruned per level), "
                    f"got {value!r}"
                )
        if self.levels is None and self.target_density is None:
            raise ConfigError("give a stop rule: levels (number of pruning levels) or target_density")
        from .methods import options_for

        options_for(self.method, self.method_options)  # the method's own declarations and rules
        unit, value = parse_rewind(self.rewind)
        budget = self.train.iterations if unit == "iterations" else self.train.epochs
        if budget is not None and value > budget:
            raise ConfigError(f"rewind ({value} {unit}) is beyond the training budget ({budget} {unit})")


def _check_arch(arch: str) -> None:
    """``arch`` must be in timm's registry (the paper networks registered first)."""
    import timm

    from . import models  # noqa: F401  (registers the paper architectures)

    if not timm.is_model(arch):
        hint = did_you_mean(arch, timm.list_models(), n=3) or "; see timm.list_models()"
        raise UnknownArchitectureError(f"arch: unknown architecture {arch!r}{hint}")


# --- transfer ---------------------------------------------------------------------------------------


def _control_names() -> tuple[str, ...]:
    from .controls import CONTROLS  # torch: read when a config is validated, not when --help is built

    return CONTROLS.names()


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
        help="controls to run beside each ticket, e.g. winning random_ticket reinit random_mask dense",
        choices=_control_names, flag="--controls", metavar="C",
    )  # fmt: skip
    seeds: list[int] = setting(
        default_factory=lambda: [0, 1, 2],
        help="one run per seed (head init, control draw, data order); a recipe may write 0-4 or 0,2,5",
        low=0, high=2**32, high_open=True,
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

        A single name where a list is expected (``tickets: t``, ``seeds: 0``) is a one-item list;
        ``seeds`` may be written as :func:`parse_seeds` reads them (``seeds: 0-4``).

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
        if isinstance(data.get("seeds"), (int, str)) and not isinstance(data.get("seeds"), bool):
            data["seeds"] = parse_seeds(data["seeds"])  # 3, "0-4", "0,2,5"
        elif isinstance(data.get("seeds"), list) and any(isinstance(s, str) for s in data["seeds"]):
            data["seeds"] = parse_seeds(data["seeds"])  # ["0-2", 7]
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


def check_input_size(value: Any, what: str) -> tuple[int, int, int]:
    """``value`` as ``(C, H, W)`` with C in (1, 3) and H, W >= 1; else a :class:`ConfigError` naming ``what``.

    Example:
        >>> check_input_size((2, 8, 8), "input_size")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: input_size must be (C, H, W) with C in (1, 3) and H, W >= 1, got (2, 8, 8)
    """
    try:
        c, h, w = (int(v) for v in value)
        ok = all(not isinstance(v, bool) and int(v) == v for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok or c not in (1, 3) or h < 1 or w < 1:
        raise ConfigError(f"{what} must be (C, H, W) with C in (1, 3) and H, W >= 1, got {value!r}")
    return (c, h, w)


# --- the options of the commands whose modules load torch or scipy -----------------------------------
#
# `ticket-zoo find --help` must not wait for torch: these declare the options of `find`, `transfer`
# and `report` here, torch-free; each module's `register_cli` adds its run function to them, and
# `ticket_zoo.cli` imports the module only to run the command.

HELP = {
    "find": "find tickets with iterative magnitude pruning + rewinding (one ticket per level)",
    "transfer": "transfer tickets to target datasets against random-ticket controls",
    "report": "summarise a transfer run: table, report.csv/json/png",
}


def _add_set(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override any recipe field, e.g. {example} (repeatable)")  # fmt: skip


def _add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars or log lines")
    # The old name, kept so existing scripts run (not shown in --help).
    p.add_argument("--quiet", action="store_true", dest="no_progress", help=argparse.SUPPRESS)


def find_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``find`` subparser and its options; return it (the caller sets ``func``).

    Without ``--config`` a run needs ``--arch``, ``--dataset`` and a stop rule (``--levels`` or
    ``--target-density``) and trains every level with :data:`DEFAULT_FIND_TRAIN`.

    Example:
        >>> parser = argparse.ArgumentParser(prog="ticket-zoo")
        >>> p = find_arguments(parser.add_subparsers(dest="command"))
        >>> a = parser.parse_args(["find", "--arch", "lenet_300_100", "--dataset", "digits", "--out", "o",
        ...                        "--target-density", "0.1", "--quiet"])
        >>> a.config, a.no_progress, FindConfig.flag_overrides(a)
        (None, True, {'arch': 'lenet_300_100', 'dataset': 'digits', 'target_density': 0.1})
    """
    train = ", ".join(f"{k} {v}" for k, v in DEFAULT_FIND_TRAIN.items())
    p = subparsers.add_parser(
        "find",
        help=HELP["find"],
        description=(
            "Find tickets (IMP with rewinding, or another --method); writes OUT/level_XX/ tickets, "
            "OUT/summary.json and OUT/config.yaml. "
            "Re-run the same command to resume after an interruption. With --config the recipe is the "
            "starting point and the flags --arch ... --seed override its fields, as --set does; without "
            f"it, give --arch, --dataset and --levels or --target-density (training: {train})."
        ),
    )
    p.add_argument("--config", metavar="RECIPE.yaml",
                   help="find recipe: a YAML file or a shipped recipe's name (e.g. lenet_300_100-digits04)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (created; resumed if it exists)")
    FindConfig.add_flags(p)  # --arch, --method, --dataset, --levels, --target-density, --seed, --lr, ...
    p.add_argument("--threads", type=number(int, low=1), metavar="N",
                   help="torch threads for the run (default: 1 for networks under 5M parameters, else every core; "
                   "fixed so results do not depend on the machine)")  # fmt: skip
    _add_set(p, "train.lr=0.01 or method_options.batches=2")
    p.epilog = _methods_help()
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    _add_no_progress(p)
    return p


def _methods_help() -> str:
    """The methods and their options, for ``ticket-zoo find --help`` (torch-free)."""
    from .methods import METHODS

    lines = ["methods (--method NAME; options with --set method_options.KEY=VALUE):"]
    for name in METHODS.names():
        info = METHODS.info(name)
        lines.append(f"  {name:<11} {info['summary']}")
        lines.append(f"  {'':<11} cost: {info['cost']}")
        for field in dataclasses.fields(info["options"]):
            rule = field.metadata.get("setting")
            help_text = rule.help if rule is not None else ""
            lines.append(f"  {'':<11} option {field.name} (default {field.default!r}): {help_text}")
    return "\n".join(lines)


def transfer_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``transfer`` subparser and its options; return it (the caller sets ``func``).

    Without ``--config``: every cell trains with :data:`DEFAULT_TRANSFER_TRAIN` and the optimizers of
    :data:`OPTIMIZER_PRESETS` (or those ``--optimizers`` names).

    Example:
        >>> parser = argparse.ArgumentParser(prog="ticket-zoo")
        >>> p = transfer_arguments(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["transfer", "--config", "r.yaml", "--out", "o", "--seeds", "0-2", "7"]).seeds
        [0, 1, 2, 7]
        >>> a = parser.parse_args(["transfer", "--config", "r.yaml", "--out", "o", "--workers", "2", "--shard", "1/3"])
        >>> a.workers, a.threads, a.shard, a.no_batch, parser.parse_args(["transfer", "--out", "o"]).workers
        (2, None, '1/3', False, 'auto')
    """
    budget = ", ".join(f"{k} {v}" for k, v in DEFAULT_TRANSFER_TRAIN.items())
    p = subparsers.add_parser(
        "transfer",
        help=HELP["transfer"],
        description=(
            "Run the grid tickets x controls x targets x optimizers x seeds; one row per cell in "
            "OUT/results.jsonl. Re-running the same command resumes. Without --config give --ticket and "
            f"--target; every cell then trains {budget} with the optimizer presets "
            f"({', '.join(OPTIMIZER_PRESETS)}): a digits cell takes about a second on a CPU."
        ),
    )
    p.add_argument("--config", metavar="RECIPE.yaml",
                   help="transfer recipe: a YAML file or a shipped recipe's name (e.g. transfer-digits)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (results.jsonl, report)")
    TransferConfig.add_flags(p)  # --ticket, --target, --controls, --limit
    p.add_argument("--seeds", nargs="+", action=SeedsAction, metavar="S",
                   help="one run per seed: 0-4, 0,2,5 or 0 1 2 (default 0 1 2)")  # fmt: skip
    p.add_argument("--optimizers", nargs="+", metavar="NAME", dest="optimizer_names",
                   help=f"optimizers of the recipe to run (or presets: {', '.join(OPTIMIZER_PRESETS)})")  # fmt: skip
    p.add_argument("--iterations", type=number(int, low=1), metavar="N",
                   help="replace the training budget by N iterations everywhere")  # fmt: skip
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    _add_set(p, "train.lr=0.01 or optimizers.sgd.lr=0.1")
    p.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    _add_no_progress(p)

    def workers(value: str) -> int | str:
        return "auto" if value == "auto" else number(int, low=1)(value)

    speed = p.add_argument_group(
        "speed and clusters",
        "Cells train in worker processes on a fixed torch thread count per cell, so results do not depend "
        "on --workers. --shard K/N runs the cells whose unit (cells that train together) has position "
        "K-1 modulo N in the plan, into OUT/results.shard-K-of-N.jsonl; `ticket-zoo report OUT` merges "
        "every results file. --submit sends N shards to SLURM (or this machine) as a submitit job array.",
    )
    speed.add_argument("--workers", type=workers, default="auto", metavar="N",
                       help="worker processes (default auto: cores // threads on CPU, 1 on a GPU; 1 = this process)")  # fmt: skip
    speed.add_argument("--threads", type=number(int, low=1), metavar="N",
                       help="torch threads per cell (default: 1 for networks under 5M parameters, else all cores)")  # fmt: skip
    speed.add_argument("--no-batch", action="store_true",
                       help="train every seed on its own instead of as one batched ensemble where the network allows it")  # fmt: skip
    speed.add_argument("--shard", metavar="K/N", help="run only shard K of N (1 <= K <= N) of the grid")
    speed.add_argument("--submit", choices=("slurm", "local"),
                       help="submit --shards N jobs through submitit: slurm, or local (processes on this machine)")  # fmt: skip
    speed.add_argument("--shards", type=number(int, low=1), metavar="N", help="with --submit: how many shard jobs")
    speed.add_argument("--slurm-partition", metavar="P", help="with --submit slurm: the partition")
    speed.add_argument("--gpus-per-task", type=number(int, low=0), metavar="G", help="with --submit: GPUs per job")
    speed.add_argument("--cpus-per-task", type=number(int, low=1), metavar="C", help="with --submit: CPUs per job")
    speed.add_argument("--timeout", type=number(int, low=1), default=24 * 60, metavar="MIN",
                       help="with --submit: time limit of each job in minutes (default %(default)s); "
                       "a job that hits it is finished by submitting the same command again")  # fmt: skip
    speed.add_argument("--no-wait", action="store_true",
                       help="with --submit local: return once the jobs are started (slurm never waits)")  # fmt: skip
    return p


def report_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` subparser and its options; return it (the caller sets ``func``).

    Example:
        >>> parser = argparse.ArgumentParser(prog="ticket-zoo")
        >>> p = report_arguments(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["report", "runs/demo", "--tolerance", "0.5"]).tolerance
        0.5
    """
    p = subparsers.add_parser(
        "report",
        help=HELP["report"],
        description="Aggregate OUT/results.jsonl and every shard's OUT/results.shard-K-of-N.jsonl (rows merged by "
        "cell; the same cell with different values is refused) into a markdown table, report.csv, report.json "
        "and report.png; says which planned cells are still missing.",
    )
    p.add_argument("out_dir", metavar="OUT", help="folder holding results.jsonl (the transfer run's OUT)")
    p.add_argument(
        "--results-name", default="results.jsonl",
        help="results file inside OUT (default: %(default)s, which also merges every shard's results file)"
    )
    p.add_argument(
        "--tolerance",
        type=number(float, low=0),
        default=1.0,
        help="accuracy points within dense that count as matching (default: %(default)s)",
    )
    p.add_argument(
        "--split-differing",
        action="store_true",
        help="report rows whose train config, data split or versions differ as separate groups "
        "instead of refusing to pool them",
    )
    # --quiet here means "print less" (the table), not "no progress bars": report draws none.
    p.add_argument("--quiet", action="store_true", help="do not print the markdown table")
    return p
