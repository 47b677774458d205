"""The Ticket: an architecture, its masks, the weights at the rewind step, and metadata.

Example:
    >>> import ticket_zoo as tz  # doctest: +SKIP
    >>> ticket = tz.load("runs/digits/level_05")  # doctest: +SKIP
    >>> ticket.density, ticket.arch  # doctest: +SKIP
    (0.328, 'lenet_300_100')
    >>> model = ticket.build(num_classes=5)  # fresh 5-way head, masks applied  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import TicketFormatError, UnknownArchitectureError, did_you_mean
from .masks import layer_densities, overall_density


def create_model(
    arch: str, arch_kwargs: Mapping[str, Any], *, device: str | torch.device | None = None
) -> nn.Module:
    """``timm.create_model`` with the paper architectures registered and a clear error for unknown names."""
    import timm

    from . import models  # noqa: F401  (registers the paper architectures into timm)

    if not timm.is_model(arch):
        hint = did_you_mean(arch, timm.list_models(), n=3) or " (see timm.list_models())"
        raise UnknownArchitectureError(f"unknown architecture {arch!r}{hint}")
    kwargs = dict(arch_kwargs)
    kwargs.pop("pretrained", None)
    if device is not None:
        with torch.device(device):
            return timm.create_model(arch, pretrained=False, **kwargs)
    return timm.create_model(arch, pretrained=False, **kwargs)


@dataclass(eq=False)  # tensors have no truth value: compare tickets field by field, not with ==
class Ticket:
    """A lottery ticket: ``f(x; m ⊙ θk)`` for a timm architecture.

    Attributes:
        arch: timm model name (``"vgg19_cifar"``, ``"resnet18"``, ...).
        arch_kwargs: keyword arguments for ``timm.create_model``; always includes the source
            ``num_classes`` (and ``in_chans`` / ``img_size`` where the architecture takes them).
        masks: ``{parameter name: bool tensor}``; True = kept.
        init: full ``state_dict`` at the rewind step (parameters and buffers), pruned entries zero.
        meta: JSON-serialisable metadata (source dataset, method, level, rewind step, seed,
            source accuracy, recipe, versions, input_size, ...).
    """

    arch: str
    arch_kwargs: dict[str, Any]
    masks: dict[str, torch.Tensor]
    init: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    _trusted_zeros: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if "num_classes" not in self.arch_kwargs:
            raise TicketFormatError("arch_kwargs must include the source 'num_classes'")
        for name, mask in self.masks.items():
            if mask.dtype != torch.bool:
                raise TicketFormatError(f"mask {name!r} must be bool, got {mask.dtype}")
            if name not in self.init:
                raise TicketFormatError(f"mask {name!r} has no rewind weights in init")
            if tuple(self.init[name].shape) != tuple(mask.shape):
                raise TicketFormatError(
                    f"mask {name!r} has shape {tuple(mask.shape)} but init has {tuple(self.init[name].shape)}"
                )
            # Pruned entries are zero by definition (build() relies on it); readers that reconstruct
            # init from kept values already satisfy it and skip this pass.
            if not self._trusted_zeros and int(torch.count_nonzero(self.init[name].masked_fill(mask, 0))):
                self.init[name] = self.init[name].masked_fill(~mask, 0)

    # --- derived facts ----------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Classes of the source task (the head the ticket was found with)."""
        return int(self.arch_kwargs["num_classes"])

    @property
    def density(self) -> float:
        """Fraction of prunable weights kept (1.0 for an unpruned ticket)."""
        return overall_density(self.masks)

    @property
    def layer_densities(self) -> dict[str, float]:
        """Fraction kept per masked layer."""
        return layer_densities(self.masks)

    @property
    def name(self) -> str | None:
        return self.meta.get("name")

    def __repr__(self) -> str:
        return (
            f"Ticket(arch={self.arch!r}, density={self.density:.4f}, layers={len(self.masks)}, "
            f"num_classes={self.num_classes}, source={self.meta.get('source')!r})"
        )

    # --- construction -----------------------------------------------------------------------------

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        masks: Mapping[str, torch.Tensor],
        *,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        init_state: Mapping[str, torch.Tensor] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Ticket:
        """Make a ticket from a model (or an explicit rewind ``init_state``) and masks.

        Example:
            >>> t = Ticket.from_model(model, masks, arch="conv4", arch_kwargs={"num_classes": 10},
            ...                       init_state=rewind_state, meta={"source": "cifar10"})  # doctest: +SKIP
        """
        state = init_state if init_state is not None else model.state_dict()
        init = {k: v.detach().to("cpu").clone() for k, v in state.items()}
        masks = {k: v.detach().to("cpu", torch.bool).clone() for k, v in masks.items()}
        return cls(arch=arch, arch_kwargs=dict(arch_kwargs), masks=masks, init=init, meta=dict(meta or {}))

    def with_(self, **changes: Any) -> Ticket:
        """A copy with some fields replaced (masks/init/meta are copied, not shared)."""
        unknown = set(changes) - {"arch", "arch_kwargs", "masks", "init", "meta"}
        if unknown:
            raise TypeError(f"Ticket.with_() got unknown field(s) {sorted(unknown)}")
        # Copy only what the caller does not replace: controls swap masks/init of 20M-weight tickets.
        copies = {
            "arch": lambda: self.arch,
            "arch_kwargs": lambda: copy.deepcopy(self.arch_kwargs),
            "masks": lambda: {k: v.clone() for k, v in self.masks.items()},
            "init": lambda: {k: v.clone() for k, v in self.init.items()},
            "meta": lambda: copy.deepcopy(self.meta),
        }
        return Ticket(**{name: changes[name] if name in changes else make() for name, make in copies.items()})

    # --- use --------------------------------------------------------------------------------------

    def build(
        self,
        num_classes: int | None = None,
        *,
        head_seed: int = 0,
        device: str | torch.device | None = None,
    ) -> nn.Module:
        """A plain timm ``nn.Module`` with the rewind weights loaded and pruned weights exactly zero.

        When ``num_classes`` differs from the source, the classifier is replaced by a fresh,
        unpruned head initialised deterministically from ``head_seed``.

        Example:
            >>> model = ticket.build(num_classes=5)  # doctest: +SKIP
        """
        from .models import replace_head

        # Build on the meta device (no memory, no random init: the rewind state replaces it anyway)
        # and adopt copies of the rewind tensors. The RNG is forked so that building never shifts the
        # caller's random stream (same seed -> same data order, same heads).
        with torch.random.fork_rng(devices=[]):
            model = create_model(self.arch, self.arch_kwargs, device="meta")
            model.load_state_dict({k: v.clone() for k, v in self.init.items()}, strict=True, assign=True)
            if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
                # A non-persistent buffer is not in the state dict: build the ordinary way instead.
                model = create_model(self.arch, self.arch_kwargs)
                model.load_state_dict(self.init, strict=True)
        if num_classes is not None and int(num_classes) != self.num_classes:
            replace_head(model, int(num_classes), seed=head_seed)  # fresh and unpruned: see masks_for()
        # No masking pass needed: pruned entries of init are exactly zero (the Ticket invariant).
        if device is not None:
            model.to(device)
        return model

    def masks_for(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The masks that apply to a model built from this ticket (a replaced head drops its mask).

        Example:
            >>> model = ticket.build(num_classes=5); masks = ticket.masks_for(model)  # doctest: +SKIP
        """
        params = dict(model.named_parameters())
        return {k: v for k, v in self.masks.items() if k in params and params[k].shape == v.shape}
