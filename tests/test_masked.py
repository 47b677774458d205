"""Tests for ticket_zoo.masked: masks stay exact (weights and optimizer state) through training."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import ticket_zoo.models  # noqa: F401  (registers the paper architectures)
from ticket_zoo.errors import ConfigError
from ticket_zoo.masked import apply_masks_, hold_masks
from ticket_zoo.masks import magnitude_masks, prunable_weights

STEPS = 50


def _model_and_masks(density: float = 0.3) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    # a small LeNet (1x4x4 input) so 50 steps of several optimizers stay fast; the head is pruned too
    model = timm.create_model("lenet_300_100", num_classes=3, in_chans=1, img_size=4)
    return model, magnitude_masks(prunable_weights(model, prune_head=True), density)


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = STEPS, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 1, 4, 4, generator=g)
        y = torch.randint(0, 3, (16,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


class NoisyOptimizer(torch.optim.Optimizer):
    """An optimizer masked.py cannot know: it moves every weight, even with a zero gradient."""

    def __init__(self, params, lr: float = 0.01) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state[p]
                    state["trace"] = state.get("trace", torch.zeros_like(p)) + p.grad
                    p.add_(-group["lr"] * p.grad + 1e-3)  # the constant drifts pruned weights away from 0


OPTIMIZERS: dict[str, tuple[Callable[..., torch.optim.Optimizer], tuple[str, ...]]] = {
    "sgd_nesterov_wd": (
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
        ("momentum_buffer",),
    ),
    "adam_wd": (lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=5e-4), ("exp_avg", "exp_avg_sq")),
    "adam_amsgrad": (
        lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True),
        ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    ),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01), ("exp_avg", "exp_avg_sq")),
    "rmsprop_unknown": (
        lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.9, weight_decay=5e-4),
        ("square_avg", "momentum_buffer"),
    ),
    "noisy_unknown": (lambda p: NoisyOptimizer(p), ("trace",)),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_masks_hold_through_training(name: str) -> None:
    make, state_keys = OPTIMIZERS[name]
    model, masks = _model_and_masks()
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in masks}
    optimizer = make(model.parameters())
    handle = hold_masks(model, optimizer, masks)
    _train(model, optimizer)
    for n, mask in masks.items():
        p = params[n].detach()
        assert bool((p[~mask] == 0).all()), f"{name}: pruned weights of {n} moved"
        # the kept weights really trained, so the check above could have failed
        changed = (p[mask] != before[n][mask]).float().mean().item()
        assert changed > 0.9, f"{name}: only {changed:.0%} of kept weights of {n} changed"
        state = optimizer.state[params[n]]
        for key in state_keys:
            assert key in state, f"{name}: expected optimizer state {key!r}"
            assert bool((state[key][~mask] == 0).all()), f"{name}: {key} of {n} nonzero at pruned entries"
            assert bool((state[key][mask] != 0).any())
    handle.remove()


def test_without_hold_masks_pruned_weights_move() -> None:
    """Negative control: the same training without the hooks does move pruned weights."""
    model, masks = _model_and_masks()
    apply_masks_(model, masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    _train(model, optimizer, steps=3)
    params = dict(model.named_parameters())
    assert any(bool((params[n][~m] != 0).any()) for n, m in masks.items())


def test_default_enforcement_only_for_unknown_optimizers() -> None:
    model, masks = _model_and_masks()
    # NoisyOptimizer without post-step re-zeroing: weights drift off zero, proving the hook is needed
    noisy = NoisyOptimizer(model.parameters())
    handle = hold_masks(model, noisy, masks, enforce_weights=False)
    _train(model, noisy, steps=2)
    params = dict(model.named_parameters())
    assert any(bool((params[n][~m] != 0).any()) for n, m in masks.items())
    handle.remove()
    handle = hold_masks(model, noisy, masks)  # default: enforced for an optimizer not known to be exact
    _train(model, noisy, steps=2)
    assert all(bool((params[n][~m] == 0).all()) for n, m in masks.items())
    handle.remove()


def test_hold_masks_zeroes_existing_optimizer_state() -> None:
    model, masks = _model_and_masks()
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train(model, optimizer, steps=3)  # dense steps: state is nonzero everywhere
    first = next(iter(masks))
    assert bool((optimizer.state[params[first]]["exp_avg"][~masks[first]] != 0).all())
    handle = hold_masks(model, optimizer, masks)
    for n, mask in masks.items():
        assert bool((params[n][~mask] == 0).all())
        for key in ("exp_avg", "exp_avg_sq"):
            assert bool((optimizer.state[params[n]][key][~mask] == 0).all())
    _train(model, optimizer, steps=10)
    for n, mask in masks.items():
        assert bool((params[n][~mask] == 0).all())
        assert bool((optimizer.state[params[n]]["exp_avg_sq"][~mask] == 0).all())
    handle.remove()


def test_remove_detaches_hooks_and_mask_grads() -> None:
    model, masks = _model_and_masks()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    handle = hold_masks(model, optimizer, masks)
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    F.cross_entropy(model(x), y).backward()
    params = dict(model.named_parameters())
    n, mask = next(iter(masks.items()))
    assert bool((params[n].grad[~mask] != 0).any())
    handle.mask_grads_()  # e.g. before gradient clipping
    assert bool((params[n].grad[~mask] == 0).all()) and bool((params[n].grad[mask] != 0).any())
    handle.remove()
    _train(model, optimizer, steps=2)
    assert any(bool((params[k][~m] != 0).any()) for k, m in masks.items()), (
        "hooks still active after remove()"
    )


def test_apply_masks_zeroes_exactly_the_pruned_entries() -> None:
    model, masks = _model_and_masks()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert apply_masks_(model, masks) is model
    for n, p in model.named_parameters():
        expected = before[n].masked_fill(~masks[n], 0.0) if n in masks else before[n]
        assert torch.equal(p.detach(), expected), n


@pytest.mark.parametrize("fn", ["apply", "hold"])
def test_bad_masks_raise_config_error(fn: str) -> None:
    model, masks = _model_and_masks()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def call(bad: dict[str, torch.Tensor]) -> None:
        if fn == "apply":
            apply_masks_(model, bad)
        else:
            hold_masks(model, optimizer, bad)

    with pytest.raises(ConfigError, match="does not have"):
        call({"module.fc1.weight": masks["fc1.weight"]})
    with pytest.raises(ConfigError, match="has shape"):
        call({"fc1.weight": masks["fc1.weight"][:, :-1]})
    with pytest.raises(ConfigError, match="must be a bool tensor"):
        call({"fc1.weight": masks["fc1.weight"].float()})
