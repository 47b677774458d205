"""What counts as prunable, the shared top-k selection, magnitude and random masks, and mask overlap.

A mask is a ``dict[str, torch.BoolTensor]`` keyed by parameter name (as in
``model.named_parameters()``); ``True`` means the weight is kept.

Example:
    >>> import torch
    >>> weights = {"fc1.weight": torch.randn(30, 20), "fc2.weight": torch.randn(10, 30)}
    >>> # (from a network: weights = prunable_weights(model))
    >>> masks = magnitude_masks(weights, density=0.2)
    >>> round(overall_density(masks), 3)
    0.2
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

Masks = dict[str, torch.Tensor]

# Conv and linear weights carry the network's capacity; biases and normalisation parameters are
# tiny and pruning them destabilises training, so they are never prunable.
PRUNABLE_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or name.startswith(p.rstrip("*") + ".") for p in patterns)


def prunable_names(
    model: nn.Module,
    *,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    prune_head: bool = False,
) -> list[str]:
    """Names of the prunable parameters of ``model``, in ``named_parameters`` order.

    Conv and linear weights are prunable; biases and normalisation never. The classifier head is
    excluded unless ``prune_head``. ``include`` keeps only names matching one of its glob patterns;
    ``exclude`` drops names matching any of its patterns (a module prefix such as ``"features.0"``
    matches that module's weight too).

    Example:
        >>> import timm
        >>> import ticket_zoo.models  # registers the paper networks into timm
        >>> model = timm.create_model("conv4", num_classes=10, in_chans=1, img_size=8)
        >>> prunable_names(model)  # the classifier head is left out
        ['features.0.weight', 'features.2.weight', 'features.5.weight', 'features.7.weight', 'fc1.weight', 'fc2.weight']
        >>> prunable_names(model, exclude=["features.0"], prune_head=True)
        ['features.2.weight', 'features.5.weight', 'features.7.weight', 'fc1.weight', 'fc2.weight', 'head.weight']
        >>> prunable_names(model, include=["fc*"])
        ['fc1.weight', 'fc2.weight']
    """
    from .models import classifier_param_names

    head = set() if prune_head else set(classifier_param_names(model))
    names = []
    for module_name, module in model.named_modules():
        if not isinstance(module, PRUNABLE_MODULES) or getattr(module, "weight", None) is None:
            continue
        name = f"{module_name}.weight" if module_name else "weight"
        if name in head:
            continue
        if include is not None and not _matches(name, include):
            continue
        if exclude is not None and _matches(name, exclude):
            continue
        names.append(name)
    if not names:
        raise ConfigError(
            "no prunable parameters selected: check the include/exclude patterns "
            f"(model has {sum(1 for _ in model.parameters())} parameters)"
        )
    return names


def prunable_weights(model: nn.Module, **selection) -> dict[str, torch.Tensor]:
    """``{name: weight tensor}`` for :func:`prunable_names` (detached, same storage)."""
    params = dict(model.named_parameters())
    return {name: params[name].detach() for name in prunable_names(model, **selection)}


def _check_density(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{what} must be a fraction in [0, 1], got {value}")
    return value


def _kth_largest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of 1-D float32 ``scores`` (values >= 0, or exactly -1 for dead weights).

    A two-pass radix select on the float bit patterns: for non-negative IEEE floats the int32 bit
    pattern orders like the value, so two bincounts (high 16 bits, then low 15 bits inside the one
    bucket that holds the k-th value) find it exactly. On 20M weights this is several times faster
    than torch.kthvalue / topk, which sort or partition.
    """
    if bool(scores.min() < 0):
        keys = scores.view(torch.int32) + 1  # alive: bits + 1 >= 1
        keys.masked_fill_(scores < 0, 0)  # dead (-1.0): key 0, below every alive weight
        offset = 1
    else:
        keys, offset = scores.view(torch.int32), 0  # no dead weights: the bits themselves, no copy
    high = keys >> 15
    counts = torch.bincount(high, minlength=1 << 16)
    from_top = counts.flip(0).cumsum(0)
    pos = int(torch.searchsorted(from_top, k))
    bucket = (1 << 16) - 1 - pos
    above = int(from_top[pos - 1]) if pos > 0 else 0
    low = keys[high == bucket] & ((1 << 15) - 1)
    from_top_low = torch.bincount(low, minlength=1 << 15).flip(0).cumsum(0)
    pos_low = int(torch.searchsorted(from_top_low, k - above))
    key = (bucket << 15) | ((1 << 15) - 1 - pos_low)
    if offset and key == 0:
        return torch.tensor(-1.0)
    return torch.tensor(key - offset, dtype=torch.int32).view(torch.float32)


def _top_k_flat(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` largest entries of 1-D ``scores``; ties broken by lower index first.

    kthvalue finds the threshold in linear time (far cheaper than a full sort on 20M weights);
    entries equal to the threshold are then taken in index order, which makes ties deterministic.
    """
    n = scores.numel()
    keep = torch.zeros(n, dtype=torch.bool)
    if k <= 0:
        return keep
    if k >= n:
        keep.fill_(True)
        return keep
    if scores.dtype == torch.float32:
        threshold = _kth_largest(scores, k)
    else:  # float64: kthvalue on the negated scores is the k-th largest, exactly
        threshold = -torch.kthvalue(-scores, k).values
    keep = scores > threshold
    missing = k - int(torch.count_nonzero(keep))
    if missing > 0:
        ties = torch.nonzero(scores == threshold).flatten()[:missing]
        keep[ties] = True
    return keep


def magnitude_masks(
    weights: Mapping[str, torch.Tensor] | nn.Module,
    density: float,
    scope: str = "global",
    previous: Mapping[str, torch.Tensor] | None = None,
    fixed_densities: Mapping[str, float] | None = None,
) -> Masks:
    """Keep the largest-magnitude weights so that exactly ``round(density * n)`` remain.

    :func:`select_masks` with ``|w|`` as the scores; the arguments are the same.

    Args:
        weights: ``{name: tensor}`` of the prunable weights (or a model: its default prunable set).
        density: fraction of ALL prunable weights that remain after the call.
        scope: ``"global"`` ranks all layers together; ``"layerwise"`` keeps
            ``round(density * n_layer)`` in every layer.
        previous: masks of the last pruning level; only weights alive there can be kept (a pruned
            weight is never revived), so successive levels are nested.
        fixed_densities: per-layer densities ``{name or glob: density}`` for layers that must follow
            their own rate (e.g. the output layer); the other layers share the remaining budget.

    Ties are broken deterministically (earlier layer, then lower flat index, wins).

    Example:
        >>> w = {"a": torch.tensor([0.5, -2.0, 0.1, 3.0]), "b": torch.tensor([1.0, -0.2])}
        >>> magnitude_masks(w, 0.5)
        {'a': tensor([False,  True, False,  True]), 'b': tensor([ True, False])}
        >>> magnitude_masks(w, 0.5, fixed_densities={"b": 1.0})  # b keeps all; a shares the rest
        {'a': tensor([False, False, False,  True]), 'b': tensor([True, True])}
        >>> m1 = magnitude_masks(w, 0.5, scope="layerwise")
        >>> m2 = magnitude_masks({"a": -w["a"], "b": w["b"]}, 0.25, previous=m1)  # nested in m1
        >>> all(bool((m2[n] <= m1[n]).all()) for n in m1)
        True
    """
    if isinstance(weights, nn.Module):
        weights = prunable_weights(weights)
    return _select(weights, density, scope, previous, fixed_densities, magnitude=True)


def select_masks(
    scores: Mapping[str, torch.Tensor],
    density: float,
    scope: str = "global",
    previous: Mapping[str, torch.Tensor] | None = None,
    fixed_densities: Mapping[str, float] | None = None,
) -> Masks:
    """Keep the highest-scoring weights so that exactly ``round(density * n)`` remain: the selection
    every pruning method shares (a method only computes ``scores``).

    ``scores`` are ``{name: tensor}`` of non-negative finite numbers shaped like the weights (float32
    or float64; float64 is ranked without rounding). The budget follows the same rules as
    :func:`magnitude_masks`: ``scope``, ``previous`` (nested, never revived) and ``fixed_densities``.
    Ties are broken deterministically: earlier layer, then lower flat index, wins.

    Example:
        >>> s = {"a": torch.tensor([0.0, 3.0, 1.0, 1.0]), "b": torch.tensor([2.0, 1.0])}
        >>> select_masks(s, 0.5)  # 3 of 6: 3.0, 2.0, then the first 1.0
        {'a': tensor([False,  True,  True, False]), 'b': tensor([ True, False])}
        >>> select_masks(s, 0.5, scope="layerwise")["b"].tolist()
        [True, False]
        >>> select_masks({"a": torch.tensor([-1.0, 2.0])}, 0.5)
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: scores of 'a' must be non-negative (a method scores weights by a magnitude)
    """
    return _select(scores, density, scope, previous, fixed_densities, magnitude=False)


def _select(
    values: Mapping[str, torch.Tensor],
    density: float,
    scope: str,
    previous: Mapping[str, torch.Tensor] | None,
    fixed_densities: Mapping[str, float] | None,
    *,
    magnitude: bool,
) -> Masks:
    """The selection of :func:`select_masks`; with ``magnitude`` the scores are ``|values|``."""
    what = "weights" if magnitude else "scores"
    if not values:
        raise ConfigError(f"{'magnitude_masks' if magnitude else 'select_masks'} got no {what} to prune")
    if scope not in ("global", "layerwise"):
        raise ConfigError(f"scope must be 'global' or 'layerwise', got {scope!r}")
    density = _check_density(density, "density")
    names = list(values)
    previous = dict(previous) if previous is not None else {}
    for name in previous:
        if name not in values:
            raise ConfigError(f"previous mask names a parameter {name!r} that is not among the {what}")
    # float64 scores (e.g. SynFlow's) are ranked as they are: rounding them to float32 could merge
    # distinct scores into ties. Magnitudes and float32 scores share one float32 buffer.
    dtype = torch.float64 if any(values[n].dtype == torch.float64 for n in names) else torch.float32

    # All scores live in one preallocated buffer: no per-layer temporaries and no cat, which
    # matters at 20M weights. Dead weights score -1 (below any score) so they are never chosen.
    total = sum(values[n].numel() for n in names)
    buffer = torch.empty(total, dtype=dtype)
    scores: dict[str, torch.Tensor] = {}
    alive: dict[str, int] = {}
    offset = 0
    for name in names:
        w = values[name].detach()
        flat = buffer[offset : offset + w.numel()]
        offset += w.numel()
        if magnitude:
            torch.abs(w.reshape(-1).to(device="cpu", dtype=dtype), out=flat)
        else:
            flat.copy_(w.reshape(-1))
            if flat.numel() and bool((flat < 0).any()):
                raise ConfigError(f"scores of {name!r} must be non-negative (a method scores weights by a magnitude)")
        if name in previous:
            prev = previous[name]
            if tuple(prev.shape) != tuple(w.shape):
                raise ConfigError(
                    f"previous mask for {name!r} has shape {tuple(prev.shape)}, weight has {tuple(w.shape)}"
                )
            prev = prev.reshape(-1).to("cpu", torch.bool)
            flat.masked_fill_(~prev, -1.0)
            alive[name] = int(torch.count_nonzero(prev))
        else:
            alive[name] = flat.numel()
        scores[name] = flat
    if total:
        # min/max propagate NaN and an inf is the max: one pass instead of an isfinite temporary.
        low, high = torch.aminmax(buffer)
        if not (torch.isfinite(low) and torch.isfinite(high)):
            bad = next(n for n in names if not bool(torch.isfinite(scores[n]).all()))
            rank = "by magnitude" if magnitude else "them"
            raise ConfigError(f"{'weight' if magnitude else 'scores of'} {bad!r} has non-finite values; cannot rank {rank}")

    layer_density: dict[str, float] = {}
    for pattern, value in (fixed_densities or {}).items():
        hits = [n for n in names if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ConfigError(
                f"fixed_densities: {pattern!r} matches no prunable parameter (have: {names[:5]}...)"
            )
        for n in hits:
            layer_density[n] = _check_density(value, f"fixed density for {n}")

    keep_counts: dict[str, int] = {}
    for name in names:
        if name in layer_density or scope == "layerwise":
            d = layer_density.get(name, density)
            keep_counts[name] = round(d * scores[name].numel())
    if scope == "global":
        budget = round(density * total) - sum(keep_counts.values())
        pooled = [n for n in names if n not in keep_counts]
        pooled_alive = sum(alive[n] for n in pooled)
        if pooled and not 0 <= budget <= pooled_alive:
            raise ConfigError(
                f"density {density} is impossible: the layers without fixed densities would need to keep "
                f"{budget} weights but {pooled_alive} are alive"
            )
    for name, k in keep_counts.items():
        if k > alive[name]:
            raise ConfigError(
                f"density for {name!r} would keep {k} weights but only {alive[name]} are alive in the "
                "previous mask; pruning never revives weights"
            )

    masks: Masks = {}
    for name in keep_counts:
        masks[name] = _top_k_flat(scores[name], keep_counts[name])
    if scope == "global" and pooled:
        # Without fixed densities the pooled layers are the whole buffer: rank it in place, no copy.
        flat = buffer if len(pooled) == len(names) else torch.cat([scores[n] for n in pooled])
        keep = _top_k_flat(flat, budget)
        offset = 0
        for n in pooled:
            size = scores[n].numel()
            masks[n] = keep[offset : offset + size]
            offset += size
    return {n: masks[n].reshape(values[n].shape).clone() for n in names}


def random_masks(reference: Mapping[str, torch.Tensor], seed: int) -> Masks:
    """Uniformly random masks with exactly the same number of kept weights per layer as ``reference``.

    Example:
        >>> masks = {"a": torch.tensor([True, False, False, True]), "b": torch.tensor([False, True])}
        >>> shuffled = random_masks(masks, seed=0)
        >>> layer_densities(shuffled) == layer_densities(masks) == {"a": 0.5, "b": 0.5}
        True
    """
    generator = torch.Generator().manual_seed(int(seed))
    out: Masks = {}
    for name, mask in reference.items():
        n, k = mask.numel(), int(torch.count_nonzero(mask))
        flat = torch.zeros(n, dtype=torch.bool)
        flat[torch.randperm(n, generator=generator)[:k]] = True
        out[name] = flat.reshape(mask.shape)
    return out


def overall_density(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of all masked weights that are kept.

    Example:
        >>> overall_density({"a": torch.tensor([True, False, False, True]), "b": torch.tensor([True, True])})
        0.6666666666666666
    """
    total = sum(m.numel() for m in masks.values())
    # count_nonzero is an order of magnitude faster than sum() on bool tensors (no int64 upcast).
    return float(sum(int(torch.count_nonzero(m)) for m in masks.values()) / total) if total else 1.0


def layer_densities(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """``{name: fraction kept}`` per layer."""
    return {n: float(int(torch.count_nonzero(m)) / m.numel()) if m.numel() else 1.0 for n, m in masks.items()}


def mask_overlap(
    a: Mapping[str, torch.Tensor] | Any, b: Mapping[str, torch.Tensor] | Any, *, strict: bool = False
) -> dict:
    """Jaccard overlap |a∧b| / |a∨b| per layer and overall, over the layers the two masks share.

    ``a`` and ``b`` are masks or tickets (anything with a ``masks`` attribute). A layer is shared
    when both have it under the same name with the same shape. The others are skipped, e.g. the
    heads of a 10-class and a 5-class ticket of one architecture, or a layer only one of them
    masks: the result then also holds ``"skipped": {name: reason}`` (the key is absent when nothing
    was skipped) and a ``UserWarning`` names them. ``strict=True`` raises :class:`ConfigError`
    instead of skipping; so does having no layer in common.

    Returns:
        ``{"layers": {name: overlap}, "overall": overlap}``, plus ``"skipped"`` as above. An empty
        union (both keep nothing) counts as overlap 1.0.

    Example:
        >>> a = {"w": torch.tensor([True, True, False, False])}
        >>> b = {"w": torch.tensor([True, False, True, False])}
        >>> mask_overlap(a, b)
        {'layers': {'w': 0.3333333333333333}, 'overall': 0.3333333333333333}
        >>> import warnings
        >>> with warnings.catch_warnings():  # a 3-class head vs a 2-class head: compared without it
        ...     warnings.simplefilter("ignore")
        ...     out = mask_overlap({**a, "head": torch.ones(3, 4, dtype=torch.bool)},
        ...                        {**b, "head": torch.ones(2, 4, dtype=torch.bool)})
        >>> out
        {'layers': {'w': 0.3333333333333333}, 'overall': 0.3333333333333333, 'skipped': {'head': 'shape (3, 4) vs (2, 4)'}}
    """
    a, b = getattr(a, "masks", a), getattr(b, "masks", b)
    skipped: dict[str, str] = {}
    for name in a:
        if name not in b:
            skipped[name] = "only in the first"
        elif tuple(a[name].shape) != tuple(b[name].shape):
            skipped[name] = f"shape {tuple(a[name].shape)} vs {tuple(b[name].shape)}"
    skipped.update({name: "only in the second" for name in b if name not in a})
    shared = [name for name in a if name not in skipped]
    if skipped and (strict or not shared):
        what = "no layer in common" if not shared else "masks cover different layers"
        listed = ", ".join(f"{n} ({why})" for n, why in list(skipped.items())[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise ConfigError(f"{what}: {listed}{more}")
    layers = {}
    inter_total = union_total = 0
    for name in shared:
        # count_nonzero: no int64 upcast of the whole bool tensor (as in overall_density)
        inter = int(torch.count_nonzero(a[name] & b[name]))
        union = int(torch.count_nonzero(a[name] | b[name]))
        layers[name] = inter / union if union else 1.0
        inter_total += inter
        union_total += union
    out: dict[str, Any] = {"layers": layers, "overall": inter_total / union_total if union_total else 1.0}
    if skipped:
        listed = ", ".join(f"{n} ({why})" for n, why in skipped.items())
        warnings.warn(
            f"mask_overlap compared {len(shared)} shared layers and skipped {listed}",
            UserWarning,
            stacklevel=2,
        )
        out["skipped"] = skipped
    return out
