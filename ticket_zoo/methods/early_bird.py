"""``early_bird``: stop dense training once the magnitude mask stops changing (You et al. 2020,
"Drawing Early-Bird Tickets: Towards More Efficient Training of Deep Networks", ICLR; here applied
to unstructured masks instead of channel masks).

The definition, exactly: train the dense network from θ0 with the run's budget. At the end of every
epoch (and at the last step), compute the magnitude mask of the prunable weights at the target
density (the last requested level's: :func:`ticket_zoo.masks.magnitude_masks` with the schedule's
budget rules, ``scope`` and fixed per-layer densities). The distance between two masks is the
fraction of prunable weights whose bit differs (:func:`mask_distance`). Training stops at the first
epoch end where the last ``window`` distances (consecutive epochs; at least ``window`` of them) are
all below ``epsilon`` (their maximum is ``< epsilon``), and not before the rewind step ``k`` (θk must
exist). The ticket is the last mask with θk, written without further training at the last level;
``meta`` records the steps, the distance history and the stop step. If the rule never holds, the
ticket is the mask at the end of training (``early_bird_stopped: false``).

Cost: one dense training, cut short at the stop (no ticket trained).

Resume: the observed steps, their distances and the last mask are kept in ``OUT/early_bird/``
(``state.json`` and one ``mask_STEP.safetensors``, written atomically, mask first). A killed run
resumes the dense training from its checkpoint; :func:`ticket_zoo.train.train` calls the hook again
at the resumed epoch boundary and the hook answers a step it has seen from the recorded distances
(it is keyed by step), so the resumed run stops where the unkilled one does and writes the same ticket.

(No torch import at module level: ``ticket-zoo find --help`` lists the methods without loading torch.)

Example:
    >>> import torch
    >>> a = {"w": torch.tensor([True, True, False, False])}
    >>> mask_distance(a, {"w": torch.tensor([True, False, True, False])})
    0.5
    >>> stop = EarlyBirdStop(window=2, epsilon=0.3)
    >>> [stop.observe(step, {"w": torch.tensor(bits)}) for step, bits in
    ...  [(10, [1, 1, 0, 0]), (20, [1, 0, 1, 0]), (30, [1, 0, 0, 1]), (40, [1, 0, 0, 1]), (50, [1, 0, 0, 1])]]
    [False, False, False, False, True]
    >>> stop.history, stop.stop_step
    ([0.5, 0.5, 0.0, 0.0], 50)
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import Config, setting
from ..errors import ConfigError
from . import register_method

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..find import FindRun

__all__ = ["EarlyBirdOptions", "EarlyBirdStop", "mask_distance", "run"]

STATE_DIR = "early_bird"  # under OUT: what a resumed run needs (see the module docstring)
STATE_FILE = "state.json"


@dataclass
class EarlyBirdOptions(Config):
    """Options of ``early_bird``.

    Example:
        >>> EarlyBirdOptions.from_dict({"window": 2}).window
        2
        >>> EarlyBirdOptions.from_dict({"epsilon": 1.5}).validate()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: epsilon must be ...
    """

    section: ClassVar[str] = "early_bird options"

    window: int = setting(
        5, help="consecutive epoch-to-epoch mask distances that must all be below epsilon to stop", low=1
    )
    epsilon: float = setting(
        0.1, help="stop when the fraction of mask bits that change between epochs stays below this", low=0, high=1
    )


def mask_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """The fraction of the masked weights whose bit differs between masks ``a`` and ``b``.

    Both must mask the same parameters with the same shapes (:class:`ConfigError` otherwise). No
    weights at all: 0.0.

    Example:
        >>> import torch
        >>> a = {"x": torch.tensor([True, False]), "y": torch.tensor([[True, True], [False, False]])}
        >>> b = {"x": torch.tensor([False, False]), "y": torch.tensor([[True, True], [False, True]])}
        >>> mask_distance(a, b), mask_distance(a, a)
        (0.3333333333333333, 0.0)
    """
    import torch  # inside: the module stays torch-free at import (see the module docstring)

    if set(a) != set(b):
        raise ConfigError(f"masks cover different parameters: {sorted(set(a) ^ set(b))[:5]}; compare masks of one network")
    differ = total = 0
    for name in a:
        if tuple(a[name].shape) != tuple(b[name].shape):
            raise ConfigError(f"mask of {name!r} has shape {tuple(a[name].shape)} in one and {tuple(b[name].shape)} in the other")
        differ += int(torch.count_nonzero(a[name].bool() != b[name].bool()))
        total += a[name].numel()
    return differ / total if total else 0.0


class EarlyBirdStop:
    """The stopping rule, fed one mask per epoch end: stop when the last ``window`` distances between
    consecutive masks are all below ``epsilon``.

    ``observe(step, mask)`` records ``mask`` at ``step`` (steps increase) and returns whether the rule
    holds there. It is keyed by step: observing a step already seen returns the answer recorded for
    it and ignores the mask (a resumed training calls its hook again at the step it resumed from).

    Attributes:
        steps: the steps observed, in order.
        history: ``history[i]`` is the distance between the masks at ``steps[i]`` and ``steps[i + 1]``.
        last_mask: the mask at ``steps[-1]``.
        stop_step: the first observed step where the rule holds, or ``None``.

    Example:
        >>> import torch
        >>> stop = EarlyBirdStop(window=1, epsilon=0.5)
        >>> stop.observe(1, {"w": torch.tensor([True, False])}), stop.observe(2, {"w": torch.tensor([False, True])})
        (False, False)
        >>> stop.observe(3, {"w": torch.tensor([False, True])}), stop.stop_step, stop.observe(2, None)
        (True, 3, False)
    """

    def __init__(
        self,
        window: int,
        epsilon: float,
        *,
        steps: list[int] | None = None,
        history: list[float] | None = None,
        last_mask: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if int(window) < 1:
            raise ConfigError(f"window must be a positive int, got {window!r}")
        self.window, self.epsilon = int(window), float(epsilon)
        self.steps: list[int] = list(steps or [])
        self.history: list[float] = list(history or [])
        self.last_mask = dict(last_mask) if last_mask is not None else None
        if len(self.history) != max(0, len(self.steps) - 1) or (self.steps and self.last_mask is None):
            raise ValueError("EarlyBirdStop: history needs one distance per observed step after the first, and the last mask")

    def stops_at(self, step: int) -> bool:
        """Whether the rule holds at the observed ``step``: its last ``window`` distances are below ε."""
        i = self.steps.index(step)  # history[:i] are the distances up to this step
        recent = self.history[max(0, i - self.window) : i]
        return i >= self.window and max(recent) < self.epsilon

    @property
    def stop_step(self) -> int | None:
        return next((s for s in self.steps if self.stops_at(s)), None)

    def observe(self, step: int, mask: Mapping[str, torch.Tensor] | None) -> bool:
        """Record ``mask`` at ``step`` and say whether to stop there (see the class docstring)."""
        if self.steps and step <= self.steps[-1]:
            if step not in self.steps:
                raise ValueError(f"EarlyBirdStop: step {step} comes before the last observed {self.steps[-1]} but was never observed")
            return self.stops_at(step)
        if mask is None:
            raise ValueError(f"EarlyBirdStop: step {step} is new and needs its mask")
        if self.steps:
            self.history.append(mask_distance(self.last_mask, mask))
        self.steps.append(int(step))
        self.last_mask = dict(mask)
        return self.stops_at(step)


@register_method(
    "early_bird",
    options=EarlyBirdOptions,
    summary="train dense until the magnitude mask stops changing between epochs, then rewind it to θk",
    cost="one dense training, stopped early",
    writes="last",
)
def run(find: FindRun, options: EarlyBirdOptions) -> None:
    """One ticket, at the last requested level's density (skipped when a resumed run has it)."""
    if not find.levels:
        raise ConfigError("early_bird needs a target density: ask for levels >= 1 (or a target_density)")
    level = find.levels[-1]
    find.level(level, lambda: _ticket(find, level, options))


def _ticket(find: FindRun, level: int, options: EarlyBirdOptions) -> dict[str, Any]:
    from .. import _dist
    from ..masks import magnitude_masks

    started = time.perf_counter()
    density, fixed = find.schedule.densities(level)
    state_dir = Path(find.out) / STATE_DIR
    stop = _load_state(state_dir, options, density)

    def hook(step: int, model: torch.nn.Module) -> bool:
        if step not in stop.steps:  # a step seen before (a resumed run) keeps its recorded answer
            params = dict(model.named_parameters())
            mask = magnitude_masks(
                {n: params[n].detach() for n in find.names}, density, scope=find.config.scope, fixed_densities=fixed
            )
            stop.observe(step, mask)
            _dist.on_main(_save_state, state_dir, stop, density)
        # Not before k: the ticket is rewound to θk, which the run must have reached.
        return step >= find.rewind_step and stop.stops_at(step)

    result = find.train_dense(on_epoch_end=hook)
    end = result.start_step + result.steps
    if not stop.steps or stop.steps[-1] != end:
        raise RuntimeError(f"early_bird: the last mask is from step {stop.steps[-1:]}, training ended at {end}")
    stopped = end >= find.rewind_step and stop.stops_at(end)
    find.save_rewind(result.captured)
    meta = {
        "early_bird_stopped": stopped,
        "early_bird_stop_step": end if stopped else None,
        "early_bird_steps": list(stop.steps),
        "early_bird_distances": list(stop.history),
        "early_bird_window": options.window,
        "early_bird_epsilon": options.epsilon,
        "early_bird_trained_steps": result.steps,
    }
    return find.write_ticket(level, stop.last_mask, result.captured, meta=meta, seconds=time.perf_counter() - started)


def _load_state(state_dir: Path, options: EarlyBirdOptions, density: float) -> EarlyBirdStop:
    """The rule as a killed run left it (``OUT/early_bird/``), or a fresh one."""
    from safetensors.torch import load_file

    path = state_dir / STATE_FILE
    if not path.exists():
        return EarlyBirdStop(options.window, options.epsilon)
    state = json.loads(path.read_text())
    if state.get("density") != density:
        raise ConfigError(
            f"{path} was written for density {state.get('density')}, this run's is {density}; use another --out"
        )
    steps = state["steps"]
    last = load_file(state_dir / _mask_name(steps[-1])) if steps else None
    return EarlyBirdStop(options.window, options.epsilon, steps=steps, history=state["distances"], last_mask=last)


def _save_state(state_dir: Path, stop: EarlyBirdStop, density: float) -> None:
    """The last mask, then ``state.json`` naming it (each atomic), then older mask files go: a kill at
    any point leaves a state whose mask exists."""
    from safetensors.torch import save

    from .._io import atomic_write_bytes, atomic_write_text

    name = _mask_name(stop.steps[-1])
    atomic_write_bytes(state_dir / name, save({n: m.contiguous() for n, m in stop.last_mask.items()}))
    state = {"density": density, "steps": stop.steps, "distances": stop.history}
    atomic_write_text(state_dir / STATE_FILE, json.dumps(state) + "\n")
    for old in state_dir.glob("mask_*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def _mask_name(step: int) -> str:
    return f"mask_{int(step):09d}.safetensors"
