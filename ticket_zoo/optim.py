"""Optimizers and learning-rate schedules by name (``TrainConfig.optimizer``, ``TrainConfig.schedule``).

Each is one entry of a :class:`~ticket_zoo.registry.Registry`: an optimizer is
``fn(params, config) -> torch.optim.Optimizer``; a schedule is ``fn(config, total_steps, milestones)
-> factor(step)``, the multiplier of ``lr`` at step ``step`` before warmup. Adding one is a
decorated function here plus its test; ``TrainConfig`` then accepts its name.

Example:
    >>> from torch import nn
    >>> from ticket_zoo.train import TrainConfig
    >>> opt = build_optimizer(nn.Linear(2, 2).parameters(), TrainConfig(lr=0.01, momentum=0.9, iterations=1))
    >>> type(opt).__name__, opt.param_groups[0]["momentum"], OPTIMIZERS.names()
    ('SGD', 0.9, ('sgd', 'adam', 'adamw'))
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch

from .errors import ConfigError
from .registry import Registry

if TYPE_CHECKING:
    from .train import TrainConfig

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_scheduler"]

#: name -> ``fn(params, config) -> Optimizer``.
OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
#: name -> ``fn(config, total_steps, milestones) -> factor(step)`` (warmup is applied on top).
SCHEDULES: Registry[Callable[..., Callable[[int], float]]] = Registry("schedule")


@OPTIMIZERS.register("sgd")
def _sgd(params: Iterable[Any], c: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay)


@OPTIMIZERS.register("adam")
def _adam(params: Iterable[Any], c: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(params: Iterable[Any], c: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay)


@SCHEDULES.register("constant")
def _constant(c: TrainConfig, total_steps: int, milestones: list[int]) -> Callable[[int], float]:
    return _one


def _one(step: int) -> float:
    return 1.0


@SCHEDULES.register("step")
def _step(c: TrainConfig, total_steps: int, milestones: list[int]) -> Callable[[int], float]:
    gamma = c.gamma

    def factor(step: int) -> float:
        return gamma ** bisect.bisect_right(milestones, step)

    return factor


@SCHEDULES.register("cosine")
def _cosine(c: TrainConfig, total_steps: int, milestones: list[int]) -> Callable[[int], float]:
    warmup = c.warmup

    def factor(step: int) -> float:
        progress = min(1.0, max(0.0, (step - warmup) / (total_steps - warmup)))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_optimizer(params: Iterable[Any], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` names, over ``params``.

    """
    return OPTIMIZERS.get(config.optimizer)(params, config)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    total_steps: int,
    *,
    steps_per_epoch: int | None = None,
    start_step: int = 0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-iteration LR scheduler: linear warmup, then constant / step decay / cosine to zero.

    Step ``s`` (0-based) runs at ``lr * factor(s)``: warmup multiplies by ``(s + 1) / warmup``
    while ``s < warmup``; ``"step"`` multiplies by ``gamma`` once per milestone ``<= s``;
    ``"cosine"`` decays from 1 at the end of warmup to 0 at ``total_steps``. With an epoch budget
    milestones are epochs, converted with ``steps_per_epoch`` (default ``total_steps / epochs``).
    ``start_step=k`` positions the scheduler at step ``k`` (the optimizer's LR is set to that of
    step ``k``), so a run started there continues the same schedule (late resetting).

    Example:
        >>> from torch import nn
        >>> from ticket_zoo.train import TrainConfig
        >>> cfg = TrainConfig(lr=0.1, schedule="step", milestones=(5,), warmup=2, iterations=10)
        >>> sched = build_scheduler(build_optimizer(nn.Linear(2, 2).parameters(), cfg), cfg, 10)
        >>> [sched.lr_lambdas[0](step) for step in (0, 1, 4, 5, 9)]  # multipliers of lr
        [0.5, 1.0, 1.0, 0.1, 0.1]
    """
    if not _is_count(total_steps) or total_steps < 1:
        raise ConfigError(f"total_steps must be a positive int, got {total_steps!r}")
    if config.warmup >= total_steps:
        raise ConfigError(f"warmup ({config.warmup}) must be shorter than the run ({total_steps} iterations)")
    if not _is_count(start_step) or not 0 <= start_step <= total_steps:
        raise ConfigError(f"start_step must be an int in [0, {total_steps}], got {start_step!r}")
    milestones = [int(m) for m in config.milestones]
    if config.epochs is not None:
        spe = steps_per_epoch if steps_per_epoch is not None else total_steps / config.epochs
        milestones = [round(m * spe) for m in config.milestones]
    shape, warmup = SCHEDULES.get(config.schedule)(config, total_steps, milestones), config.warmup

    def factor(step: int) -> float:
        f = shape(step)
        if step < warmup:
            f *= (step + 1) / warmup
        return f

    # A plain function (not a callable object) keeps LambdaLR's state_dict JSON-serializable.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if start_step:
        # LambdaLR's LR is closed-form (base_lr * factor(last_epoch)): one step from start_step - 1
        # gives exactly the LR the run from 0 has at start_step. Its "step() before optimizer.step()"
        # warning does not apply to a deliberate seek.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            scheduler.last_epoch = start_step - 1
            scheduler.step()
    return scheduler


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
