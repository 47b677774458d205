"""One way to declare a config: typed dataclass fields that validate, load YAML, take dotted
overrides, fingerprint for resume and generate command-line flags.

A config is a dataclass deriving from :class:`Config` whose fields are declared with
:func:`setting`. The type annotation is the type rule (``int``, ``float``, ``bool``, ``str``,
``X | None``, ``tuple[...]``, ``list[...]``, ``dict[str, ...]``, a nested ``Config``); the
``setting`` adds the rest: help text, allowed names (``choices``), a numeric range, whether the
field is part of the run's identity (``fingerprint``), a command-line flag, and which sibling
fields an override replaces. Rules that relate several fields go in :meth:`Config.check`.

Every rule therefore lives in one place, and the three configs (``TrainConfig``, ``FindConfig``,
``TransferConfig``) and every pruning method's options are declarations of this module.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Toy(Config):
    ...     section = "toy config"
    ...     lr: float = setting(0.1, help="learning rate", low=0, low_open=True, flag="--lr")
    ...     mode: str = setting("fast", help="how to run", choices=("fast", "slow"))
    ...     device: str = setting("cpu", help="where to run", fingerprint=False)
    >>> Toy.from_dict({"lr": 0.5}).validate()
    >>> Toy.from_dict({"mode": "fsat"}).validate()
    Traceback (most recent call last):
    ...
    ticket_zoo.errors.ConfigError: mode must be one of 'fast', 'slow', got 'fsat' (did you mean 'fast'?)
    >>> Toy.from_dict({"lr": 0.5}, overrides={"lr": 0.25}).lr
    0.25
    >>> Toy(device="cuda").fingerprint() == Toy().fingerprint()
    True
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import yaml

from .errors import ConfigError, did_you_mean, shorten

__all__ = ["Config", "Setting", "apply_overrides", "flatten_overrides", "parse_set", "setting"]

_MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class Setting:
    """The rules of one config field besides its type (see :func:`setting`)."""

    help: str
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    fingerprint: bool = True
    flag: str | None = None
    metavar: str | None = None
    replaces: tuple[str, ...] = ()

    def allowed(self) -> tuple[str, ...] | None:
        """The allowed names, calling a registry's ``names`` lazily (so declaring is cheap)."""
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)


def setting(
    default: Any = _MISSING,
    *,
    help: str,
    default_factory: Callable[[], Any] | Any = _MISSING,
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    fingerprint: bool = True,
    flag: str | None = None,
    metavar: str | None = None,
    replaces: tuple[str, ...] = (),
) -> Any:
    """Declare a config field: a ``dataclasses.field`` carrying its :class:`Setting`.

    Args:
        default / default_factory: as for ``dataclasses.field``; neither means the field is required.
        help: one line for ``--help``, the docs and error hints.
        choices: allowed names, or a function returning them (a registry's ``names``).
        low, high, low_open, high_open: the numeric range (closed unless ``*_open``); for a
            sequence, the range of each item.
        fingerprint: ``False`` for housekeeping (device, workers, checkpoint period) that changes
            neither the result nor the stored state, so a run may resume across a change to it.
        flag: the command-line flag (``"--iterations"``) that :meth:`Config.add_flags` creates.
        replaces: sibling fields an override of this one removes (a budget is ``iterations`` XOR
            ``epochs``: overriding one drops the other unless both are overridden).

    Example:
        >>> f = setting(0.1, help="learning rate", low=0, low_open=True)
        >>> f.default, f.metadata["setting"].low_open
        (0.1, True)
    """
    meta = Setting(help, choices, low, high, low_open, high_open, fingerprint, flag, metavar, tuple(replaces))
    kw: dict[str, Any] = {"metadata": {"setting": meta}}
    if default is not _MISSING:
        kw["default"] = default
    if default_factory is not _MISSING:
        kw["default_factory"] = default_factory
    return dataclasses.field(**kw)


def _setting(f: dataclasses.Field) -> Setting:
    return f.metadata.get("setting") or Setting(help="")


# --- type rules --------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any value"
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    plural = {int: "ints", float: "numbers", str: "non-empty strings", bool: "true/false values"}
    if origin is tuple:
        if args and args[-1] is Ellipsis:
            return f"a list of {plural.get(args[0], 'values')}"
        return f"a list of {len(args)} values"
    if origin is list:
        return f"a list of {plural.get(args[0], 'values')}" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, Config):
        return f"a mapping of {tp.section} fields"
    return {bool: "true or false", int: "an int", float: "a number", str: "a non-empty string"}.get(tp, str(tp))


def _conform(value: Any, tp: Any) -> tuple[bool, Any]:
    """``(ok, value)``: whether ``value`` has type ``tp``, with lists turned into tuples where declared."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True, value
    if origin in (Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                if value is None:
                    return True, None
                continue
            ok, out = _conform(value, arg)
            if ok:
                return True, out
        return False, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return _is_int(value), value
    if tp is float:
        return _is_real(value), value
    if tp is str:
        return isinstance(value, str) and bool(value), value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = args[:1] * len(value) if args and args[-1] is Ellipsis else args
        if len(items) != len(value):
            return False, value
        out = [_conform(v, t) for v, t in zip(value, items, strict=True)]
        return all(ok for ok, _ in out), tuple(v for _, v in out)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return False, value
        out = [_conform(v, args[0] if args else Any) for v in value]
        return all(ok for ok, _ in out), [v for _, v in out]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
            return False, value
        vt = args[1] if len(args) == 2 else Any
        out = {k: _conform(v, vt) for k, v in value.items()}
        return all(ok for ok, _ in out.values()), {k: v for k, (_, v) in out.items()}
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def _range_text(s: Setting, integral: bool) -> str:
    kind = "int" if integral else "number"
    if s.high is None and s.low == 0:
        return f"a positive {kind}" if s.low_open else f"a non-negative {kind}"
    if s.high is None and s.low == 1 and integral and not s.low_open:
        return "a positive int"
    if s.low == 0 and s.high == 1 and s.low_open and s.high_open and not integral:
        return "a fraction in (0, 1)"
    article = "an" if integral else "a"
    if s.low is None:
        return f"{article} {kind} {'<' if s.high_open else '<='} {_num(s.high)}"
    if s.high is None:
        return f"{article} {kind} {'>' if s.low_open else '>='} {_num(s.low)}"
    lo = ("(" if s.low_open else "[") + _num(s.low)
    hi = _num(s.high) + (")" if s.high_open else "]")
    return f"{article} {kind} in {lo}, {hi}"


def _num(x: float) -> str:
    """A bound as a person writes it: ``2**32`` rather than ``4.29497e+09``."""
    if isinstance(x, int) and x >= 2**16 and x & (x - 1) == 0:
        return f"2**{x.bit_length() - 1}"
    return f"{x:g}"


def _in_range(x: float, s: Setting) -> bool:
    if s.low is not None and (x <= s.low if s.low_open else x < s.low):
        return False
    return not (s.high is not None and (x >= s.high if s.high_open else x > s.high))


def _numbers(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [v for v in value if _is_real(v)]
    return [value] if _is_real(value) else []


# --- the base class ---------------------------------------------------------------------------------


class Config:
    """Base of every config dataclass: construction, validation, overrides, fingerprint, CLI flags.

    Subclasses are ``@dataclass`` classes whose fields come from :func:`setting`; they set
    ``section`` (how errors name them) and may add cross-field rules in :meth:`check`, name
    changes in ``renamed`` (``{old key: new key}``, read from files written before a rename) and
    ``sections`` for mapping fields that hold another config's fields.
    """

    section: ClassVar[str] = "config"
    renamed: ClassVar[dict[str, str]] = {}
    # Plain-mapping fields that hold another config's fields ({"train": TrainConfig}), for overrides.
    sections: ClassVar[dict[str, type[Config]]] = {}

    # -- construction --

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Any:
        """Build from a plain mapping (a recipe); ``overrides`` (dotted keys) are applied first.

        Unknown keys and missing required fields raise :class:`ConfigError`; values are checked by
        :meth:`validate`, not here, so a config can be built, inspected and then validated.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"a {cls.section} must be a mapping of fields, got {type(d).__name__}")
        data = apply_overrides(d, overrides or {}, cls) if overrides else dict(d)
        for old, new in cls.renamed.items():
            if old in data and new not in data:
                data[new] = data.pop(old)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for key in data:
            if key not in fields:
                raise ConfigError(
                    f"unknown {cls.section} field {shorten(key)!r}{did_you_mean(str(key), fields)}; "
                    f"known fields: {', '.join(fields)}"
                )
        hints = typing.get_type_hints(cls)
        kw = {}
        for name, f in fields.items():
            if name not in data:
                if f.default is _MISSING and f.default_factory is _MISSING:
                    raise ConfigError(f"{cls.section} is missing the required field {name!r}")
                continue
            value, tp = data[name], hints[name]
            sub = _config_class(tp)
            if sub is not None and isinstance(value, Mapping):
                try:
                    value = sub.from_dict(value)
                except ConfigError as exc:
                    raise ConfigError(f"{name}: {exc}") from None
            else:
                ok, conformed = _conform(value, tp)
                value = conformed if ok else value  # a wrong type is reported by validate()
            kw[name] = value
        return cls(**kw)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> Any:
        """Read a YAML recipe (a file, or the name of one shipped in the package), then apply ``overrides``.

        Example:
            >>> from ticket_zoo.train import TrainConfig
            >>> import tempfile, pathlib
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.yaml"
            >>> _ = p.write_text("lr: 0.05\\niterations: 10\\n")
            >>> TrainConfig.from_yaml(p, {"epochs": 2}).epochs, TrainConfig.from_yaml(p, {"epochs": 2}).iterations
            (2, None)
        """
        from ._recipe import read_yaml_file, recipe_hint, resolve_recipe

        resolved = resolve_recipe(path)
        # Bounded, text-only, alias-bomb-safe: a binary or huge file is one ConfigError line.
        raw = read_yaml_file(resolved, what="recipe", hint=recipe_hint(cls.recipe_kind()))
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"recipe {resolved} must be a YAML mapping of fields")
        return cls.from_dict(raw, overrides)

    @classmethod
    def recipe_kind(cls) -> str:
        """The command whose recipes this config reads (for hints); subclasses override."""
        return cls.section.split()[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready values (tuples become lists, nested configs mappings); round-trips
        through :meth:`from_dict`."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    # -- validation --

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field: types, choices and ranges from the
        declarations, nested configs, then :meth:`check`."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value, s, tp = getattr(self, f.name), _setting(f), hints[f.name]
            sub = _config_class(tp)
            if sub is not None and isinstance(value, sub):
                try:
                    value.validate()
                except ConfigError as exc:
                    raise ConfigError(f"{f.name}: {exc}") from None
                continue
            ok, _ = _conform(value, tp)
            allowed = s.allowed()
            if ok and allowed is not None and value is not None:
                bad = [v for v in (value if isinstance(value, (list, tuple)) else [value]) if v not in allowed]
                if bad:
                    listed = ", ".join(repr(a) for a in allowed)
                    raise ConfigError(
                        f"{f.name} must be one of {listed}, got {shorten(bad[0])!r}{did_you_mean(str(bad[0]), allowed)}"
                    )
            integral = _item_type(tp) is int if _is_list_type(tp) else _scalar(tp) is int
            if ok and (s.low is not None or s.high is not None):
                if any(not _in_range(x, s) for x in _numbers(value)):
                    ok = False
            if not ok:
                want = _type_name(tp)
                if s.low is not None or s.high is not None:
                    want = _range_text(s, integral) + (" or null" if "null" in want else "")
                    if _is_list_type(tp):
                        want = f"a list, each {want}"
                shown = repr(shorten(value)) if isinstance(value, str) else shorten(value)
                raise ConfigError(f"{f.name} must be {want}, got {shown}")
        self.check()

    def check(self) -> None:
        """Rules that relate several fields; the declarations have already been checked."""

    # -- identity --

    def fingerprint_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the fields declared ``fingerprint=False`` (at every level)."""
        out = {}
        for f in dataclasses.fields(self):
            if not f.init or not _setting(f).fingerprint:
                continue
            value = getattr(self, f.name)
            out[f.name] = value.fingerprint_dict() if isinstance(value, Config) else _plain(value)
        return out

    def fingerprint(self) -> str:
        """A short hash of what decides the run's result (see :mod:`ticket_zoo.runfiles`)."""
        text = json.dumps(self.fingerprint_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def differences(self, other: Config) -> list[str]:
        """``"field: old -> new"`` for every fingerprinted field where ``other`` differs (dotted for sections).

        Example:
            >>> from ticket_zoo.train import TrainConfig
            >>> TrainConfig(lr=0.1, iterations=5).differences(TrainConfig(lr=0.2, iterations=5, device="cpu"))
            ['lr: 0.1 -> 0.2']
        """
        return _diff(self.fingerprint_dict(), other.fingerprint_dict())

    # -- command line --

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser, prefix: str = "") -> None:
        """Add an argparse option for every field declared with a ``flag`` (nested configs included).

        The option's ``dest`` is the dotted field path, so :meth:`flag_overrides` turns parsed
        arguments into overrides; its help is the field's ``help`` plus its range or choices.
        """
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            s, tp = _setting(f), hints[f.name]
            sub = _config_class(tp)
            if sub is not None:
                sub.add_flags(parser, prefix=f"{prefix}{f.name}.")
                continue
            if s.flag is None:
                continue
            help_text = s.help
            if s.choices is not None and not callable(s.choices):
                help_text += f" (one of: {', '.join(s.choices)})"
            base = _scalar(tp)
            kw: dict[str, Any] = {"dest": f"{prefix}{f.name}", "default": None, "help": help_text}
            if s.metavar:
                kw["metavar"] = s.metavar
            if base is bool:
                kw["action"] = argparse.BooleanOptionalAction
            elif _is_list_type(tp):
                kw["nargs"] = "+"
                kw["type"] = _arg_type(_item_type(tp), s, f.name)
            else:
                kw["type"] = _arg_type(base, s, f.name)
            parser.add_argument(s.flag, **kw)

    @classmethod
    def flag_overrides(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The dotted overrides that the flags of :meth:`add_flags` were given on the command line."""
        return {k: v for k, v in vars(args).items() if v is not None and _is_field_path(cls, k)}


# --- helpers ----------------------------------------------------------------------------------------


def _config_class(tp: Any) -> type[Config] | None:
    if isinstance(tp, type) and issubclass(tp, Config):
        return tp
    for arg in typing.get_args(tp):
        if isinstance(arg, type) and issubclass(arg, Config):
            return arg
    return None


def _is_list_type(tp: Any) -> bool:
    return any(typing.get_origin(t) in (list, tuple) for t in (tp, *typing.get_args(tp)))


def _item_type(tp: Any) -> Any:
    for t in (tp, *typing.get_args(tp)):
        if typing.get_origin(t) in (list, tuple):
            return typing.get_args(t)[0] if typing.get_args(t) else str
    return str


def _scalar(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _arg_type(base: Any, s: Setting, name: str) -> Callable[[str], Any]:
    """An argparse ``type`` that parses and range-checks one value, naming the flag on failure."""

    def parse(text: str) -> Any:
        try:
            value = base(text) if base in (int, float) else text
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {_type_name(base)}") from None
        if base in (int, float) and not _in_range(value, s):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {_range_text(s, base is int)}")
        return value

    parse.__name__ = base.__name__ if isinstance(base, type) else "value"
    return parse


def _is_field_path(cls: type[Config], dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if head not in fields:
        return False
    if not rest:
        return True
    sub = _config_class(typing.get_type_hints(cls)[head])
    return sub is not None and _is_field_path(sub, rest)


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return copy.deepcopy(value)


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _diff(va, vb, prefix=f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {shorten(va, 40)} -> {shorten(vb, 40)}")
    return out


def _json_plain(value: Any) -> Any:
    """JSON stand-in for the few non-JSON values YAML makes (sets, dates, !!binary): validation names them."""
    return sorted(value, key=str) if isinstance(value, (set, frozenset)) else str(value)


def apply_overrides(
    raw: Mapping[str, Any], overrides: Mapping[str, Any], config: type[Config] | None = None
) -> dict[str, Any]:
    """A copy of ``raw`` with ``overrides`` applied: the one meaning of "override" in ticket_zoo.

    An override's key is a dotted path (``"lr"``, ``"train.lr"``, ``"optimizers.sgd.lr"``) and its
    value replaces the value there; a mapping value is applied key by key below that path
    (``{"train": {"lr": 0.1}}`` means ``{"train.lr": 0.1}``). Where ``config`` declares that a field
    ``replaces`` siblings (a budget is ``iterations`` XOR ``epochs``), setting it removes them
    unless they are overridden too.

    Example:
        >>> from ticket_zoo.train import TrainConfig
        >>> apply_overrides({"lr": 0.1, "epochs": 3}, {"lr": 0.01, "iterations": 9}, TrainConfig)
        {'lr': 0.01, 'iterations': 9}
        >>> apply_overrides({"train": {"lr": 0.1}}, {"train": {"lr": 0.2}})
        {'train': {'lr': 0.2}}
        >>> apply_overrides({"seeds": [0, 1, 2]}, {"seeds": [5]})
        {'seeds': [5]}
    """
    out = json.loads(json.dumps(dict(raw), default=_json_plain))  # a deep copy of plain data
    flat = flatten_overrides(overrides)
    for key, value in flat.items():
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"bad override key {shorten(key)!r}: use field or section.field, e.g. train.lr")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
        if value is not None:
            for other in _replaced(config, parts):
                if ".".join([*parts[:-1], other]) not in flat:
                    node.pop(other, None)
    return out


def flatten_overrides(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Overrides as dotted keys only: ``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_overrides(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _replaced(config: type[Config] | None, parts: list[str]) -> tuple[str, ...]:
    """The siblings that setting the field at ``parts`` replaces, following nested configs."""
    cls: Any = config
    for part in parts[:-1]:
        if cls is None:
            return ()
        if part in cls.sections:  # a mapping of that config's fields, at any depth below
            cls = cls.sections[part]
            break
        fields = {f.name for f in dataclasses.fields(cls)}
        cls = _config_class(typing.get_type_hints(cls)[part]) if part in fields else None
    if cls is None:
        return ()
    for f in dataclasses.fields(cls):
        if f.name == parts[-1]:
            return _setting(f).replaces
    return ()


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` arguments as overrides; each value is read as YAML (``0.01``, ``[0, 1]``, ``true``).

    Example:
        >>> parse_set(["train.lr=0.01", "seeds=[0, 1]"])
        {'train.lr': 0.01, 'seeds': [0, 1]}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {shorten(item)!r}: write key=value, e.g. --set train.lr=0.01")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {shorten(item)!r}: value is not valid YAML ({exc})") from None
    return out
