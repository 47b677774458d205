"""``snip``: single-shot pruning at initialization by connection sensitivity (Lee et al. 2019,
"SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR).

The definition, exactly: at θ0 (the run's seeded dense init), with the network in train mode as
in training (so BatchNorm normalises with the batch's statistics), ``g`` is the gradient of the
training loss (cross-entropy, mean over the batch) accumulated (summed) over the first ``batches``
training batches in the run's data order. Each prunable weight scores ``|g ⊙ θ0|``. Each requested
density (the schedule's levels ``1..L``, so the densities are IMP's, with the same budget rules:
``scope``, the head's and ``layer_prune_fractions``' rates) keeps the top-scoring weights in one
shot (:func:`ticket_zoo.masks.select_masks`: exact count, deterministic ties). Every ticket's init
is θ0, so ``rewind`` must be 0; ``OUT/rewind.safetensors`` holds θ0.

Cost: no training; one forward/backward pass per scoring batch, shared by every density.

(No torch import at module level: ``ticket-zoo find --help`` lists the methods without loading torch.)

Example:
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> batches = [(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))]
    >>> scores = snip_scores(model, batches, ["0.weight", "2.weight"])
    >>> {n: tuple(s.shape) for n, s in scores.items()}
    {'0.weight': (8, 4), '2.weight': (3, 8)}
    >>> all(bool((s >= 0).all()) for s in scores.values())
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import Config, setting
from ..errors import ConfigError
from . import register_method

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..find import FindRun

__all__ = ["SnipOptions", "run", "snip_scores"]


@dataclass
class SnipOptions(Config):
    """Options of ``snip``.

    Example:
        >>> SnipOptions.from_dict({"batches": 2}).batches
        2
        >>> SnipOptions.from_dict({"batches": 0}).validate()
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: batches must be a positive int, got 0
    """

    section: ClassVar[str] = "snip options"

    batches: int = setting(
        1, help="training batches (in the run's data order) whose loss gradient scores the weights", low=1
    )


def snip_scores(
    model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """SNIP's scores ``|g ⊙ θ|`` (float32, non-negative, on the CPU) of the parameters ``names``.

    ``g`` is the gradient of ``cross_entropy(model(x), y)`` (mean over the batch) summed over
    ``batches`` of ``(x, y)``, with the network in train mode. ``model`` is left untouched (the
    work is done on a copy, so its BatchNorm running statistics and ``.grad`` do not change).
    """
    import copy

    import torch
    import torch.nn.functional as F

    net = copy.deepcopy(model).train()
    params = dict(net.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ConfigError(f"snip: the model has no parameter {missing[0]!r} to score")
    wanted = set(names)
    for name, p in params.items():
        # Only the scored weights need a gradient; the others' would be wasted work.
        p.requires_grad_(name in wanted)
        p.grad = None
    device = next(iter(params.values())).device
    seen = 0
    for x, y in batches:
        loss = F.cross_entropy(net(x.to(device)), y.to(device))
        loss.backward()  # .grad accumulates: the sum over batches
        seen += 1
    if seen == 0:
        raise ConfigError("snip: no training batch to score the weights with")
    scores = {}
    for name in names:
        p = params[name]
        g = p.grad if p.grad is not None else torch.zeros_like(p)  # unused by the loss: no sensitivity
        scores[name] = (g * p.detach()).abs().to(device="cpu", dtype=torch.float32)
    return scores


@register_method(
    "snip",
    options=SnipOptions,
    summary="SNIP (Lee et al. 2019): prune θ0 in one shot by |loss gradient × weight| on a few batches",
    cost="no training: one forward/backward pass per scoring batch (option batches), for every density",
    writes="pruned",
)
def run(find: FindRun, options: SnipOptions) -> None:
    """Levels ``1..L``: θ0 pruned in one shot by SNIP's scores to each level's density (no level 0)."""
    if find.rewind_step != 0:
        raise ConfigError(
            f"snip scores the weights at initialization: set rewind: 0 (got rewind: {find.config.rewind!r})"
        )
    cache: dict[str, Any] = {}

    def scored() -> tuple[dict[str, Any], dict[str, Any]]:
        # Computed on the first level that is not done yet: a resumed run that is complete scores nothing.
        if not cache:
            model = find.dense_model()
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            find.save_rewind(state)
            cache["rewind"] = state
            cache["scores"] = snip_scores(model, find.train_batches(options.batches), find.names)
        return cache["scores"], cache["rewind"]

    def make(level: int) -> dict[str, Any]:
        import time

        from ..masks import select_masks

        started = time.perf_counter()  # the row's seconds: this level's cost (scoring on the first one)
        scores, rewind = scored()
        density, fixed = find.schedule.densities(level)
        masks = select_masks(scores, density, scope=find.config.scope, fixed_densities=fixed)
        meta = {"snip_batches": options.batches}
        return find.write_ticket(level, masks, rewind, meta=meta, seconds=time.perf_counter() - started)

    for level in find.levels:
        find.level(level, lambda level=level: make(level))
