"""The dataset catalogue and the way in to data: a name -> a :class:`DatasetSpec` -> train / val / test.

A dataset is named by a catalogue name (``"cifar10"``, see :func:`list_datasets`), optionally with a
class subset (``"cifar10[0-4]"``, ``"digits[0,2,4]"``), or by local data (``"imagefolder:PATH"``,
``"parquet:GLOB"``). :func:`get_spec` is the one function that resolves a name to its spec;
:func:`load_splits` turns a spec into train / val / test torch datasets whose items are
``(image: float32 (C, H, W) normalized, label: int)``, all read through the Hugging Face ``datasets``
library.

The catalogue is the registry :data:`DATASETS`: one :func:`register_dataset` call per dataset below,
everything about the dataset in its :class:`DatasetSpec` (Hub id, columns, splits, classes,
normalization, input size, augmentation, image pipeline). The rest lives beside this module:

* :mod:`ticket_zoo.images`: the two image pipelines (small images resized and held in memory as an
  :class:`ImageTensorDataset`; photos through timm's transforms, decoded per item).
* :mod:`ticket_zoo.splitting`: the validation split carved from train with the ``seed`` argument
  (stratified), so model selection never sees test; class subsets re-indexed.
* :mod:`ticket_zoo.streaming`: the same for streams (a seeded hash of each example's position).
* :mod:`ticket_zoo.digits`: the offline digits dataset; :mod:`ticket_zoo.local_data`: the
  ``imagefolder:`` / ``parquet:`` names.
* :mod:`ticket_zoo.augment`: batch augmentation of small-image sets (:func:`augment_batch`), applied
  by the training loop with its own seeded generator, which keeps a resume exact.

Adding a dataset
----------------
Write one :func:`register_dataset` call below the others. Take the Hub id, the image and label
column names and the split names from the dataset's Hub page; give the mean/std of the train split
per channel, the input size the paper networks take, ``augment="cifar"`` for small natural images
(``"none"`` where a flip changes the meaning), ``image_pipeline="timm"`` for photos. Class subsets
and every loader option then work for it. Then add its row to ``EXPECTED`` in ``tests/test_data.py``.
Here it is on a throwaway registry, so that the real catalogue stays as it is:

    >>> from ticket_zoo.registry import Registry
    >>> catalogue = Registry("dataset", UnknownDatasetError)
    >>> _ = register_dataset(
    ...     DatasetSpec(name="my_digits", hub_id="my-org/my-digits", num_classes=10,
    ...                 mean=(0.1307,), std=(0.3081,), input_size=(1, 28, 28)),
    ...     registry=catalogue,
    ... )
    >>> spec = get_spec("my_digits[0-4]", registry=catalogue)
    >>> spec.hub_id, spec.num_classes, spec.classes
    ('my-org/my-digits', 5, (0, 1, 2, 3, 4))
    >>> get_spec("my_digit", registry=catalogue)
    Traceback (most recent call last):
    ...
    ticket_zoo.errors.UnknownDatasetError: unknown dataset 'my_digit' (did you mean 'my_digits'?); known: my_digits; or use 'imagefolder:PATH' / 'parquet:GLOB' for local data
    >>> "my_digits" in list_datasets()
    False
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import datasets
import torch

from . import local_data
from .augment import AUGMENTATIONS, augment_batch
from .digits import DIGITS, digits_dataset
from .errors import ConfigError, UnknownDatasetError, one_line
from .images import PIPELINES, ImageTensorDataset, timm_data_config, uses_timm
from .registry import Registry
from .splitting import LabelMap, map_splits
from .streaming import streaming_splits

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ImageTensorDataset",
    "Splits",
    "augment_batch",
    "data_config",
    "digits_dataset",
    "get_spec",
    "list_datasets",
    "load_splits",
    "register_dataset",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_LOCAL_HINT = "or use 'imagefolder:PATH' / 'parquet:GLOB' for local data"


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """Everything needed to load one dataset: where it lives, its columns, splits and normalization.

    Fields: ``hub_id`` / ``config`` (:func:`datasets.load_dataset`'s ``path`` and ``name``; ``None``
    for local data); ``image_column`` / ``label_column``; ``train_split`` / ``test_split`` /
    ``val_split`` (``None``: val is carved from train); ``num_classes``; ``mean`` / ``std`` per
    channel, of the train split; ``input_size`` (C, H, W), the default input; ``augment``, an
    :data:`ticket_zoo.augment.AUGMENTATIONS` name; ``streaming``, the default of :func:`load_splits`;
    ``classes``, the source classes of a class subset in their new order; ``local``, the
    ``imagefolder:`` / ``parquet:`` name (or ``"digits"``) of data not on the Hub.

    ``test_split == train_split`` means the data has no test split and a test set is carved from
    train (only for local data; a warning says so). ``image_pipeline`` is how images become model
    input (``"tensor"``, ``"timm"`` or ``"auto"``, see :func:`load_splits`); ``image_size`` is the
    largest (H, W) seen in the sampled images of local data.
    """

    name: str
    hub_id: str | None = None
    config: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    train_split: str = "train"
    test_split: str = "test"
    val_split: str | None = None
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]
    augment: str = "none"
    streaming: bool = False
    classes: tuple[int, ...] | None = None
    local: str | None = None
    image_pipeline: str = "tensor"
    image_size: tuple[int, int] | None = None


#: The catalogue: name -> :class:`DatasetSpec`, one :func:`register_dataset` call per dataset.
DATASETS: Registry[DatasetSpec] = Registry("dataset", UnknownDatasetError)

# A catalogue name: no brackets (class subsets) and no colon (local data), so names stay unambiguous.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def register_dataset(spec: DatasetSpec, *, registry: Registry[DatasetSpec] = DATASETS) -> DatasetSpec:
    """Add ``spec`` to the catalogue under ``spec.name`` and return it; a taken name or a spec that
    could not load raises ``ValueError`` at import. See "Adding a dataset" above."""
    problems = []
    if not isinstance(spec.name, str) or not _NAME_RE.fullmatch(spec.name):
        problems.append("the name must be letters, digits, '_', '.' or '-' (no '[' or ':')")
    if spec.hub_id is None and spec.local is None:
        problems.append("it needs a hub_id (or local)")
    if spec.augment not in AUGMENTATIONS:
        problems.append(f"augment must be one of {AUGMENTATIONS.names()}")
    if spec.image_pipeline not in PIPELINES:
        problems.append(f"image_pipeline must be one of {PIPELINES}")
    channels = spec.input_size[0] if len(spec.input_size) == 3 else None
    if not (len(spec.mean) == len(spec.std) == channels) or min(spec.std, default=0) <= 0:
        problems.append("mean and std need one value per input channel, std > 0")
    if problems:
        raise ValueError(f"dataset {spec.name!r}: " + "; ".join(problems))
    return registry.add(spec.name, spec)


# Hub ids, column and split names as published on the Hugging Face Hub.
register_dataset(
    DatasetSpec(
        name="mnist",
        hub_id="ylecun/mnist",
        num_classes=10,
        mean=(0.1307,),
        std=(0.3081,),
        input_size=(1, 28, 28),
    )
)
register_dataset(
    DatasetSpec(
        name="fashion_mnist",
        hub_id="zalando-datasets/fashion_mnist",
        num_classes=10,
        mean=(0.2860,),
        std=(0.3530,),
        input_size=(1, 28, 28),
    )
)
register_dataset(
    DatasetSpec(
        name="cifar10",
        hub_id="uoft-cs/cifar10",
        image_column="img",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        input_size=(3, 32, 32),
        augment="cifar",
    )
)
register_dataset(
    DatasetSpec(
        name="cifar100",
        hub_id="uoft-cs/cifar100",
        image_column="img",
        label_column="fine_label",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        input_size=(3, 32, 32),
        augment="cifar",
    )
)
register_dataset(
    DatasetSpec(
        name="svhn",
        hub_id="ufldl-stanford/svhn",
        config="cropped_digits",
        num_classes=10,
        mean=(0.4377, 0.4438, 0.4728),
        std=(0.1980, 0.2010, 0.1970),
        input_size=(3, 32, 32),
    )
)
register_dataset(
    DatasetSpec(
        name="imagenet",
        hub_id="ILSVRC/imagenet-1k",
        # The Hub's "test" split of ImageNet-1k is unlabeled: its labeled "validation" is our test.
        test_split="validation",
        num_classes=1000,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        input_size=(3, 224, 224),
        # Map-style: datasets downloads the parquet shards once and memory-maps them; images stay
        # encoded and are decoded per item in the loader workers. Training needs it: epochs need
        # a length, and a resume and late resetting need the batch of step s by index (a stream
        # has neither). load_splits(streaming=True) is still there for quick looks.
        streaming=False,
        image_pipeline="timm",
    )
)
register_dataset(
    # UNVERIFIED: no official Places365 copy exists on the Hub; this community parquet copy is
    # the best candidate found (columns and the "validation" split name not confirmed).
    # Use "parquet:GLOB" or "imagefolder:PATH" on a local copy when in doubt.
    DatasetSpec(
        name="places365",
        hub_id="ljnlonoljpiljm/places365-256px",
        test_split="validation",
        num_classes=365,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        input_size=(3, 224, 224),
        streaming=False,  # map-style, as for imagenet (see there)
        image_pipeline="timm",
    )
)
register_dataset(
    # Built offline from scikit-learn (ticket_zoo.digits). mean/std are those of the train split's
    # pixels, never of test, computed in float32 (tests/test_data.py checks them against the data).
    DatasetSpec(
        name="digits",
        local=DIGITS,
        num_classes=10,
        mean=(0.30553290247917175,),
        std=(0.3759494125843048,),
        input_size=(1, 8, 8),
    )
)


def list_datasets() -> list[str]:
    """Catalogue names, sorted (class subsets and local paths are accepted too, see :func:`get_spec`).

    Example:
        >>> "cifar10" in list_datasets() and "digits" in list_datasets()
        True
    """
    return sorted(DATASETS.names())


# --- resolving a name ------------------------------------------------------------------------------

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


@functools.lru_cache(maxsize=64)
def _local_spec(local: str) -> DatasetSpec:
    # Cached: the facts are read from the data (a few hundred images for mean/std).
    return DatasetSpec(name=local, local=local, **local_data.describe(local))


def get_spec(name: str, *, registry: Registry[DatasetSpec] = DATASETS) -> DatasetSpec:
    """Resolve a dataset name to its :class:`DatasetSpec`: the one place where names are parsed.

    Accepts, in this order of recognition:

    * a class subset ``NAME[a-b]`` / ``NAME[a,b,c]`` of any of the names below: the spec of ``NAME``
      with ``classes`` set and the labels re-indexed 0..k-1 in the listed order;
    * local data ``imagefolder:PATH`` or ``parquet:GLOB`` (:mod:`ticket_zoo.local_data`; columns
      ``image`` / ``label``, the label a ``ClassLabel``; the spec is read from the data: classes,
      default input size from the images, mean/std from the first 512 train examples);
    * a catalogue name (:func:`list_datasets`), looked up in ``registry`` (default :data:`DATASETS`).

    Anything else raises :class:`~ticket_zoo.errors.UnknownDatasetError` with the closest name.

    Example:
        >>> get_spec("cifar10").num_classes
        10
        >>> get_spec("digits[5-9]").classes
        (5, 6, 7, 8, 9)
        >>> get_spec("cifar01")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.UnknownDatasetError: unknown dataset 'cifar01' (did you mean 'cifar10'?); known: mnist, fashion_mnist, cifar10, cifar100, svhn, imagenet, places365, digits; or use 'imagefolder:PATH' / 'parquet:GLOB' for local data
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"dataset name must be a non-empty string, got {name!r}")
    name = name.strip()
    base, sel = name, None
    m = _SUBSET_RE.match(name)
    if m is not None:
        base, sel = m.group("base").strip(), m.group("sel")
    elif not local_data.is_local(name) and ("[" in name or "]" in name):
        raise ConfigError(f"dataset {name!r}: bad class subset; write e.g. 'digits[0-4]' or 'digits[0,2,4]'")

    if local_data.is_local(base):
        spec = _local_spec(base)
    else:
        try:
            spec = registry.get(base)
        except ConfigError as exc:
            raise type(exc)(f"{exc}; {_LOCAL_HINT}") from None
    if sel is None:
        return spec
    classes = _parse_classes(sel, name, spec.num_classes)
    return replace(spec, name=name, classes=classes, num_classes=len(classes))


# --- where a spec's data comes from ----------------------------------------------------------------


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
    elif spec.local is not None and spec.local != DIGITS:
        kw = local_data.load_kwargs(spec.local)
    else:
        raise ConfigError(f"dataset {spec.name!r} is not loaded through load_dataset")
    if split is not None:
        kw["split"] = split
    kw["streaming"] = bool(streaming)
    return kw


def _open_split(spec: DatasetSpec, split: str, streaming: bool, cache_dir: str | None):
    """One split of ``spec`` as a ``datasets.Dataset`` (or ``IterableDataset`` when ``streaming``)."""
    if spec.local == DIGITS:
        ds = digits_dataset()[split]
        return ds.to_iterable_dataset() if streaming else ds
    kwargs = _load_dataset_kwargs(spec, split, streaming)
    if spec.hub_id is None:  # local data: no network involved
        return datasets.load_dataset(**kwargs, cache_dir=cache_dir)
    try:
        with _quiet_retries():
            return datasets.load_dataset(**kwargs, cache_dir=cache_dir)
    except Exception as exc:
        cause = _network_cause(exc)
        if cause is None:
            raise
        raise ConfigError(_offline_message(spec, cause)) from None  # the message carries the cause


# --- a dataset that needs the network while offline: one line, not a traceback and retry warnings ----

# Exception classes (by name, so that optional HTTP libraries need not be imported) that mean "the
# Hub could not be reached": offline mode, a refused or timed-out connection, DNS failure, and
# huggingface_hub's "not in the cache and cannot download it".
_NETWORK_ERRORS = frozenset({
    "ConnectionError", "TimeoutError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectError",
    "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError", "ClientConnectorError",
})  # fmt: skip
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def _network_cause(exc: BaseException) -> BaseException | None:
    """The deepest error in ``exc``'s chain (causes and contexts) saying the network failed, or ``None``.

    The deepest is the one that says what happened ("Connection refused"), not a wrapper's summary.

    Example:
        >>> try:
        ...     try:
        ...         raise ConnectionRefusedError(111, "Connection refused")
        ...     except OSError as e:
        ...         raise ValueError("could not resolve data files") from e
        ... except ValueError as e:
        ...     type(_network_cause(e)).__name__, _network_cause(KeyError("x"))
        ('ConnectionRefusedError', None)
    """
    seen: set[int] = set()
    found = None
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if any(c.__name__ in _NETWORK_ERRORS for c in type(current).__mro__):
            found = current
        current = current.__cause__ or current.__context__
    return found


def _offline_message(spec: DatasetSpec, cause: BaseException) -> str:
    """One line: which dataset needs the network, why it cannot have it, and what to do.

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}):
        ...     _offline_message(get_spec("cifar10"), ConnectionRefusedError(111, "Connection refused"))
        'cifar10 needs to be downloaded from the Hugging Face Hub (uoft-cs/cifar10) but the network is unreachable ([Errno 111] Connection refused); connect once to cache it, or use a local copy with imagefolder:PATH / parquet:GLOB'
        >>> with mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1"}):  # doctest: +ELLIPSIS
        ...     _offline_message(get_spec("cifar10"), ConnectionError("offline"))
        'cifar10 needs ... (uoft-cs/cifar10) but HF_HUB_OFFLINE=1 is set and it is not in the cache; unset it and connect once to cache it, or use ...'
    """
    offline = [v for v in _OFFLINE_VARS if os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")]
    head = f"{spec.name} needs to be downloaded from the Hugging Face Hub ({spec.hub_id}) but "
    local = "use a local copy with imagefolder:PATH / parquet:GLOB"
    if offline or type(cause).__name__ == "OfflineModeIsEnabled":
        setting = f"{offline[0]}=1" if offline else "offline mode"
        return f"{head}{setting} is set and it is not in the cache; unset it and connect once to cache it, or {local}"
    return f"{head}the network is unreachable ({one_line(cause, 120)}); connect once to cache it, or {local}"


class _DropRetryWarnings(logging.Filter):
    """Drops huggingface_hub's per-attempt warnings ("... thrown while requesting ...", "Retrying in ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "thrown while requesting" not in message and not message.startswith("Retrying in")


@contextlib.contextmanager
def _quiet_retries() -> Iterator[None]:
    """While loading one dataset, silence huggingface_hub's retry warnings (a failure ends as one line).

    A logger's filters apply only to records it creates itself, so the filter goes on every
    huggingface_hub logger, and comes off again afterwards.
    """
    logging.getLogger("huggingface_hub.utils._http")  # make sure the one that warns exists
    loggers = [
        logger
        for name, logger in list(logging.root.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and (name == "huggingface_hub" or name.startswith("huggingface_hub."))
    ]
    drop = _DropRetryWarnings()
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


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
    spec = get_spec(name) if isinstance(name, str) else name
    size = _check_input_size(spec.input_size if input_size is None else input_size)
    return timm_data_config(spec.mean, spec.std, size)


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
    per example and batch, see :class:`ticket_zoo.images.TimmImageDataset`), val/test through timm's
    eval transform (resize + center crop by ``crop_pct``); the config is :attr:`Splits.data_config`.
    ``"auto"`` (local data): ``"timm"`` when the images are larger than ``input_size``, else ``"tensor"``.

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
    if pipeline not in PIPELINES:
        raise ConfigError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    cfg = data_config(spec, size) if uses_timm(spec, size, pipeline) else None
    streaming = spec.streaming if streaming is None else bool(streaming)
    # Labels: keep only the subset, re-indexed in the listed order.
    label_map = LabelMap(spec.classes, spec.num_classes)

    def source(split: str):
        return _open_split(spec, split, streaming, cache_dir)

    test_carved = spec.test_split == spec.train_split
    if test_carved:
        warnings.warn(
            f"dataset {spec.name!r} has no test split: carving a test set ({val_fraction:.0%}) from train "
            f"with a fixed seed (the same for every run)",
            stacklevel=2,
        )
    split_fn = streaming_splits if streaming else map_splits
    parts = split_fn(spec, source, size, label_map, val_fraction, seed, limit, test_carved, cfg)
    return Splits(*parts, spec=spec, input_size=size, data_config=cfg)
