"""Which example goes to train, val or test, and which label it gets (map-style data).

* The validation split is the dataset's own when it has one, else carved from train with the run's
  ``seed``, stratified by class (:func:`stratified_split`), so model selection never sees test.
* Data without a test split gets one carved from train with a fixed seed (:data:`TEST_SEED`), so the
  test set is the same whatever ``seed`` a run uses.
* A class subset (``"cifar10[3,1]"``) keeps only its classes and re-indexes them 0..k-1 in the
  listed order (:class:`LabelMap`); unlabeled rows (label -1) are dropped.

:func:`map_splits` applies these to a dataset read whole (map-style); streams are split by a seeded
hash of each example's position instead (:mod:`ticket_zoo.streaming`).

Example:
    >>> keep, held = stratified_split(np.array([0, 0, 0, 0, 1, 1]), 0.5, seed=0)
    >>> len(keep), len(held), sorted(np.array([0, 0, 0, 0, 1, 1])[held].tolist())
    (3, 3, [0, 0, 1])
    >>> LabelMap((3, 1), 10)(1), LabelMap((3, 1), 10).keep(2)
    (1, False)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np

from .errors import ConfigError
from .images import TimmImageDataset, small_image_dataset

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .data import DatasetSpec

__all__ = ["TEST_SEED", "LabelMap", "map_splits", "stratified_split"]

# Seed of the carved test set: fixed, so the test set is the same whatever ``seed`` a run uses.
TEST_SEED = 2**31 - 1


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of ``range(len(labels))`` -> (keep, held_out), both sorted.

    Every class with at least two examples gives at least one to each side.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        held.append(idx[:k])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), held_idx)
    return keep, held_idx


class LabelMap:
    """Source label -> training label (a class subset re-indexed in its listed order); picklable, so
    DataLoader workers also get it under the ``spawn`` start method."""

    def __init__(self, classes: Sequence[int] | None, num_classes: int) -> None:
        self.remap = None if classes is None else {int(c): i for i, c in enumerate(classes)}
        self.num_classes = num_classes

    def keep(self, label: int) -> bool:
        if self.remap is not None:
            return label in self.remap
        return 0 <= label < self.num_classes  # also drops unlabeled (-1) rows

    def __call__(self, label: int) -> int:
        return label if self.remap is None else self.remap[label]


def _labels_of(ds: datasets.Dataset, column: str) -> np.ndarray:
    return np.asarray(ds.with_format("numpy", columns=[column])[column], dtype=np.int64)


def map_splits(
    spec: DatasetSpec,
    source: Callable[[str], datasets.Dataset],
    size: tuple[int, int, int],
    label_map: LabelMap,
    val_fraction: float,
    seed: int,
    limit: int | None,
    test_carved: bool,
    cfg: dict[str, Any] | None,
) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """(train, val, test) torch datasets of a map-style dataset; ``source(split)`` reads one split.

    ``limit`` caps the rows kept from each source split (a random subset seeded by ``seed``, or
    ``seed + 1`` / ``seed + 2`` for test / val). Images go through timm's pipeline when ``cfg`` is a
    timm data config, else the small-image one resized to ``size``.
    """

    def prepare(split: str, limit_seed: int) -> tuple[datasets.Dataset, np.ndarray, np.ndarray]:
        """(dataset, kept row indices, their labels): rows outside the classes dropped, ``limit`` applied."""
        ds = source(split)
        for col in (spec.image_column, spec.label_column):
            if col not in ds.column_names:
                raise ConfigError(
                    f"dataset {spec.name!r} split {split!r} has no column {col!r} ({ds.column_names})"
                )
        labels = _labels_of(ds, spec.label_column)
        allowed = np.asarray(spec.classes if spec.classes is not None else range(spec.num_classes))
        idx = np.flatnonzero(np.isin(labels, allowed))  # also drops unlabeled (-1) rows
        if limit is not None and len(idx) > limit:
            idx = np.sort(np.random.default_rng(limit_seed).permutation(idx)[:limit])
        return ds, idx, labels[idx]

    def build(ds: datasets.Dataset, idx: np.ndarray, what: str):
        sub = ds.select(idx.tolist())
        if cfg is not None:
            return TimmImageDataset(sub, spec, cfg, label_map, train=what == "train", seed=seed)
        return small_image_dataset(sub, spec, size, label_map, what)

    train_ds, train_idx, train_labels = prepare(spec.train_split, seed)
    if test_carved:
        # Test is carved with a seed of its own so it stays the same whatever ``seed`` is.
        keep_pos, test_pos = stratified_split(train_labels, val_fraction, seed=TEST_SEED)
        test = build(train_ds, train_idx[test_pos], "test")
        train_idx, train_labels = train_idx[keep_pos], train_labels[keep_pos]
    else:
        test_ds, test_idx, _ = prepare(spec.test_split, seed + 1)
        test = build(test_ds, test_idx, "test")
    if spec.val_split is not None:
        val_ds, val_idx, _ = prepare(spec.val_split, seed + 2)
        val = build(val_ds, val_idx, "val")
    else:
        keep_pos, val_pos = stratified_split(train_labels, val_fraction, seed)
        val = build(train_ds, train_idx[val_pos], "val")
        train_idx = train_idx[keep_pos]
    train = build(train_ds, train_idx, "train")
    if len(train) == 0:
        raise ConfigError(f"dataset {spec.name!r}: the train split is empty after class filtering")
    return train, val, test
