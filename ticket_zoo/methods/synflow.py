"""``synflow``: data-free iterative pruning at initialization by synaptic flow (Tanaka et al. 2020,
"Pruning neural networks without any data by iteratively conserving synaptic flow", NeurIPS).

The definition, exactly: copy the dense network at θ0; replace every floating parameter and buffer
by its absolute value, in float64; BatchNorm in eval mode (the whole copy is in eval mode, so
BatchNorm uses its running statistics, made non-negative too); the input is all ones, of shape
``(1, C, H, W)`` with ``(C, H, W)`` the run's input size. For a requested density ``d`` and
``R = rounds``: start from the all-ones mask; in round ``r = 1..R`` put the current mask on the
absolute weights (the weights masked so far), take ``R_obj = sum of the network's outputs``,
backpropagate, score every prunable weight ``|θ ⊙ ∂R_obj/∂θ|`` (float64) and keep the top
``d^(r/R)`` of the prunable weights, nested in the current mask
(:func:`ticket_zoo.masks.select_masks`: exact count, deterministic ties). The scores are ranked
globally with ``scope: global``; with ``scope: layerwise`` each layer keeps ``d^(r/R)`` of its own.
Layers with their own rate (the head's ``head_prune_fraction``, ``layer_prune_fractions``) compound
the same way: a layer whose final density is ``f`` keeps ``f^(r/R)`` in round ``r``, and so do the
pooled layers with theirs, so every group shrinks geometrically and no round would have to revive a
weight. Without such layers this is exactly ``d^(r/R)`` overall. Each density runs its own ``R``
rounds from the full mask. The real θ0 (signs included) is untouched: every ticket's init is θ0,
so ``rewind`` must be 0; ``OUT/rewind.safetensors`` holds θ0.

Cost: no training and no data; ``rounds`` forward/backward passes of one input per density.

(No torch import at module level: ``ticket-zoo find --help`` lists the methods without loading torch.)

Example:
    >>> import torch
    >>> from torch import nn
    >>> from ticket_zoo.masks import overall_density
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> masks = synflow_masks(model, ["1.weight", "3.weight"], (1, 4, 4), density=0.25, rounds=10)
    >>> round(overall_density(masks), 3), masks["3.weight"].shape
    (0.25, torch.Size([3, 8]))
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import Config, setting
from ..errors import ConfigError
from . import register_method

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..find import FindRun

__all__ = ["SynflowOptions", "run", "synflow_masks"]


@dataclass
class SynflowOptions(Config):
    """Options of ``synflow``.

    Example:
        >>> SynflowOptions().rounds
        100
        >>> SynflowOptions.from_dict({"rounds": 0}).validate()
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: rounds must be a positive int, got 0
    """

    section: ClassVar[str] = "synflow options"

    rounds: int = setting(100, help="pruning rounds per density (round r keeps density^(r/rounds))", low=1)


def _round_budget(
    sizes: Mapping[str, int], density: float, fixed: Mapping[str, float], scope: str, fraction: float
) -> tuple[float, dict[str, float]]:
    """``(overall density, fixed densities)`` of the round at ``fraction = r/R`` of the way.

    Every group keeps its final density raised to ``fraction``: the fixed layers ``f^fraction``, the
    pooled ones (global scope) ``q^fraction`` with ``q`` the pooled density the final budget implies.
    """
    fixed_now = {n: f**fraction for n, f in fixed.items()}
    if scope != "global" or not fixed:
        return density**fraction, fixed_now
    total = sum(sizes.values())
    fixed_final = sum(round(fixed[n] * sizes[n]) for n in fixed)
    pooled = sum(s for n, s in sizes.items() if n not in fixed)
    if pooled == 0:
        return density**fraction, fixed_now
    q = min(1.0, max(0.0, (round(density * total) - fixed_final) / pooled))
    kept = sum(round(f * sizes[n]) for n, f in fixed_now.items()) + round(q**fraction * pooled)
    return kept / total, fixed_now


def synflow_masks(
    model: torch.nn.Module,
    names: Sequence[str],
    input_size: Sequence[int],
    density: float,
    rounds: int = 100,
    scope: str = "global",
    fixed_densities: Mapping[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """SynFlow's masks of the parameters ``names`` at ``density`` after ``rounds`` rounds.

    ``input_size`` is ``(C, H, W)``; ``scope`` and ``fixed_densities`` (``{name or glob: final
    density}``) are :func:`~ticket_zoo.masks.select_masks`' budget rules, compounded per round as the
    module docstring says. ``model`` is left untouched (the work is done on a float64 copy).
    """
    import copy

    import torch

    from ..masks import select_masks

    if not (isinstance(rounds, int) and rounds >= 1):
        raise ConfigError(f"synflow: rounds must be a positive int, got {rounds!r}")
    net = copy.deepcopy(model).double().eval()  # eval: BatchNorm uses its (absolute) running statistics
    params = dict(net.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ConfigError(f"synflow: the model has no parameter {missing[0]!r} to score")
    wanted = set(names)
    with torch.no_grad():
        for name, p in params.items():
            p.abs_()
            p.requires_grad_(name in wanted)  # only the scored weights need a gradient
        for b in net.buffers():
            if b.is_floating_point():
                b.abs_()
    absolute = {n: params[n].detach().clone() for n in names}
    # Globs in fixed_densities name layers as select_masks reads them.
    fixed: dict[str, float] = {}
    for pattern, value in (fixed_densities or {}).items():
        for n in names:
            if n == pattern or fnmatch.fnmatchcase(n, pattern):
                fixed[n] = float(value)
    sizes = {n: absolute[n].numel() for n in names}
    device = absolute[names[0]].device
    ones = torch.ones((1, *(int(v) for v in input_size)), dtype=torch.float64, device=device)

    current = {n: torch.ones(absolute[n].shape, dtype=torch.bool) for n in names}
    for r in range(1, rounds + 1):
        with torch.no_grad():
            for n in names:
                params[n].copy_(absolute[n] * current[n].to(device))
                params[n].grad = None
        net(ones).sum().backward()
        scores = {}
        for n in names:
            p = params[n]
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            scores[n] = (p.detach() * g).abs().cpu()
        if r == rounds:  # the last round keeps exactly the requested budget
            round_density, round_fixed = density, dict(fixed_densities or {})
        else:
            round_density, round_fixed = _round_budget(sizes, density, fixed, scope, r / rounds)
        current = select_masks(
            scores, round_density, scope=scope, previous=current, fixed_densities=round_fixed
        )
    return current


@register_method(
    "synflow",
    options=SynflowOptions,
    summary="SynFlow (Tanaka et al. 2020): data-free iterative pruning of θ0 by synaptic flow",
    cost="no training, no data: rounds forward/backward passes of one all-ones input per density",
    writes="pruned",
)
def run(find: FindRun, options: SynflowOptions) -> None:
    """Levels ``1..L``: θ0 pruned by SynFlow to each level's density, each from the full mask (no level 0)."""
    if find.rewind_step != 0:
        raise ConfigError(
            f"synflow prunes the weights at initialization: set rewind: 0 (got rewind: {find.config.rewind!r})"
        )
    cache: dict[str, Any] = {}

    def make(level: int) -> dict[str, Any]:
        import time

        started = time.perf_counter()  # the row's seconds: this level's cost (its R rounds)
        # θ0 read and saved on the first level not done yet: a complete resumed run computes nothing.
        if not cache:
            cache["model"] = find.dense_model()
            cache["rewind"] = {k: v.detach().cpu().clone() for k, v in cache["model"].state_dict().items()}
            find.save_rewind(cache["rewind"])
        density, fixed = find.schedule.densities(level)
        masks = synflow_masks(
            cache["model"],
            find.names,
            find.splits.input_size,
            density,
            rounds=options.rounds,
            scope=find.config.scope,
            fixed_densities=fixed,
        )
        meta = {"synflow_rounds": options.rounds}
        return find.write_ticket(level, masks, cache["rewind"], meta=meta, seconds=time.perf_counter() - started)

    for level in find.levels:
        find.level(level, lambda level=level: make(level))
