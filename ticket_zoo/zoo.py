"""The named catalogue: ``cards/`` → names → a Hub repo at a pinned revision, or a ticket shipped in the package.

Each entry is one markdown card ``cards/NAME.md`` whose YAML front matter says what the ticket is and
where it lives. Names are ``{arch}-{source}-{pct}pct``, pct = percent of prunable weights *remaining*
(``vgg19-imagenet-20pct`` keeps 20%). Location is exactly one of:

* ``repo_id`` + pinned ``revision`` + ``sha256`` of ``ticket.safetensors`` (published on the Hub);
* ``embedded: FILE`` + ``sha256`` (shipped in the package under ``ticket_zoo/embedded/``);
* ``published: false`` (the card names the ``recipe`` that produces it).

The repo's ``cards/`` directory is the source of truth; wheels carry it as ``ticket_zoo/_catalogue``.

This module reads and writes cards and the embedded files; it never touches the network. Loading an
entry is :func:`ticket_zoo.api.load_named` (embedded here, or from the Hub at the pinned revision), and
publishing one is :func:`ticket_zoo.hub.publish` (push, then :func:`write_card`): the layers are
``specs``/``format`` → ``zoo`` → ``cards`` → ``hub`` → ``api``, each importing only those before it.

Example:
    >>> import ticket_zoo as tz
    >>> [e["name"] for e in tz.list_tickets(arch="lenet_300_100", source="digits04", published=True)][:2]
    ['lenet_300_100-digits04-51pct', 'lenet_300_100-digits04-21pct']
    >>> info("lenet_300_100-digits04-5pct")["location"]
    'embedded'
    >>> round(tz.load("lenet_300_100-digits04-5pct").density, 4)
    0.0458
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import string
from pathlib import Path
from typing import Any

import yaml

from ._io import atomic_write_text, sha256_hex
from .configs import number
from .errors import ChecksumMismatchError, ConfigError, TicketNotFoundError, shorten
from .specs import parse_spec, ticket_file, validate_revision

__all__ = [
    "CARDS_ENV",
    "NAME_RE",
    "catalogue_dir",
    "draft_entry",
    "embedded_dir",
    "info",
    "list_tickets",
    "read_embedded",
    "register_cli",
    "render_entry_card",
    "unpublished_message",
    "validate_name",
    "writable_cards_dir",
    "write_card",
]

CARDS_ENV = "TICKET_ZOO_CARDS"  # points the catalogue at another cards directory
# {arch}-{source}-{pct}pct: lowercase words of [a-z0-9_] joined by '-', then the percent remaining
# (a '.' only there, for pct below 1: "0.8pct"). No '/', '\\' or '..': a name never names a path.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*(?:-[a-z0-9][a-z0-9_]*)+-(?:[0-9]+|[0-9]*\.[0-9]+)pct$")
_EMBEDDED_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*\.safetensors$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SKIP = ("README.md",)  # files in cards/ that are not entries (plus anything starting with "_")
TEMPLATE_FILE = "_template.md"
# huggingface_hub.repocard.REGEX_YAML_BLOCK (same front-matter rule as model cards on the Hub)
_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
FIELDS = ("name", "arch", "source", "dataset", "density", "source_accuracy", "recipe")
# A card is a short markdown file read on every first lookup and printed by `ticket-zoo info`: bound it.
MAX_CARD_BYTES = 256 * 1024
MAX_CARD_DEPTH = 16  # nesting of the YAML front matter (model-index is 5 deep)
MAX_CARD_TEXT = 200  # characters in a text field (arch, source, dataset, recipe, repo_id, embedded)
_CARD_TEXT_RE = re.compile(r"[^\x00-\x1f\x7f]+")  # one printable line


# --- where things are ------------------------------------------------------------------------------


def catalogue_dir() -> Path:
    """The cards directory: ``$TICKET_ZOO_CARDS``, else the copy inside an installed wheel, else the repo's ``cards/``.

    Example:
        >>> (catalogue_dir() / "_template.md").is_file()  # every catalogue has the card template
        True
    """
    override = os.environ.get(CARDS_ENV)
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    for candidate in (here / "_catalogue", here.parent / "cards"):
        if (candidate / TEMPLATE_FILE).is_file():
            return candidate
    raise ConfigError(
        f"the ticket catalogue (cards/) is missing from this installation ({here}); reinstall ticket-zoo "
        f"or point {CARDS_ENV} at a cards directory"
    )


def embedded_dir() -> Path:
    """Where tickets shipped in the package live (``ticket_zoo/embedded``).

    Example:
        >>> embedded_dir().name
        'embedded'
    """
    return Path(__file__).resolve().parent / "embedded"


def _repo_root() -> Path | None:
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


# --- names -----------------------------------------------------------------------------------------


def validate_name(name: str) -> str:
    """Return ``name`` if it is a well-formed catalogue name, else raise :class:`TicketNotFoundError`.

    Example:
        >>> validate_name("vgg19-imagenet-20pct")
        'vgg19-imagenet-20pct'
        >>> validate_name("../etc/passwd")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.TicketNotFoundError: '../etc/passwd' is not a catalogue name: names look like vgg19-imagenet-20pct ({arch}-{source}-{pct}pct, lowercase); for a file or directory give its path
    """
    if (
        not isinstance(name, str)
        or "/" in name
        or "\\" in name
        or ".." in name
        or not NAME_RE.fullmatch(name)
    ):
        raise TicketNotFoundError(
            f"{shorten(repr(name))} is not a catalogue name: names look like vgg19-imagenet-20pct ({{arch}}-{{source}}-{{pct}}pct, "
            "lowercase); for a file or directory give its path"
        )
    return name


def pct_label(density: float) -> str:
    """Percent remaining as written in names: ``20`` for 0.2097, ``5`` for 0.0498, ``0.8`` for 0.008.

    Example:
        >>> pct_label(0.512), pct_label(0.008)
        ('51', '0.8')
    """
    pct = 100.0 * density
    if pct >= 1:
        return str(int(round(pct)))
    return f"{pct:.2g}".rstrip("0").rstrip(".") if pct > 0 else "0"


# --- reading the catalogue -------------------------------------------------------------------------

_CACHE: dict[str, tuple[tuple, dict[str, dict[str, Any]]]] = {}


def _front_matter_of(path: Path) -> dict[str, Any] | None:
    """The YAML front matter of a card (the block huggingface_hub's ``metadata_load`` reads), parsed
    with libyaml when available: the whole catalogue is read on every first lookup.

    Bounded before anything is built: the file size (:data:`MAX_CARD_BYTES`), no YAML aliases (an
    "billion laughs" alias bomb expands a few hundred bytes into gigabytes) and a nesting depth of at
    most :data:`MAX_CARD_DEPTH` (checked on the event stream, which libyaml produces iteratively; the
    recursive composer would crash on very deep input). Raises :class:`ConfigError` or ``yaml.YAMLError``.
    """
    where = f"catalogue card {path}"
    with open(path, "rb") as f:
        raw = f.read(MAX_CARD_BYTES + 1)
    if len(raw) > MAX_CARD_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_CARD_BYTES} bytes; a card is a short markdown file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text ({shorten(str(exc))})") from None
    match = _YAML_BLOCK.search(text)
    if match is None:
        return None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = 0
    for event in yaml.parse(match.group(2), Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(
                f"{where}: the front matter uses a YAML alias (*{shorten(event.anchor, 40)}); cards may not use "
                "anchors and aliases"
            )
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_CARD_DEPTH:
                raise ConfigError(
                    f"{where}: the front matter is nested more than {MAX_CARD_DEPTH} levels deep"
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    try:
        meta = yaml.load(match.group(2), Loader=loader)
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError(
            f"{where}: front matter holds a value YAML cannot load ({shorten(str(exc))})"
        ) from None
    return meta if isinstance(meta, dict) else None


def _card_text(meta: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    """A one-line text field of at most :data:`MAX_CARD_TEXT` characters (None allowed when not required)."""
    value = meta.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _CARD_TEXT_RE.fullmatch(value) or len(value) > MAX_CARD_TEXT:
        raise ConfigError(
            f"{where}: field {key!r} must be a non-empty one-line string of at most {MAX_CARD_TEXT} characters, "
            f"got {shorten(repr(value))}"
        )
    return value


def _parse_card(path: Path) -> dict[str, Any]:
    where = f"catalogue card {path}"
    try:
        meta = _front_matter_of(path)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: front matter is not valid YAML ({shorten(str(exc), 200)})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{where}: no YAML front matter (start the file with '---')")
    name = meta.get("name")
    if name != path.stem:
        raise ConfigError(
            f"{where}: 'name' is {shorten(repr(name))} but the file is {path.name}; they must agree"
        )
    validate_name(name)
    for key in ("arch", "source", "recipe"):
        _card_text(meta, key, where)
    recipe = meta["recipe"]  # `ticket-zoo info` reads it (under the repo) to say which level to publish
    parts = re.split(r"[/\\]", recipe)
    if recipe.startswith(("/", "\\")) or ".." in parts or not recipe.endswith((".yaml", ".yml")):
        raise ConfigError(
            f"{where}: 'recipe' must be a relative path to a .yaml file without '..', like "
            f"recipes/conv4-cifar10.yaml, got {shorten(repr(recipe))}"
        )
    _card_text(meta, "dataset", where, required=False)
    density = meta.get("density")
    if not isinstance(density, (int, float)) or isinstance(density, bool) or not 0 < density <= 1:
        raise ConfigError(
            f"{where}: 'density' must be the fraction of weights remaining in (0, 1], got {shorten(repr(density))}"
        )
    accuracy = meta.get("source_accuracy")  # `ticket-zoo list` formats it as a number
    if accuracy is not None and (
        isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 100
    ):
        raise ConfigError(
            f"{where}: 'source_accuracy' must be null or the source accuracy in percent, a number in [0, 100], "
            f"got {shorten(repr(accuracy))}"
        )
    entry: dict[str, Any] = {k: meta.get(k) for k in FIELDS}
    entry["dataset"] = entry["dataset"] or entry["source"]
    entry["density"] = float(density)
    has_hub, has_embedded = meta.get("repo_id") is not None, meta.get("embedded") is not None
    if has_hub and has_embedded:
        raise ConfigError(f"{where}: give either repo_id/revision/sha256 or embedded, not both")
    if has_hub or has_embedded:
        sha = str(meta.get("sha256") or "").lower()
        if not _SHA256_RE.fullmatch(sha):
            raise ConfigError(
                f"{where}: a published entry needs 'sha256' (64 hex digits) of ticket.safetensors"
            )
        entry["sha256"] = sha
        if meta.get("published") is False:
            raise ConfigError(f"{where}: says published: false but gives a location; remove one")
    if has_hub:
        repo_id, revision = meta.get("repo_id"), meta.get("revision")
        if not isinstance(repo_id, str) or repo_id.count("/") != 1:
            raise ConfigError(f"{where}: 'repo_id' must be org/name, got {shorten(repr(repo_id))}")
        _card_text(meta, "repo_id", where)
        if not isinstance(revision, str) or not revision:
            raise ConfigError(f"{where}: a Hub entry needs a pinned 'revision' (commit sha or tag)")
        try:
            validate_revision(revision)  # it becomes a path in the HF cache (refs/<revision>)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        entry.update(location="hub", published=True, repo_id=repo_id, revision=revision)
    elif has_embedded:
        file = meta.get("embedded")
        if (
            not isinstance(file, str)
            or not _EMBEDDED_RE.fullmatch(file)
            or ".." in file
            or len(file) > MAX_CARD_TEXT
        ):
            raise ConfigError(
                f"{where}: 'embedded' must be a file name like NAME.safetensors, got {shorten(repr(file))}"
            )
        entry.update(location="embedded", published=True, embedded=file)
    else:
        if meta.get("published") is not False:
            raise ConfigError(
                f"{where}: no location: give repo_id + revision + sha256, embedded + sha256, or published: false"
            )
        entry.update(location=None, published=False)
    entry["card"] = str(path)
    return entry


def _catalogue(cards_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """{name: entry}, re-read only when a card file changed."""
    directory = Path(cards_dir) if cards_dir is not None else catalogue_dir()
    if not directory.is_dir():
        raise ConfigError(f"catalogue directory {directory} does not exist")
    paths = sorted(p for p in directory.glob("*.md") if not p.name.startswith("_") and p.name not in _SKIP)
    stats = [(p.name, p.stat()) for p in paths]
    signature = tuple((name, st.st_mtime_ns, st.st_size) for name, st in stats)
    key = str(directory.resolve())
    cached = _CACHE.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    entries = {}
    for path in paths:
        entry = _parse_card(path)
        entries[entry["name"]] = entry
    _CACHE[key] = (signature, entries)
    return entries


def list_tickets(
    arch: str | None = None,
    source: str | None = None,
    min_density: float | None = None,
    max_density: float | None = None,
    published: bool | None = None,
    *,
    cards_dir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Catalogue entries matching every given filter, sorted by arch, source and density (high to low).

    ``source`` matches the name's source tag (``digits04``) or the dataset (``digits[0-4]``); densities
    are fractions of weights remaining (0.05 = 5%).

    Example:
        >>> [e["name"] for e in list_tickets(arch="conv4", source="digits04", published=True)]
        ['conv4-digits04-51pct', 'conv4-digits04-21pct', 'conv4-digits04-6pct', 'conv4-digits04-1pct']
        >>> [e["name"] for e in list_tickets(arch="conv4", source="digits[0-4]", max_density=0.1)]
        ['conv4-digits04-6pct', 'conv4-digits04-1pct']
    """
    out = []
    for entry in _catalogue(cards_dir).values():
        if arch is not None and entry["arch"] != arch and not entry["name"].startswith(f"{arch}-"):
            continue
        if source is not None and source not in (entry["source"], entry["dataset"]):
            continue
        if min_density is not None and entry["density"] < min_density:
            continue
        if max_density is not None and entry["density"] > max_density:
            continue
        if published is not None and entry["published"] != published:
            continue
        out.append(dict(entry))
    return sorted(out, key=lambda e: (e["arch"], e["source"], -e["density"], e["name"]))


def info(name: str, *, cards_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The catalogue entry of ``name`` (a copy); a typo gets a "did you mean" in :class:`TicketNotFoundError`.

    Example:
        >>> entry = info("vgg19-imagenet-20pct")
        >>> entry["arch"], entry["density"], entry["recipe"], entry["published"]
        ('vgg19_cifar', 0.2, 'recipes/vgg19-imagenet.yaml', False)
        >>> info("vgg19-imagenet-25pct")
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.TicketNotFoundError: no catalogue entry 'vgg19-imagenet-25pct'; did you mean vgg19-imagenet-5pct, vgg19-imagenet-2pct, vgg19-imagenet-51pct? (`ticket-zoo list` shows them all)
    """
    entries = _catalogue(cards_dir)

    def hint() -> str:
        # only compared with the known names, never used as a path, so a malformed name is safe here
        close = difflib.get_close_matches(str(name).lower(), list(entries), n=3, cutoff=0.6)
        return f"; did you mean {', '.join(close)}?" if close else ""

    try:
        validate_name(name)
    except TicketNotFoundError as exc:
        raise TicketNotFoundError(f"{exc}{hint()}") from None
    if name not in entries:
        raise TicketNotFoundError(
            f"no catalogue entry {shorten(repr(name))}{hint()} (`ticket-zoo list` shows them all)"
        )
    return dict(entries[name])


# --- loading ---------------------------------------------------------------------------------------


def _level_for(entry: dict[str, Any]) -> str:
    """The find level whose density should be closest to the entry's (IMP keeps (1 - p)^L)."""
    fraction = 0.2
    root = _repo_root()
    recipe = (root / entry["recipe"]) if root is not None else Path(entry["recipe"])
    if recipe.is_file():
        try:
            raw = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
            fraction = float(raw.get("prune_fraction", fraction))
        except (yaml.YAMLError, TypeError, ValueError, AttributeError):
            pass
    if not 0 < fraction < 1:
        fraction = 0.2
    level = max(0, round(math.log(entry["density"]) / math.log(1.0 - fraction)))
    return f"level_{level:02d}"


def unpublished_message(entry: dict[str, Any]) -> str:
    """What an unpublished entry's error says: the exact commands to build and to publish it.

    Example:
        >>> print(unpublished_message(info("vgg19-imagenet-20pct")))
        vgg19-imagenet-20pct is in the catalogue but not published yet. Build it locally:
          ticket-zoo find --config recipes/vgg19-imagenet.yaml --out runs/vgg19-imagenet
        then publish the level closest to 20% density (about level_07; densities are in runs/vgg19-imagenet/summary.json):
          ticket-zoo publish runs/vgg19-imagenet/level_07 --repo <org/name> --name vgg19-imagenet-20pct
    """
    name, recipe = entry["name"], entry["recipe"]
    run = f"runs/{Path(recipe).stem}"
    level = _level_for(entry)
    missing = ""
    root = _repo_root()
    if root is not None and not (root / recipe).is_file():
        missing = f" ({recipe} does not exist yet: write it first, modelled on the other recipes in recipes/)"
    return (
        f"{name} is in the catalogue but not published yet. Build it locally{missing}:\n"
        f"  ticket-zoo find --config {recipe} --out {run}\n"
        f"then publish the level closest to {pct_label(entry['density'])}% density "
        f"(about {level}; densities are in {run}/summary.json):\n"
        f"  ticket-zoo publish {run}/{level} --repo <org/name> --name {name}"
    )


def read_embedded(entry: dict[str, Any]) -> bytes:
    """The bytes of an embedded entry's ticket, read from the package and checked against the card's sha256.

    Example:
        >>> data = read_embedded(info("lenet_300_100-digits04-5pct"))
        >>> sha256_hex(data) == info("lenet_300_100-digits04-5pct")["sha256"]
        True
    """
    path = embedded_dir() / entry["embedded"]
    if not path.is_file():
        raise TicketNotFoundError(
            f"{entry['name']}: the embedded file {entry['embedded']} is missing from this installation "
            f"({path.parent}); reinstall ticket-zoo or rebuild it with `python recipes/build_embedded_zoo.py`"
        )
    data = path.read_bytes()
    digest = sha256_hex(data)
    if digest != entry["sha256"]:
        raise ChecksumMismatchError(
            f"{entry['name']}: embedded file {path} has sha256 {digest} but its card pins {entry['sha256']}; "
            "the installation is damaged or the card is stale: reinstall ticket-zoo"
        )
    return data


# --- writing cards ---------------------------------------------------------------------------------


def _front_matter(entry: dict[str, Any]) -> dict[str, Any]:
    fm: dict[str, Any] = {
        "library_name": "ticket-zoo",
        "tags": ["lottery-ticket", "pruning", "timm", "ticket-zoo-catalogue", entry["arch"]],
    }
    for key in FIELDS:
        fm[key] = entry.get(key)
    fm["dataset"] = entry.get("dataset") or entry["source"]
    fm["density"] = round(float(entry["density"]), 6)
    if entry.get("source_accuracy") is not None:
        fm["source_accuracy"] = round(float(entry["source_accuracy"]), 4)
    if entry.get("embedded"):
        fm.update(published=True, embedded=entry["embedded"], sha256=entry["sha256"])
    elif entry.get("repo_id"):
        fm.update(
            published=True, repo_id=entry["repo_id"], revision=entry["revision"], sha256=entry["sha256"]
        )
    else:
        fm["published"] = False
    return fm


def render_entry_card(entry: dict[str, Any], *, cards_dir: str | os.PathLike | None = None) -> str:
    """The markdown of a catalogue card (YAML front matter + the body of ``cards/_template.md``).

    Example:
        >>> text = render_entry_card({"name": "conv4-digits-5pct", "arch": "conv4", "source": "digits",
        ...     "density": 0.05, "recipe": "recipes/conv4-digits.yaml"})
        >>> front = yaml.safe_load(text.split("---")[1])  # the YAML front matter this module reads back
        >>> front["name"], front["density"], front["recipe"], front["published"]
        ('conv4-digits-5pct', 0.05, 'recipes/conv4-digits.yaml', False)
        >>> text.split("---")[2].splitlines()[1]  # then the template's body
        '# conv4-digits-5pct'
    """
    directory = Path(cards_dir) if cards_dir is not None else catalogue_dir()
    template_path = directory / TEMPLATE_FILE
    if not template_path.is_file():
        template_path = catalogue_dir() / TEMPLATE_FILE
    template = string.Template(template_path.read_text(encoding="utf-8"))
    fm = _front_matter(entry)
    if fm.get("embedded"):
        where = (
            f"shipped inside the `ticket-zoo` package (`ticket_zoo/embedded/{fm['embedded']}`); works offline"
        )
    elif fm.get("repo_id"):
        where = f"on the Hugging Face Hub: [`{fm['repo_id']}`](https://huggingface.co/{fm['repo_id']}) at revision `{fm['revision']}`"
    else:
        where = "**not published yet**; loading it prints the commands to build and publish it"
    acc = fm.get("source_accuracy")
    body = template.safe_substitute(
        name=fm["name"],
        arch=fm["arch"],
        source=fm["source"],
        dataset=fm["dataset"],
        pct=pct_label(fm["density"]),
        density=f"{100 * fm['density']:.2f}",
        source_accuracy="not recorded" if acc is None else f"{acc:.2f}%",
        recipe=fm["recipe"],
        where=where,
        run=f"runs/{Path(fm['recipe']).stem}",
    )
    return "---\n" + yaml.safe_dump(fm, sort_keys=False, allow_unicode=True) + "---\n" + body.lstrip("\n")


def write_card(entry: dict[str, Any], cards_dir: str | os.PathLike | None = None) -> Path:
    """Write (atomically) ``cards_dir/NAME.md`` for ``entry`` and return its path; the result parses back.

    Example (into a scratch folder; a clone of the repository writes into ``cards/``):

        >>> import tempfile
        >>> cards = tempfile.mkdtemp()
        >>> path = write_card({"name": "conv4-digits-5pct", "arch": "conv4", "source": "digits", "density": 0.05,
        ...                    "recipe": "recipes/conv4-digits.yaml"}, cards)
        >>> path.name
        'conv4-digits-5pct.md'
        >>> [e["name"] for e in list_tickets(cards_dir=cards)]  # the card parses back
        ['conv4-digits-5pct']
    """
    directory = Path(cards_dir) if cards_dir is not None else catalogue_dir()
    name = validate_name(entry["name"])
    path = directory / f"{name}.md"
    atomic_write_text(path, render_entry_card(entry, cards_dir=directory))
    _parse_card(path)  # refuse to leave a card the catalogue cannot read
    return path


def _split_name(name: str) -> tuple[str, str, str]:
    arch, *source, pct = name.split("-")
    return arch, "-".join(source), pct


def _installed_cards_dir() -> Path | None:
    try:
        return catalogue_dir()
    except ConfigError:
        return None


def writable_cards_dir(cards_dir: str | os.PathLike | None = None) -> Path:
    """Where a new card is written: ``cards_dir``, else ``$TICKET_ZOO_CARDS``, else ``./cards`` (in a clone
    of the repository, its catalogue: commit the card there). Never the installed package.

    Example:
        >>> writable_cards_dir("my_cards")
        PosixPath('my_cards')
    """
    return Path(cards_dir) if cards_dir is not None else Path(os.environ.get(CARDS_ENV) or "cards")


def draft_entry(
    ticket: Any,
    sha256: str,
    *,
    name: str | None = None,
    cards_dir: str | os.PathLike | None = None,
    recipe: str | None = None,
    where: str = "the ticket",
) -> dict[str, Any]:
    """The catalogue entry for publishing ``ticket`` (whose ``ticket.safetensors`` has ``sha256``), before
    its location is known: :func:`ticket_zoo.hub.publish` adds ``repo_id`` and ``revision`` after the push.

    ``name`` defaults to the ticket's own name; an existing card of that name (an unpublished slot, in
    :func:`writable_cards_dir` or in the installed catalogue) keeps its source and recipe. ``where``
    names the ticket in errors.

    Example:
        >>> from ticket_zoo.format import ticket_from_bytes
        >>> data = read_embedded(info("lenet_300_100-digits04-5pct"))
        >>> ticket = ticket_from_bytes(data)
        >>> entry = draft_entry(ticket, sha256_hex(data))  # named like the ticket: its card's recipe is kept
        >>> entry["name"], entry["source"], entry["recipe"]
        ('lenet_300_100-digits04-5pct', 'digits04', 'recipes/lenet_300_100-digits04.yaml')
        >>> draft_entry(ticket, sha256_hex(data), name="lenet_300_100-digits04-4pct")["recipe"]  # a new slot
        'recipes/lenet_300_100-digits04.yaml'
    """
    if not (name or ticket.name):
        raise ConfigError(f"{where}: the ticket has no name; give one with --name ARCH-SOURCE-PCTpct")
    name = validate_name(name or ticket.name)
    previous: dict[str, Any] = {}
    for candidate in (writable_cards_dir(cards_dir), _installed_cards_dir()):
        if candidate is not None and (candidate / f"{name}.md").is_file():
            previous = _parse_card(candidate / f"{name}.md")
            break
    arch, source, _ = _split_name(name)
    meta = ticket.meta
    return {
        "name": name,
        "arch": ticket.arch,
        "source": previous.get("source") or source,
        "dataset": meta.get("source") or previous.get("dataset") or source,
        "density": ticket.density,
        "source_accuracy": meta.get("source_test_acc"),
        "recipe": recipe or previous.get("recipe") or f"recipes/{arch}-{source}.yaml",
        "sha256": sha256,
    }


# --- CLI -------------------------------------------------------------------------------------------


def _where(entry: dict[str, Any]) -> str:
    if entry["location"] == "embedded":
        return "embedded"
    if entry["location"] == "hub":
        return f"{entry['repo_id']}@{entry['revision'][:10]}"
    return "not published"


def _cli_list(args: argparse.Namespace) -> int:
    published = True if args.published else (False if args.unpublished else None)
    rows = list_tickets(args.arch, args.source, args.min_density, args.max_density, published)
    if not rows:
        print("no catalogue entries match")
        return 0
    width = max(len(e["name"]) for e in rows)
    print(f"{'name':<{width}}  {'density':>8}  {'src acc':>7}  where")
    for e in rows:
        acc = e["source_accuracy"]  # a number or None: _parse_card checked it
        acc = f"{acc:.2f}" if isinstance(acc, (int, float)) and not isinstance(acc, bool) else "-"
        print(f"{e['name']:<{width}}  {100 * e['density']:>7.2f}%  {acc:>7}  {_where(e)}")
    return 0


def _describe_local(path: Path) -> None:
    """``ticket-zoo info PATH``: what the ticket file says about itself."""
    from .format import read_ticket  # format imports torch: only this path of `ticket-zoo info` needs it

    ticket = read_ticket(ticket_file(path))
    meta = ticket.meta
    rows = {
        "path": path,
        "name": ticket.name,
        "arch": ticket.arch,
        "density": f"{100 * ticket.density:.2f}%",
        "source": meta.get("source"),
        "level": meta.get("level"),
        "source_accuracy": meta.get("source_test_acc"),
        "hub": meta.get("hub"),
    }
    for key, value in rows.items():
        if value is not None:
            print(f"{key:>15}: {value}")
    print(f"\nload it: ticket_zoo.load({str(path)!r})")


def _cli_info(args: argparse.Namespace) -> int:
    spec = parse_spec(args.name)
    if spec.kind == "path":
        _describe_local(spec.path)
        return 0
    if spec.kind == "hub":
        raise TicketNotFoundError(
            f"{shorten(args.name)} is a Hub repo, not a catalogue name: fetch it with `ticket-zoo pull {shorten(args.name)} "
            "--out DIR`, then `ticket-zoo info DIR` (catalogue names: `ticket-zoo list`)"
        )
    entry = info(spec.name)
    for key in (*FIELDS, "location", "repo_id", "revision", "embedded", "sha256", "card"):
        if entry.get(key) is not None:
            print(f"{key:>15}: {entry[key]}")
    if entry["published"]:
        print(f"\nload it: ticket_zoo.load({entry['name']!r})")
    else:
        print("\n" + unpublished_message(entry))
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``ticket-zoo list`` and ``ticket-zoo info`` (``publish`` is in :mod:`ticket_zoo.hub`: it pushes).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="ticket-zoo")
        >>> register_cli(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["list", "--arch", "conv4", "--published"]).arch
        'conv4'
    """
    p = subparsers.add_parser("list", help="list the ticket catalogue (filter by arch, source, density)")
    p.add_argument("--arch", help="architecture, e.g. vgg19 or lenet_300_100")
    p.add_argument("--source", help="source dataset tag (imagenet, digits04) or name (digits[0-4])")
    fraction = number(float, low=0, high=1)  # a density is a fraction of weights kept
    p.add_argument(
        "--min-density", type=fraction, metavar="D", help="keep entries with density >= D (fraction, 0.05 = 5%%)"
    )
    p.add_argument("--max-density", type=fraction, metavar="D", help="keep entries with density <= D")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--published", action="store_true", help="only entries that can be loaded now")
    group.add_argument("--unpublished", action="store_true", help="only entries still to be built")
    p.set_defaults(func=_cli_list)

    p = subparsers.add_parser(
        "info", help="show one catalogue entry and how to load (or build) it, or what a local ticket holds"
    )
    p.add_argument("name", metavar="NAME|PATH")
    p.set_defaults(func=_cli_info)
