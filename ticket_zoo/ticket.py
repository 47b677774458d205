"""The Ticket: an architecture, its masks, the weights at the rewind step, and metadata.

Example (a LeNet-300-100 ticket shipped in the package; ``tz.load("runs/digits/level_05")`` reads
one that ``ticket-zoo find`` wrote):

    >>> import ticket_zoo as tz
    >>> ticket = tz.load("lenet_300_100-digits04-5pct")
    >>> ticket
    Ticket(arch='lenet_300_100', density=0.0458, layers=3, num_classes=5, source='digits[0-4]')
    >>> round(ticket.density, 3), ticket.arch
    (0.046, 'lenet_300_100')
    >>> model = ticket.build(num_classes=5, new_head=True)  # fresh 5-way head, masks applied
    >>> model.head
    Linear(in_features=100, out_features=5, bias=True)
    >>> pruned = ~ticket.masks["fc1.weight"]
    >>> bool((model.fc1.weight[pruned] == 0).all())  # pruned weights are exactly zero
    True
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, TicketFormatError, UnknownArchitectureError, did_you_mean, shorten
from .masks import layer_densities, overall_density

# --- what a ticket may ask timm to build -----------------------------------------------------------
#
# arch_kwargs come from ticket files and recipes, i.e. from strangers. Some timm arguments load files
# or weights (pretrained, pretrained_cfg[_overlay], checkpoint_path, cache_dir, ...) and would make
# reading a ticket unpickle an arbitrary path. So arch_kwargs is an allow-list of constructor
# arguments that only shape the network, with plain scalar values (or a short list of ints such as
# img_size [h, w]); create_model itself enforces it, so every path (file, recipe, API) is covered.

ALLOWED_ARCH_KWARGS = frozenset(
    {
        # what every timm classifier and the paper networks (models.py) take
        "num_classes",
        "in_chans",
        "img_size",
        "global_pool",
        # regularisation rates
        "drop_rate",
        "drop_path_rate",
        "drop_block_rate",
        "proj_drop_rate",
        "attn_drop_rate",
        "pos_drop_rate",
        "patch_drop_rate",
        # width / depth / layout knobs of common timm families (VGG, ResNet, ViT); they only size layers
        "mlp_ratio",
        "output_stride",
        "cardinality",
        "base_width",
        "stem_width",
        "stem_type",
        "avg_down",
        "down_kernel_size",
        "block_reduce_first",
        "replace_stem_pool",
        "zero_init_last",
        "patch_size",
        "embed_dim",
        "depth",
        "num_heads",
        "qkv_bias",
        "qk_norm",
        "init_values",
        "class_token",
        "reg_tokens",
        "no_embed_class",
        "pre_norm",
        "fc_norm",
        "dynamic_img_size",
        "dynamic_img_pad",
    }
)
# Named in the error message: these would load files, weights or change what timm returns.
_LOADING_ARCH_KWARGS = frozenset(
    {
        "pretrained",
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "pretrained_strict",
        "checkpoint_path",
        "cache_dir",
        "features_only",
        "out_indices",
        "feature_cfg",
    }
)
MAX_ARCH_NAME = 128
MAX_ARCH_KWARG_STR = 64
MAX_ARCH_KWARG_LIST = 4
MAX_ARCH_KWARG_INT = 2**31 - 1
# timm names: "resnet18", "vgg19_cifar", "resnet50.a1_in1k"; never "hf-hub:..." or a path.
_ARCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_KWARG_STR_RE = re.compile(r"[A-Za-z0-9_.\-]*")


def check_arch(arch: Any, *, error: type[Exception] = ConfigError) -> str:
    """Return ``arch`` if it is a plausible timm model name (short, no ``hf-hub:``, no path), else raise ``error``.

    Example:
        >>> check_arch("resnet18")
        'resnet18'
    """
    if not isinstance(arch, str) or len(arch) > MAX_ARCH_NAME or not _ARCH_RE.fullmatch(arch):
        raise error(
            f"arch must be a timm model name (letters, digits, '_', '.', '-'; at most {MAX_ARCH_NAME} "
            f"characters), got {shorten(repr(arch))}"
        )
    return arch


def _check_kwarg_value(key: str, value: Any) -> str | None:
    """What is wrong with one arch_kwargs value, or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (
            None
            if abs(value) <= MAX_ARCH_KWARG_INT
            else f"integer out of range (|x| <= {MAX_ARCH_KWARG_INT})"
        )
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    if isinstance(value, str):
        if len(value) > MAX_ARCH_KWARG_STR or not _KWARG_STR_RE.fullmatch(value):
            return f"strings must be at most {MAX_ARCH_KWARG_STR} letters, digits, '_', '.' or '-'"
        return None
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_ARCH_KWARG_LIST or not all(
            isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_ARCH_KWARG_INT for v in value
        ):
            return f"a list must hold at most {MAX_ARCH_KWARG_LIST} integers (like img_size [h, w])"
        return None
    return "must be a number, a bool, a short string, null or a short list of integers"


def check_arch_kwargs(arch_kwargs: Any, *, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """Return ``arch_kwargs`` as a dict if every key is in :data:`ALLOWED_ARCH_KWARGS` with a plain value.

    Anything that could make timm load a file or weights (``pretrained``, ``checkpoint_path``,
    ``pretrained_cfg``, ...), nested containers and unknown keys raise ``error`` (:class:`ConfigError`
    for recipes and the API; the file reader passes :class:`TicketFormatError`).

    Example:
        >>> check_arch_kwargs({"num_classes": 10, "img_size": [8, 8]})
        {'num_classes': 10, 'img_size': [8, 8]}
        >>> check_arch_kwargs({"checkpoint_path": "/tmp/x.pth"})
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: arch_kwargs: 'checkpoint_path' is not allowed: it could load files or weights; a ticket builds its architecture from scratch (allowed: num_classes, in_chans, img_size, global_pool, drop_rate, ...: see ticket_zoo.ticket.ALLOWED_ARCH_KWARGS)
    """
    if not isinstance(arch_kwargs, Mapping):
        raise error(f"arch_kwargs must be a mapping of keyword arguments, got {shorten(arch_kwargs)}")
    allowed = "num_classes, in_chans, img_size, global_pool, drop_rate, ...: see ticket_zoo.ticket.ALLOWED_ARCH_KWARGS"
    for key, value in arch_kwargs.items():
        if key in _LOADING_ARCH_KWARGS:
            raise error(
                f"arch_kwargs: {key!r} is not allowed: it could load files or weights; a ticket builds its "
                f"architecture from scratch (allowed: {allowed})"
            )
        if not isinstance(key, str) or key not in ALLOWED_ARCH_KWARGS:
            hint = did_you_mean(key, ALLOWED_ARCH_KWARGS) if isinstance(key, str) and len(key) <= 64 else ""
            raise error(
                f"arch_kwargs: {shorten(repr(key))} is not an allowed constructor argument{hint} "
                f"(allowed: {allowed})"
            )
        problem = _check_kwarg_value(key, value)
        if problem is not None:
            raise error(f"arch_kwargs.{key} = {shorten(repr(value))}: {problem}")
    for key in ("num_classes", "in_chans"):
        value = arch_kwargs.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise error(f"arch_kwargs.{key} must be a non-negative integer, got {shorten(repr(value))}")
    return dict(arch_kwargs)


def create_model(
    arch: str, arch_kwargs: Mapping[str, Any], *, device: str | torch.device | None = None
) -> nn.Module:
    """``timm.create_model`` with the paper architectures registered and a clear error for unknown names.

    ``arch_kwargs`` must pass :func:`check_arch_kwargs` (raises :class:`ConfigError`): nothing a
    ticket or recipe says can make timm load a file or weights.
    """
    import timm

    from . import models  # noqa: F401  (registers the paper architectures into timm)

    check_arch(arch)
    kwargs = check_arch_kwargs(arch_kwargs)
    if not timm.is_model(arch):
        hint = did_you_mean(arch, timm.list_models(), n=3) or " (see timm.list_models())"
        raise UnknownArchitectureError(f"unknown architecture {arch!r}{hint}")
    if device is not None:
        with torch.device(device):
            return timm.create_model(arch, pretrained=False, **kwargs)
    return timm.create_model(arch, pretrained=False, **kwargs)


# --- what a model says about itself ----------------------------------------------------------------


def _model_cfg(model: nn.Module) -> dict[str, Any]:
    """``model.pretrained_cfg`` (or ``default_cfg``) as a dict; {} when the model has none."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    if not isinstance(cfg, Mapping):
        cfg = cfg.to_dict() if callable(getattr(cfg, "to_dict", None)) else {}
    return dict(cfg)


def _size_kwarg(size: Any) -> int | list[int] | None:
    """``img_size`` as a ticket records it: an int for a square input, else ``[h, w]``."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return int(size[0]) if size[0] == size[1] else [int(size[0]), int(size[1])]
    return None


def _instance_kwargs(model: nn.Module, arch: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments a timm model shows: ``num_classes``, ``in_chans``, ``img_size``."""
    from .models import PAPER_ARCHS

    kwargs: dict[str, Any] = {}
    for key in ("num_classes", "in_chans"):
        value = getattr(model, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            kwargs[key] = value
    if arch in PAPER_ARCHS:  # their cfg describes the instance (models._create), input size included
        size = _size_kwarg(tuple(cfg.get("input_size", ()))[1:])
    else:  # timm's ViT-like families keep the size they were built for on their patch embedding
        size = _size_kwarg(getattr(getattr(model, "patch_embed", None), "img_size", None))
    if size is not None:
        kwargs["img_size"] = size
    return kwargs


def _torch_pruned(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """``{parameter name: (module, tensor name)}`` of the tensors pruned with ``torch.nn.utils.prune``."""
    from torch.nn.utils import prune

    found = {}
    for module_name, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):  # PruningContainer included
                found[f"{module_name}.{hook._tensor_name}" if module_name else hook._tensor_name] = (
                    module,
                    hook._tensor_name,
                )
    return found


def _plain_state(state: Mapping[str, torch.Tensor], pruned: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A state dict in the plain names: ``<name>_orig`` becomes ``<name>``, ``<name>_mask`` goes."""
    out = {}
    for key, value in state.items():
        base, _, suffix = key.rpartition("_")
        if base in pruned and suffix == "mask":
            continue
        out[base if base in pruned and suffix == "orig" else key] = value
    return out


def infer_arch(
    model: nn.Module,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The timm architecture and constructor arguments that rebuild ``model``, from what it says.

    ``arch`` comes from ``model.pretrained_cfg["architecture"]`` (timm sets it on every model it
    creates, the paper networks included), ``num_classes`` and ``in_chans`` from the model's
    attributes, ``img_size`` from the paper networks' cfg or a ViT-like ``patch_embed.img_size``.
    Whatever is passed is used as given (a missing ``num_classes`` is still filled in). Inferred
    arguments are checked: the architecture is built on the meta device with them and must have
    exactly the model's parameter and buffer shapes; otherwise, or when the model does not say,
    one :class:`ConfigError` names what to pass. The allow-list (:func:`check_arch_kwargs`) applies.

    Example:
        >>> import timm
        >>> import ticket_zoo  # the paper networks are in timm's registry from here on
        >>> infer_arch(timm.create_model("lenet_300_100", num_classes=5, in_chans=1, img_size=8))
        ('lenet_300_100', {'num_classes': 5, 'in_chans': 1, 'img_size': 8})
        >>> infer_arch(torch.nn.Linear(4, 2))
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: cannot tell which timm architecture this Linear is (it has no pretrained_cfg['architecture']): pass arch= and arch_kwargs=, e.g. arch='resnet18', arch_kwargs={'num_classes': 10}
    """
    what = type(model).__name__
    cfg = _model_cfg(model)
    guessed = arch is None or arch_kwargs is None
    if arch is None:
        arch = cfg.get("architecture")
        if not isinstance(arch, str) or not arch:
            raise ConfigError(
                f"cannot tell which timm architecture this {what} is (it has no "
                "pretrained_cfg['architecture']): pass arch= and arch_kwargs=, e.g. arch='resnet18', "
                "arch_kwargs={'num_classes': 10}"
            )
    check_arch(arch)
    seen = _instance_kwargs(model, arch, cfg)
    kwargs = dict(arch_kwargs) if arch_kwargs is not None else seen
    if "num_classes" not in kwargs:
        if "num_classes" not in seen:
            raise ConfigError(
                f"cannot tell how many classes this {what} has (no model.num_classes): pass "
                "arch_kwargs={'num_classes': ...}"
            )
        kwargs["num_classes"] = seen["num_classes"]
    kwargs = check_arch_kwargs(kwargs)
    if guessed:  # a guess must rebuild this very model; given arguments are the caller's word
        _check_rebuilds(model, arch, kwargs)
    return arch, kwargs


def _check_rebuilds(model: nn.Module, arch: str, kwargs: dict[str, Any]) -> None:
    """Raise ConfigError unless ``arch(**kwargs)`` has exactly ``model``'s tensor names and shapes."""
    have = {k: tuple(v.shape) for k, v in _plain_state(model.state_dict(), _torch_pruned(model)).items()}
    with torch.random.fork_rng(devices=[]):
        built = {k: tuple(v.shape) for k, v in create_model(arch, kwargs, device="meta").state_dict().items()}
    if have == built:
        return
    diff = sorted(set(have) ^ set(built)) or sorted(k for k in have if have[k] != built[k])
    name = diff[0]
    detail = (
        f"{name!r} has shape {have[name]} here, {built[name]} there"
        if name in have and name in built
        else f"{name!r} is {'only in the model' if name in have else 'missing from the model'}"
    )
    raise ConfigError(
        f"this {type(model).__name__} is not {arch!r} built with {shorten(kwargs)} ({detail}): pass "
        "arch_kwargs= with the constructor arguments it was made with (e.g. depth, embed_dim)"
    )


@dataclass(eq=False)  # tensors have no truth value: compare tickets field by field, not with ==
class Ticket:
    """A lottery ticket: ``f(x; m ⊙ θk)`` for a timm architecture.

    Attributes:
        arch: timm model name (``"vgg19_cifar"``, ``"resnet18"``, ...).
        arch_kwargs: keyword arguments for ``timm.create_model``; always includes the source
            ``num_classes`` (and ``in_chans`` / ``img_size`` where the architecture takes them).
        masks: ``{parameter name: bool tensor}``; True = kept.
        init: full ``state_dict`` at the rewind step (parameters and buffers), pruned entries zero.
        meta: JSON-serialisable metadata (source dataset, method, level, rewind step, seed,
            source accuracy, recipe, versions, input_size, ...).
    """

    arch: str
    arch_kwargs: dict[str, Any]
    masks: dict[str, torch.Tensor]
    init: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    _trusted_zeros: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if "num_classes" not in self.arch_kwargs:
            raise TicketFormatError("arch_kwargs must include the source 'num_classes'")
        check_arch(self.arch)
        check_arch_kwargs(self.arch_kwargs)
        for name, mask in self.masks.items():
            if mask.dtype != torch.bool:
                raise TicketFormatError(f"mask {name!r} must be bool, got {mask.dtype}")
            if name not in self.init:
                raise TicketFormatError(f"mask {name!r} has no rewind weights in init")
            if tuple(self.init[name].shape) != tuple(mask.shape):
                raise TicketFormatError(
                    f"mask {name!r} has shape {tuple(mask.shape)} but init has {tuple(self.init[name].shape)}"
                )
            # Pruned entries are zero by definition (build() relies on it); readers that reconstruct
            # init from kept values already satisfy it and skip this pass.
            if not self._trusted_zeros and int(torch.count_nonzero(self.init[name].masked_fill(mask, 0))):
                self.init[name] = self.init[name].masked_fill(~mask, 0)

    # --- derived facts ----------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Classes of the source task (the head the ticket was found with)."""
        return int(self.arch_kwargs["num_classes"])

    @property
    def density(self) -> float:
        """Fraction of prunable weights kept (1.0 for an unpruned ticket)."""
        return overall_density(self.masks)

    @property
    def layer_densities(self) -> dict[str, float]:
        """Fraction kept per masked layer."""
        return layer_densities(self.masks)

    @property
    def name(self) -> str | None:
        return self.meta.get("name")

    def __repr__(self) -> str:
        return (
            f"Ticket(arch={self.arch!r}, density={self.density:.4f}, layers={len(self.masks)}, "
            f"num_classes={self.num_classes}, source={self.meta.get('source')!r})"
        )

    # --- construction -----------------------------------------------------------------------------

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        masks: Mapping[str, torch.Tensor],
        *,
        arch: str | None = None,
        arch_kwargs: Mapping[str, Any] | None = None,
        init_state: Mapping[str, torch.Tensor] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Ticket:
        """Make a ticket from a model (or an explicit rewind ``init_state``) and masks.

        ``arch`` and ``arch_kwargs`` default to what a timm model says about itself
        (:func:`infer_arch`: its ``pretrained_cfg["architecture"]``, ``num_classes``, ``in_chans``,
        ``img_size`` where it has one); a model that does not say (a plain ``nn.Module``, a timm
        model built with other depth/width arguments) gets one error naming what to pass.

        Example:
            >>> import timm
            >>> from ticket_zoo.masks import magnitude_masks, prunable_weights
            >>> model = timm.create_model("lenet_300_100", num_classes=10, in_chans=1, img_size=8)
            >>> rewind_state = {k: v.clone() for k, v in model.state_dict().items()}  # θk (here step 0)
            >>> # ... train the model, then keep its largest 20% of prunable weights:
            >>> masks = magnitude_masks(prunable_weights(model), density=0.2)
            >>> ticket = Ticket.from_model(model, masks, init_state=rewind_state, meta={"source": "digits"})
            >>> ticket
            Ticket(arch='lenet_300_100', density=0.2000, layers=2, num_classes=10, source='digits')
            >>> ticket.arch_kwargs  # read from the model
            {'num_classes': 10, 'in_chans': 1, 'img_size': 8}
        """
        arch, kwargs = infer_arch(model, arch, arch_kwargs)
        pruned = _torch_pruned(model)  # a model under torch.nn.utils.prune: its plain names
        state = init_state if init_state is not None else _plain_state(model.state_dict(), pruned)
        init = {k: v.detach().to("cpu").clone() for k, v in state.items()}
        masks = {k: v.detach().to("cpu", torch.bool).clone() for k, v in masks.items()}
        return cls(arch=arch, arch_kwargs=kwargs, masks=masks, init=init, meta=dict(meta or {}))

    @classmethod
    def from_pruned(
        cls,
        model: nn.Module,
        *,
        init_state: Mapping[str, torch.Tensor] | None = None,
        arch: str | None = None,
        arch_kwargs: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Ticket:
        """A ticket from a model pruned with ``torch.nn.utils.prune``.

        The masks are the model's ``<name>_mask`` buffers (one per pruned tensor, keyed
        ``"<module>.<name>"`` like :meth:`from_model`'s; tensors that were not pruned get no mask).
        The rewind state is the model's current state with each pruned tensor taken from its
        ``<name>_orig`` (pruned entries zeroed), i.e. the weights as they are *now*; pass
        ``init_state`` (a state dict in plain or in pruned names) to rewind elsewhere, e.g. to the
        weights the model had before training. ``arch``/``arch_kwargs`` as in :meth:`from_model`.
        The model is not changed.

        Example:
            >>> import timm
            >>> from torch.nn.utils import prune
            >>> model = timm.create_model("lenet_300_100", num_classes=10, in_chans=1, img_size=8)
            >>> for layer in (model.fc1, model.fc2):
            ...     _ = prune.l1_unstructured(layer, "weight", amount=0.8)
            >>> Ticket.from_pruned(model)
            Ticket(arch='lenet_300_100', density=0.2000, layers=2, num_classes=10, source=None)
        """
        pruned = _torch_pruned(model)
        if not pruned:
            raise ConfigError(
                f"this {type(model).__name__} has no torch.nn.utils.prune masks (no pruning pre-hook): "
                "prune it first, or use Ticket.from_model(model, masks)"
            )
        masks = {}
        for name, (module, tensor_name) in pruned.items():
            mask = getattr(module, f"{tensor_name}_mask").detach()
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ConfigError(f"{name}_mask holds values other than 0 and 1; a ticket's masks are binary")
            masks[name] = mask != 0
        state = _plain_state(init_state if init_state is not None else model.state_dict(), pruned)
        return cls.from_model(model, masks, arch=arch, arch_kwargs=arch_kwargs, init_state=state, meta=meta)

    def with_(self, **changes: Any) -> Ticket:
        """A copy with some fields replaced (masks/init/meta are copied, not shared)."""
        unknown = set(changes) - {"arch", "arch_kwargs", "masks", "init", "meta"}
        if unknown:
            raise TypeError(f"Ticket.with_() got unknown field(s) {sorted(unknown)}")
        # Copy only what the caller does not replace: controls swap masks/init of 20M-weight tickets.
        copies = {
            "arch": lambda: self.arch,
            "arch_kwargs": lambda: copy.deepcopy(self.arch_kwargs),
            "masks": lambda: {k: v.clone() for k, v in self.masks.items()},
            "init": lambda: {k: v.clone() for k, v in self.init.items()},
            "meta": lambda: copy.deepcopy(self.meta),
        }
        return Ticket(**{name: changes[name] if name in changes else make() for name, make in copies.items()})

    # --- use --------------------------------------------------------------------------------------

    def build(
        self,
        num_classes: int | None = None,
        *,
        new_head: bool | None = None,
        head_seed: int = 0,
        device: str | torch.device | None = None,
    ) -> nn.Module:
        """A plain timm ``nn.Module`` with the rewind weights loaded and pruned weights exactly zero.

        The classifier head:

        - ``new_head=True``: always a fresh, unpruned head for ``num_classes`` classes (default: the
          source's count), initialised deterministically from ``head_seed`` — also when
          ``num_classes`` equals the source's (a new task with as many classes, as in transfer);
        - ``new_head=None`` (default): a fresh head only when ``num_classes`` differs from the
          source's (``ticket.num_classes``); otherwise the ticket's own rewind head and its mask;
        - ``new_head=False``: the ticket's own head; a different ``num_classes`` raises ``ValueError``.

        :meth:`masks_for` drops the mask of a fresh head, so :func:`~ticket_zoo.hold_masks` leaves it dense.

        Example:
            >>> import ticket_zoo as tz
            >>> ticket = tz.load("lenet_300_100-digits04-5pct")  # found on digits 0-4: 5 classes
            >>> ticket.build().head  # the ticket's own rewind head
            Linear(in_features=100, out_features=5, bias=True)
            >>> ticket.build(num_classes=10).head  # another class count: a fresh head
            Linear(in_features=100, out_features=10, bias=True)
            >>> ticket.build(num_classes=10, new_head=False)
            Traceback (most recent call last):
            ...
            ValueError: new_head=False keeps the ticket's 5-class head, but num_classes=10; pass new_head=True (or leave it unset) for a fresh head
        """
        from .models import classifier_param_names, replace_head

        # Build on the meta device (no memory, no random init: the rewind state replaces it anyway)
        # and adopt copies of the rewind tensors. The RNG is forked so that building never shifts the
        # caller's random stream (same seed -> same data order, same heads).
        with torch.random.fork_rng(devices=[]):
            model = create_model(self.arch, self.arch_kwargs, device="meta")
            model.load_state_dict({k: v.clone() for k, v in self.init.items()}, strict=True, assign=True)
            if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
                # A non-persistent buffer is not in the state dict: build the ordinary way instead.
                model = create_model(self.arch, self.arch_kwargs)
                model.load_state_dict(self.init, strict=True)
        classes = self.num_classes if num_classes is None else int(num_classes)
        if new_head is False and classes != self.num_classes:
            raise ValueError(
                f"new_head=False keeps the ticket's {self.num_classes}-class head, but num_classes={classes}; "
                "pass new_head=True (or leave it unset) for a fresh head"
            )
        if new_head or (new_head is None and classes != self.num_classes):
            replace_head(model, classes, seed=head_seed)  # fresh and unpruned: see masks_for()
            # masks_for() must not hand the fresh head the old head's mask (same shape when classes match)
            model._ticket_zoo_fresh_head = frozenset(classifier_param_names(model))
        # No masking pass needed: pruned entries of init are exactly zero (the Ticket invariant).
        if device is not None:
            model.to(device)
        return model

    def masks_for(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The masks that apply to a model built from this ticket (a replaced head drops its mask).

        Example:
            >>> import ticket_zoo as tz
            >>> ticket = tz.load("lenet_300_100-digits04-5pct")
            >>> sorted(ticket.masks_for(ticket.build()))  # its own head keeps its mask
            ['fc1.weight', 'fc2.weight', 'head.weight']
            >>> sorted(ticket.masks_for(ticket.build(num_classes=5, new_head=True)))  # a fresh head is dense
            ['fc1.weight', 'fc2.weight']
        """
        params = dict(model.named_parameters())
        fresh = getattr(model, "_ticket_zoo_fresh_head", frozenset())
        return {
            k: v
            for k, v in self.masks.items()
            if k in params and params[k].shape == v.shape and k not in fresh
        }

    def apply_to(self, model: nn.Module, *, style: str = "masks") -> nn.Module:
        """Load the ticket into an existing model of its architecture; return that model.

        For code that builds its own model (``timm.create_model(ticket.arch, **ticket.arch_kwargs)``
        or anything equivalent). The rewind weights are loaded (:meth:`masks_for`: a classifier of
        another shape keeps its own weights and stays dense), then:

        - ``style="masks"`` (default): nothing more; the pruned weights are exactly zero, as with
          :meth:`build` (keep them so while training with :func:`~ticket_zoo.hold_masks`);
        - ``style="prune"``: each mask goes on with ``torch.nn.utils.prune.custom_from_mask``, so
          ``model.fc1.weight_mask`` / ``weight_orig`` exist, the forward pre-hook keeps pruned
          weights at zero, :meth:`from_pruned` reads the ticket back and ``prune.remove`` works.

        Example:
            >>> import timm
            >>> import ticket_zoo as tz
            >>> from torch.nn.utils import prune
            >>> ticket = tz.load("lenet_300_100-digits04-5pct")
            >>> model = ticket.apply_to(timm.create_model(ticket.arch, **ticket.arch_kwargs), style="prune")
            >>> torch.equal(model.fc1.weight_mask.bool(), ticket.masks["fc1.weight"])
            True
            >>> _ = prune.remove(model.fc1, "weight")  # plain code takes over: fc1.weight is a parameter again
        """
        from torch.nn.utils import prune

        if style not in ("masks", "prune"):
            raise ConfigError(f"style must be 'masks' or 'prune', got {shorten(repr(style))}")
        already = _torch_pruned(model)
        if already:
            raise ConfigError(
                f"the model is already pruned with torch.nn.utils.prune ({', '.join(sorted(already)[:3])}): "
                "pass a fresh model, or call prune.remove on those tensors first"
            )
        state = model.state_dict()
        missing = [k for k in state if k not in self.init]  # in the model's order: the first layer first
        if missing:
            raise ConfigError(
                f"the model does not fit this {self.arch!r} ticket: it has {missing[0]!r}, the ticket does not; "
                "build it with ticket.build() or timm.create_model(ticket.arch, **ticket.arch_kwargs)"
            )
        masks = self.masks_for(model)
        fresh = getattr(model, "_ticket_zoo_fresh_head", frozenset())  # build(new_head=True): keep it
        head = None
        load = {}
        for name, value in self.init.items():
            if name in fresh:
                continue
            if name in state and tuple(state[name].shape) == tuple(value.shape):
                load[name] = value
                continue
            if head is None:
                from .models import classifier_param_names

                head = set(classifier_param_names(model))
            if name not in head:
                have = tuple(state[name].shape) if name in state else "absent"
                raise ConfigError(
                    f"the model does not fit this {self.arch!r} ticket: {name!r} is {tuple(value.shape)} in the "
                    f"ticket, {have} in the model; build it with ticket.build() or "
                    "timm.create_model(ticket.arch, **ticket.arch_kwargs)"
                )
            masks.pop(name, None)
        model.load_state_dict(load, strict=False)  # every entry checked above; a new head keeps its own
        if style == "prune":
            for name, mask in masks.items():
                module_name, _, tensor_name = name.rpartition(".")
                module = model.get_submodule(module_name)
                prune.custom_from_mask(module, tensor_name, mask.to(getattr(module, tensor_name).device))
        return model
