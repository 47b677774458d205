"""Dataset registry and data access, all through the Hugging Face ``datasets`` library.

A dataset is named by a registry name (``"cifar10"``), optionally with a class subset
(``"cifar10[0-4]"``, ``"digits[0,2,4]"``), or by local data (``"imagefolder:PATH"``,
``"parquet:GLOB"``). :func:`get_spec` turns the name into a :class:`DatasetSpec`;
:func:`load_splits` turns a spec into train / val / test torch datasets whose items are
``(image: float32 (C, H, W) normalized, label: int)``.

Design choices:

* The validation split is always carved from train with the ``seed`` argument (stratified for
  map-style data), so model selection never sees test.
* Two image pipelines. Small-image sets (MNIST, CIFAR, SVHN, digits, local data no larger than
  the input) are resized to the input size; sets that fit (at most 200 000 examples and a few GiB
  as float32) are decoded and transformed once into one tensor (:class:`ImageTensorDataset`),
  bigger ones decode lazily per item. Photo sets (imagenet, places365, local data with images
  larger than the input or of mixed sizes) go through timm's pipeline, decoded per item (in
  DataLoader workers when there are any), never held in memory: train gets
  ``timm.data.create_transform(is_training=True)`` (random-resized-crop + horizontal flip), val and
  test timm's eval transform (resize the short side to ``size / crop_pct``, center crop), with the
  config of :func:`data_config` (recorded in :attr:`Splits.data_config` and in every ticket's meta).
  A training view is a pure function of (seed, batch, example): same seed, same views, whatever
  the number of workers and across resumes.
* Streaming sets (imagenet, places365 by default) decode on the fly in a torch ``IterableDataset``.
* Augmentation of small-image sets is not applied here: the training loop calls
  :func:`augment_batch` on whole batches with its own seeded generator, which keeps resume exact.
"""

from __future__ import annotations

import difflib
import functools
import glob as globlib
import hashlib
import math
import os
import random
import re
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image as PILImage
from tqdm.auto import tqdm

from .augment import AUGMENTATIONS, augment_batch
from .errors import ConfigError, UnknownDatasetError

__all__ = [
    "DatasetSpec",
    "ImageTensorDataset",
    "Splits",
    "augment_batch",
    "data_config",
    "digits_dataset",
    "get_spec",
    "list_datasets",
    "load_splits",
    "make_loader",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Above either bound a non-streaming split is decoded lazily per item instead of held in memory.
_MAX_IN_MEMORY_ITEMS = 200_000
_MAX_IN_MEMORY_BYTES = 4 * 1024**3
_LOCAL_PREFIXES = ("imagefolder:", "parquet:")
# Examples read to estimate mean/std of local (imagefolder / parquet) data.
_LOCAL_STATS_SAMPLES = 512
# Image pipelines: "tensor" (resize to the input, small images), "timm" (timm's random-resized-crop
# train / resize + center-crop eval transforms, decoded per item), "auto" (local data: "timm" when
# its images are larger than the input size).
_PIPELINES = ("tensor", "timm", "auto")
# The standard ImageNet evaluation (resize to 256, center crop 224) and interpolation of torchvision's
# reference recipe, which Morcos et al. (2019) used.
_CROP_PCT = 0.875
_INTERPOLATION = "bilinear"
# Default input size of local photo folders with images of mixed sizes (timm's default).
_PHOTO_INPUT = 224


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to load one dataset: where it lives, its columns, splits and normalization.

    ``test_split == train_split`` means the data has no test split and a test set is carved from
    train (only for local data; a warning says so). ``image_pipeline`` is how images become model
    input (``"tensor"``, ``"timm"`` or ``"auto"``, see :func:`load_splits`); ``image_size`` is the
    largest (H, W) seen in the sampled images of local data.
    """

    name: str
    hub_id: str | None
    config: str | None
    image_column: str
    label_column: str
    train_split: str
    test_split: str
    val_split: str | None
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]
    augment: str
    streaming: bool = False
    classes: tuple[int, ...] | None = None
    local: str | None = None
    image_pipeline: str = "tensor"
    image_size: tuple[int, int] | None = None


def _hub(
    name: str, hub_id: str, image: str, label: str, n: int, mean, std, size, augment, **kw
) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        hub_id=hub_id,
        config=kw.pop("config", None),
        image_column=image,
        label_column=label,
        train_split=kw.pop("train_split", "train"),
        test_split=kw.pop("test_split", "test"),
        val_split=kw.pop("val_split", None),
        num_classes=n,
        mean=tuple(mean),
        std=tuple(std),
        input_size=size,
        augment=augment,
        **kw,
    )


# Hub ids and column names as published on the Hugging Face Hub.
_REGISTRY: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        _hub("mnist", "ylecun/mnist", "image", "label", 10, (0.1307,), (0.3081,), (1, 28, 28), "none"),
        _hub(
            "fashion_mnist",
            "zalando-datasets/fashion_mnist",
            "image",
            "label",
            10,
            (0.2860,),
            (0.3530,),
            (1, 28, 28),
            "none",
        ),
        _hub(
            "cifar10",
            "uoft-cs/cifar10",
            "img",
            "label",
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            (3, 32, 32),
            "cifar",
        ),
        _hub(
            "cifar100",
            "uoft-cs/cifar100",
            "img",
            "fine_label",
            100,
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            (3, 32, 32),
            "cifar",
        ),
        _hub(
            "svhn",
            "ufldl-stanford/svhn",
            "image",
            "label",
            10,
            (0.4377, 0.4438, 0.4728),
            (0.1980, 0.2010, 0.1970),
            (3, 32, 32),
            "none",
            config="cropped_digits",
        ),
        # The Hub's "test" split of ImageNet-1k is unlabeled: its labeled "validation" is our test.
        _hub(
            "imagenet",
            "ILSVRC/imagenet-1k",
            "image",
            "label",
            1000,
            _IMAGENET_MEAN,
            _IMAGENET_STD,
            (3, 224, 224),
            "none",
            test_split="validation",
            # Map-style: datasets downloads the parquet shards once and memory-maps them; images stay
            # encoded and are decoded per item in the loader workers. Training needs it: epochs need
            # a length, and a resume and late resetting need the batch of step s by index (a stream
            # has neither). load_splits(streaming=True) is still there for quick looks.
            streaming=False,
            image_pipeline="timm",
        ),
        # UNVERIFIED: no official Places365 copy exists on the Hub; this community parquet copy is
        # the best candidate found (columns and the "validation" split name not confirmed).
        # Use "parquet:GLOB" or "imagefolder:PATH" on a local copy when in doubt.
        _hub(
            "places365",
            "ljnlonoljpiljm/places365-256px",
            "image",
            "label",
            365,
            _IMAGENET_MEAN,
            _IMAGENET_STD,
            (3, 224, 224),
            "none",
            test_split="validation",
            streaming=False,  # map-style, as for imagenet (see there)
            image_pipeline="timm",
        ),
    )
}
_DIGITS = "digits"


def list_datasets() -> list[str]:
    """Registry names, sorted (class subsets and local paths are accepted too, see :func:`get_spec`).

    Example:
        >>> "cifar10" in list_datasets() and "digits" in list_datasets()
        True
    """
    return sorted([*_REGISTRY, _DIGITS])


# --- name parsing ----------------------------------------------------------------------------------

_SUBSET_RE = re.compile(r"^(?P<base>.+?)\[(?P<sel>[^\[\]]*)\]$")


def _parse_classes(sel: str, name: str, num_classes: int) -> tuple[int, ...]:
    """``"0-4"`` -> (0, 1, 2, 3, 4); ``"3,1"`` -> (3, 1); order is kept (it defines the new labels)."""
    out: list[int] = []
    for part in sel.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)|(\d+)", part)
        if m is None:
            raise ConfigError(
                f"dataset {name!r}: bad class subset item {part!r}; write e.g. 'digits[0-4]' or 'digits[0,2,4]'"
            )
        if m.group(3) is not None:
            out.append(int(m.group(3)))
        else:
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise ConfigError(f"dataset {name!r}: class range {part!r} is empty; write it low-high")
            out.extend(range(lo, hi + 1))
    bad = [c for c in out if c >= num_classes]
    if bad:
        raise ConfigError(
            f"dataset {name!r}: class {bad[0]} out of range; the dataset has classes 0..{num_classes - 1}"
        )
    if len(set(out)) != len(out):
        raise ConfigError(f"dataset {name!r}: class subset lists a class twice")
    return tuple(out)


def get_spec(name: str) -> DatasetSpec:
    """Resolve a dataset name to its :class:`DatasetSpec`.

    Accepts registry names (:func:`list_datasets`), class subsets ``name[a-b]`` / ``name[a,b,c]``
    (labels re-indexed 0..k-1 in the listed order) and local data ``imagefolder:PATH`` or
    ``parquet:GLOB`` (columns ``image`` / ``label``, the label a ``ClassLabel``; their spec is read
    from the data: classes, default input size from the first image, mean/std from the first
    512 train examples).

    Example:
        >>> get_spec("cifar10").num_classes
        10
        >>> get_spec("digits[5-9]").classes
        (5, 6, 7, 8, 9)
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"dataset name must be a non-empty string, got {name!r}")
    name = name.strip()
    base, sel = name, None
    m = _SUBSET_RE.match(name)
    if m is not None:
        base, sel = m.group("base").strip(), m.group("sel")
    elif not name.startswith(_LOCAL_PREFIXES) and ("[" in name or "]" in name):
        raise ConfigError(f"dataset {name!r}: bad class subset; write e.g. 'digits[0-4]' or 'digits[0,2,4]'")

    if base.startswith(_LOCAL_PREFIXES):
        spec = _local_spec(base)
    elif base == _DIGITS:
        spec = _digits_spec()
    elif base in _REGISTRY:
        spec = _REGISTRY[base]
    else:
        close = difflib.get_close_matches(base, list_datasets(), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownDatasetError(
            f"unknown dataset {base!r}.{hint} Known: {', '.join(list_datasets())}; "
            "or use 'imagefolder:PATH' / 'parquet:GLOB' for local data."
        )
    if sel is None:
        return spec
    classes = _parse_classes(sel, name, spec.num_classes)
    return replace(spec, name=name, classes=classes, num_classes=len(classes))


# --- local data ------------------------------------------------------------------------------------

_SPLIT_WORDS = {
    "train": "train",
    "test": "test",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
}


def _parquet_data_files(pattern: str) -> dict[str, list[str]]:
    """Files matching ``pattern`` grouped by split, read from a file or folder name
    (``train-0.parquet``, ``test/x.parquet``); everything is train when names say nothing."""
    files = sorted(globlib.glob(os.path.expanduser(pattern), recursive=True))
    if not files:
        raise ConfigError(f"dataset 'parquet:{pattern}': no file matches; check the path or glob")
    groups: dict[str, list[str]] = {}
    for f in files:
        parts = [os.path.basename(f), os.path.basename(os.path.dirname(f))]
        split = None
        for p in parts:
            m = re.match(r"^(train|test|validation|valid|val)(?![a-z])", p.lower())
            if m:
                split = _SPLIT_WORDS[m.group(1)]
                break
        groups.setdefault(split or "?", []).append(f)
    if "?" in groups or "train" not in groups:
        return {"train": files}
    return groups


def _local_kind(local: str) -> tuple[str, str]:
    kind, _, where = local.partition(":")
    if not where:
        raise ConfigError(f"dataset {local!r}: missing path after '{kind}:'")
    return kind, where


@functools.lru_cache(maxsize=64)
def _local_spec(local: str) -> DatasetSpec:
    kind, where = _local_kind(local)
    if kind == "imagefolder" and not os.path.isdir(os.path.expanduser(where)):
        raise ConfigError(f"dataset {local!r}: {where!r} is not a folder; give a folder of class subfolders")
    # Streaming reads only what it needs: features, split names and a few examples.
    probe = DatasetSpec(
        local, None, None, "image", "label", "train", "test", None, 0, (), (), (0, 0, 0), "none", local=local
    )
    dd = datasets.load_dataset(**_load_dataset_kwargs(probe, None, True))
    if "train" not in dd:
        raise ConfigError(f"dataset {local!r}: no 'train' split found (splits: {sorted(dd)})")
    train = dd["train"]
    feats = train.features or {}
    for col in ("image", "label"):
        if col not in feats:
            raise ConfigError(f"dataset {local!r}: no {col!r} column (columns: {sorted(feats)})")
    if not isinstance(feats["label"], datasets.ClassLabel):
        raise ConfigError(
            f"dataset {local!r}: column 'label' is {feats['label']}, not a ClassLabel; "
            "cast it with Dataset.cast_column('label', ClassLabel(names=...)) before saving"
        )
    if not isinstance(feats["image"], datasets.Image):
        train = train.cast_column("image", datasets.Image())
    val_split = "validation" if "validation" in dd else None
    test_split = "test" if "test" in dd else "train"
    first = next(iter(train))["image"]
    c = 1 if first.mode in ("L", "1", "I", "I;16", "F") else 3
    # mean/std over every pixel of the first train examples (not a shuffled sample: streaming shuffle
    # costs seconds even on tiny data), one image at a time so memory does not grow with the sample.
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    pixels = 0
    sizes: set[tuple[int, int]] = set()
    for r in train.take(_LOCAL_STATS_SAMPLES):
        im = r["image"]
        sizes.add((im.height, im.width))
        x = _to_uint8(im, (c, im.height, im.width)).to(torch.float64) / 255.0
        total += x.sum(dim=(1, 2))
        squares += (x * x).sum(dim=(1, 2))
        pixels += x.shape[1] * x.shape[2]
    m = total / pixels
    var = (squares - pixels * m * m) / max(1, pixels - 1)
    mean = tuple(round(v, 4) for v in m.tolist())
    std = tuple(round(max(math.sqrt(max(v, 0.0)), 1e-3), 4) for v in var.tolist())
    # Images all of one size: that size is the default input. Mixed sizes are photos: timm's pipeline
    # at its default 224x224 (a recipe's input_size overrides either).
    mixed = len(sizes) > 1
    size = (c, _PHOTO_INPUT, _PHOTO_INPUT) if mixed else (c, first.height, first.width)
    largest = (max(h for h, _ in sizes), max(w for _, w in sizes))
    return DatasetSpec(
        name=local,
        hub_id=None,
        config=None,
        image_column="image",
        label_column="label",
        train_split="train",
        test_split=test_split,
        val_split=val_split,
        num_classes=feats["label"].num_classes,
        mean=mean,
        std=std,
        input_size=size,
        augment="none",
        local=local,
        image_pipeline="timm" if mixed else "auto",
        image_size=largest,
    )


def _load_dataset_kwargs(spec: DatasetSpec, split: str | None, streaming: bool) -> dict[str, Any]:
    """The keyword arguments :func:`datasets.load_dataset` gets for one split of ``spec``.

    Example:
        >>> _load_dataset_kwargs(get_spec("svhn"), "train", False)["name"]
        'cropped_digits'
    """
    kw: dict[str, Any]
    if spec.hub_id is not None:
        kw = {"path": spec.hub_id}
        if spec.config is not None:
            kw["name"] = spec.config
    elif spec.local is not None and spec.local != _DIGITS:
        kind, where = _local_kind(spec.local)
        if kind == "imagefolder":
            kw = {"path": "imagefolder", "data_dir": os.path.expanduser(where)}
        elif kind == "parquet":
            kw = {"path": "parquet", "data_files": _parquet_data_files(where)}
        else:
            raise ConfigError(
                f"dataset {spec.name!r}: unknown local kind {kind!r}; use imagefolder: or parquet:"
            )
    else:
        raise ConfigError(f"dataset {spec.name!r} is not loaded through load_dataset")
    if split is not None:
        kw["split"] = split
    kw["streaming"] = bool(streaming)
    return kw


# --- digits: real 8x8 handwritten digits from scikit-learn -----------------------------------------


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
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


@functools.lru_cache(maxsize=1)
def digits_dataset() -> datasets.DatasetDict:
    """scikit-learn's 1797 real 8x8 handwritten digits as a ``datasets.DatasetDict``.

    Features ``image`` (:class:`datasets.Image`, grayscale, 0..255) and ``label``
    (:class:`datasets.ClassLabel`, ``"0"``..``"9"``); splits ``train`` / ``test`` (fixed seeded
    stratified 80/20). Built once per process.

    Example:
        >>> dd = digits_dataset()
        >>> dd["train"].features["label"].num_classes, len(dd["train"]) + len(dd["test"])
        (10, 1797)
    """
    try:
        from sklearn.datasets import load_digits  # local: scikit-learn is only needed for this set
    except ImportError:
        raise ConfigError(
            "the offline 'digits' dataset needs scikit-learn: pip install 'ticket-zoo[test]' "
            "(or pip install scikit-learn)"
        ) from None

    d = load_digits()
    # sklearn's pixels are 0..16 counts; scale to 8-bit gray so they are ordinary images.
    pixels = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = d.target.astype(np.int64)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    train_idx, test_idx = _stratified_split(labels, 0.2, seed=0)

    def part(idx: np.ndarray) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"image": [PILImage.fromarray(pixels[i], mode="L") for i in idx], "label": labels[idx].tolist()},
            features=features,
        )

    return datasets.DatasetDict({"train": part(train_idx), "test": part(test_idx)})


@functools.lru_cache(maxsize=1)
def _digits_spec() -> DatasetSpec:
    # Normalization comes from the train split itself, never from test.
    train = digits_dataset()["train"]
    x = torch.stack([_to_uint8(im, (1, 8, 8)) for im in train["image"]]).float() / 255.0
    return DatasetSpec(
        name=_DIGITS,
        hub_id=None,
        config=None,
        image_column="image",
        label_column="label",
        train_split="train",
        test_split="test",
        val_split=None,
        num_classes=10,
        mean=(float(x.mean()),),
        std=(float(x.std()),),
        input_size=(1, 8, 8),
        augment="none",
        local=_DIGITS,
    )


# --- image conversion ------------------------------------------------------------------------------


def _to_uint8(img: Any, size: tuple[int, int, int]) -> torch.Tensor:
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


def _channel_stats(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[list[float], list[float]]:
    """mean/std for ``channels`` channels: as given, or averaged when the set has another count
    (e.g. an RGB set asked for 1 channel)."""
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) != channels:
        mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
    return mean, std


class _Normalizer:
    """uint8 (…, C, H, W) -> float32 normalized with the spec's mean/std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int) -> None:
        mean, std = _channel_stats(mean, std, channels)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(channels, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(channels, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


# --- timm's image pipeline (photo sets) -----------------------------------------------------------


def data_config(name: str | DatasetSpec, input_size: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """The timm data config that photo sets go through: a dict of ``input_size``, ``interpolation``,
    ``mean``, ``std``, ``crop_pct``, ``crop_mode`` (lists, JSON-ready), resolved by
    ``timm.data.resolve_data_config`` from the dataset's mean/std and ``input_size`` (default: the
    spec's), with torchvision's ImageNet reference settings (bilinear, crop_pct 0.875, i.e. resize
    to 256 and center crop 224). ``timm.data.create_transform(**cfg)`` is the eval transform;
    ``create_transform(**cfg, is_training=True, color_jitter=None)`` the training one.

    Example:
        >>> cfg = data_config("imagenet")
        >>> cfg["input_size"], cfg["crop_pct"], cfg["interpolation"]
        ([3, 224, 224], 0.875, 'bilinear')
    """
    from timm.data import resolve_data_config

    spec = get_spec(name) if isinstance(name, str) else name
    size = _check_input_size(spec.input_size if input_size is None else input_size)
    mean, std = _channel_stats(spec.mean, spec.std, size[0])
    cfg = resolve_data_config(
        args={
            "input_size": size,
            "mean": tuple(mean),
            "std": tuple(std),
            "interpolation": _INTERPOLATION,
            "crop_pct": _CROP_PCT,
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


def _timm_transform(cfg: dict[str, Any], train: bool):
    """timm's transform for ``cfg``: random-resized-crop (scale 0.08-1, ratio 3/4-4/3) + horizontal
    flip for training (no color jitter: the standard ImageNet recipe), resize + center crop otherwise."""
    from timm.data import create_transform

    if train:
        return create_transform(**cfg, is_training=True, color_jitter=None)
    return create_transform(**cfg, is_training=False)


def _view_seed(seed: int, key: Any, index: int) -> int:
    """64-bit seed of one training view: a pure function of (dataset seed, batch key, example index)."""
    digest = hashlib.blake2b(f"{seed}|{key}|{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _batch_key(indices: Sequence[int]) -> str:
    """Names one batch by its ordered indices. The training loop's batch ``s`` is a pure function of
    (seed, step ``s``), whatever the worker count or a resume, so views keyed by it are too; two
    epochs give different batches, hence different views of the same example."""
    return hashlib.blake2b(np.asarray(indices, dtype=np.int64).tobytes(), digest_size=8).hexdigest()


def _seeded_call(fn, x: Any, seed: int) -> Any:
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


class _LabelMap:
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


class _TimmImageDataset(torch.utils.data.Dataset):
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
        self.transform = _timm_transform(cfg, train)
        self.train, self.seed, self.label_map = bool(train), int(seed), label_map

    def __len__(self) -> int:
        return len(self.ds)

    def _view(self, encoded: Any, key: Any, index: int) -> torch.Tensor:
        img = self.decoder.decode_example(encoded)
        if img.mode != self.mode:
            img = img.convert(self.mode)
        if not self.train:
            return self.transform(img)
        return _seeded_call(self.transform, img, _view_seed(self.seed, key, index))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = int(i)
        row = self.ds[i]
        return self._view(row[self.image_column], "item", i), self.label_map(int(row[self.label_column]))

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        # One arrow read per batch (the DataLoader calls this with the whole batch when present).
        indices = [int(i) for i in indices]
        rows = self.ds[indices]
        key = _batch_key(indices) if self.train else None
        return [
            (self._view(im, key, i), self.label_map(int(lb)))
            for im, lb, i in zip(rows[self.image_column], rows[self.label_column], indices, strict=True)
        ]


# --- torch datasets --------------------------------------------------------------------------------


class ImageTensorDataset(torch.utils.data.Dataset):
    """A whole split decoded once: ``images`` float32 (N, C, H, W) normalized, ``labels`` int64 (N,).

    ``ds[i]`` gives ``(image, int label)``; ``ds[list_or_tensor_of_indices]`` gives a whole batch
    ``(images, labels)`` in one indexing op (used by :func:`make_loader` for speed).
    """

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


class _LazyImageDataset(torch.utils.data.Dataset):
    """Map-style view of a large ``datasets.Dataset``: decodes and transforms per item."""

    def __init__(
        self, ds: datasets.Dataset, spec: DatasetSpec, size: tuple[int, int, int], label_map
    ) -> None:
        self.ds = ds.select_columns([spec.image_column, spec.label_column])
        self.image_column, self.label_column = spec.image_column, spec.label_column
        self.size, self.label_map = size, label_map
        self.normalize = _Normalizer(spec.mean, spec.std, size[0])

    def __len__(self) -> int:
        return len(self.ds)

    def _item(self, img: Any, label: int) -> tuple[torch.Tensor, int]:
        return self.normalize(_to_uint8(img, self.size)), self.label_map(int(label))

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


def _u01(seed: int, i: int) -> float:
    """A fixed pseudo-random number in [0, 1) for example ``i``: which side of a streaming split it goes."""
    return zlib.crc32(f"{seed}:{i}".encode()) / 2**32


# Seed of the carved test set: fixed, so the test set is the same whatever ``seed`` a run uses.
_TEST_SEED = 2**31 - 1


class _StreamingImageDataset(torch.utils.data.IterableDataset):
    """Torch view of a streaming ``datasets.IterableDataset``: decodes and transforms on the fly.

    Examples are assigned by a seeded hash of their position in the (class-filtered, limited)
    stream. ``part``: ``"all"``; ``"train"`` / ``"val"`` (val when hash(seed) < fraction);
    ``"test"`` (hash(_TEST_SEED) < fraction, only with ``carve_test``, which also removes those
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
        self.normalize = _Normalizer(spec.mean, spec.std, size[0])
        self.train_views = cfg is not None and train_views
        self.transform = None if cfg is None else _timm_transform(cfg, self.train_views)
        self.mode = "L" if size[0] == 1 else "RGB"

    def _image(self, img: Any, i: int) -> torch.Tensor:
        if self.transform is None:
            return self.normalize(_to_uint8(img, self.size))
        if not isinstance(img, PILImage.Image):
            img = PILImage.fromarray(np.asarray(img))
        if img.mode != self.mode:
            img = img.convert(self.mode)
        if not self.train_views:
            return self.transform(img)
        return _seeded_call(self.transform, img, _view_seed(self.seed, "stream", i))

    def _wanted(self, i: int) -> bool:
        is_test = self.carve_test and _u01(_TEST_SEED, i) < self.fraction
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


# --- splits ----------------------------------------------------------------------------------------


@dataclass
class Splits:
    """The three splits of one dataset, ready for a DataLoader, plus the spec they came from.

    ``data_config`` is the timm data config (:func:`data_config`) when the images go through timm's
    pipeline, ``None`` when they are resized to ``input_size`` (small-image sets).
    """

    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    spec: DatasetSpec
    input_size: tuple[int, int, int]
    data_config: dict[str, Any] | None = None


def _check_input_size(input_size: Any) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in input_size)
        ok = tuple(input_size) == (c, h, w)
    except (TypeError, ValueError):
        ok = False
    if not ok or c not in (1, 3) or h < 1 or w < 1:
        raise ConfigError(f"input_size must be (C, H, W) with C in (1, 3) and H, W >= 1, got {input_size!r}")
    return (c, h, w)


def _labels_of(ds: datasets.Dataset, column: str) -> np.ndarray:
    return np.asarray(ds.with_format("numpy", columns=[column])[column], dtype=np.int64)


def _materialize(ds: datasets.Dataset, spec: DatasetSpec, size, label_map, what: str) -> ImageTensorDataset:
    """Decode and transform a whole split once into one normalized tensor."""
    n = len(ds)
    images = torch.empty((n, *size), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.long)
    pos = 0
    batches = ds.select_columns([spec.image_column, spec.label_column]).iter(batch_size=1024)
    with tqdm(total=n, desc=f"decode {spec.name} {what}", unit="img", disable=n < 20_000, leave=False) as bar:
        for b in batches:
            for im, lb in zip(b[spec.image_column], b[spec.label_column], strict=True):
                images[pos] = _to_uint8(im, size)
                labels[pos] = label_map(int(lb))
                pos += 1
            bar.update(len(b[spec.label_column]))
    normalize = _Normalizer(spec.mean, spec.std, size[0])
    return ImageTensorDataset(normalize(images), labels)


def _fits_in_memory(n: int, size: tuple[int, int, int]) -> bool:
    return n <= _MAX_IN_MEMORY_ITEMS and n * size[0] * size[1] * size[2] * 4 <= _MAX_IN_MEMORY_BYTES


def _uses_timm(spec: DatasetSpec, size: tuple[int, int, int], pipeline: str) -> bool:
    """Whether images take timm's pipeline: always for ``"timm"``; for ``"auto"`` (local data) when
    the sampled images are larger than the input in either dimension (resizing down would throw
    away what a random-resized-crop can use); never for ``"tensor"``."""
    if pipeline == "auto":
        return spec.image_size is not None and (spec.image_size[0] > size[1] or spec.image_size[1] > size[2])
    return pipeline == "timm"


def load_splits(
    name: str | DatasetSpec,
    *,
    input_size: tuple[int, int, int] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    streaming: bool | None = None,
    cache_dir: str | None = None,
    limit: int | None = None,
    pipeline: str | None = None,
) -> Splits:
    """Load train / val / test of a dataset as torch datasets of ``(normalized image, label)``.

    The validation split is the spec's own when it has one, else carved from train with ``seed``
    (stratified for map-style data, a seeded hash for streaming data). ``limit`` caps the examples
    read from each source split (a seeded random subset for map-style data, the first ``limit``
    for streaming). ``input_size`` (C, H, W) overrides the spec's default: channels are converted
    (gray <-> RGB). ``streaming=None`` uses the spec's default.

    ``pipeline`` (default: the spec's ``image_pipeline``) is how images become input. ``"tensor"``
    (small-image sets): resized bilinearly to ``input_size``, decoded once into memory when the split
    fits. ``"timm"`` (imagenet, places365, local photos): decoded per item, never all at once;
    train through ``timm.data.create_transform(is_training=True)`` (random-resized-crop + flip, seeded
    per example and batch, see :class:`_TimmImageDataset`), val/test through timm's eval transform
    (resize + center crop by ``crop_pct``); the config is :attr:`Splits.data_config`. ``"auto"``
    (local data): ``"timm"`` when the images are larger than ``input_size``, else ``"tensor"``.

    Example:
        >>> s = load_splits("digits[0-4]", input_size=(3, 32, 32), seed=1)
        >>> s.train[0][0].shape, s.spec.num_classes
        (torch.Size([3, 32, 32]), 5)
    """
    spec = get_spec(name) if isinstance(name, str) else name
    if not isinstance(spec, DatasetSpec):
        raise ConfigError(f"load_splits needs a dataset name or DatasetSpec, got {type(name).__name__}")
    size = _check_input_size(spec.input_size if input_size is None else input_size)
    if not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"limit must be a positive int or None, got {limit!r}")
    if spec.augment not in AUGMENTATIONS:
        raise ConfigError(f"dataset {spec.name!r}: augment must be one of {AUGMENTATIONS.names()}, got {spec.augment!r}")
    pipeline = spec.image_pipeline if pipeline is None else pipeline
    if pipeline not in _PIPELINES:
        raise ConfigError(f"pipeline must be one of {_PIPELINES}, got {pipeline!r}")
    cfg = data_config(spec, size) if _uses_timm(spec, size, pipeline) else None
    streaming = spec.streaming if streaming is None else bool(streaming)

    # Labels: keep only the subset, re-indexed in the listed order.
    label_map = _LabelMap(spec.classes, spec.num_classes)
    keep = label_map.keep

    def source(split: str):
        if spec.local == _DIGITS:
            ds = digits_dataset()[split]
            return ds.to_iterable_dataset() if streaming else ds
        return datasets.load_dataset(**_load_dataset_kwargs(spec, split, streaming), cache_dir=cache_dir)

    test_carved = spec.test_split == spec.train_split
    if test_carved:
        warnings.warn(
            f"dataset {spec.name!r} has no test split: carving a test set ({val_fraction:.0%}) from train "
            f"with a fixed seed (the same for every run)",
            stacklevel=2,
        )

    if streaming:
        parts = _streaming_splits(
            spec, source, size, label_map, keep, val_fraction, seed, limit, test_carved, cfg
        )
    else:
        parts = _map_splits(spec, source, size, label_map, val_fraction, seed, limit, test_carved, cfg)
    return Splits(*parts, spec=spec, input_size=size, data_config=cfg)


def _map_splits(spec, source, size, label_map, val_fraction, seed, limit, test_carved, cfg):
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
            return _TimmImageDataset(sub, spec, cfg, label_map, train=what == "train", seed=seed)
        if _fits_in_memory(len(sub), size):
            return _materialize(sub, spec, size, label_map, what)
        return _LazyImageDataset(sub, spec, size, label_map)

    train_ds, train_idx, train_labels = prepare(spec.train_split, seed)
    if test_carved:
        # Test is carved with a seed of its own so it stays the same whatever ``seed`` is.
        keep_pos, test_pos = _stratified_split(train_labels, val_fraction, seed=_TEST_SEED)
        test = build(train_ds, train_idx[test_pos], "test")
        train_idx, train_labels = train_idx[keep_pos], train_labels[keep_pos]
    else:
        test_ds, test_idx, _ = prepare(spec.test_split, seed + 1)
        test = build(test_ds, test_idx, "test")
    if spec.val_split is not None:
        val_ds, val_idx, _ = prepare(spec.val_split, seed + 2)
        val = build(val_ds, val_idx, "val")
    else:
        keep_pos, val_pos = _stratified_split(train_labels, val_fraction, seed)
        val = build(train_ds, train_idx[val_pos], "val")
        train_idx = train_idx[keep_pos]
    train = build(train_ds, train_idx, "train")
    if len(train) == 0:
        raise ConfigError(f"dataset {spec.name!r}: the train split is empty after class filtering")
    return train, val, test


def _streaming_splits(spec, source, size, label_map, keep, val_fraction, seed, limit, test_carved, cfg):
    def stream(split: str, part: str, train_views: bool = False) -> _StreamingImageDataset:
        return _StreamingImageDataset(
            # Only streams over train lose the positions carved off as test.
            source(split),
            spec,
            size,
            label_map,
            keep,
            part,
            val_fraction,
            seed,
            limit,
            test_carved and split == spec.train_split,
            cfg,
            train_views,
        )

    train_part = "all" if spec.val_split is not None else "train"
    train = stream(spec.train_split, train_part, train_views=True)
    val = stream(spec.val_split, "all") if spec.val_split is not None else stream(spec.train_split, "val")
    test = stream(spec.train_split, "test") if test_carved else stream(spec.test_split, "all")
    return train, val, test


# --- batches ---------------------------------------------------------------------------------------


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """A DataLoader whose order depends only on ``seed``: each new pass over it reshuffles, and the
    n-th pass is the same in every run.

    For an :class:`ImageTensorDataset` each batch is one indexing op (no per-item collation).

    Example:
        >>> s = load_splits("digits")
        >>> x, y = next(iter(make_loader(s.train, 64, shuffle=True, seed=0)))
        >>> x.shape
        torch.Size([64, 1, 8, 8])
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    gen = torch.Generator().manual_seed(int(seed))
    if isinstance(dataset, torch.utils.data.IterableDataset):
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, drop_last=drop_last, num_workers=num_workers
        )
    if isinstance(dataset, ImageTensorDataset):
        base = (
            torch.utils.data.RandomSampler(dataset, generator=gen)
            if shuffle
            else torch.utils.data.SequentialSampler(dataset)
        )
        sampler = torch.utils.data.BatchSampler(base, batch_size, drop_last)
        return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=num_workers)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=gen,
        drop_last=drop_last,
        num_workers=num_workers,
    )
