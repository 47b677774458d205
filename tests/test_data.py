"""Tests for ticket_zoo.data and the modules beside it: the catalogue, digits, splits, subsets,
transforms, local data, streaming."""

from __future__ import annotations

import collections
import os
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from ticket_zoo import data as D
from ticket_zoo import images
from ticket_zoo.errors import ConfigError, UnknownDatasetError
from ticket_zoo.registry import Registry


def _keys(t: torch.Tensor) -> collections.Counter:
    """Multiset of images (by exact bytes): compares splits without relying on order."""
    return collections.Counter(x.numpy().tobytes() for x in t)


def _norm(u8: np.ndarray, spec: D.DatasetSpec) -> torch.Tensor:
    x = torch.from_numpy(u8.astype(np.float32) / 255.0)
    return (x - spec.mean[0]) / spec.std[0]


class _Opened(Exception):
    """Raised by the ``datasets.load_dataset`` stand-in of :func:`_load_dataset_calls` (``stop=True``)."""


def _load_dataset_calls(monkeypatch, *, stop: bool = False) -> list[dict]:
    """The keyword arguments of every ``datasets.load_dataset`` call that reads one split, from now on.

    With ``stop`` the first such call raises :class:`_Opened` instead of loading (no network, no data);
    otherwise the real ``load_dataset`` runs. Calls without ``split`` (reading local data's features
    for its spec) are passed through and not recorded.
    """
    real, calls = datasets.load_dataset, []

    def load_dataset(*args, **kwargs):
        if "split" not in kwargs:
            return real(*args, **kwargs)
        calls.append(kwargs)
        if stop:
            raise _Opened(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def _first_split_request(monkeypatch, name, **kwargs) -> dict:
    """What ``load_splits(name, **kwargs)`` asks ``datasets.load_dataset`` for first (nothing is loaded)."""
    with monkeypatch.context() as m:
        calls = _load_dataset_calls(m, stop=True)
        with pytest.raises(_Opened):
            D.load_splits(name, **kwargs)
    return calls[0]


# --- digits ----------------------------------------------------------------------------------------


def test_digits_dataset_is_real_sklearn_digits_with_features():
    from sklearn.datasets import load_digits

    dd = D.digits_dataset()
    assert set(dd) == {"train", "test"}
    assert isinstance(dd["train"].features["image"], datasets.Image)
    label = dd["train"].features["label"]
    assert isinstance(label, datasets.ClassLabel) and label.num_classes == 10
    n_train, n_test = len(dd["train"]), len(dd["test"])
    assert n_train + n_test == 1797
    assert abs(n_test / 1797 - 0.2) < 0.01
    # Stratified: every class is in test with about a fifth of its examples.
    sk = load_digits()
    test_counts = np.bincount(np.asarray(dd["test"]["label"]), minlength=10)
    all_counts = np.bincount(sk.target, minlength=10)
    assert np.all(np.abs(test_counts / all_counts - 0.2) < 0.02)
    # The images are sklearn's pixels scaled to 0..255, and together the splits are exactly the set.
    im = dd["train"][0]["image"]
    assert im.mode == "L" and im.size == (8, 8)
    ours = collections.Counter()
    for split in ("train", "test"):
        for row in dd[split]:
            ours[(np.asarray(row["image"]).tobytes(), row["label"])] += 1
    ref = np.clip(np.round(sk.images * (255 / 16)), 0, 255).astype(np.uint8)
    assert ours == collections.Counter((a.tobytes(), int(t)) for a, t in zip(ref, sk.target, strict=True))
    # Same object each call (built once per process).
    assert D.digits_dataset() is dd


def test_digits_spec_mean_std_come_from_train_split():
    spec = D.get_spec("digits")
    px = np.stack([np.asarray(im, dtype=np.float64) / 255 for im in D.digits_dataset()["train"]["image"]])
    assert spec.mean[0] == pytest.approx(px.mean(), abs=1e-5)
    assert spec.std[0] == pytest.approx(px.std(ddof=1), abs=1e-4)
    # The catalogue's constants are the float32 statistics of the train split (to float32 rounding).
    x = torch.from_numpy(px).float()
    assert spec.mean[0] == pytest.approx(float(x.mean()), rel=1e-6)
    assert spec.std[0] == pytest.approx(float(x.std()), rel=1e-6)
    assert spec.input_size == (1, 8, 8) and spec.num_classes == 10 and spec.augment == "none"


# --- splits ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_splits() -> D.Splits:
    return D.load_splits("digits", seed=0)


def test_splits_partition_train_and_keep_test_apart(digits_splits):
    s, spec = digits_splits, digits_splits.spec
    dd = D.digits_dataset()
    src_train = torch.stack([_norm(np.asarray(im)[None], spec) for im in dd["train"]["image"]])
    src_test = torch.stack([_norm(np.asarray(im)[None], spec) for im in dd["test"]["image"]])
    assert isinstance(s.train, D.ImageTensorDataset)
    # val is carved from train: train + val is exactly the source train split, test is the test split.
    assert len(s.train) + len(s.val) == len(dd["train"])
    assert abs(len(s.val) / len(dd["train"]) - 0.1) < 0.01
    assert _keys(torch.cat([s.train.images, s.val.images])) == _keys(src_train)
    assert _keys(s.test.images) == _keys(src_test)
    # Stratified: every class is in val.
    assert set(s.val.labels.tolist()) == set(range(10))
    x, y = s.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)


def test_splits_are_deterministic_by_seed(digits_splits):
    again = D.load_splits("digits", seed=0)
    other = D.load_splits("digits", seed=1)
    assert torch.equal(again.train.images, digits_splits.train.images)
    assert torch.equal(again.val.labels, digits_splits.val.labels)
    assert not torch.equal(other.val.images, digits_splits.val.images[: len(other.val)])
    # The test set never depends on the seed.
    assert torch.equal(other.test.images, digits_splits.test.images)


def test_normalization_gives_zero_mean_unit_std_on_train(digits_splits):
    x = digits_splits.train.images
    assert abs(float(x.mean())) < 0.05
    assert abs(float(x.std()) - 1.0) < 0.05


def test_limit_caps_each_source_split():
    s = D.load_splits("digits", limit=100, seed=3)
    assert len(s.train) + len(s.val) == 100
    assert len(s.test) == 100
    assert len(s.val) >= 5


def test_class_subsets_reindex_in_listed_order(digits_splits):
    lo = D.load_splits("digits[0-4]")
    assert lo.spec.num_classes == 5 and lo.spec.classes == (0, 1, 2, 3, 4)
    assert set(lo.train.labels.tolist()) == set(range(5)) == set(lo.test.labels.tolist())
    hi = D.load_splits("digits[5-9]")
    assert set(hi.test.labels.tolist()) == set(range(5))
    full = digits_splits.test
    # digits[5-9]: label 5 becomes 0, 9 becomes 4; the images are the same.
    assert _keys(hi.test.images[hi.test.labels == 0]) == _keys(full.images[full.labels == 5])
    assert _keys(hi.test.images[hi.test.labels == 4]) == _keys(full.images[full.labels == 9])
    pick = D.load_splits("digits[3,1]")
    assert pick.spec.num_classes == 2
    assert _keys(pick.test.images[pick.test.labels == 0]) == _keys(full.images[full.labels == 3])
    assert _keys(pick.test.images[pick.test.labels == 1]) == _keys(full.images[full.labels == 1])


def test_resize_to_rgb_32(digits_splits):
    s = D.load_splits("digits", input_size=(3, 32, 32))
    x, _ = s.test[0]
    assert x.shape == (3, 32, 32) and s.input_size == (3, 32, 32)
    # Gray repeated into three channels, then resized bilinearly like PIL does.
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    src = D.digits_dataset()["test"][0]["image"]
    ref = np.asarray(src.convert("RGB").resize((32, 32), Image.BILINEAR))[..., 0]
    assert torch.allclose(x[0], _norm(ref, s.spec), atol=1e-6)
    # Smooth upsampling: neighbouring pixels differ less than in the 8x8 original.
    assert (x[0, :, 1:] - x[0, :, :-1]).abs().mean() < (
        digits_splits.test[0][0][0, :, 1:] - digits_splits.test[0][0][0, :, :-1]
    ).abs().mean()


def test_lazy_path_matches_in_memory_path(monkeypatch, digits_splits):
    monkeypatch.setattr(images, "MAX_IN_MEMORY_ITEMS", 0)
    lazy = D.load_splits("digits", seed=0)
    assert not isinstance(lazy.train, D.ImageTensorDataset)
    assert len(lazy.train) == len(digits_splits.train)
    for i in (0, 7, len(lazy.train) - 1):
        x, y = lazy.train[i]
        assert torch.allclose(x, digits_splits.train.images[i]) and y == int(digits_splits.train.labels[i])
    xb, yb = next(iter(torch.utils.data.DataLoader(lazy.val, batch_size=16)))
    assert torch.allclose(xb, digits_splits.val.images[:16]) and torch.equal(
        yb, digits_splits.val.labels[:16]
    )


def test_in_memory_split_is_batch_indexable(digits_splits):
    # The training loop takes a batch of a batch-indexable dataset as ds[index tensor], one op.
    ds = digits_splits.val
    assert D.ImageTensorDataset.batch_indexable is True and ds.batch_indexable is True
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    batches = [ds[idx] for idx in perm.split(32)]
    for idx, (xb, yb) in zip(perm.split(32), batches, strict=True):
        items = [ds[int(i)] for i in idx]
        assert torch.equal(xb, torch.stack([x for x, _ in items])) and yb.tolist() == [y for _, y in items]
    xs = torch.cat([x for x, _ in batches])
    assert xs.shape == (len(ds), 1, 8, 8) and _keys(xs) == _keys(ds.images)
    # Lists and numpy indices work too; a single index gives an int label.
    assert torch.equal(ds[[3, 1]][0], ds[np.array([3, 1])][0]) and isinstance(ds[np.int64(2)][1], int)
    with pytest.raises(ConfigError, match="differ in count"):
        D.ImageTensorDataset(torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.long))


# --- augmentation ----------------------------------------------------------------------------------


def test_augment_batch_is_deterministic_and_is_a_crop_or_flip():
    x = torch.randn(6, 3, 16, 16)
    a = D.augment_batch(x, "cifar", torch.Generator().manual_seed(0))
    b = D.augment_batch(x, "cifar", torch.Generator().manual_seed(0))
    c = D.augment_batch(x, "cifar", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)
    # Every output is some crop (pad 16 // 8 = 2) of the zero-padded input, maybe mirrored.
    p = 2
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    for i in range(len(x)):
        crops = [
            img
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            for img in (padded[i, :, dy : dy + 16, dx : dx + 16],)
            for img in (img, img.flip(-1))
        ]
        assert any(torch.equal(a[i], cr) for cr in crops)
    assert D.augment_batch(x, "none", torch.Generator()) is x


def test_augment_batch_pad_scales_and_bad_kind():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(200, 1, 1, 1)
    out = D.augment_batch(x, "cifar", torch.Generator().manual_seed(0))
    # 8x8 -> pad 1: a shifted image keeps 7 of the 8 source columns; never more than one zero row.
    zero_rows = (out == 0).all(dim=-1).sum(dim=-1).flatten()
    assert int(zero_rows.max()) <= 1 and int(zero_rows.max()) == 1
    with pytest.raises(ConfigError, match="augment"):
        D.augment_batch(x, "mixup", torch.Generator())


# --- registry --------------------------------------------------------------------------------------

EXPECTED = {
    "mnist": ("ylecun/mnist", None, "image", "label", 10, (1, 28, 28), "none", "test"),
    "fashion_mnist": (
        "zalando-datasets/fashion_mnist",
        None,
        "image",
        "label",
        10,
        (1, 28, 28),
        "none",
        "test",
    ),
    "cifar10": ("uoft-cs/cifar10", None, "img", "label", 10, (3, 32, 32), "cifar", "test"),
    "cifar100": ("uoft-cs/cifar100", None, "img", "fine_label", 100, (3, 32, 32), "cifar", "test"),
    "svhn": ("ufldl-stanford/svhn", "cropped_digits", "image", "label", 10, (3, 32, 32), "none", "test"),
    "imagenet": ("ILSVRC/imagenet-1k", None, "image", "label", 1000, (3, 224, 224), "none", "validation"),
}


def test_registry_entries():
    names = D.list_datasets()
    assert set(EXPECTED) | {"digits", "places365"} == set(names) and names == sorted(names)
    for name, (hub, cfg, img, lbl, n, size, aug, test) in EXPECTED.items():
        s = D.get_spec(name)
        assert (s.hub_id, s.config, s.image_column, s.label_column) == (hub, cfg, img, lbl), name
        assert (s.num_classes, s.input_size, s.augment, s.test_split) == (n, size, aug, test), name
        assert s.train_split == "train" and s.val_split is None
        assert len(s.mean) == len(s.std) == size[0] and all(v > 0 for v in s.std)
    places = D.get_spec("places365")
    assert places.num_classes == 365 and places.input_size == (3, 224, 224)
    # Photo sets are map-style (memory-mapped, decoded per item): training needs a length and the
    # batch of step s by index (resume, late resetting); streaming stays available on request.
    for name in ("imagenet", "places365"):
        spec = D.get_spec(name)
        assert not spec.streaming and spec.image_pipeline == "timm", name
    assert not D.get_spec("cifar10").streaming and D.get_spec("cifar10").image_pipeline != "timm"


def test_paper_scale_recipes_validate_and_take_the_timm_pipeline():
    from ticket_zoo.find import FindConfig

    for recipe in ("vgg19-imagenet", "resnet50-imagenet", "vgg19-places365", "resnet50-places365"):
        cfg = FindConfig.from_yaml(Path(__file__).resolve().parents[1] / "recipes" / f"{recipe}.yaml")
        cfg.validate()
        spec = D.get_spec(cfg.dataset)
        assert spec.image_pipeline == "timm" and not spec.streaming, recipe
        assert cfg.train.augment == "none", recipe  # the crops come from timm's pipeline, not twice


def test_load_dataset_kwargs_for_hub_entries(monkeypatch):
    kw = _first_split_request(monkeypatch, "svhn")
    assert kw == {
        "path": "ufldl-stanford/svhn",
        "name": "cropped_digits",
        "split": "train",
        "streaming": False,
        "cache_dir": None,
    }
    kw = _first_split_request(monkeypatch, "imagenet", streaming=True, cache_dir="/somewhere")
    assert kw == {"path": "ILSVRC/imagenet-1k", "split": "train", "streaming": True, "cache_dir": "/somewhere"}
    # Subsets load the same data (the filtering happens after loading).
    assert _first_split_request(monkeypatch, "cifar100[0-9]")["path"] == "uoft-cs/cifar100"
    # digits is built in: never asked of load_dataset; a spec with neither a Hub id nor local data fails.
    calls = _load_dataset_calls(monkeypatch, stop=True)
    assert len(D.load_splits("digits[0-4]").test) > 0 and calls == []
    with pytest.raises(ConfigError, match="not loaded through load_dataset"):
        D.load_splits(replace(D.get_spec("mnist"), hub_id=None, local=None))


def test_catalogue_is_one_registry_of_specs():
    assert isinstance(D.DATASETS, Registry) and D.DATASETS.kind == "dataset"
    assert sorted(D.DATASETS.names()) == D.list_datasets()
    for name in D.DATASETS:
        spec = D.DATASETS.get(name)
        assert isinstance(spec, D.DatasetSpec) and spec.name == name
        assert D.get_spec(name) is spec  # a plain name is its registration, nothing derived
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'cifar01'"):
        D.DATASETS.get("cifar01")


def test_register_dataset_on_a_throwaway_catalogue():
    catalogue = Registry("dataset", UnknownDatasetError)
    spec = D.DatasetSpec(name="tiny", hub_id="org/tiny", num_classes=4, mean=(0.5,), std=(0.25,),
                         input_size=(1, 16, 16))  # fmt: skip
    assert D.register_dataset(spec, registry=catalogue) is spec
    assert D.get_spec("tiny", registry=catalogue) is spec
    sub = D.get_spec("tiny[3,0]", registry=catalogue)
    assert (sub.name, sub.classes, sub.num_classes, sub.hub_id) == ("tiny[3,0]", (3, 0), 2, "org/tiny")
    assert "tiny" not in D.DATASETS and "tiny" not in D.list_datasets()
    with pytest.raises(UnknownDatasetError, match=r"did you mean 'tiny'.*known: tiny; or use 'imagefolder:PATH'"):
        D.get_spec("tinyy", registry=catalogue)
    with pytest.raises(ValueError, match="already registered"):
        D.register_dataset(spec, registry=catalogue)
    # Specs that could not load are refused when registered, not when first used.
    bad = [
        ({"name": "a[0]"}, "name"),
        ({"name": "a:b"}, "name"),
        ({"hub_id": None}, "hub_id"),
        ({"augment": "mixup"}, "augment"),
        ({"image_pipeline": "fancy"}, "image_pipeline"),
        ({"mean": (0.5, 0.5, 0.5)}, "mean and std"),
        ({"std": (0.0,)}, "std > 0"),
    ]
    for change, msg in bad:
        with pytest.raises(ValueError, match=msg):
            D.register_dataset(replace(spec, **{"name": "other", **change}), registry=catalogue)
    assert catalogue.names() == ("tiny",)


def test_dataset_spec_is_keyword_only_with_hub_defaults():
    spec = D.DatasetSpec(name="x", hub_id="o/x", num_classes=2, mean=(0.5,), std=(0.5,), input_size=(1, 4, 4))
    assert (spec.image_column, spec.label_column, spec.train_split, spec.test_split) == ("image", "label", "train", "test")
    assert (spec.val_split, spec.augment, spec.image_pipeline, spec.streaming) == (None, "none", "tensor", False)
    with pytest.raises(TypeError):
        D.DatasetSpec("x", "o/x")  # type: ignore[misc]


def test_class_subset_on_registry_entry():
    s = D.get_spec("cifar10[0-4]")
    assert s.classes == (0, 1, 2, 3, 4) and s.num_classes == 5 and s.hub_id == "uoft-cs/cifar10"
    assert s.name == "cifar10[0-4]" and s.augment == "cifar"


# --- errors ----------------------------------------------------------------------------------------


def test_unknown_dataset_suggests_close_name():
    with pytest.raises(UnknownDatasetError, match=r"did you mean 'cifar10'"):
        D.get_spec("cifar01")
    with pytest.raises(UnknownDatasetError, match="imagefolder:PATH"):
        D.get_spec("totally-unknown")


@pytest.mark.parametrize(
    "name, msg",
    [
        ("digits[0-10]", "class 10 out of range"),
        ("digits[a]", "bad class subset item 'a'"),
        ("digits[4-2]", "empty"),
        ("digits[1,1]", "twice"),
        ("digits[]", "bad class subset"),
        ("digits[0-4", "bad class subset"),
    ],
)
def test_bad_class_subsets(name, msg):
    with pytest.raises(ConfigError, match=msg):
        D.get_spec(name)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"input_size": (2, 8, 8)}, "input_size"),
        ({"input_size": (1, 0, 8)}, "input_size"),
        ({"input_size": "big"}, "input_size"),
        ({"input_size": (1, 8)}, "input_size"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"limit": 0}, "limit"),
    ],
)
def test_bad_load_arguments(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        D.load_splits("digits", **kwargs)


def test_missing_local_paths(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        D.get_spec(f"imagefolder:{tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match="no file matches"):
        D.get_spec(f"parquet:{tmp_path}/*.parquet")
    with pytest.raises(ConfigError, match="missing path after 'parquet:'"):
        D.get_spec("parquet:")


def test_local_kinds_are_one_registry():
    from ticket_zoo import local_data

    assert local_data.LOCAL_KINDS.names() == ("imagefolder", "parquet")
    assert local_data.is_local("parquet:x") and not local_data.is_local("csv:x")
    # An unregistered prefix is not local data: it is an unknown dataset name.
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'csv:x'"):
        D.get_spec("csv:x")
    # A hand-made spec with an unknown kind fails where its data would be read.
    spec = replace(D.get_spec("mnist"), hub_id=None, local="csv:x")
    with pytest.raises(ConfigError, match="unknown local data kind 'csv'"):
        D.load_splits(spec)


# --- local data ------------------------------------------------------------------------------------


def _write_imagefolder(root, splits=("train", "test"), classes=(0, 1, 2), per_class=12):
    """PNG files of real digits in root/<split>/<digit>/, returns the uint8 arrays written per split."""
    written = {}
    for split in splits:
        src = D.digits_dataset()[split]
        labels = np.asarray(src["label"])
        written[split] = []
        for c in classes:
            os.makedirs(root / split / f"d{c}", exist_ok=True)
            for k, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
                im = src[int(i)]["image"]
                im.save(root / split / f"d{c}" / f"{k}.png")
                written[split].append((np.asarray(im), c))
    return written


def test_imagefolder_round_trip(tmp_path, monkeypatch):
    written = _write_imagefolder(tmp_path / "imgs")
    name = f"imagefolder:{tmp_path / 'imgs'}"
    spec = D.get_spec(name)
    assert spec.num_classes == 3 and spec.input_size == (1, 8, 8) and spec.test_split == "test"
    assert spec.hub_id is None and spec.local == name
    calls = _load_dataset_calls(monkeypatch)
    s = D.load_splits(name, cache_dir=str(tmp_path / "cache"))
    assert calls[0] == {
        "path": "imagefolder",
        "data_dir": str(tmp_path / "imgs"),
        "split": "train",
        "streaming": False,
        "cache_dir": str(tmp_path / "cache"),
    }
    assert {c["split"] for c in calls} == {"train", "test"}
    assert len(s.train) + len(s.val) == 36 and len(s.test) == 36
    # Folders d0, d1, d2 sort to labels 0, 1, 2; the pixels come back exactly (up to normalization).
    want = collections.Counter((_norm(a[None], spec).numpy().tobytes(), c) for a, c in written["test"])
    got = collections.Counter(
        (x.numpy().tobytes(), int(y)) for x, y in zip(s.test.images, s.test.labels, strict=True)
    )
    assert got == want
    assert abs(float(torch.cat([s.train.images, s.val.images]).mean())) < 0.1


def test_imagefolder_without_test_split_carves_one_and_warns(tmp_path):
    _write_imagefolder(tmp_path / "imgs", splits=("train",), per_class=20)
    name = f"imagefolder:{tmp_path / 'imgs'}"
    assert D.get_spec(name).test_split == "train"
    with pytest.warns(UserWarning, match="no test split"):
        s = D.load_splits(name, cache_dir=str(tmp_path / "cache"), seed=0)
    assert len(s.train) + len(s.val) + len(s.test) == 60
    assert len(s.test) == 6 and len(s.val) == 6
    all_x = torch.cat([s.train.images, s.val.images, s.test.images])
    assert len(_keys(all_x)) == len({a.tobytes() for a in all_x.numpy()})  # no image in two splits
    with pytest.warns(UserWarning):
        s2 = D.load_splits(name, cache_dir=str(tmp_path / "cache"), seed=5)
    assert torch.equal(s2.test.images, s.test.images)  # test does not move with the seed


@pytest.fixture()
def parquet_dir(tmp_path):
    dd = D.digits_dataset()
    out = tmp_path / "pq"
    out.mkdir()
    dd["train"].select(range(200)).to_parquet(str(out / "train-00000.parquet"))
    dd["test"].select(range(50)).to_parquet(str(out / "test-00000.parquet"))
    return out


def test_parquet_round_trip(parquet_dir, tmp_path, monkeypatch):
    name = f"parquet:{parquet_dir}/*.parquet"
    spec = D.get_spec(name)
    assert spec.num_classes == 10 and spec.input_size == (1, 8, 8) and spec.test_split == "test"
    files = {
        "train": [str(parquet_dir / "train-00000.parquet")],
        "test": [str(parquet_dir / "test-00000.parquet")],
    }
    kw = _first_split_request(monkeypatch, name, streaming=True)
    assert kw["path"] == "parquet" and kw["streaming"] is True and kw["split"] == "train"
    assert kw["data_files"] == files
    calls = _load_dataset_calls(monkeypatch)
    s = D.load_splits(name, input_size=(3, 16, 16), cache_dir=str(tmp_path / "cache"))
    (test_call,) = [c for c in calls if c["split"] == "test"]
    assert test_call["path"] == "parquet" and test_call["data_files"] == files and test_call["streaming"] is False
    assert len(s.train) + len(s.val) == 200 and len(s.test) == 50
    ref = D.digits_dataset()["test"].select(range(50))
    assert s.test.labels.tolist() == list(ref["label"])
    assert s.test.images.shape == (50, 3, 16, 16)


def test_parquet_with_plain_int_label_is_refused(tmp_path):
    ds = D.digits_dataset()["train"].select(range(20))
    ds = ds.cast_column("label", datasets.Value("int64"))
    ds.to_parquet(str(tmp_path / "data.parquet"))
    with pytest.raises(ConfigError, match="ClassLabel"):
        D.get_spec(f"parquet:{tmp_path}/data.parquet")


def test_streaming_local_parquet(parquet_dir):
    name = f"parquet:{parquet_dir}/*.parquet"
    s = D.load_splits(name, streaming=True, seed=0)
    assert isinstance(s.train, torch.utils.data.IterableDataset)
    train, val, test = list(s.train), list(s.val), list(s.test)
    assert len(train) + len(val) == 200 and len(test) == 50 and 5 <= len(val) <= 40
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    # Same examples as the map-style path, and the same seed gives the same val stream.
    mem = D.load_splits(name, seed=0, cache_dir=str(parquet_dir / "cache"))
    assert _keys(torch.stack([x for x, _ in train + val])) == _keys(
        torch.cat([mem.train.images, mem.val.images])
    )
    assert all(torch.equal(a[0], b[0]) for a, b in zip(val, list(s.val), strict=True))
    # limit caps what is read; class subsets filter and re-index on the fly.
    assert len(list(D.load_splits(name, streaming=True, limit=30).test)) == 30
    sub = D.load_splits(f"{name}[7,2]", streaming=True)
    labels = [y for _, y in sub.test]
    ref = np.asarray(D.digits_dataset()["test"].select(range(50))["label"])
    assert sorted(set(labels)) == [0, 1] and labels.count(0) == int((ref == 7).sum())
    # DataLoader batches a stream.
    xb, yb = next(iter(torch.utils.data.DataLoader(s.test, batch_size=8)))
    assert xb.shape == (8, 1, 8, 8) and yb.shape == (8,)


def test_streaming_digits_carves_val_by_seed():
    a = D.load_splits("digits", streaming=True, seed=0, limit=200)
    b = D.load_splits("digits", streaming=True, seed=1, limit=200)
    va, vb = [y for _, y in a.val], [y for _, y in b.val]
    assert len(list(a.train)) + len(va) == 200
    assert va != vb


def test_streaming_without_test_split_carves_disjoint_parts(tmp_path):
    _write_imagefolder(tmp_path / "imgs", splits=("train",), per_class=20)
    with pytest.warns(UserWarning, match="no test split"):
        s = D.load_splits(f"imagefolder:{tmp_path / 'imgs'}", streaming=True, val_fraction=0.2)
    parts = [torch.stack([x for x, _ in p]) for p in (s.train, s.val, s.test)]
    assert sum(len(p) for p in parts) == 60 and all(len(p) > 0 for p in parts)
    everything = torch.cat(parts)
    assert len(_keys(everything)) == len({a.tobytes() for a in everything.numpy()})


def test_local_validation_split_is_used_not_carved(tmp_path):
    dd = D.digits_dataset()
    out = tmp_path / "pq"
    out.mkdir()
    dd["train"].select(range(100)).to_parquet(str(out / "train.parquet"))
    dd["train"].select(range(100, 130)).to_parquet(str(out / "validation.parquet"))
    dd["test"].select(range(40)).to_parquet(str(out / "test.parquet"))
    spec = D.get_spec(f"parquet:{out}/*.parquet")
    assert spec.val_split == "validation"
    s = D.load_splits(spec, cache_dir=str(tmp_path / "cache"))
    assert (len(s.train), len(s.val), len(s.test)) == (100, 30, 40)
    assert s.val.labels.tolist() == list(dd["train"].select(range(100, 130))["label"])
