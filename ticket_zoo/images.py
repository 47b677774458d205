"""The two image pipelines: how the images of a ``datasets.Dataset`` become model input.

**Small images** (MNIST, CIFAR, SVHN, digits, local data no larger than the input): each image is
converted to the input's channels, resized bilinearly to the input size and normalized with the
dataset's mean/std. A split that fits (at most :data:`MAX_IN_MEMORY_ITEMS` examples and
:data:`MAX_IN_MEMORY_BYTES` as float32) is decoded once into one tensor, an
:class:`ImageTensorDataset`, whose batches are one indexing op; a bigger one is decoded per item
(:class:`LazyImageDataset`). Their augmentation is not applied here: the training loop calls
:func:`ticket_zoo.augment.augment_batch` on whole batches with its own seeded generator.

**Photos** (imagenet, places365, local data with larger or mixed-size images) go through timm's own
pipeline, decoded per item (in DataLoader workers when there are any), never all at once
(:class:`TimmImageDataset`): train views are ``timm.data.create_transform(is_training=True)``
(random-resized-crop + horizontal flip), val/test timm's eval transform (resize the short side to
``size / crop_pct``, center crop), from the config of :func:`timm_data_config`. A training view is a
pure function of (seed, batch, example): same seed, same views, whatever the number of workers and
across resumes.

Which pipeline a dataset takes is :func:`uses_timm`; :func:`ticket_zoo.data.load_splits` builds the
datasets. Nothing here knows the dataset catalogue: a spec is read only for its column names,
mean/std and name.

Example:
    >>> from PIL import Image
    >>> x = to_uint8(Image.new("L", (8, 8), 255), (3, 4, 4))
    >>> x.shape, x.dtype, int(x.max())
    (torch.Size([3, 4, 4]), torch.uint8, 255)
    >>> ds = ImageTensorDataset(Normalizer((0.5,), (0.5,), 1)(x[:1].repeat(5, 1, 1, 1)), torch.arange(5))
    >>> ds[torch.tensor([4, 0])][1].tolist(), ds.batch_indexable
    ([4, 0], True)
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from PIL import Image as PILImage

from . import progress
from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .data import DatasetSpec

__all__ = [
    "PIPELINES",
    "ImageTensorDataset",
    "LazyImageDataset",
    "TimmImageDataset",
    "timm_data_config",
    "uses_timm",
]

# Image pipelines: "tensor" (resize to the input, small images), "timm" (timm's random-resized-crop
# train / resize + center-crop eval transforms, decoded per item), "auto" (local data: "timm" when
# its images are larger than the input size).
PIPELINES = ("tensor", "timm", "auto")
# Above either bound a non-streaming split is decoded lazily per item instead of held in memory.
MAX_IN_MEMORY_ITEMS = 200_000
MAX_IN_MEMORY_BYTES = 4 * 1024**3
# The standard ImageNet evaluation (resize to 256, center crop 224) and interpolation of torchvision's
# reference recipe, which Morcos et al. (2019) used.
CROP_PCT = 0.875
INTERPOLATION = "bilinear"


def uses_timm(spec: DatasetSpec, size: tuple[int, int, int], pipeline: str) -> bool:
    """Whether images take timm's pipeline: always for ``"timm"``; for ``"auto"`` (local data) when
    the sampled images are larger than the input in either dimension (resizing down would throw
    away what a random-resized-crop can use); never for ``"tensor"``."""
    if pipeline == "auto":
        return spec.image_size is not None and (spec.image_size[0] > size[1] or spec.image_size[1] > size[2])
    return pipeline == "timm"


# --- conversion shared by both pipelines -----------------------------------------------------------


def to_uint8(img: Any, size: tuple[int, int, int]) -> torch.Tensor:
    """PIL image -> uint8 tensor (C, H, W): channels converted (L <-> RGB), resized bilinearly."""
    if not isinstance(img, PILImage.Image):
        img = PILImage.fromarray(np.asarray(img))
    c, h, w = size
    mode = "L" if c == 1 else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    if img.size != (w, h):
        img = img.resize((w, h), PILImage.BILINEAR)
    a = np.array(img, dtype=np.uint8)  # a copy: torch wants a writable array
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


def channel_stats(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[list[float], list[float]]:
    """mean/std for ``channels`` channels: as given, or averaged when the set has another count
    (e.g. an RGB set asked for 1 channel).

    Example:
        >>> channel_stats((0.2, 0.4), (1.0, 3.0), 3)
        ([0.30000000000000004, 0.30000000000000004, 0.30000000000000004], [2.0, 2.0, 2.0])
    """
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) != channels:
        mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
    return mean, std


class Normalizer:
    """uint8 (…, C, H, W) -> float32 normalized with the spec's mean/std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int) -> None:
        mean, std = channel_stats(mean, std, channels)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(channels, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(channels, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


# --- small images: resized to the input, in memory when they fit ----------------------------------


class ImageTensorDataset(torch.utils.data.Dataset):
    """A whole split decoded once: ``images`` float32 (N, C, H, W) normalized, ``labels`` int64 (N,).

    ``ds[i]`` gives ``(image, int label)``; ``ds[list_or_tensor_of_indices]`` gives a whole batch
    ``(images, labels)`` in one indexing op. ``batch_indexable = True`` says so: the training loop
    takes a batch of such a dataset with one indexing op instead of a DataLoader collating items.

    Example:
        >>> ds = ImageTensorDataset(torch.zeros(4, 1, 2, 2), torch.tensor([3, 1, 4, 1]))
        >>> ds[2][1], ds[[0, 1]][1].tolist(), ImageTensorDataset.batch_indexable
        (4, [3, 1], True)
    """

    #: ``ds[tensor of indices]`` returns the whole batch ``(images, labels)``.
    batch_indexable = True

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ConfigError(f"images ({images.shape[0]}) and labels ({labels.shape[0]}) differ in count")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, Any]:
        if isinstance(index, (int, np.integer)):
            return self.images[index], int(self.labels[index])
        idx = torch.as_tensor(index, dtype=torch.long)
        # index_select, not x[idx]: advanced indexing can be 1000x slower on busy CPUs (thread pool).
        return self.images.index_select(0, idx), self.labels.index_select(0, idx)


class LazyImageDataset(torch.utils.data.Dataset):
    """Map-style view of a large ``datasets.Dataset``: decodes and transforms per item."""

    def __init__(
        self, ds: datasets.Dataset, spec: DatasetSpec, size: tuple[int, int, int], label_map
    ) -> None:
        self.ds = ds.select_columns([spec.image_column, spec.label_column])
        self.image_column, self.label_column = spec.image_column, spec.label_column
        self.size, self.label_map = size, label_map
        self.normalize = Normalizer(spec.mean, spec.std, size[0])

    def __len__(self) -> int:
        return len(self.ds)

    def _item(self, img: Any, label: int) -> tuple[torch.Tensor, int]:
        return self.normalize(to_uint8(img, self.size)), self.label_map(int(label))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = self.ds[int(i)]
        return self._item(row[self.image_column], row[self.label_column])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        # One arrow read per batch instead of one per item (the DataLoader calls this when present).
        rows = self.ds[list(indices)]
        return [
            self._item(im, lb)
            for im, lb in zip(rows[self.image_column], rows[self.label_column], strict=True)
        ]


def fits_in_memory(n: int, size: tuple[int, int, int]) -> bool:
    """Whether ``n`` images of ``size`` are few and small enough to hold as one float32 tensor."""
    return n <= MAX_IN_MEMORY_ITEMS and n * size[0] * size[1] * size[2] * 4 <= MAX_IN_MEMORY_BYTES


def materialize(ds: datasets.Dataset, spec: DatasetSpec, size, label_map, what: str) -> ImageTensorDataset:
    """Decode and transform a whole split once into one normalized tensor."""
    n = len(ds)
    images = torch.empty((n, *size), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.long)
    pos = 0
    batches = ds.select_columns([spec.image_column, spec.label_column]).iter(batch_size=1024)
    # A bar for large splits, on a terminal only (progress.py); small ones decode in a blink.
    with progress.bar(total=n, desc=f"decode {spec.name} {what}", unit="img", enabled=n >= 20_000, leave=False) as bar:
        for b in batches:
            for im, lb in zip(b[spec.image_column], b[spec.label_column], strict=True):
                images[pos] = to_uint8(im, size)
                labels[pos] = label_map(int(lb))
                pos += 1
            bar.update(len(b[spec.label_column]))
    normalize = Normalizer(spec.mean, spec.std, size[0])
    return ImageTensorDataset(normalize(images), labels)


def small_image_dataset(ds: datasets.Dataset, spec: DatasetSpec, size, label_map, what: str):
    """The small-image pipeline for one split: in memory when it fits, else decoded per item."""
    if fits_in_memory(len(ds), size):
        return materialize(ds, spec, size, label_map, what)
    return LazyImageDataset(ds, spec, size, label_map)


# --- photos: timm's pipeline, decoded per item -----------------------------------------------------


def timm_data_config(
    mean: Sequence[float], std: Sequence[float], size: tuple[int, int, int]
) -> dict[str, Any]:
    """The timm data config of photos with this mean/std at input ``size`` (C, H, W): resolved by
    ``timm.data.resolve_data_config`` with torchvision's ImageNet reference settings (bilinear,
    crop_pct 0.875), as a JSON-ready dict. :func:`ticket_zoo.data.data_config` is the same by name.

    Example:
        >>> timm_data_config((0.5,), (0.25,), (1, 32, 32))["mean"]
        [0.5]
    """
    from timm.data import resolve_data_config

    mean, std = channel_stats(mean, std, size[0])
    cfg = resolve_data_config(
        args={
            "input_size": size,
            "mean": tuple(mean),
            "std": tuple(std),
            "interpolation": INTERPOLATION,
            "crop_pct": CROP_PCT,
            "crop_mode": "center",
        }
    )
    return {
        "input_size": [int(v) for v in cfg["input_size"]],
        "interpolation": str(cfg["interpolation"]),
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "crop_pct": float(cfg["crop_pct"]),
        "crop_mode": str(cfg["crop_mode"]),
    }


def timm_transform(cfg: dict[str, Any], train: bool):
    """timm's transform for ``cfg``: random-resized-crop (scale 0.08-1, ratio 3/4-4/3) + horizontal
    flip for training (no color jitter: the standard ImageNet recipe), resize + center crop otherwise."""
    from timm.data import create_transform

    if train:
        return create_transform(**cfg, is_training=True, color_jitter=None)
    return create_transform(**cfg, is_training=False)


def view_seed(seed: int, key: Any, index: int) -> int:
    """64-bit seed of one training view: a pure function of (dataset seed, batch key, example index)."""
    digest = hashlib.blake2b(f"{seed}|{key}|{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def batch_key(indices: Sequence[int]) -> str:
    """Names one batch by its ordered indices. The training loop's batch ``s`` is a pure function of
    (seed, step ``s``), whatever the worker count or a resume, so views keyed by it are too; two
    epochs give different batches, hence different views of the same example."""
    return hashlib.blake2b(np.asarray(indices, dtype=np.int64).tobytes(), digest_size=8).hexdigest()


def seeded_call(fn, x: Any, seed: int) -> Any:
    """``fn(x)`` with torch's and Python's global RNGs (which torchvision/timm transforms draw from)
    seeded by ``seed``, then restored, so the caller's random streams (e.g. dropout) are untouched."""
    gen = torch.default_generator
    torch_state, py_state = gen.get_state(), random.getstate()
    gen.manual_seed(seed)
    random.seed(seed)
    try:
        return fn(x)
    finally:
        gen.set_state(torch_state)
        random.setstate(py_state)


class TimmImageDataset(torch.utils.data.Dataset):
    """Map-style view of a ``datasets.Dataset`` of photos through timm's transforms, decoded per item.

    Nothing is decoded until an item is asked for (in a DataLoader worker when there are any); the
    Arrow table holds paths or encoded bytes. ``train=True``: timm's random-resized-crop + flip, the
    view of example ``i`` in a batch a pure function of (seed, the batch's ordered indices, ``i``)
    (a single ``ds[i]`` uses (seed, ``i``)). ``train=False``: timm's eval transform, deterministic.
    """

    def __init__(
        self,
        ds: datasets.Dataset,
        spec: DatasetSpec,
        cfg: dict[str, Any],
        label_map,
        *,
        train: bool,
        seed: int,
    ) -> None:
        self.image_column, self.label_column = spec.image_column, spec.label_column
        # decode=False: rows come back as {"path", "bytes"}; each image is decoded where it is used.
        self.ds = ds.select_columns([self.image_column, self.label_column]).cast_column(
            self.image_column, datasets.Image(decode=False)
        )
        self.decoder = datasets.Image()
        self.mode = "L" if cfg["input_size"][0] == 1 else "RGB"
        self.data_config = dict(cfg)
        self.transform = timm_transform(cfg, train)
        self.train, self.seed, self.label_map = bool(train), int(seed), label_map

    def __len__(self) -> int:
        return len(self.ds)

    def _view(self, encoded: Any, key: Any, index: int) -> torch.Tensor:
        img = self.decoder.decode_example(encoded)
        if img.mode != self.mode:
            img = img.convert(self.mode)
        if not self.train:
            return self.transform(img)
        return seeded_call(self.transform, img, view_seed(self.seed, key, index))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = int(i)
        row = self.ds[i]
        return self._view(row[self.image_column], "item", i), self.label_map(int(row[self.label_column]))

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        # One arrow read per batch (the DataLoader calls this with the whole batch when present).
        indices = [int(i) for i in indices]
        rows = self.ds[indices]
        key = batch_key(indices) if self.train else None
        return [
            (self._view(im, key, i), self.label_map(int(lb)))
            for im, lb, i in zip(rows[self.image_column], rows[self.label_column], indices, strict=True)
        ]
