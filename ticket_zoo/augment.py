"""Batch augmentations for small-image datasets, by name (``TrainConfig.augment``, ``DatasetSpec.augment``).

An augmentation takes a whole batch ``(N, C, H, W)`` and a generator and returns the augmented
batch on the same device; the same generator state gives the same result, which is what keeps a
resumed or late-resetting run exact (the training loop seeds the generator from ``(seed, step)``).
Photo datasets are augmented per image by timm's pipeline instead (see :mod:`ticket_zoo.data`).

Adding one is a decorated function here plus its test; ``TrainConfig`` accepts its name at once
(this example removes it again, to leave the registry as it was):

    >>> from ticket_zoo.train import TrainConfig
    >>> @AUGMENTATIONS.register("hflip")
    ... def hflip(x, generator):
    ...     return x.flip(-1)
    >>> TrainConfig(iterations=1, augment="hflip").validate()
    >>> augment_batch(torch.tensor([[[[1.0, 2.0]]]]), "hflip", torch.Generator()).tolist()
    [[[[2.0, 1.0]]]]
    >>> AUGMENTATIONS.remove("hflip") is hflip
    True

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> augment_batch(torch.randn(2, 3, 32, 32), "cifar", g).shape
    torch.Size([2, 3, 32, 32])
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> torch.equal(augment_batch(x, "cifar", torch.Generator().manual_seed(3)),
    ...             augment_batch(x, "cifar", torch.Generator().manual_seed(3)))  # same generator state, same batch
    True
    >>> AUGMENTATIONS.names()
    ('none', 'cifar')
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .registry import Registry

__all__ = ["AUGMENTATIONS", "augment_batch"]

#: name -> ``fn(batch, generator) -> batch``.
AUGMENTATIONS: Registry[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = Registry("augmentation")


@AUGMENTATIONS.register("none")
def _none(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The batch unchanged (digits: a flip can change a digit's meaning)."""
    return x


@AUGMENTATIONS.register("cifar")
def _cifar(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding of ``max(1, H // 8)`` pixels (4 for 32x32; zero is the mean
    colour after normalization) and a random horizontal flip, drawn per image."""
    n, c, h, w = x.shape
    ph, pw = max(1, h // 8), max(1, w // 8)
    # Draw on the generator's device (same draws whatever device x is on), then move.
    gdev = generator.device
    dy = torch.randint(0, 2 * ph + 1, (n,), generator=generator, device=gdev).to(x.device)
    dx = torch.randint(0, 2 * pw + 1, (n,), generator=generator, device=gdev).to(x.device)
    flip = (torch.rand(n, generator=generator, device=gdev) < 0.5).to(x.device)
    padded = F.pad(x, (pw, pw, ph, ph))
    rows = torch.arange(h, device=x.device)[None, :] + dy[:, None]  # (N, H)
    cols = torch.arange(w, device=x.device)[None, :] + dx[:, None]  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(n, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch (N, C, H, W) with the augmentation named ``kind``.

    Example:
        >>> augment_batch(torch.ones(1, 1, 8, 8), "none", torch.Generator()).sum().item()
        64.0
    """
    fn = AUGMENTATIONS.get(kind)
    if x.dim() != 4:
        raise ConfigError(f"augment_batch needs a batch (N, C, H, W), got shape {tuple(x.shape)}")
    return fn(x, generator)
