"""Tests for ticket_zoo.ticket: the Ticket value, build() and masks_for()."""

from __future__ import annotations

import pytest
import timm
import torch

import ticket_zoo.models  # noqa: F401  (registers the paper architectures)
from ticket_zoo.errors import ConfigError, TicketFormatError, UnknownArchitectureError
from ticket_zoo.masks import magnitude_masks, prunable_weights
from ticket_zoo.models import classifier_param_names
from ticket_zoo.ticket import Ticket, create_model

ARCH, KWARGS = "conv4", {"num_classes": 10, "img_size": 8}


def _ticket(prune_head: bool, density: float = 0.2, arch: str = ARCH, kwargs: dict | None = None) -> Ticket:
    kwargs = dict(kwargs or KWARGS)
    torch.manual_seed(0)
    model = create_model(arch, kwargs)
    with torch.no_grad():  # non-trivial buffers and biases, so "equal to the rewind values" is meaningful
        for name, t in model.state_dict().items():
            if t.is_floating_point() and not any(name.endswith(k) for k in ("weight",)):
                t.copy_(torch.rand_like(t) + 0.5)
    masks = magnitude_masks(prunable_weights(model, prune_head=prune_head), density)
    return Ticket.from_model(model, masks, arch=arch, arch_kwargs=kwargs, meta={"source": "unit"})


@pytest.mark.parametrize("prune_head", [False, True])
def test_build_zeros_pruned_and_loads_rewind_values(prune_head: bool) -> None:
    t = _ticket(prune_head)
    assert ("head.weight" in t.masks) == prune_head
    model = t.build()
    state = model.state_dict()
    assert set(state) == set(t.init)
    for name, value in state.items():
        assert value.dtype == t.init[name].dtype
        if name in t.masks:
            mask = t.masks[name]
            assert bool((value[~mask] == 0).all()), name
            assert torch.equal(value[mask], t.init[name][mask]), name
            assert bool((value[mask] != 0).all())  # kept weights are real values, not zeros
        else:
            assert torch.equal(value, t.init[name]), name
    assert t.masks_for(model).keys() == t.masks.keys()
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_rewind_init_is_not_the_model_state() -> None:
    """from_model(init_state=...) stores the rewind state, not the model's current weights."""
    torch.manual_seed(0)
    model = create_model(ARCH, KWARGS)
    rewind = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    masks = magnitude_masks(prunable_weights(model), 0.5)
    t = Ticket.from_model(model, masks, arch=ARCH, arch_kwargs=KWARGS, init_state=rewind)
    built = t.build().state_dict()
    assert torch.equal(built["head.bias"], rewind["head.bias"])
    m = t.masks["features.0.weight"]
    assert torch.equal(built["features.0.weight"][m], rewind["features.0.weight"][m])


@pytest.mark.parametrize("prune_head", [False, True])
def test_build_with_new_num_classes_gives_fresh_unpruned_head(prune_head: bool) -> None:
    t = _ticket(prune_head)
    model = t.build(num_classes=5, head_seed=3)
    head = set(classifier_param_names(model))
    assert head == {"head.weight", "head.bias"}
    assert model.get_classifier().out_features == 5
    assert model.num_classes == 5
    # the new head is not zeroed by the source head mask
    assert int(torch.count_nonzero(model.head.weight)) == model.head.weight.numel()
    # every other tensor equals the rewind values (with masks applied)
    for name, value in model.state_dict().items():
        if name in head:
            continue
        expected = t.init[name].masked_fill(~t.masks[name], 0) if name in t.masks else t.init[name]
        assert torch.equal(value, expected), name
    # masks_for drops the head mask, keeps every other mask
    masks = t.masks_for(model)
    assert "head.weight" not in masks
    assert masks.keys() == t.masks.keys() - {"head.weight"}
    # deterministic by head_seed, and a different seed gives a different head
    again = t.build(num_classes=5, head_seed=3)
    other = t.build(num_classes=5, head_seed=4)
    assert torch.equal(again.head.weight, model.head.weight)
    assert not torch.equal(other.head.weight, model.head.weight)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 5)


def test_build_new_head_leaves_global_rng_alone() -> None:
    t = _ticket(False)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    t.build(num_classes=4, head_seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_build_timm_resnet18_new_head() -> None:
    t = _ticket(True, density=0.1, arch="resnet18", kwargs={"num_classes": 7})
    assert "fc.weight" in t.masks
    model = t.build(num_classes=3)
    assert model.fc.out_features == 3 and int(torch.count_nonzero(model.fc.weight)) == model.fc.weight.numel()
    assert "fc.weight" not in t.masks_for(model)
    w, m = model.conv1.weight.detach(), t.masks["conv1.weight"]
    assert bool((w[~m] == 0).all()) and torch.equal(w[m], t.init["conv1.weight"][m])


def test_same_num_classes_keeps_pruned_head() -> None:
    t = _ticket(True)
    model = t.build(num_classes=t.num_classes)
    m = t.masks["head.weight"]
    assert bool((model.head.weight[~m] == 0).all())
    assert "head.weight" in t.masks_for(model)


def test_ticket_properties_and_copy() -> None:
    t = _ticket(False, density=0.25)
    assert t.num_classes == 10
    kept = sum(int(m.sum()) for m in t.masks.values())
    assert t.density == pytest.approx(kept / sum(m.numel() for m in t.masks.values()))
    assert t.density == pytest.approx(0.25, abs=1e-4)
    assert set(t.layer_densities) == set(t.masks)
    assert "conv4" in repr(t) and "density=0.2500" in repr(t)
    c = t.with_(meta={"source": "other"})
    assert c.meta == {"source": "other"} and t.meta == {"source": "unit"}
    c.masks["features.0.weight"].fill_(False)
    assert bool(t.masks["features.0.weight"].any()), "with_ must copy masks, not share them"


def test_pruned_init_entries_are_zeroed_on_construction() -> None:
    mask = torch.tensor([True, False, True])
    t = Ticket(
        arch="lenet_300_100",
        arch_kwargs={"num_classes": 3},
        masks={"w": mask},
        init={"w": torch.tensor([1.0, 2.0, 3.0])},
    )
    assert torch.equal(t.init["w"], torch.tensor([1.0, 0.0, 3.0]))


def test_ticket_rejects_inconsistent_fields() -> None:
    ok = {"w": torch.ones(3)}
    with pytest.raises(TicketFormatError, match="num_classes"):
        Ticket(arch="x", arch_kwargs={}, masks={}, init=ok)
    with pytest.raises(TicketFormatError, match="must be bool"):
        Ticket(arch="x", arch_kwargs={"num_classes": 2}, masks={"w": torch.ones(3)}, init=ok)
    with pytest.raises(TicketFormatError, match="no rewind weights"):
        Ticket(
            arch="x", arch_kwargs={"num_classes": 2}, masks={"v": torch.ones(3, dtype=torch.bool)}, init=ok
        )
    with pytest.raises(TicketFormatError, match="shape"):
        Ticket(
            arch="x", arch_kwargs={"num_classes": 2}, masks={"w": torch.ones(4, dtype=torch.bool)}, init=ok
        )


def test_unknown_architecture_suggests_close_names() -> None:
    with pytest.raises(UnknownArchitectureError, match="did you mean.*conv4"):
        create_model("convv4", {"num_classes": 10})
    assert isinstance(create_model("conv2", {"num_classes": 2, "img_size": 4}), torch.nn.Module)
    # `pretrained` would load weights: refused, not silently dropped (see test_format for the whole class)
    with pytest.raises(ConfigError, match="'pretrained' is not allowed"):
        create_model("conv2", {"num_classes": 2, "img_size": 4, "pretrained": True})
    assert timm.is_model("vgg19_cifar")
