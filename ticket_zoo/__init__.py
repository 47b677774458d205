"""ticket_zoo: find, store, share and transfer lottery tickets on any timm architecture.

Example:
    >>> import ticket_zoo as tz
    >>> [e["name"] for e in tz.list_tickets(arch="lenet_300_100", source="digits04")][:2]
    ['lenet_300_100-digits04-51pct', 'lenet_300_100-digits04-21pct']
    >>> ticket = tz.load("lenet_300_100-digits04-5pct")  # embedded in the package: no network
    >>> round(ticket.density, 3), ticket.num_classes
    (0.046, 5)
    >>> model = ticket.build(num_classes=10)  # a fresh 10-way head, the pruned body exact
    >>> model.get_classifier().out_features
    10

After ``import ticket_zoo`` the paper architectures (``ticket_zoo.models.PAPER_ARCHS``) are in timm's
registry, whichever of ``ticket_zoo`` and ``timm`` is imported first; importing ticket_zoo still
loads neither torch nor timm (a one-shot import hook registers them when timm is imported)::

    >>> import timm
    >>> "conv4" in timm.list_models("conv*")
    True
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    CheckpointError,
    ChecksumMismatchError,
    ConfigError,
    HubError,
    TicketFormatError,
    TicketNotFoundError,
    TicketNotPublishedError,
    TicketZooError,
    UnknownArchitectureError,
    UnknownDatasetError,
)

__version__ = "0.1.0"

# Heavy modules (torch, timm, datasets, huggingface_hub) load on first use, keeping `import ticket_zoo` quick.
_LAZY = {
    "Ticket": "ticket",
    "save": "api",
    "load": "api",
    "magnitude_masks": "masks",
    "random_masks": "masks",
    "mask_overlap": "masks",
    "prunable_names": "masks",
    "apply_masks_": "masked",
    "hold_masks": "masked",
    "find_tickets": "find",
    "transfer": "transfer_grid",
    "build_report": "report",
    "push": "hub",
    "pull": "hub",
    "publish": "hub",
    "list_tickets": "zoo",
    "info": "zoo",
}

__all__ = [
    "ChecksumMismatchError",
    "CheckpointError",
    "ConfigError",
    "HubError",
    "Ticket",
    "TicketFormatError",
    "TicketNotFoundError",
    "TicketNotPublishedError",
    "TicketZooError",
    "UnknownArchitectureError",
    "UnknownDatasetError",
    "__version__",
    "apply_masks_",
    "build_report",
    "find_tickets",
    "hold_masks",
    "info",
    "list_tickets",
    "load",
    "magnitude_masks",
    "mask_overlap",
    "prunable_names",
    "publish",
    "pull",
    "push",
    "random_masks",
    "save",
    "transfer",
]

if TYPE_CHECKING:  # pragma: no cover
    from .api import load, save
    from .find import find_tickets
    from .hub import publish, pull, push
    from .masked import apply_masks_, hold_masks
    from .masks import magnitude_masks, mask_overlap, prunable_names, random_masks
    from .report import build_report
    from .ticket import Ticket
    from .transfer_grid import transfer
    from .zoo import info, list_tickets


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ticket_zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names (the lazy ones too: they are not in globals() until first use, and tab
    completion reads ``dir``), the loaded submodules and the dunders; not the helpers of this file."""
    module = type(sys)
    submodules = {
        n for n, v in globals().items() if type(v) is module and v.__name__.startswith(f"{__name__}.")
    }
    dunders = {n for n in globals() if n.startswith("__") and n.endswith("__")}
    return sorted(set(__all__) | submodules | dunders)


# --- the paper architectures in timm's registry -------------------------------------------------------
#
# `timm.create_model("conv4")` must work after `import ticket_zoo`, but importing ticket_zoo must not
# load torch/timm (the CLI starts in well under a second). So: if timm is already loaded, register now
# (torch is loaded anyway); otherwise a one-shot finder on sys.meta_path waits for `import timm`, lets
# timm's own loader run, and then imports ticket_zoo.models (whose @register_model calls register the
# names). The finder removes itself on first use, restores timm's own loader on the module, and a
# failure to register never fails `import timm` (it is logged at debug level).


def _register_now() -> None:
    """Import ``ticket_zoo.models`` (registering the paper architectures); never raise."""
    if "ticket_zoo.models" in sys.modules:  # already registered (or registering: we are inside it)
        return
    try:
        import_module(".models", __name__)
    except Exception:  # a broken torch/timm must not break `import timm` or `import ticket_zoo`
        import logging

        logging.getLogger(__name__).debug(
            "could not register the paper architectures with timm", exc_info=True
        )


class _RegisteringLoader:
    """Wraps timm's loader: runs it, then registers the paper architectures."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        try:
            self._loader.exec_module(module)
        finally:  # leave no trace of the wrapper on timm's module
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader
        _register_now()

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, get_resource_reader, ...
        return getattr(self._loader, name)


class _TimmImportHook:
    """One-shot ``sys.meta_path`` finder: the first ``import timm`` also registers the paper archs."""

    _ticket_zoo_timm_hook = True  # marker: installed once per process, even if ticket_zoo is reloaded

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        _remove_timm_hook()
        try:
            for finder in sys.meta_path:  # the ordinary search, without us
                find = getattr(finder, "find_spec", None)
                spec = find(fullname, path, target) if find is not None else None
                if spec is not None:
                    break
            else:
                return None  # timm is not installed: the import fails as it would have
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _RegisteringLoader(spec.loader)
            return spec
        except Exception:  # never break `import timm`: let the ordinary machinery search again
            import logging

            logging.getLogger(__name__).debug("timm import hook failed", exc_info=True)
            return None


def _remove_timm_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "_ticket_zoo_timm_hook", False)]


def _register_with_timm() -> None:
    """Register the paper architectures now if timm is loaded, else on the first ``import timm``."""
    if "timm" in sys.modules:
        _register_now()
    elif not any(getattr(f, "_ticket_zoo_timm_hook", False) for f in sys.meta_path):
        sys.meta_path.insert(0, _TimmImportHook())


_register_with_timm()
