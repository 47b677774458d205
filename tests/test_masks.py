"""Tests for ticket_zoo.masks: prunable sets, magnitude and random masks, overlap, densities."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

import ticket_zoo.models  # noqa: F401  (registers the paper architectures)
from ticket_zoo.errors import ConfigError
from ticket_zoo.masks import (
    layer_densities,
    magnitude_masks,
    mask_overlap,
    overall_density,
    prunable_names,
    prunable_weights,
    random_masks,
)


def _tied_weights(seed: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Small integer-valued weights in [-3, 3]: lots of exact magnitude ties."""
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randint(-3, 4, s, generator=g).float() for n, s in shapes.items()}


SHAPES = {"a": (4, 5), "b": (7,), "c": (3, 2, 2)}


def _reference(weights: dict[str, torch.Tensor], counts: dict[str, int] | int) -> dict[str, torch.Tensor]:
    """Brute-force top-k by full sort: larger |w| first, ties -> earlier layer, then lower index."""
    if isinstance(counts, int):  # global: one ranking over all layers in order
        entries = [(n, i) for n in weights for i in range(weights[n].numel())]
        key = {e: (-abs(float(weights[e[0]].reshape(-1)[e[1]])), pos) for pos, e in enumerate(entries)}
        chosen = set(sorted(entries, key=key.__getitem__)[:counts])
        return {
            n: torch.tensor([(n, i) in chosen for i in range(w.numel())]).reshape(w.shape)
            for n, w in weights.items()
        }
    out = {}
    for n, w in weights.items():
        flat = w.reshape(-1)
        order = sorted(range(flat.numel()), key=lambda i: (-abs(float(flat[i])), i))[: counts[n]]
        keep = torch.zeros(flat.numel(), dtype=torch.bool)
        keep[order] = True
        out[n] = keep.reshape(w.shape)
    return out


def _assert_masks_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for n in a:
        assert a[n].dtype == torch.bool and a[n].shape == b[n].shape, n
        assert torch.equal(a[n], b[n]), n


# --- magnitude_masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("density", [0.0, 0.1, 0.25, 0.5, 0.77, 1.0])
def test_global_matches_sort_reference_with_ties(seed: int, density: float) -> None:
    weights = _tied_weights(seed, SHAPES)
    total = sum(w.numel() for w in weights.values())
    masks = magnitude_masks(weights, density)
    assert sum(int(m.sum()) for m in masks.values()) == round(density * total)
    _assert_masks_equal(masks, _reference(weights, round(density * total)))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("density", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_layerwise_matches_sort_reference_with_ties(seed: int, density: float) -> None:
    weights = _tied_weights(seed, SHAPES)
    masks = magnitude_masks(weights, density, scope="layerwise")
    counts = {n: round(density * w.numel()) for n, w in weights.items()}
    for n, m in masks.items():
        assert int(m.sum()) == counts[n], n
    _assert_masks_equal(masks, _reference(weights, counts))


def test_chosen_weights_are_the_largest_on_real_layers() -> None:
    torch.manual_seed(0)
    weights = {"w1": torch.randn(64, 32), "w2": torch.randn(128)}
    masks = magnitude_masks(weights, 0.3)
    kept = torch.cat([weights[n][masks[n]].abs() for n in weights])
    dropped = torch.cat([weights[n][~masks[n]].abs() for n in weights])
    assert kept.numel() == round(0.3 * (64 * 32 + 128))
    assert kept.min() >= dropped.max()


def test_ties_break_toward_lower_index_and_earlier_layer() -> None:
    weights = {"x": torch.ones(4), "y": torch.ones(4)}
    masks = magnitude_masks(weights, 3 / 8)
    assert masks["x"].tolist() == [True, True, True, False]
    assert masks["y"].tolist() == [False] * 4
    layer = magnitude_masks(weights, 0.5, scope="layerwise")
    assert layer["x"].tolist() == layer["y"].tolist() == [True, True, False, False]


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_nested_levels_never_revive(scope: str) -> None:
    torch.manual_seed(1)
    weights = {"a": torch.randn(30, 20), "b": torch.randn(50), "c": torch.randn(10, 3, 3)}
    total = sum(w.numel() for w in weights.values())
    previous = None
    for level in range(1, 6):
        density = 0.8**level
        masks = magnitude_masks(weights, density, scope=scope, previous=previous)
        if scope == "global":
            assert sum(int(m.sum()) for m in masks.values()) == round(density * total)
        else:
            assert all(int(m.sum()) == round(density * weights[n].numel()) for n, m in masks.items())
        if previous is not None:
            for n in masks:
                assert not bool((masks[n] & ~previous[n]).any()), f"level {level} revived weights in {n}"
        previous = masks


def test_dead_large_weights_stay_dead() -> None:
    w = torch.arange(1.0, 11.0)  # the largest weights are at the end
    previous = {"w": torch.tensor([True] * 5 + [False] * 5)}
    masks = magnitude_masks({"w": w}, 0.3, previous=previous)
    assert masks["w"].tolist() == [False, False, True, True, True] + [False] * 5


def test_impossible_density_after_previous_raises() -> None:
    weights = {"a": torch.randn(10), "b": torch.randn(10)}
    previous = {"a": torch.zeros(10, dtype=torch.bool), "b": torch.ones(10, dtype=torch.bool)}
    with pytest.raises(ConfigError, match="impossible"):
        magnitude_masks(weights, 0.6, previous=previous)
    with pytest.raises(ConfigError, match="never revives"):
        magnitude_masks(weights, 0.1, scope="layerwise", previous=previous)


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), 2])
def test_density_outside_unit_interval_raises(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        magnitude_masks({"a": torch.randn(4)}, bad)


def test_bad_arguments_raise_config_error() -> None:
    w = {"a": torch.randn(4)}
    with pytest.raises(ConfigError, match="scope"):
        magnitude_masks(w, 0.5, scope="per-layer")
    with pytest.raises(ConfigError, match="no weights"):
        magnitude_masks({}, 0.5)
    with pytest.raises(ConfigError, match="not among the weights"):
        magnitude_masks(w, 0.5, previous={"zzz": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="shape"):
        magnitude_masks(w, 0.5, previous={"a": torch.ones(5, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="non-finite"):
        magnitude_masks({"a": torch.tensor([1.0, float("nan")])}, 0.5)
    with pytest.raises(ConfigError, match="matches no prunable"):
        magnitude_masks(w, 0.5, fixed_densities={"nothing.*": 0.1})
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        magnitude_masks(w, 0.5, fixed_densities={"a": 1.5})


def test_fixed_densities_respected_and_rest_keeps_global_budget() -> None:
    torch.manual_seed(2)
    weights = {"f.0": torch.randn(40, 10), "f.1": torch.randn(30, 10), "head": torch.randn(10, 10)}
    total = sum(w.numel() for w in weights.values())
    masks = magnitude_masks(weights, 0.2, fixed_densities={"head": 0.5})
    assert int(masks["head"].sum()) == 50
    assert sum(int(m.sum()) for m in masks.values()) == round(0.2 * total)
    # the other layers are ranked together, exactly like a global mask over them alone
    rest = {n: weights[n] for n in ("f.0", "f.1")}
    ref = _reference(rest, round(0.2 * total) - 50)
    for n in rest:
        assert torch.equal(masks[n], ref[n])
    # glob patterns work and several layers can be pinned
    pinned = magnitude_masks(weights, 0.2, fixed_densities={"f.*": 0.1})
    assert int(pinned["f.0"].sum()) == 40 and int(pinned["f.1"].sum()) == 30
    assert int(pinned["head"].sum()) == round(0.2 * total) - 70
    with pytest.raises(ConfigError, match="impossible"):
        magnitude_masks(weights, 0.05, fixed_densities={"f.0": 1.0})


def test_magnitude_masks_deterministic_and_accepts_model() -> None:
    torch.manual_seed(3)
    model = timm.create_model("conv2", num_classes=4, img_size=4)
    a = magnitude_masks(model, 0.3)
    b = magnitude_masks(prunable_weights(model), 0.3)
    _assert_masks_equal(a, b)
    assert list(a) == prunable_names(model)
    assert overall_density(a) == pytest.approx(0.3, abs=1e-5)


# --- random_masks ------------------------------------------------------------------------------------


def test_random_masks_keep_counts_and_are_seeded() -> None:
    torch.manual_seed(4)
    ref = magnitude_masks({"a": torch.randn(20, 10), "b": torch.randn(333), "c": torch.randn(5)}, 0.37)
    ref["c"] = torch.zeros(5, dtype=torch.bool)  # an empty layer stays empty
    r0 = random_masks(ref, seed=0)
    for n, m in ref.items():
        assert r0[n].dtype == torch.bool and r0[n].shape == m.shape
        assert int(r0[n].sum()) == int(m.sum())
    _assert_masks_equal(r0, random_masks(ref, seed=0))
    r1 = random_masks(ref, seed=1)
    assert not torch.equal(r0["a"], r1["a"]) and not torch.equal(r0["b"], r1["b"])
    assert not torch.equal(r0["a"], ref["a"])  # it is actually shuffled


# --- overlap and densities ---------------------------------------------------------------------------


def test_mask_overlap_jaccard_on_hand_made_masks() -> None:
    a = {
        "x": torch.tensor([1, 1, 0, 0], dtype=torch.bool),
        "y": torch.tensor([[1, 0], [1, 0]], dtype=torch.bool),
    }
    b = {
        "x": torch.tensor([1, 0, 1, 0], dtype=torch.bool),
        "y": torch.tensor([[1, 0], [1, 0]], dtype=torch.bool),
    }
    out = mask_overlap(a, b)
    assert out["layers"]["x"] == pytest.approx(1 / 3)
    assert out["layers"]["y"] == 1.0
    assert out["overall"] == pytest.approx((1 + 2) / (3 + 2))
    empty = {"x": torch.zeros(3, dtype=torch.bool)}
    assert mask_overlap(empty, empty) == {"layers": {"x": 1.0}, "overall": 1.0}
    disjoint = mask_overlap({"x": torch.tensor([True, False])}, {"x": torch.tensor([False, True])})
    assert disjoint["overall"] == 0.0
    with pytest.raises(ConfigError, match="different layers"):
        mask_overlap(a, {"x": a["x"]}, strict=True)
    with pytest.raises(ConfigError, match="shape"):
        mask_overlap({"x": a["x"]}, {"x": torch.ones(5, dtype=torch.bool)})


def test_overall_and_layer_densities() -> None:
    masks = {"a": torch.tensor([True, False, False, False]), "b": torch.ones(2, 3, dtype=torch.bool)}
    assert overall_density(masks) == pytest.approx(7 / 10)
    assert layer_densities(masks) == {"a": 0.25, "b": 1.0}
    assert overall_density({}) == 1.0


# --- prunable_names ----------------------------------------------------------------------------------


def test_prunable_names_resnet20_excludes_bias_norm_and_head() -> None:
    model = timm.create_model("resnet20_cifar", num_classes=10)
    names = prunable_names(model)
    expected = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert names == expected
    assert "head.weight" not in names and not any("bn" in n or n.endswith(".bias") for n in names)
    assert "layer2.0.downsample.0.weight" in names
    assert prunable_names(model, prune_head=True) == expected + ["head.weight"]


def test_prunable_names_include_exclude_patterns() -> None:
    model = timm.create_model("resnet20_cifar", num_classes=10)
    all_names = prunable_names(model)
    no_stem = prunable_names(model, exclude=["conv1"])  # a module prefix matches its weight
    assert no_stem == [n for n in all_names if n != "conv1.weight"]
    no_layer1 = prunable_names(model, exclude=["layer1.*"])
    assert no_layer1 == [n for n in all_names if not n.startswith("layer1.")]
    only3 = prunable_names(model, include=["layer3.*"])
    assert only3 and all(n.startswith("layer3.") for n in only3)
    assert only3 == [n for n in all_names if n.startswith("layer3.")]
    with pytest.raises(ConfigError, match="no prunable parameters"):
        prunable_names(model, include=["nothing*"])


def test_prunable_names_timm_resnet18_and_custom_model() -> None:
    names = prunable_names(timm.create_model("resnet18", num_classes=3))
    assert "fc.weight" not in names and names[0] == "conv1.weight" and len(names) == 20
    custom = nn.Sequential(
        nn.Conv1d(2, 4, 3), nn.LayerNorm(4), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)
    )
    assert prunable_names(custom) == ["0.weight", "2.weight"]
    assert prunable_names(custom, prune_head=True) == ["0.weight", "2.weight", "4.weight"]


def test_masks_on_real_architecture_hit_exact_counts() -> None:
    torch.manual_seed(5)
    model = timm.create_model("resnet20_cifar", num_classes=10)
    weights = prunable_weights(model)
    n = sum(w.numel() for w in weights.values())
    for density in (0.123, 0.01):
        masks = magnitude_masks(weights, density)
        assert sum(int(m.sum()) for m in masks.values()) == round(density * n)
        layer = magnitude_masks(weights, density, scope="layerwise")
        for name, m in layer.items():
            assert int(m.sum()) == round(density * weights[name].numel())
    assert math.isclose(overall_density(masks), round(0.01 * n) / n)


@pytest.mark.parametrize("seed", range(3))
def test_threshold_selection_matches_stable_sort_on_larger_tensors(seed: int) -> None:
    """Many repeated magnitudes, exact zeros, subnormals and dead weights, vs a stable-sort reference."""
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor([0.0, 1e-40, 1e-3, 0.5, 0.5000001, 1.0, 3.0e5])
    weights = {
        "a": values[torch.randint(0, len(values), (20_000,), generator=g)]
        * torch.sign(torch.randn(20_000, generator=g)),
        "b": torch.randn(3_000, generator=g),
    }
    previous = {n: torch.rand(w.shape, generator=g) < 0.7 for n, w in weights.items()}
    alive = sum(int(m.sum()) for m in previous.values())
    total = sum(w.numel() for w in weights.values())
    for density in (0.6, 0.31, 0.05, 0.0001):
        k = round(density * total)
        assert k <= alive
        masks = magnitude_masks(weights, density, previous=previous)
        scores = torch.cat([torch.where(previous[n], weights[n].abs(), torch.tensor(-1.0)) for n in weights])
        ref = torch.zeros(total, dtype=torch.bool)
        ref[torch.sort(-scores, stable=True).indices[:k]] = True
        assert torch.equal(torch.cat([masks[n] for n in weights]), ref), density
