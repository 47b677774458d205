"""The lottery-ticket paper networks, registered into timm's model registry.

Importing this module registers the networks of Frankle & Carbin (2019) and of the lottery-ticket
follow-ups (LeNet-300-100, Conv-2/4/6, CIFAR VGG-11/16/19, CIFAR ResNet-20/56) with
:func:`timm.models.register_model`, so they are built like any timm model. ``import ticket_zoo``
is enough: it imports this module as soon as timm is imported (or at once if timm already is),
without loading torch itself::

    >>> import ticket_zoo
    >>> import timm  # the paper networks are registered from here on
    >>> model = timm.create_model("conv4", num_classes=10, in_chans=1, img_size=8)
    >>> model.pretrained_cfg["classifier"]
    'head'

As in timm's own model files, every variant is a tiny function under ``@register_model`` that
forwards to one private builder (:func:`_create`). No pretrained weights exist for these networks:
``pretrained=True`` raises :class:`~ticket_zoo.errors.ConfigError`.

The module also holds the head helpers that work for *any* timm model (the paper networks here and
timm's own, e.g. ``resnet18`` or ``vgg11``): :func:`classifier_name`,
:func:`classifier_param_names` and :func:`replace_head`.

Design choices worth knowing:

* Every model has ``num_classes``, ``in_chans``, ``num_features``, ``pretrained_cfg`` (alias
  ``default_cfg``), ``get_classifier()``, ``reset_classifier()``, ``forward_features()`` and
  ``forward_head()`` like timm models. The classifier is always the module ``head`` (an
  ``nn.Linear``, or ``nn.Identity`` when ``num_classes=0``, timm's convention for "features only").
* ``pretrained_cfg`` describes *this instance* (its ``num_classes`` and ``input_size`` follow the
  constructor arguments), since there is no pretrained checkpoint it could describe instead.
  ``mean``/``std`` are the source dataset's (MNIST for LeNet, CIFAR-10 otherwise); for another
  channel count the per-channel average is repeated ``in_chans`` times.
* CIFAR VGG pooling: the cfg's max-pools are kept only while the feature map is at least 2 pixels
  on both sides; a pool that would shrink a side below 1 becomes ``nn.Identity`` (same index, so
  parameter names never depend on ``img_size``). The last cfg max-pool is dropped and a global
  average pool feeds the single linear classifier, so any ``img_size >= 1`` works.
* Conv-2/4/6 flatten the last feature map into a fixed-size linear layer, so their flatten size
  depends on ``img_size`` and ``img_size`` must be at least ``2 ** pools`` (2, 4, 8).
* Biases start at zero; BatchNorm at weight 1, bias 0. Glorot (``xavier_normal_``) for LeNet and
  Conv-x as in Frankle & Carbin; Kaiming (``kaiming_normal_``, fan-in, ReLU gain) for VGG and ResNet.
* Re-importing or reloading this module re-registers the same names silently (timm overwrites a
  duplicate name with a warning; that warning is only suppressed when the earlier registration came
  from this very module, so a genuine name clash with another library still shows).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import (
    generate_default_cfgs,
    is_model,
    model_entrypoint,
    register_model,
    resolve_pretrained_cfg,
)

from ticket_zoo.errors import ConfigError

__all__ = [
    "PAPER_ARCHS",
    "classifier_name",
    "classifier_param_names",
    "replace_head",
]

PAPER_ARCHS: tuple[str, ...] = (
    "lenet_300_100",
    "conv2",
    "conv4",
    "conv6",
    "vgg11_cifar",
    "vgg16_cifar",
    "vgg19_cifar",
    "resnet20_cifar",
    "resnet56_cifar",
)

_MNIST_MEAN, _MNIST_STD = (0.1307,), (0.3081,)
_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

# timm's factory passes these to every entrypoint; they mean nothing for weight-less models.
_TIMM_PLUMBING = frozenset({"cache_dir", "features_only"})


# --- validation ------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    # bool is an int subclass; `in_chans=True` is a bug, not a channel count
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def _check_img_size(img_size: Any) -> tuple[int, int]:
    """Accept ``int`` or ``(H, W)``; return ``(H, W)``."""
    if isinstance(img_size, Sequence) and not isinstance(img_size, str):
        if len(img_size) != 2:
            raise ConfigError(f"img_size must be an int or an (H, W) pair, got {img_size!r}.")
        return _check_int("img_size[0]", img_size[0], 1), _check_int("img_size[1]", img_size[1], 1)
    size = _check_int("img_size", img_size, 1)
    return size, size


def _norm_stats(default: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    """Dataset mean/std for ``in_chans`` channels (channel average repeated if the count differs)."""
    if len(default) == in_chans:
        return default
    return (round(sum(default) / len(default), 4),) * in_chans


# --- initialisation --------------------------------------------------------------------------------


def _init_glorot(module: nn.Module) -> None:
    """Gaussian Glorot init, as in Frankle & Carbin (2019); zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _init_kaiming(module: nn.Module) -> None:
    """He (Kaiming) normal init for conv/linear, BatchNorm at identity; zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# --- the shared timm-like surface --------------------------------------------------------------------


class _PaperNet(nn.Module):
    """timm-style surface shared by every paper network: head ``head``, cfg, reset/get classifier."""

    _init_fn: Callable[[nn.Module], None] = staticmethod(_init_glorot)
    _pools_globally = False  # VGG/ResNet pool in forward_head; MLP-style nets do not

    def __init__(self, num_classes: int, in_chans: int, num_features: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = num_features
        # Subclasses assign `self.head` after their body, so the head comes last in state_dict().
        self.head: nn.Module
        self.pretrained_cfg: dict[str, Any] = {}
        self.default_cfg = self.pretrained_cfg  # timm's backwards-compatible alias

    def _make_head(self, num_classes: int) -> nn.Module:
        if num_classes == 0:  # timm convention: a model without classifier returns features
            return nn.Identity()
        head = nn.Linear(self.num_features, num_classes)
        self._init_fn(head)
        return head

    def get_classifier(self) -> nn.Module:
        """The classifier module (``self.head``), as timm models return it."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` (0 = no head)."""
        _check_int("num_classes", num_classes, 0)
        allowed = (None, "avg") if self._pools_globally else (None,)
        if global_pool not in allowed:
            raise ConfigError(
                f"{type(self).__name__} supports global_pool in {allowed}, got {global_pool!r}."
            )
        old = next(self.head.parameters(), None)
        if old is None:
            old = next(self.parameters(), None)
        head = self._make_head(num_classes)
        if old is not None:  # keep the head on the model's device and dtype
            head = head.to(device=old.device, dtype=old.dtype)
        self.head = head
        self.num_classes = num_classes
        self.pretrained_cfg["num_classes"] = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global-pool (if the family pools) and classify; ``pre_logits`` stops before the head."""
        if self._pools_globally:
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --- LeNet-300-100 ---------------------------------------------------------------------------------


class LeNet300100(_PaperNet):
    """Fully connected LeNet-300-100 (Frankle & Carbin 2019, MNIST): 784-300-100-classes."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: tuple[int, int] = (28, 28)):
        super().__init__(num_classes, in_chans, num_features=100)
        self.fc1 = nn.Linear(in_chans * img_size[0] * img_size[1], 300)
        self.fc2 = nn.Linear(300, 100)
        self.head = self._make_head(num_classes)
        self.apply(self._init_fn)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        return F.relu(self.fc2(x))


# --- Conv-2 / Conv-4 / Conv-6 ----------------------------------------------------------------------


class ConvNet(_PaperNet):
    """Conv-2/4/6 of Frankle & Carbin (2019): pairs of 3x3 convs + max-pool, then 256-256-classes."""

    def __init__(
        self,
        widths: Sequence[int],
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: tuple[int, int] = (32, 32),
    ):
        super().__init__(num_classes, in_chans, num_features=256)
        pools = len(widths)
        if min(img_size) < 2**pools:
            raise ConfigError(
                f"img_size {img_size} is too small for conv{2 * pools}: its {pools} max-pools need "
                f"img_size >= {2**pools}. Resize the inputs or pick a shallower network."
            )
        layers: list[nn.Module] = []
        chans = in_chans
        for width in widths:  # each width is one conv-conv-pool block
            layers += [nn.Conv2d(chans, width, 3, padding=1), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            chans = width
        self.features = nn.Sequential(*layers)
        flat = chans * (img_size[0] // 2**pools) * (img_size[1] // 2**pools)
        self.fc1 = nn.Linear(flat, 256)
        self.fc2 = nn.Linear(256, 256)
        self.head = self._make_head(num_classes)
        self.apply(self._init_fn)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        x = F.relu(self.fc1(x))
        return F.relu(self.fc2(x))


# --- CIFAR VGG -------------------------------------------------------------------------------------

# Standard VGG cfgs ("M" = 2x2 max-pool) without the last pool: global average pooling replaces it.
_VGG_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
    ],
}


class VGGCifar(_PaperNet):
    """CIFAR VGG (as in Frankle & Carbin 2019 / open_lth): conv3x3-BN-ReLU stacks, GAP, one linear."""

    _init_fn = staticmethod(_init_kaiming)
    _pools_globally = True

    def __init__(
        self,
        cfg: Sequence[int | str],
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: tuple[int, int] = (32, 32),
    ):
        super().__init__(num_classes, in_chans, num_features=512)
        layers: list[nn.Module] = []
        chans, (h, w) = in_chans, img_size
        for item in cfg:
            if item == "M":
                # Skip (Identity) a pool that would shrink a side below 1: small inputs still work
                # and parameter names stay the same for every img_size.
                if h >= 2 and w >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                else:
                    layers.append(nn.Identity())
                continue
            width = int(item)
            layers += [nn.Conv2d(chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
            layers.append(nn.ReLU(inplace=True))
            chans = width
        self.features = nn.Sequential(*layers)
        self.head = self._make_head(num_classes)
        self.apply(self._init_fn)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


# --- CIFAR ResNet ----------------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; 1x1 conv-BN projection shortcut when the shape changes (option B)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_chans != out_chans:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chans)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class ResNetCifar(_PaperNet):
    """He et al. (2016) CIFAR ResNet-(6n+2): 16/32/64 channels, n basic blocks per stage, GAP, linear."""

    _init_fn = staticmethod(_init_kaiming)
    _pools_globally = True

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: tuple[int, int] = (32, 32),  # any size works; kept for a uniform signature
    ):
        super().__init__(num_classes, in_chans, num_features=64)
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        chans = 16
        stages = []
        for i, width in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(_BasicBlock(chans, width, stride=2 if (i > 0 and j == 0) else 1))
                chans = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.head = self._make_head(num_classes)
        self.apply(self._init_fn)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


# --- the one builder -------------------------------------------------------------------------------


def _cfg(first_conv: str, mean: tuple[float, ...], std: tuple[float, ...], size: int) -> dict[str, Any]:
    return {
        "num_classes": 10,
        "input_size": (len(mean), size, size),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": mean,
        "std": std,
        "first_conv": first_conv,
        "classifier": "head",
        "license": "apache-2.0",
    }


# Looked up by timm's register_model (module attribute `default_cfgs`), so `timm.list_models` and
# `timm.models.get_pretrained_cfg` know these names. None of them has weights (no url / hf_hub_id).
default_cfgs = generate_default_cfgs(
    {
        "lenet_300_100": _cfg("fc1", _MNIST_MEAN, _MNIST_STD, 28),
        "conv2": _cfg("features.0", _CIFAR_MEAN, _CIFAR_STD, 32),
        "conv4": _cfg("features.0", _CIFAR_MEAN, _CIFAR_STD, 32),
        "conv6": _cfg("features.0", _CIFAR_MEAN, _CIFAR_STD, 32),
        "vgg11_cifar": _cfg("features.0", _CIFAR_MEAN, _CIFAR_STD, 32),
        "vgg16_cifar": _cfg("features.0", _CIFAR_MEAN, _CIFAR_STD, 32),
        "vgg19_cifar": _cfg("features.0", _CIFAR_MEAN, _CIFAR_STD, 32),
        "resnet20_cifar": _cfg("conv1", _CIFAR_MEAN, _CIFAR_STD, 32),
        "resnet56_cifar": _cfg("conv1", _CIFAR_MEAN, _CIFAR_STD, 32),
    }
)


def _create(
    variant: str,
    model_cls: Callable[..., _PaperNet],
    *cls_args: Any,
    pretrained: bool = False,
    pretrained_cfg: Any = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    num_classes: int = 10,
    in_chans: int | None = None,
    img_size: int | Sequence[int] | None = None,
    **kwargs: Any,
) -> _PaperNet:
    """Validate timm's arguments, build ``model_cls`` and attach a cfg describing the instance."""
    if pretrained:
        raise ConfigError(
            f"No pretrained weights exist for {variant!r}: create it with pretrained=False and train it "
            "(or load a ticket with ticket_zoo.load)."
        )
    unknown = sorted(k for k, v in kwargs.items() if k not in _TIMM_PLUMBING and v is not None)
    if unknown:
        raise ConfigError(
            f"{variant!r} does not take {unknown}; it accepts num_classes, in_chans and img_size."
        )
    if kwargs.get("features_only"):
        raise ConfigError(f"{variant!r} does not support features_only=True; use forward_features().")
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay).to_dict()
    default_chans, default_h, default_w = cfg["input_size"]
    num_classes = _check_int("num_classes", num_classes, 0)
    in_chans = _check_int("in_chans", default_chans if in_chans is None else in_chans, 1)
    size = _check_img_size((default_h, default_w) if img_size is None else img_size)

    model = model_cls(*cls_args, num_classes=num_classes, in_chans=in_chans, img_size=size)
    cfg.update(
        num_classes=num_classes,
        input_size=(in_chans, *size),
        mean=_norm_stats(tuple(cfg["mean"]), in_chans),
        std=_norm_stats(tuple(cfg["std"]), in_chans),
    )
    model.pretrained_cfg.update(cfg)  # same dict object as model.default_cfg
    return model


# --- registration ----------------------------------------------------------------------------------


def _register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``register_model`` that re-registers our own names silently (module reload, double import)."""
    name = fn.__name__
    ours = is_model(name) and getattr(model_entrypoint(name), "__module__", None) == fn.__module__
    with warnings.catch_warnings():
        if ours:  # timm warns on every overwrite; re-registering ourselves is expected, not a clash
            warnings.filterwarnings("ignore", message=f"Overwriting {name} in registry")
        return register_model(fn)


@_register
def lenet_300_100(pretrained: bool = False, **kwargs: Any) -> _PaperNet:
    """LeNet-300-100 (MNIST, 1x28x28 by default)."""
    return _create("lenet_300_100", LeNet300100, pretrained=pretrained, **kwargs)


@_register
def conv2(pretrained: bool = False, **kwargs: Any) -> _PaperNet:
    """Conv-2: 64, 64, pool; FC 256, 256 (CIFAR-10, 3x32x32 by default)."""
    return _create("conv2", ConvNet, (64,), pretrained=pretrained, **kwargs)


@_register
def conv4(pretrained: bool = False, **kwargs: Any) -> _PaperNet:
    """Conv-4: 64, 64, pool, 128, 128, pool; FC 256, 256."""
    return _create("conv4", ConvNet, (64, 128), pretrained=pretrained, **kwargs)


@_register
def conv6(pretrained: bool = False, **kwargs: Any) -> _PaperNet:
    """Conv-6: 64, 64, pool, 128, 128, pool, 256, 256, pool; FC 256, 256."""
    return _create("conv6", ConvNet, (64, 128, 256), pretrained=pretrained, **kwargs)


@_register
def vgg11_cifar(pretrained: bool = False, **kwargs: Any) -> _PaperNet:
    """VGG-11 with BatchNorm for CIFAR (global average pool, one linear classifier)."""
    return _create("vgg11_cifar", VGGCifar, _VGG_CFGS["vgg11"], pretrained=pretrained, **kwargs)


@_register
def vgg16_cifar(pretrained: bool = False, **kwargs: Any) -> _PaperNet:
    """VGG-16 with BatchNorm for CIFAR (global average pool, one linear classifier)."""
    return _create("vgg16_cifar", VGGCifar, _VGG_CFGS["vgg16"], pretrained=pretrained, **kwargs)


@_register
def vgg19_cifar(pretrained: bool = False, **kwargs: Any) -> _PaperNet:
    """VGG-19 with BatchNorm for CIFAR, about 20.0M parameters (Frankle & Carbin 2019)."""
    return _create("vgg19_cifar", VGGCifar, _VGG_CFGS["vgg19"], pretrained=pretrained, **kwargs)


@_register
def resnet20_cifar(pretrained: bool = False, **kwargs: Any) -> _PaperNet:
    """ResNet-20 for CIFAR (He et al. 2016), about 0.27M parameters."""
    return _create("resnet20_cifar", ResNetCifar, 20, pretrained=pretrained, **kwargs)


@_register
def resnet56_cifar(pretrained: bool = False, **kwargs: Any) -> _PaperNet:
    """ResNet-56 for CIFAR (He et al. 2016), about 0.86M parameters."""
    return _create("resnet56_cifar", ResNetCifar, 56, pretrained=pretrained, **kwargs)


# --- head helpers for any timm model ---------------------------------------------------------------


def _head_names(model: nn.Module) -> list[str]:
    """Module names of the classifier head(s) that exist in ``model``, best first."""
    modules = dict(model.named_modules())
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    declared = cfg.get("classifier") if isinstance(cfg, dict) else getattr(cfg, "classifier", None)
    # Some timm models declare several heads, e.g. ("head", "head_dist") for distilled ViTs.
    names = [declared] if isinstance(declared, str) else list(declared or [])
    found = [n for n in names if n in modules]
    if found:
        return found
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if linears:  # no usable cfg: the last Linear registered is the classifier in practice
        return [linears[-1]]
    raise ConfigError(
        f"Cannot find the classifier of {type(model).__name__}: pretrained_cfg['classifier'] is "
        f"{declared!r}, which is not a module of the model, and the model has no nn.Linear. "
        "Set model.pretrained_cfg['classifier'] to the head's module name."
    )


def classifier_name(model: nn.Module) -> str:
    """Dotted module name of ``model``'s classifier head.

    Read from ``model.pretrained_cfg["classifier"]`` when that names a real module (the first one
    if the cfg lists several heads), otherwise the last ``nn.Linear`` of the model.

    Example:
        >>> import timm, ticket_zoo.models
        >>> classifier_name(timm.create_model("resnet18", num_classes=7))
        'fc'
        >>> classifier_name(timm.create_model("resnet20_cifar", num_classes=7))
        'head'
    """
    return _head_names(model)[0]


def classifier_param_names(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the parameters of the classifier head(s).

    Example:
        >>> import timm, ticket_zoo.models
        >>> classifier_param_names(timm.create_model("resnet18", num_classes=7))
        ['fc.weight', 'fc.bias']
    """
    prefixes = tuple(f"{n}." for n in _head_names(model))
    return [n for n, _ in model.named_parameters() if n.startswith(prefixes)]


def replace_head(model: nn.Module, num_classes: int, seed: int = 0) -> nn.Module:
    """Give ``model`` a fresh classifier for ``num_classes`` classes, deterministically by ``seed``.

    Calls ``model.reset_classifier(num_classes)`` inside ``torch.random.fork_rng`` seeded with
    ``seed``, so the same seed gives the same head and the global RNG is left untouched. The new
    head is moved to the device and dtype of the old one. Every other parameter is unchanged.

    Example:
        >>> import timm, ticket_zoo.models
        >>> model = replace_head(timm.create_model("conv4", num_classes=10), num_classes=3, seed=1)
        >>> model.get_classifier().out_features
        3
    """
    _check_int("num_classes", num_classes, 0)
    _check_int("seed", seed, 0)
    if not callable(getattr(model, "reset_classifier", None)):
        raise ConfigError(
            f"{type(model).__name__} has no reset_classifier(); build it with timm.create_model "
            "(any timm model or a ticket_zoo.models architecture)."
        )
    head_params = set(classifier_param_names(model))
    old = [p for n, p in model.named_parameters() if n in head_params]
    ref = old[0] if old else next(model.parameters(), None)
    # devices=[]: new heads are created on CPU; do not fork (and initialise) CUDA RNGs for that
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.reset_classifier(num_classes)
    if ref is not None:
        for name in _head_names(model):
            model.get_submodule(name).to(device=ref.device, dtype=ref.dtype)
    return model
