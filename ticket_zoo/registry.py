"""One way to register an extension: a named :class:`Registry` and its ``register`` decorator.

Datasets, augmentations, optimizers, schedules, controls and pruning methods are each one
``Registry``; architectures use timm's own ``register_model`` (ticket_zoo's networks are timm
models). Adding an extension is one decorated definition in its module plus its test.

Example:
    >>> SHAPES = Registry("shape")
    >>> @SHAPES.register("square", sides=4)
    ... def square(x):
    ...     return x * x
    >>> SHAPES.get("square")(3), SHAPES.info("square")["sides"], SHAPES.names()
    (9, 4, ('square',))
    >>> SHAPES.get("sqare")
    Traceback (most recent call last):
    ...
    ticket_zoo.errors.ConfigError: unknown shape 'sqare' (did you mean 'square'?); known: square
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError, did_you_mean, shorten

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → objects of one kind, in registration order, with facts (``info``) about each.

    Args:
        kind: what the entries are, for messages (``"dataset"``, ``"control"``).
        error: the :class:`ConfigError` subclass an unknown name raises.
    """

    def __init__(self, kind: str, error: type[ConfigError] = ConfigError) -> None:
        self.kind = kind
        self._error = error
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **info: Any) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name`` (default: its ``__name__``); registering a taken name is an error."""

        def add(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"a {self.kind} needs a name")
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = obj
            self._info[key] = dict(info)
            return obj

        return add

    def add(self, name: str, obj: T, **info: Any) -> T:
        """Register ``obj`` under ``name`` (for values that are not defined by a ``def``)."""
        return self.register(name, **info)(obj)

    def remove(self, name: str) -> T:
        """Take ``name`` out again and return its entry (for tests and examples that must leave the
        registry as they found it).

        Example:
            >>> reg = Registry("thing")
            >>> _ = reg.add("x", 1)
            >>> reg.remove("x"), "x" in reg
            (1, False)
        """
        obj = self.get(name)
        del self._entries[name], self._info[name]
        return obj

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises with the closest name and the list."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self._error(
                f"unknown {self.kind} {shorten(name)!r}{did_you_mean(str(name), self._entries)}; "
                f"known: {', '.join(self._entries)}"
            ) from None

    def info(self, name: str) -> dict[str, Any]:
        """The facts given at registration (a copy)."""
        self.get(name)
        return dict(self._info[name])

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
