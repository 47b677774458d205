"""Photo sets through timm's data pipeline (ticket_zoo.images): which sets take it, eval examples equal
timm's eval transform exactly, training views are a pure function of (seed, batch, example) whatever
the worker count or a resume, memory does not grow with the data, tickets record their data config."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from torch import nn

from ticket_zoo import data as D
from ticket_zoo.errors import ConfigError
from ticket_zoo.images import TimmImageDataset
from ticket_zoo.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
# Mixed sizes and aspect ratios (W, H): wider, taller and smaller than the inputs used below.
SIZES = [(300, 120), (200, 500), (64, 64), (150, 90), (96, 128), (333, 222), (41, 75)]


def write_photos(root: Path, n: int, classes: int = 3, seed: int = 0) -> Path:
    """``n`` JPEGs of mixed sizes in an ImageFolder layout ``root/class_<c>/<k>.jpg``."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        c = k % classes
        w, h = SIZES[k % len(SIZES)]
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * (c + 1)) % 256, (yy * 2) % 256, ((xx + yy) * 3 + 40 * c) % 256], -1)
        pixels = np.clip(base + rng.integers(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / f"class_{c}" / f"{k}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos") / "imgs", 240)


def _load(root: Path, **kw) -> D.Splits:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no test split: carving one" (expected here)
        return D.load_splits(f"imagefolder:{root}", cache_dir=str(root.parent / "cache"), **kw)


def _timm_eval(spec: D.DatasetSpec, size):
    cfg = resolve_data_config(
        args={"input_size": size, "mean": spec.mean, "std": spec.std, "interpolation": "bilinear",
              "crop_pct": 0.875}
    )  # fmt: skip
    return create_transform(**cfg, is_training=False)


# --- which path ------------------------------------------------------------------------------------


def test_photo_sets_take_timm_path_and_small_image_sets_keep_tensors(photos, tmp_path):
    spec = D.get_spec(f"imagefolder:{photos}")
    assert spec.image_pipeline == "timm" and spec.image_size == (500, 333)
    assert spec.input_size == (3, 224, 224)  # mixed sizes: timm's default input, not the first image's
    assert D.get_spec("imagenet").image_pipeline == "timm" and D.get_spec("places365").image_pipeline == "timm"
    for name in ("cifar10", "mnist", "svhn", "digits"):
        assert D.get_spec(name).image_pipeline == "tensor", name

    s = _load(photos, input_size=(3, 32, 32))
    assert isinstance(s.train, TimmImageDataset) and isinstance(s.test, TimmImageDataset)
    assert s.data_config == {
        "input_size": [3, 32, 32], "interpolation": "bilinear", "mean": list(spec.mean),
        "std": list(spec.std), "crop_pct": 0.875, "crop_mode": "center",
    }  # fmt: skip
    json.dumps(s.data_config)  # JSON-ready: it goes into ticket meta as is

    digits = D.load_splits("digits[0-4]", input_size=(3, 32, 32))
    assert digits.data_config is None and isinstance(digits.train, D.ImageTensorDataset)

    # Local images all of one size: resized (tensor path) unless they are larger than the input.
    small = tmp_path / "small"
    for k in range(12):
        (small / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 20 * k, np.uint8)).save(small / f"c{k % 2}" / f"{k}.png")
    assert D.get_spec(f"imagefolder:{small}").image_pipeline == "auto"
    assert _load(small).data_config is None
    assert _load(small, input_size=(3, 32, 32)).data_config is None
    assert _load(small, input_size=(3, 8, 8)).data_config["input_size"] == [3, 8, 8]
    assert _load(photos, input_size=(3, 32, 32), pipeline="tensor").data_config is None
    with pytest.raises(ConfigError, match="pipeline"):
        _load(small, pipeline="fancy")


def test_loading_photo_splits_decodes_no_image(photos, monkeypatch):
    import datasets

    D.get_spec(f"imagefolder:{photos}")  # the spec (mean/std from a sample) is read once and cached
    decoded = []
    decode = datasets.Image.decode_example
    monkeypatch.setattr(
        datasets.Image, "decode_example", lambda self, value, **kw: decoded.append(1) or decode(self, value, **kw)
    )
    s = _load(photos, input_size=(3, 32, 32))
    assert decoded == []  # nothing decoded up front: no split is ever held in memory
    s.train.__getitems__([0, 1, 2])
    s.test[0]
    assert len(decoded) == 4  # one decode per example asked for


# --- eval: exactly timm's eval transform -----------------------------------------------------------


@pytest.mark.parametrize("size", [(3, 64, 64), (3, 48, 80)])
def test_every_eval_example_is_timm_eval_transform_of_its_image(photos, size):
    s = _load(photos, input_size=size)
    transform = _timm_eval(s.spec, size)
    expected = {}
    for path in sorted(photos.glob("class_*/*.jpg")):
        x = transform(Image.open(path).convert("RGB"))
        expected[x.numpy().tobytes()] = (x, int(path.parent.name.split("_")[1]))
    assert len(expected) == 240  # every image distinct, so a tensor names its file
    seen = collections.Counter()
    for part in (s.val, s.test):
        loader = torch.utils.data.DataLoader(part, batch_size=32)  # as train() evaluates them
        for xb, yb in loader:
            for x, y in zip(xb, yb, strict=True):
                want, label = expected[x.numpy().tobytes()]
                assert torch.equal(x, want) and int(y) == label
                seen[x.numpy().tobytes()] += 1
    assert sum(seen.values()) == len(s.val) + len(s.test) == len(seen)  # no image twice
    assert s.val[0][0].shape == size


# --- training views --------------------------------------------------------------------------------


def test_training_views_are_a_function_of_seed_batch_and_example(photos):
    s = _load(photos, input_size=(3, 32, 32), seed=0)
    other = _load(photos, input_size=(3, 32, 32), seed=0)
    batch = [5, 0, 17, 3]
    a = torch.stack([x for x, _ in s.train.__getitems__(batch)])
    assert torch.equal(a, torch.stack([x for x, _ in other.train.__getitems__(batch)]))  # same seed
    assert torch.equal(a, torch.stack([x for x, _ in s.train.__getitems__(batch)]))  # repeatable
    # Another batch (e.g. the next epoch's) gives example 0 another crop.
    b = dict(zip([0, 9, 2], [x for x, _ in s.train.__getitems__([0, 9, 2])], strict=True))
    assert not torch.equal(a[1], b[0])
    # It really is a random crop / flip, not the eval view.
    assert not torch.equal(s.train[0][0], _timm_eval(s.spec, (3, 32, 32))(s.train.decoder.decode_example(
        s.train.ds[0]["image"]).convert("RGB")))  # fmt: skip
    # The caller's RNG streams are left alone.
    torch.manual_seed(123)
    before = torch.get_rng_state()
    s.train.__getitems__(batch)
    assert torch.equal(torch.get_rng_state(), before)


class _Recorder(nn.Module):
    """Records every training input; ``fail_at`` raises at that step (a kill)."""

    def __init__(self, num_classes: int, fail_at: int | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, num_classes)
        self.seen: list[torch.Tensor] = []
        self.fail_at = fail_at
        self.step = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            if self.fail_at is not None and self.step == self.fail_at:
                raise KeyboardInterrupt("killed")
            self.seen.append(x.detach().clone())
            self.step += 1
        return self.fc(x.flatten(1))


def _views(splits, *, seed: int, workers: int, ckpt=None, fail_at=None, steps: int = 10) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = _Recorder(splits.spec.num_classes, fail_at)
    cfg = TrainConfig(optimizer="sgd", lr=0.01, iterations=steps, batch_size=8, eval_every=5,
                      checkpoint_every=2, num_workers=workers, seed=seed)  # fmt: skip
    try:
        train(model, splits.train, splits.val, cfg, checkpoint_dir=ckpt, progress=False)
    except KeyboardInterrupt:
        pass
    return model.seen


def test_training_views_same_for_workers_and_resume_differ_across_seeds(photos, tmp_path):
    # 40 examples read, ~32 train: 4 steps per epoch, so 10 steps cross two epoch boundaries.
    s = _load(photos, input_size=(3, 32, 32), limit=40)
    assert len(s.train) // 8 == 4
    ref = _views(s, seed=0, workers=0)
    assert len(ref) == 10 and ref[0].shape == (8, 3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(ref, _views(s, seed=0, workers=2), strict=True))
    other = _views(s, seed=1, workers=0)
    assert not any(torch.equal(a, b) for a, b in zip(ref, other, strict=True))
    # Killed at step 5 (checkpoint at step 4), then resumed: steps 4.. see exactly the same views.
    ckpt = tmp_path / "ckpt"
    first = _views(s, seed=0, workers=2, ckpt=ckpt, fail_at=5)
    assert len(first) == 5 and (ckpt / "checkpoint.safetensors").is_file()
    resumed = _views(s, seed=0, workers=0, ckpt=ckpt)
    assert len(resumed) == 6
    assert all(torch.equal(a, b) for a, b in zip(ref[4:], resumed, strict=True))
    # Across epochs an example gets a new crop: no training input repeats.
    keys = {x.numpy().tobytes() for batch in ref for x in batch}
    assert len(keys) == 80


def test_streaming_photos_use_timm_transforms(photos):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        s = D.load_splits(f"imagefolder:{photos}", input_size=(3, 32, 32), streaming=True, limit=60)
    transform = _timm_eval(s.spec, (3, 32, 32))
    expected = {transform(Image.open(p).convert("RGB")).numpy().tobytes() for p in photos.glob("class_*/*.jpg")}
    test = list(s.test)
    assert test and all(x.numpy().tobytes() in expected for x, _ in test)
    a, b = list(s.train), list(s.train)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b, strict=True))  # seeded per position
    assert not any(x.numpy().tobytes() in expected for x, _ in a)  # random-resized crops, not eval views


# --- tickets record their data config --------------------------------------------------------------


def test_card_has_a_data_config_section_only_when_meta_has_one():
    from ticket_zoo.cards import render_card
    from ticket_zoo.masks import magnitude_masks, prunable_weights
    from ticket_zoo.ticket import Ticket, create_model

    model = create_model("lenet_300_100", {"num_classes": 3})
    masks = magnitude_masks(prunable_weights(model), 0.5)
    plain = Ticket.from_model(model, masks, arch="lenet_300_100", arch_kwargs={"num_classes": 3})
    assert "Data config" not in str(render_card(plain))
    cfg = D.data_config("imagenet", (3, 160, 160))
    card = str(render_card(plain.with_(meta={"data_config": cfg}), repo_id="org/x"))
    assert "## Data config" in card and "| 3×160×160 | 0.485, 0.456, 0.406 |" in card
    assert "bilinear | 0.875 |" in card and 'create_transform(**tz.load("hf-hub:org/x").meta["data_config"])' in card


# Peak RSS that the find adds on top of the imports (what lazily loaded libraries map varies by run).
_MAXRSS = textwrap.dedent(
    """
    import resource, sys
    import datasets, huggingface_hub, timm, torch
    from ticket_zoo import api, cards, cli, data, find, train
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = cli.main(sys.argv[1:])
    print("GROWTH_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
    sys.exit(code)
    """
)


def _find(tmp_path: Path, n: int) -> tuple[int, Path]:
    """A one-level resnet18 find at 32x32 over ``n`` photos in a subprocess: (peak RSS growth in KiB, out)."""
    folder = write_photos(tmp_path / f"photos{n}", n, seed=n)
    recipe = tmp_path / f"r{n}.yaml"
    recipe.write_text(textwrap.dedent(f"""
        arch: resnet18
        dataset: imagefolder:{folder}
        input_size: [3, 32, 32]
        levels: 0
        seed: 0
        train: {{optimizer: sgd, lr: 0.01, iterations: 3, batch_size: 16, num_workers: 0}}
    """))  # fmt: skip
    out = tmp_path / f"out{n}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf"), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", _MAXRSS, "find", "--config", str(recipe), "--out", str(out), "--quiet"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    kib = int(proc.stdout.split("GROWTH_KIB")[1].split()[0])
    return kib, out


@pytest.mark.slow
def test_find_memory_does_not_grow_with_the_data_and_ticket_records_data_config(tmp_path):
    import ticket_zoo as tz
    from ticket_zoo.ticket import create_model

    small_kib, out = _find(tmp_path, 75)
    large_kib, _ = _find(tmp_path, 300)
    model_bytes = sum(p.numel() * p.element_size() for p in create_model("resnet18", {"num_classes": 3}).parameters())
    assert abs(large_kib - small_kib) * 1024 < model_bytes, (small_kib, large_kib, model_bytes)

    ticket = tz.load(out / "level_00")
    cfg = ticket.meta["data_config"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bilinear"
    assert len(cfg["mean"]) == len(cfg["std"]) == 3
    create_transform(**cfg)  # a user can build the eval transform straight from the meta
    card = (out / "level_00" / "README.md").read_text()
    assert "## Data config" in card and "| 3×32×32 |" in card
