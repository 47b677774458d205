"""Streamed data: train / val / test of a ``datasets`` stream, split and decoded on the fly.

A stream has no length and no index, so it cannot be split by a stratified permutation
(:mod:`ticket_zoo.splitting`). Instead each example goes to a side by a seeded hash of its position
in the (class-filtered, limited) stream: val when ``hash(seed, i) < val_fraction``, and, for data
without a test split, test when ``hash(TEST_SEED, i) < val_fraction`` (the same for every seed).
DataLoader workers each take every k-th example. :func:`ticket_zoo.data.load_splits` comes here
with ``streaming=True``; imagenet and places365 are map-style by default (training needs a length
and the batch of step *s* by index), so streams are for quick looks and single passes.

Example:
    >>> from ticket_zoo.data import load_splits
    >>> s = load_splits("digits", streaming=True, limit=50)
    >>> x, y = next(iter(s.test))
    >>> x.shape, isinstance(y, int)
    (torch.Size([1, 8, 8]), True)
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image as PILImage

from .images import Normalizer, seeded_call, timm_transform, to_uint8, view_seed
from .splitting import TEST_SEED, LabelMap

if TYPE_CHECKING:  # pragma: no cover
    from .data import DatasetSpec

__all__ = ["StreamingImageDataset", "streaming_splits"]


def _u01(seed: int, i: int) -> float:
    """A fixed pseudo-random number in [0, 1) for example ``i``: which side of a streaming split it goes."""
    return zlib.crc32(f"{seed}:{i}".encode()) / 2**32


class StreamingImageDataset(torch.utils.data.IterableDataset):
    """Torch view of a streaming ``datasets.IterableDataset``: decodes and transforms on the fly.

    Examples are assigned by a seeded hash of their position in the (class-filtered, limited)
    stream. ``part``: ``"all"``; ``"train"`` / ``"val"`` (val when hash(seed) < fraction);
    ``"test"`` (hash(TEST_SEED) < fraction, only with ``carve_test``, which also removes those
    positions from train and val). DataLoader workers each take every k-th example.

    With a timm data config ``cfg`` images go through timm's transforms: ``train_views`` gives
    random-resized-crop + flip seeded by (seed, position in the stream) — a stream shows no epochs, so
    an example gets the same view on every pass (for multi-epoch training prefer map-style data) —
    else the eval transform. Without ``cfg`` images are resized to ``size``.
    """

    def __init__(
        self,
        ds,
        spec: DatasetSpec,
        size,
        label_map,
        keep,
        part: str,
        fraction: float,
        seed: int,
        limit,
        carve_test: bool,
        cfg: dict[str, Any] | None = None,
        train_views: bool = False,
    ) -> None:
        self.ds, self.spec, self.size = ds, spec, size
        self.label_map, self.keep = label_map, keep
        self.part, self.fraction, self.seed, self.limit = part, fraction, seed, limit
        self.carve_test = carve_test
        self.normalize = Normalizer(spec.mean, spec.std, size[0])
        self.train_views = cfg is not None and train_views
        self.transform = None if cfg is None else timm_transform(cfg, self.train_views)
        self.mode = "L" if size[0] == 1 else "RGB"

    def _image(self, img: Any, i: int) -> torch.Tensor:
        if self.transform is None:
            return self.normalize(to_uint8(img, self.size))
        if not isinstance(img, PILImage.Image):
            img = PILImage.fromarray(np.asarray(img))
        if img.mode != self.mode:
            img = img.convert(self.mode)
        if not self.train_views:
            return self.transform(img)
        return seeded_call(self.transform, img, view_seed(self.seed, "stream", i))

    def _wanted(self, i: int) -> bool:
        is_test = self.carve_test and _u01(TEST_SEED, i) < self.fraction
        if self.part == "test":
            return is_test
        if is_test:
            return False
        if self.part == "all":
            return True
        return (_u01(self.seed, i) < self.fraction) == (self.part == "val")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        pos = 0
        for row in self.ds:
            label = int(row[self.spec.label_column])
            if not self.keep(label):
                continue
            if self.limit is not None and pos >= self.limit:
                return
            i, pos = pos, pos + 1
            if i % nw != wid or not self._wanted(i):
                continue
            yield self._image(row[self.spec.image_column], i), self.label_map(label)


def streaming_splits(
    spec: DatasetSpec,
    source: Callable[[str], Any],
    size: tuple[int, int, int],
    label_map: LabelMap,
    val_fraction: float,
    seed: int,
    limit: int | None,
    test_carved: bool,
    cfg: dict[str, Any] | None,
) -> tuple[StreamingImageDataset, StreamingImageDataset, StreamingImageDataset]:
    """(train, val, test) streams of ``spec``; ``source(split)`` opens one split as a stream."""

    def stream(split: str, part: str, train_views: bool = False) -> StreamingImageDataset:
        return StreamingImageDataset(
            source(split),
            spec,
            size,
            label_map,
            label_map.keep,
            part,
            val_fraction,
            seed,
            limit,
            # Only streams over train lose the positions carved off as test.
            test_carved and split == spec.train_split,
            cfg,
            train_views,
        )

    train_part = "all" if spec.val_split is not None else "train"
    train = stream(spec.train_split, train_part, train_views=True)
    val = stream(spec.val_split, "all") if spec.val_split is not None else stream(spec.train_split, "val")
    test = stream(spec.train_split, "test") if test_carved else stream(spec.test_split, "all")
    return train, val, test
