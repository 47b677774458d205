"""The offline ``digits`` dataset: scikit-learn's 1797 real 8x8 handwritten digits.

It needs no network, so the demo, the digits recipes and the tests run anywhere. Its catalogue entry
(mean/std, input size) is registered with the others in :mod:`ticket_zoo.data`; this module builds
the data. Class subsets work as for any dataset (``"digits[0-4]"``, ``"digits[5-9]"``).

Example:
    >>> dd = digits_dataset()
    >>> sorted(dd), dd["train"][0]["image"].size
    (['test', 'train'], (8, 8))
"""

from __future__ import annotations

import functools

import datasets
import numpy as np
from PIL import Image as PILImage

from .errors import ConfigError
from .splitting import stratified_split

__all__ = ["DIGITS", "digits_dataset"]

#: The catalogue name of the dataset (and its ``DatasetSpec.local``: it is built here, not loaded).
DIGITS = "digits"


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
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)

    def part(idx: np.ndarray) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"image": [PILImage.fromarray(pixels[i], mode="L") for i in idx], "label": labels[idx].tolist()},
            features=features,
        )

    return datasets.DatasetDict({"train": part(train_idx), "test": part(test_idx)})
