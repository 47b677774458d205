"""Tests for ticket_zoo.models: the paper networks in timm's registry and the head helpers."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn as nn

from ticket_zoo.errors import ConfigError
from ticket_zoo.models import PAPER_ARCHS, classifier_name, classifier_param_names, replace_head

# smallest img_size each arch accepts (Conv-x flatten a fixed-size map after 1/2/3 max-pools)
_MIN_SIZE = {"conv2": 2, "conv4": 4, "conv6": 8}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("img_size", [8, 32])
@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("arch", PAPER_ARCHS)
def test_create_and_forward(arch: str, in_chans: int, img_size: int) -> None:
    model = timm.create_model(arch, pretrained=False, num_classes=7, in_chans=in_chans, img_size=img_size)
    out = model(torch.randn(2, in_chans, img_size, img_size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert model.num_classes == 7 and model.in_chans == in_chans
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    assert cfg["classifier"] == "head" and cfg["num_classes"] == 7
    assert cfg["input_size"] == (in_chans, img_size, img_size)
    assert len(cfg["mean"]) == len(cfg["std"]) == in_chans
    head = model.get_classifier()
    assert head is model.head and isinstance(head, nn.Linear) and head.out_features == 7
    # the head comes last, so parameter order reads input -> output
    assert list(dict(model.named_parameters()))[-2:] == ["head.weight", "head.bias"]


def test_all_archs_registered_and_listed() -> None:
    listed = set(timm.list_models())
    for arch in PAPER_ARCHS:
        assert arch in listed
        cfg = timm.models.get_pretrained_cfg(arch)
        assert cfg is not None and cfg.classifier == "head" and not cfg.has_weights


def test_defaults_match_papers() -> None:
    lenet = timm.create_model("lenet_300_100")
    assert lenet.in_chans == 1 and lenet.num_classes == 10
    assert lenet.pretrained_cfg["input_size"] == (1, 28, 28)
    # 784-300-100-10, exactly
    assert _n_params(lenet) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    conv4 = timm.create_model("conv4")
    assert conv4.pretrained_cfg["input_size"] == (3, 32, 32)
    assert conv4.fc1.in_features == 128 * 8 * 8
    assert timm.create_model("conv6", img_size=8).fc1.in_features == 256  # 8x8 digits -> 1x1x256


def test_param_counts() -> None:
    assert 19.5e6 <= _n_params(timm.create_model("vgg19_cifar", num_classes=10)) <= 20.5e6
    assert 0.26e6 <= _n_params(timm.create_model("resnet20_cifar", num_classes=10)) <= 0.28e6
    assert 0.84e6 <= _n_params(timm.create_model("resnet56_cifar", num_classes=10)) <= 0.87e6
    vgg11 = timm.create_model("vgg11_cifar", num_classes=10)
    assert vgg11.head.in_features == 512  # one linear classifier on globally pooled features
    assert sum(isinstance(m, nn.Linear) for m in vgg11.modules()) == 1


def test_resnet_projection_shortcuts() -> None:
    model = timm.create_model("resnet20_cifar")
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == 3
    assert isinstance(model.layer1[0].downsample, nn.Identity)  # same shape: identity shortcut
    proj = model.layer2[0].downsample  # 16 -> 32 channels, stride 2: 1x1 conv + BN
    assert isinstance(proj[0], nn.Conv2d) and proj[0].kernel_size == (1, 1) and proj[0].stride == (2, 2)
    assert isinstance(proj[1], nn.BatchNorm2d)
    assert len(timm.create_model("resnet56_cifar").layer3) == 9


def test_vgg_small_inputs_skip_pools_and_keep_names() -> None:
    small = timm.create_model("vgg19_cifar", img_size=8)
    big = timm.create_model("vgg19_cifar", img_size=32)
    assert list(small.state_dict()) == list(big.state_dict())
    pools = [type(m) for m in small.features if isinstance(m, (nn.MaxPool2d, nn.Identity))]
    # 8 -> 4 -> 2 -> 1, then the fourth pool would give 0 pixels and is skipped
    assert pools == [nn.MaxPool2d, nn.MaxPool2d, nn.MaxPool2d, nn.Identity]
    assert small.forward_features(torch.randn(2, 3, 8, 8)).shape == (2, 512, 1, 1)
    # non-square and odd sizes work too
    assert timm.create_model("vgg11_cifar", img_size=(5, 9))(torch.randn(2, 3, 5, 9)).shape == (2, 10)


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("conv2", {"img_size": 1}),
        ("conv4", {"img_size": 3}),
        ("conv6", {"img_size": 7}),
        ("conv6", {"img_size": (8, 4)}),
        ("vgg19_cifar", {"img_size": 0}),
        ("resnet20_cifar", {"img_size": -4}),
        ("lenet_300_100", {"img_size": "28"}),
        ("lenet_300_100", {"img_size": (28, 28, 28)}),
        ("conv4", {"in_chans": 0}),
        ("conv4", {"in_chans": True}),
        ("vgg11_cifar", {"num_classes": -1}),
        ("resnet20_cifar", {"pretrained": True}),
        ("conv2", {"drop_rate": 0.5}),
    ],
)
def test_bad_arguments_raise_config_error(arch: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        timm.create_model(arch, **kwargs)


def test_img_size_error_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"img_size >= 8"):
        timm.create_model("conv6", img_size=7)


def test_same_seed_same_init() -> None:
    torch.manual_seed(3)
    a = timm.create_model("resnet20_cifar", num_classes=7, img_size=8)
    torch.manual_seed(3)
    b = timm.create_model("resnet20_cifar", num_classes=7, img_size=8)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_init_schemes() -> None:
    torch.manual_seed(0)
    lenet = timm.create_model("lenet_300_100")
    w = lenet.fc1.weight
    assert math.isclose(w.std().item(), math.sqrt(2 / (784 + 300)), rel_tol=0.05)  # Glorot normal
    assert torch.count_nonzero(lenet.fc1.bias) == 0
    vgg = timm.create_model("vgg11_cifar")
    conv = vgg.features[4]  # 64 -> 128, fan_in 64*9
    assert isinstance(conv, nn.Conv2d)
    assert math.isclose(conv.weight.std().item(), math.sqrt(2 / (64 * 9)), rel_tol=0.05)  # Kaiming
    assert torch.equal(vgg.features[1].weight, torch.ones(64))


def test_num_classes_zero_gives_features() -> None:
    model = timm.create_model("vgg11_cifar", num_classes=0, img_size=8)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 512)
    assert classifier_name(model) == "head"
    assert classifier_param_names(model) == []


@pytest.fixture(scope="module")
def timm_resnet18() -> nn.Module:
    return timm.create_model("resnet18", pretrained=False, num_classes=7)


@pytest.fixture(scope="module")
def timm_vgg11() -> nn.Module:
    return timm.create_model("vgg11", pretrained=False, num_classes=7)


def test_classifier_name_ours() -> None:
    for arch in PAPER_ARCHS:
        model = timm.create_model(arch, num_classes=7, img_size=8)
        assert classifier_name(model) == "head"
        assert classifier_param_names(model) == ["head.weight", "head.bias"]


def test_classifier_name_timm_models(timm_resnet18: nn.Module, timm_vgg11: nn.Module) -> None:
    assert classifier_name(timm_resnet18) == "fc"
    assert classifier_param_names(timm_resnet18) == ["fc.weight", "fc.bias"]
    name = classifier_name(timm_vgg11)
    assert name == "head.fc"
    assert timm_vgg11.get_submodule(name) is timm_vgg11.get_classifier()
    assert classifier_param_names(timm_vgg11) == ["head.fc.weight", "head.fc.bias"]


def test_classifier_name_fallbacks() -> None:
    plain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    assert classifier_name(plain) == "2"
    assert classifier_param_names(plain) == ["2.weight", "2.bias"]
    # a cfg naming a module that does not exist falls back to the last Linear too
    plain.pretrained_cfg = {"classifier": "fc"}
    assert classifier_name(plain) == "2"
    with pytest.raises(ConfigError, match="classifier"):
        classifier_name(nn.Sequential(nn.Conv2d(1, 2, 3)))


@pytest.mark.parametrize("arch", ["conv4", "resnet20_cifar"])
def test_replace_head_ours(arch: str) -> None:
    model = timm.create_model(arch, num_classes=10, img_size=8)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    replace_head(model, 3, seed=5)
    assert model.num_classes == 3 and model.pretrained_cfg["num_classes"] == 3
    assert model.get_classifier().out_features == 3
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)

    other = replace_head(timm.create_model(arch, num_classes=10, img_size=8), 3, seed=5)
    assert torch.equal(other.head.weight, model.head.weight)
    different = replace_head(timm.create_model(arch, num_classes=10, img_size=8), 3, seed=6)
    assert not torch.equal(different.head.weight, model.head.weight)


def test_replace_head_leaves_global_rng_alone() -> None:
    model = timm.create_model("lenet_300_100")
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    replace_head(model, 4, seed=9)
    assert torch.equal(torch.rand(4), expected)


def test_replace_head_timm_models(timm_resnet18: nn.Module, timm_vgg11: nn.Module) -> None:
    for model, head in ((timm_resnet18, "fc"), (timm_vgg11, "head.fc")):
        before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(head + ".")}
        assert replace_head(model, 5, seed=1) is model
        assert model.get_submodule(head).out_features == 5
        assert model.num_classes == 5
        first = model.get_submodule(head).weight.clone()
        replace_head(model, 5, seed=1)
        assert torch.equal(model.get_submodule(head).weight, first)
        after = model.state_dict()
        for k, v in before.items():
            assert torch.equal(v, after[k]), k


def test_replace_head_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        replace_head(timm.create_model("conv2", img_size=8), -1)
    with pytest.raises(ConfigError, match="reset_classifier"):
        replace_head(nn.Sequential(nn.Linear(2, 2)), 3)


def test_reset_classifier_rejects_unknown_pool() -> None:
    with pytest.raises(ConfigError):
        timm.create_model("resnet20_cifar").reset_classifier(3, global_pool="max")


def test_reregistering_is_silent_and_keeps_working() -> None:
    # Registering our own names again (a module reload) must not warn (timm warns on every overwrite),
    # and every name then points at the reloaded module's function. A fresh interpreter, so reloading
    # cannot swap classes under the other tests.
    code = (
        "import importlib, warnings, timm, ticket_zoo.models as m\n"
        "warnings.simplefilter('error')\n"
        "m = importlib.reload(m)\n"
        "for name in m.PAPER_ARCHS:\n"
        "    assert timm.models.model_entrypoint(name) is getattr(m, name), name\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_module_reload_is_idempotent() -> None:
    # A fresh interpreter, so reloading cannot swap classes under the other tests.
    code = (
        "import importlib, timm, torch, ticket_zoo.models as m\n"
        "importlib.reload(m)\nimportlib.reload(m)\n"
        "out = timm.create_model('conv2', num_classes=3, img_size=8)(torch.zeros(2, 3, 8, 8))\n"
        "assert out.shape == (2, 3), out.shape\n"
        "assert type(timm.create_model('conv2')).__module__ == 'ticket_zoo.models'\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
