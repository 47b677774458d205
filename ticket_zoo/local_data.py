"""Local data named by a prefix: ``imagefolder:PATH`` (a folder of class subfolders) and ``parquet:GLOB``.

Each kind is one entry of :data:`LOCAL_KINDS`: a function from the part after the colon to the
arguments :func:`datasets.load_dataset` takes for it. Such data needs columns ``image`` and ``label``
(a ``ClassLabel``); its splits come from folder or file names (``train``, ``test``, ``validation`` /
``valid`` / ``val``), everything being train when names say nothing. :func:`describe` reads the facts
of a ``DatasetSpec`` from the data itself: classes, splits, mean/std of the first 512 train
examples, and input size (the images' own size when they all have one, else 224x224 through timm's
pipeline). :func:`ticket_zoo.data.get_spec` turns a local name into a spec with it.

Example:
    >>> is_local("imagefolder:/data/pets"), is_local("cifar10"), is_local("csv:x")
    (True, False, False)
    >>> load_kwargs("imagefolder:/")
    {'path': 'imagefolder', 'data_dir': '/'}
    >>> load_kwargs("parquet:/no/such/*.parquet")
    Traceback (most recent call last):
    ...
    ticket_zoo.errors.ConfigError: dataset 'parquet:/no/such/*.parquet': no file matches; check the path or glob
"""

from __future__ import annotations

import glob as globlib
import math
import os
import re
from collections.abc import Callable
from typing import Any

import datasets
import torch

from .errors import ConfigError
from .images import to_uint8
from .registry import Registry

__all__ = ["LOCAL_KINDS", "describe", "is_local", "load_kwargs"]

# Examples read to estimate mean/std of local data.
_LOCAL_STATS_SAMPLES = 512
# Default input size of local photo folders with images of mixed sizes (timm's default).
_PHOTO_INPUT = 224

#: kind -> ``fn(where) -> load_dataset kwargs`` (no split, no streaming), for names ``kind:where``.
LOCAL_KINDS: Registry[Callable[[str], dict[str, Any]]] = Registry("local data kind")


@LOCAL_KINDS.register("imagefolder")
def _imagefolder(where: str) -> dict[str, Any]:
    """A folder of class subfolders (``PATH/<class>/*.png``, or ``PATH/<split>/<class>/...``)."""
    folder = os.path.expanduser(where)
    if not os.path.isdir(folder):
        raise ConfigError(
            f"dataset 'imagefolder:{where}': {where!r} is not a folder; give a folder of class subfolders"
        )
    return {"path": "imagefolder", "data_dir": folder}


_SPLIT_WORDS = {
    "train": "train",
    "test": "test",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
}


@LOCAL_KINDS.register("parquet")
def _parquet(where: str) -> dict[str, Any]:
    """Parquet files matching a glob (``**`` allowed), grouped by split (see :func:`_parquet_data_files`)."""
    return {"path": "parquet", "data_files": _parquet_data_files(where)}


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


def is_local(name: str) -> bool:
    """Whether ``name`` is ``kind:where`` for a kind in :data:`LOCAL_KINDS`."""
    kind, sep, _ = name.partition(":")
    return bool(sep) and kind in LOCAL_KINDS


def load_kwargs(local: str) -> dict[str, Any]:
    """The :func:`datasets.load_dataset` arguments of local data ``kind:where`` (no split, no streaming)."""
    kind, _, where = local.partition(":")
    if not where:
        raise ConfigError(f"dataset {local!r}: missing path after '{kind}:'")
    return LOCAL_KINDS.get(kind)(where)


def describe(local: str) -> dict[str, Any]:
    """The ``DatasetSpec`` fields of local data read from the data (streamed: only the features, the
    split names and the first examples are read).

    ``num_classes`` from the label's ``ClassLabel``; ``test_split`` ``"test"`` when there is one, else
    ``"train"`` (a test set is carved from train); ``val_split`` ``"validation"`` or ``None``;
    ``mean``/``std`` over every pixel of the first 512 train examples; ``input_size`` the images' size
    when they all have one (pipeline ``"auto"``), else 224x224 through timm (``"timm"``);
    ``image_size`` the largest (H, W) seen.
    """
    dd = datasets.load_dataset(**load_kwargs(local), streaming=True)
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
        x = to_uint8(im, (c, im.height, im.width)).to(torch.float64) / 255.0
        total += x.sum(dim=(1, 2))
        squares += (x * x).sum(dim=(1, 2))
        pixels += x.shape[1] * x.shape[2]
    m = total / pixels
    var = (squares - pixels * m * m) / max(1, pixels - 1)
    # Images all of one size: that size is the default input. Mixed sizes are photos: timm's pipeline
    # at its default 224x224 (a recipe's input_size overrides either).
    mixed = len(sizes) > 1
    return {
        "test_split": "test" if "test" in dd else "train",
        "val_split": "validation" if "validation" in dd else None,
        "num_classes": feats["label"].num_classes,
        "mean": tuple(round(v, 4) for v in m.tolist()),
        "std": tuple(round(max(math.sqrt(max(v, 0.0)), 1e-3), 4) for v in var.tolist()),
        "input_size": (c, _PHOTO_INPUT, _PHOTO_INPUT) if mixed else (c, first.height, first.width),
        "image_pipeline": "timm" if mixed else "auto",
        "image_size": (max(h for h, _ in sizes), max(w for _, w in sizes)),
    }
