"""Reading recipe YAML files safely: bounded size, text only, no alias bombs; every problem a ConfigError.

A recipe is a short hand-written file. Whatever is passed as ``--config`` (a PNG, random bytes, a
directory, a 2 GB log, a YAML "billion laughs" alias bomb) must end in one
:class:`~ticket_zoo.errors.ConfigError` line, never in a traceback or an exhausted machine.

Example:
    >>> data = read_yaml_file(resolve_recipe("lenet_300_100-digits04"))
    >>> data["arch"], data["train"]["optimizer"]
    ('lenet_300_100', 'adam')
    >>> bomb = "{a: &a [" + ", ".join("x" * 10) + "]"  # each alias list repeats the one before 10 times
    >>> for prev, name in zip("abcd", "bcde"):
    ...     bomb += f", {name}: &{name} [" + ", ".join(["*" + prev] * 10) + "]"
    >>> parse_yaml_text(bomb + "}", "recipe bomb.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ticket_zoo.errors.ConfigError: recipe bomb.yaml expands to more than 100000 values (YAML aliases of ...
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from ._io import os_reason
from .errors import ConfigError, one_line

#: Largest recipe file read (bytes). The biggest shipped recipe is a few KiB.
MAX_RECIPE_BYTES = 1 << 20
#: Most values (mappings, lists and scalars, each alias counted again) a parsed recipe may expand to.
MAX_RECIPE_VALUES = 100_000


def _shown(path: Path) -> str:
    s = str(path)
    return s if len(s) <= 200 else s[:200] + "..."


def _check_expansion(data: Any, what: str) -> None:
    """Count the values of ``data`` as a reader walking it would meet them (aliases expanded)."""
    budget = MAX_RECIPE_VALUES
    stack = [data]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(
                f"{what} expands to more than {MAX_RECIPE_VALUES} values (YAML aliases of aliases, or a "
                "self-referencing alias); a recipe is a short YAML file: write the values out"
            )
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple, set)):
            stack.extend(node)


def parse_yaml_text(text: str, what: str) -> Any:
    """``yaml.safe_load(text)`` with every failure (syntax, nesting depth, alias bombs) a :class:`ConfigError`.

    Example:
        >>> parse_yaml_text("a: [1, 2]", "recipe r.yaml")
        {'a': [1, 2]}
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} is not valid YAML: {one_line(exc, 300)}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply to be a recipe") from None
    _check_expansion(data, what)
    return data


def read_yaml_file(path: str | os.PathLike, *, what: str = "recipe", hint: str = "pass a YAML file") -> Any:
    """Parse the YAML file ``path`` (at most :data:`MAX_RECIPE_BYTES`, UTF-8 text).

    ``what`` names the file in messages (``"recipe"``); ``hint`` is what to do when it does not exist.

    Example:
        >>> read_yaml_file("/no/such.yaml")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: recipe /no/such.yaml does not exist; pass a YAML file
    """
    path = Path(path)
    name = f"{what} {_shown(path)}"
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{name} is a directory; pass a YAML file")
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise ConfigError(f"{name} is not a regular file; pass a YAML file")
        if st.st_size > MAX_RECIPE_BYTES:
            raise ConfigError(
                f"{name} is {st.st_size} bytes, more than a recipe can be ({MAX_RECIPE_BYTES // 1024} KiB); "
                "pass the YAML recipe, not a data file"
            )
        with open(path, "rb") as f:
            data = f.read(MAX_RECIPE_BYTES + 1)
    except ConfigError:
        raise
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(f"{name} does not exist; {hint}") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read it ({os_reason(exc)})") from None
    if len(data) > MAX_RECIPE_BYTES:  # grew since stat
        raise ConfigError(f"{name} is larger than {MAX_RECIPE_BYTES // 1024} KiB; pass the YAML recipe")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{name} is not a text file (not UTF-8: binary data such as an image or a checkpoint?); "
            "pass the YAML recipe"
        ) from None
    if "\x00" in text:
        raise ConfigError(f"{name} is not a text file (it holds NUL bytes); pass the YAML recipe")
    return parse_yaml_text(text, name)


#: The ``recipes/`` shipped with the package (``ticket_zoo/recipes`` in a wheel; the repo's ``recipes/``).
RECIPES_PACKAGE_DIR = "recipes"


def recipes_dir() -> Path | None:
    """Where the shipped recipes live: ``ticket_zoo/recipes`` in an installed wheel, else the repo's ``recipes/``.

    Example:
        >>> (recipes_dir() / "transfer-digits.yaml").is_file()
        True
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / RECIPES_PACKAGE_DIR, here.parent / RECIPES_PACKAGE_DIR):
        if (candidate / "transfer-digits.yaml").is_file():
            return candidate
    return None


def shipped_recipes() -> list[str]:
    """The names (without ``.yaml``) of the recipes shipped with the package.

    Example:
        >>> "transfer-digits" in shipped_recipes()
        True
    """
    directory = recipes_dir()
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory is not None else []


def resolve_recipe(spec: str | os.PathLike) -> Path:
    """The recipe file ``spec`` names: an existing path as is, else a shipped recipe by name.

    ``spec`` may be a path (``recipes/transfer-digits.yaml``, ``./my.yaml``), or the name of a recipe
    shipped inside the package with or without ``.yaml`` (``transfer-digits``,
    ``transfer-digits.yaml``); ``recipes/NAME.yaml`` that is not there (outside the repository)
    also falls back to the shipped copy. Anything else is returned unchanged, so reading it says
    that it does not exist and lists the shipped names.

    Example:
        >>> resolve_recipe("transfer-digits").name
        'transfer-digits.yaml'
        >>> resolve_recipe("recipes/transfer-digits.yaml").is_file()
        True
    """
    path = Path(spec)
    try:
        if path.exists():
            return path
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return path
    parent = path.parent.as_posix()
    directory = recipes_dir()
    if directory is None or parent not in (".", RECIPES_PACKAGE_DIR) or path.name in ("", ".", ".."):
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else path.name + ".yaml"
    shipped = directory / name
    return shipped if shipped.is_file() else path


def recipe_hint(kind: str) -> str:
    """The ``hint`` for :func:`read_yaml_file` when a ``kind`` (``"find"``/``"transfer"``) recipe does not exist.

    Example:
        >>> recipe_hint("transfer")
        'pass a YAML file or a shipped recipe name (transfer-digits, transfer-morcos2019)'
    """
    is_transfer = kind == "transfer"
    names = [n for n in shipped_recipes() if n.startswith("transfer-") == is_transfer]
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"pass a YAML file or a shipped recipe name ({shown})" if names else "pass a YAML file"
