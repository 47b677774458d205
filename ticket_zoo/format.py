"""The ticket file format v1 (``ticket.safetensors``): the only module that knows its bytes.

Layout (a plain safetensors file, readable by any safetensors reader):

* ``mask.<param>``: uint8, ``numpy.packbits`` of the flattened bool mask (bit order in metadata);
* ``init.<param>``: for masked parameters only the kept values, 1-D in flattened order (a ticket
  at density d costs about 1 + 32·d bits per prunable float32 weight); every other tensor of the
  rewind state is stored dense;
* ``__metadata__`` (str → str; JSON where structured): ``format=ticket-zoo``, ``format_version=1``,
  ``arch``, ``arch_kwargs``, ``shapes``, ``dtypes``, ``bitorder``, ``meta``.

:func:`read_ticket` validates everything before any tensor is used and raises
:class:`~ticket_zoo.errors.TicketFormatError` naming the problem. Nothing is ever unpickled:
the header is parsed as JSON here (bounded: digits, depth, counts, lengths) and the tensors are
raw little-endian arrays. A file is read header first; its data only once the header is a valid
ticket whose byte ranges match the file size, so memory follows the ticket, never the file.

Example:
    >>> import shutil, tempfile
    >>> import ticket_zoo as tz
    >>> ticket = tz.load("lenet_300_100-digits04-5pct")
    >>> tmp = tempfile.mkdtemp()
    >>> path = write_ticket(ticket, f"{tmp}/ticket.safetensors")
    >>> same = read_ticket(path)
    >>> all(torch.equal(same.masks[k], ticket.masks[k]) for k in ticket.masks), same.meta == ticket.meta
    (True, True)
    >>> ticket_to_bytes(same) == path.read_bytes()  # canonical: the same ticket gives the same bytes
    True
    >>> path.stat().st_size < 4 * sum(v.numel() for v in ticket.init.values()) / 10  # vs. a dense float32 file
    True
    >>> _ = Path(tmp, "cut.safetensors").write_bytes(path.read_bytes()[:-10])
    >>> read_ticket(f"{tmp}/cut.safetensors")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ticket_zoo.errors.TicketFormatError: .../cut.safetensors: truncated file: tensor 'mask.head.weight' ends at ...
    >>> shutil.rmtree(tmp)
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ._io import atomic_write_bytes
from .errors import ConfigError, TicketFormatError, UnknownArchitectureError, shorten
from .ticket import Ticket, check_arch, check_arch_kwargs, create_model

FORMAT_NAME = "ticket-zoo"
FORMAT_VERSION = 1
BITORDER = "big"
MAX_HEADER_BYTES = 16 * 1024 * 1024  # a header is JSON describing tensors (vgg19: 18 KB); larger is garbage
# Bounds on what a file may ask the reader to do (far above any real ticket; a file beyond them is refused
# before it costs memory or time): tensors in the file, dimensions per tensor, JSON nesting and digits,
# and the length of each metadata string.
MAX_TENSORS = 1 << 14  # tensors in a file (a masked parameter is two); the largest timm models have ~3000
# JSON objects/lists and values ('{', '[' and ',' anywhere in the header, metadata strings included: an
# upper bound) the header may hold: parsing "[{},{},...]" would cost ~70 bytes of memory per 3 bytes of file.
MAX_JSON_CONTAINERS = 8 * MAX_TENSORS
MAX_JSON_VALUES = 32 * MAX_TENSORS
MAX_NAME = 512  # characters in a tensor name ("init." + a parameter name)
MAX_NDIM = 16
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 32
MAX_METADATA_CHARS = {
    "format": 64,
    "format_version": 16,
    "bitorder": 16,
    "arch_kwargs": 4096,
    "meta": 1 << 20,
}
MAX_META_TEXT = 1024  # meta fields that cards and reprs print: name, source (a local data path), ...
_META_TEXT_FIELDS = ("name", "source", "source_hub_id", "method", "license")
_META_ACCURACY_FIELDS = ("source_test_acc", "source_val_acc")

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_ITEMSIZE = {k: torch.empty((), dtype=v).element_size() for k, v in _DTYPES.items()}
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_REQUIRED_METADATA = (
    "format",
    "format_version",
    "arch",
    "arch_kwargs",
    "shapes",
    "dtypes",
    "bitorder",
    "meta",
)


def _dtype_name(dtype: torch.dtype) -> str:
    if dtype not in _DTYPE_NAMES:
        raise TicketFormatError(f"dtype {dtype} cannot be stored in a ticket (supported: {sorted(_DTYPES)})")
    return _DTYPE_NAMES[dtype]


# --- writing --------------------------------------------------------------------------------------


def ticket_to_bytes(ticket: Ticket) -> bytes:
    """Serialise ``ticket`` to format-v1 bytes (deterministic: same ticket, same bytes)."""
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}
    for name, value in ticket.init.items():
        value = value.detach().cpu()
        shapes[name] = list(value.shape)
        dtypes[name] = _dtype_name(value.dtype)
        mask = ticket.masks.get(name)
        if mask is None:
            tensors[f"init.{name}"] = value.contiguous().clone()
            continue
        if not value.is_floating_point():
            # The reader only accepts floating-point masked tensors; refuse to write what it rejects.
            raise TicketFormatError(f"masked tensor {name!r} must be floating point, got {value.dtype}")
        flat_mask = mask.detach().cpu().reshape(-1)
        packed = np.packbits(flat_mask.numpy(), bitorder=BITORDER)
        tensors[f"mask.{name}"] = torch.from_numpy(packed)
        tensors[f"init.{name}"] = value.reshape(-1)[flat_mask].contiguous()
    for name in ticket.masks:
        if name not in ticket.init:
            raise TicketFormatError(f"mask {name!r} has no rewind weights in init")
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "arch": ticket.arch,
        "arch_kwargs": json.dumps(ticket.arch_kwargs, sort_keys=True),
        "shapes": json.dumps(shapes, sort_keys=True),
        "dtypes": json.dumps(dtypes, sort_keys=True),
        "bitorder": BITORDER,
        "meta": json.dumps(ticket.meta, sort_keys=True, default=str),
    }
    data = _canonical(st_save(tensors, metadata=metadata))
    # Refuse to write what read_ticket would refuse (meta too big, nested too deep, odd accuracies, ...).
    header, _ = _parse_header(data, len(data), "the ticket to write")
    _read_metadata(header, "the ticket to write")
    return data


def _canonical(data: bytes) -> bytes:
    """Re-frame safetensors bytes with the metadata keys sorted.

    The safetensors writer keeps ``__metadata__`` in a hash map, so its key order (and thus the
    file's bytes and sha256) changes from one process to the next. Catalogue entries pin a sha256,
    so the same ticket must always give the same bytes. Data offsets are relative to the end of
    the header, so only the header is rewritten.
    """
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    ordered = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    raw = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data section to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + data[8 + header_len :]


def write_ticket(ticket: Ticket, path: str | os.PathLike) -> Path:
    """Write ``ticket`` to ``path`` atomically (temp file + rename). Returns the path."""
    return atomic_write_bytes(path, ticket_to_bytes(ticket))


# --- reading and validation -----------------------------------------------------------------------


class _BadJSON(Exception):
    """Why a JSON text was refused (the caller adds where it was)."""


def _parse_int(digits: str) -> int:
    # Python refuses int() of more than 4300 digits with a ValueError; refuse far earlier, by name.
    if len(digits) > MAX_INT_DIGITS + 1:
        raise _BadJSON(f"not acceptable JSON: an integer has more than {MAX_INT_DIGITS} digits")
    return int(digits)


def _load_json(text: str) -> Any:
    """``json.loads`` that only raises :class:`_BadJSON`: bounded integers and nesting depth."""
    try:
        value = json.loads(text, parse_int=_parse_int)
    except _BadJSON:
        raise
    except RecursionError:
        raise _BadJSON(f"not acceptable JSON: nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:  # JSONDecodeError and int() limits
        raise _BadJSON(f"not valid JSON ({shorten(str(exc))})") from None
    # Iteratively (a recursive check would fail on the very input it guards against).
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise _BadJSON(f"not acceptable JSON: nested more than {MAX_JSON_DEPTH} levels deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return value


def _parse_header(head: bytes, size: int, source: str) -> tuple[dict[str, Any], int]:
    """Check the safetensors framing ourselves so every failure has a clear message.

    ``head`` holds at least the 8-byte length and the header (more is ignored), ``size`` is the size
    of the whole file: everything is checked from the header alone, before any data is read.
    """
    if size < 8 or len(head) < 8:
        raise TicketFormatError(
            f"{source}: truncated file ({size} bytes; a ticket starts with an 8-byte header length)"
        )
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > MAX_HEADER_BYTES:
        raise TicketFormatError(
            f"{source}: oversized header ({header_len} bytes > {MAX_HEADER_BYTES}); not a ticket file or corrupted"
        )
    if 8 + header_len > size or 8 + header_len > len(head):
        raise TicketFormatError(
            f"{source}: truncated file: header claims {header_len} bytes but only {size - 8} follow"
        )
    raw = head[8 : 8 + header_len]
    containers, values = raw.count(b"{") + raw.count(b"["), raw.count(b",")
    if containers > MAX_JSON_CONTAINERS or values > MAX_JSON_VALUES:
        raise TicketFormatError(
            f"{source}: garbage header: {containers} JSON objects/lists and {values} values (a ticket header "
            f"has at most {MAX_JSON_CONTAINERS} and {MAX_JSON_VALUES})"
        )
    try:
        header = _load_json(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TicketFormatError(f"{source}: garbage header: not valid JSON ({shorten(str(exc))})") from None
    except _BadJSON as exc:
        raise TicketFormatError(f"{source}: garbage header: {exc}") from None
    if not isinstance(header, dict):
        raise TicketFormatError(f"{source}: garbage header: expected a JSON object")
    if len(header) > MAX_TENSORS + 1:
        raise TicketFormatError(
            f"{source}: garbage header: {len(header) - 1} tensors (a ticket has at most {MAX_TENSORS})"
        )
    data_len = size - 8 - header_len
    ranges: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        label = shorten(repr(name))
        if len(name) > MAX_NAME:
            raise TicketFormatError(
                f"{source}: garbage header: tensor name {label} is longer than {MAX_NAME} characters"
            )
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise TicketFormatError(f"{source}: garbage header: entry {label} is not a tensor description")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        # isinstance first: a list or dict here would make the `in` test raise TypeError (unhashable).
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise TicketFormatError(f"{source}: tensor {label} has unsupported dtype {shorten(repr(dtype))}")
        if not (
            isinstance(shape, list)
            and len(shape) <= MAX_NDIM
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise TicketFormatError(f"{source}: garbage header: tensor {label} has shape {shorten(shape)}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise TicketFormatError(
                f"{source}: garbage header: tensor {label} has offsets {shorten(offsets)}"
            )
        start, end = offsets
        if end > data_len:
            raise TicketFormatError(
                f"{source}: truncated file: tensor {label} ends at byte {end} of the data section, "
                f"which has only {data_len} bytes"
            )
        if not 0 <= start <= end or end - start != math.prod(shape) * _ITEMSIZE[dtype]:
            raise TicketFormatError(
                f"{source}: tensor {label} byte range {offsets} does not match {dtype}{shape}"
            )
        ranges.append((start, end, name))
    # safetensors requires the tensors to tile the data section: no overlaps, no holes, no tail.
    position = 0
    for start, end, name in sorted(ranges):
        if start != position:
            raise TicketFormatError(
                f"{source}: bad offsets: tensor {shorten(repr(name))} starts at byte {start} of the data section, "
                f"expected {position} ({'overlaps the previous tensor' if start < position else 'hole before it'})"
            )
        position = end
    if position != data_len:
        raise TicketFormatError(
            f"{source}: bad offsets: tensors cover {position} bytes but the data section has {data_len} "
            "(trailing garbage or a truncated header)"
        )
    return header, header_len


def _json_field(metadata: dict[str, str], key: str, source: str, kind: type) -> Any:
    try:
        value = _load_json(metadata[key])
    except _BadJSON as exc:
        raise TicketFormatError(f"{source}: metadata field {key!r} is {exc}") from None
    if not isinstance(value, kind):
        raise TicketFormatError(f"{source}: metadata field {key!r} must be a JSON {kind.__name__}")
    return value


def _check_meta(meta: dict[str, Any], source: str) -> None:
    """The meta fields that cards, the catalogue and reprs format must have the types they assume."""
    for key in _META_TEXT_FIELDS:
        value = meta.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_META_TEXT):
            raise TicketFormatError(
                f"{source}: meta.{key} must be a string of at most {MAX_META_TEXT} characters, got {shorten(repr(value))}"
            )
    for key in _META_ACCURACY_FIELDS:
        value = meta.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100
        ):
            raise TicketFormatError(
                f"{source}: meta.{key} must be an accuracy in percent (a number in [0, 100]) or null, "
                f"got {shorten(value)}"
            )


def _read_metadata(header: dict[str, Any], source: str) -> dict[str, Any]:
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict):
        raise TicketFormatError(
            f"{source}: no ticket metadata: this is a safetensors file but not a ticket-zoo ticket"
        )
    for key, value in metadata.items():
        if not isinstance(value, str):  # safetensors metadata is str -> str
            raise TicketFormatError(f"{source}: metadata field {shorten(repr(key))} must be a string")
    if metadata.get("format") != FORMAT_NAME:
        raise TicketFormatError(
            f"{source}: unknown format {shorten(repr(metadata.get('format')))}: expected {FORMAT_NAME!r} "
            "(not a ticket-zoo ticket)"
        )
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise TicketFormatError(
            f"{source}: unsupported format version {shorten(repr(metadata.get('format_version')))}: this ticket_zoo "
            f"reads version {FORMAT_VERSION}; upgrade ticket_zoo to read newer tickets"
        )
    missing = [k for k in _REQUIRED_METADATA if k not in metadata]
    if missing:
        raise TicketFormatError(f"{source}: metadata is missing field(s) {missing}")
    for key, limit in MAX_METADATA_CHARS.items():
        if len(metadata[key]) > limit:
            raise TicketFormatError(
                f"{source}: metadata field {key!r} is {len(metadata[key])} characters long (at most {limit})"
            )
    if metadata["bitorder"] not in ("big", "little"):
        raise TicketFormatError(f"{source}: unknown mask bit order {shorten(repr(metadata['bitorder']))}")
    info = {
        "arch": metadata["arch"],
        "arch_kwargs": _json_field(metadata, "arch_kwargs", source, dict),
        "shapes": _json_field(metadata, "shapes", source, dict),
        "dtypes": _json_field(metadata, "dtypes", source, dict),
        "meta": _json_field(metadata, "meta", source, dict),
        "bitorder": metadata["bitorder"],
    }
    # Before anything is built: a file may only name a timm architecture and constructor arguments
    # that cannot load files or weights (see ticket.check_arch_kwargs).
    try:
        check_arch(info["arch"])
        check_arch_kwargs(info["arch_kwargs"])
    except ConfigError as exc:
        raise TicketFormatError(f"{source}: {exc}") from None
    _check_meta(info["meta"], source)
    return info


def _check_layout(header: dict[str, Any], info: dict[str, Any], source: str) -> list[str]:
    """Every state entry has its init (and, if masked, its mask); no stray tensors. Returns masked names."""
    shapes, dtypes = info["shapes"], info["dtypes"]
    if set(shapes) != set(dtypes):
        raise TicketFormatError(f"{source}: metadata 'shapes' and 'dtypes' name different tensors")
    if len(shapes) > MAX_TENSORS or any(len(n) > MAX_NAME for n in shapes):
        raise TicketFormatError(
            f"{source}: metadata 'shapes' describes more than {MAX_TENSORS} tensors or a name longer than "
            f"{MAX_NAME} characters"
        )
    tensor_names = {k for k in header if k != "__metadata__"}
    # A mask whose tensor the metadata does not describe is a stray tensor, not a masked entry.
    masked = sorted(
        k[len("mask.") :] for k in tensor_names if k.startswith("mask.") and k[len("mask.") :] in shapes
    )
    expected = {f"init.{n}" for n in shapes} | {f"mask.{n}" for n in masked}
    missing = sorted(expected - tensor_names)
    extra = sorted(tensor_names - expected)
    if extra:
        raise TicketFormatError(
            f"{source}: unexpected tensor(s) {shorten(extra[:5], 200)} not described by the metadata"
        )
    if missing:
        raise TicketFormatError(f"{source}: missing tensor(s) {shorten(missing[:5], 200)}")
    for name in shapes:
        dtype = dtypes[name]
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise TicketFormatError(
                f"{source}: tensor {shorten(repr(name))} has unknown dtype {shorten(repr(dtype))} in metadata"
            )
        shape = shapes[name]
        if not (
            isinstance(shape, list)
            and len(shape) <= MAX_NDIM
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise TicketFormatError(
                f"{source}: metadata shape of {shorten(repr(name))} is invalid: {shorten(shape)}"
            )
        entry = header[f"init.{name}"]
        if entry["dtype"] != dtype:
            raise TicketFormatError(
                f"{source}: init.{name} has dtype {entry['dtype']}, metadata says {dtype}"
            )
        if name in masked:
            numel = math.prod(shape)
            m = header[f"mask.{name}"]
            if m["dtype"] != "U8" or m["shape"] != [(numel + 7) // 8]:
                raise TicketFormatError(
                    f"{source}: mask.{name} must be U8[{(numel + 7) // 8}] (packed bits of {numel} weights), "
                    f"got {m['dtype']}{m['shape']}"
                )
            if len(entry["shape"]) != 1:
                raise TicketFormatError(f"{source}: init.{name} of a masked tensor must be 1-D kept values")
            if entry["shape"][0] > numel:  # before any data is read: never more values than weights
                raise TicketFormatError(
                    f"{source}: init.{name} stores {entry['shape'][0]} kept values but the tensor has only "
                    f"{numel} weights"
                )
            if dtype not in ("F64", "F32", "F16", "BF16"):
                raise TicketFormatError(
                    f"{source}: masked tensor {name!r} must be floating point, got {dtype}"
                )
        elif entry["shape"] != shape:
            # A 1-D init that does not match is what a masked tensor looks like without its mask.
            hint = (
                f" (kept values of a masked tensor whose mask.{name} is missing?)"
                if len(entry["shape"]) == 1
                else ""
            )
            raise TicketFormatError(
                f"{source}: init.{name} has shape {entry['shape']}, metadata says {shape}{hint}"
            )
    return masked


def _check_architecture(info: dict[str, Any], masked: list[str], source: str) -> None:
    """Build the architecture on the meta device (no memory, no init) and compare names and shapes."""
    if "num_classes" not in info["arch_kwargs"]:
        raise TicketFormatError(f"{source}: arch_kwargs has no 'num_classes'")
    try:
        model = create_model(info["arch"], info["arch_kwargs"], device="meta")
    except UnknownArchitectureError as exc:
        raise TicketFormatError(f"{source}: {exc}") from None
    except Exception as exc:  # timm raises plain TypeErrors for bad kwargs
        raise TicketFormatError(
            f"{source}: cannot build architecture {info['arch']!r} with {shorten(info['arch_kwargs'], 200)}: "
            f"{shorten(str(exc), 200)}"
        ) from None
    state_shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    for name in masked:
        if name not in params:
            raise TicketFormatError(
                f"{source}: masks do not fit architecture {info['arch']!r}: it has no parameter {name!r}"
            )
    if set(state_shapes) != set(info["shapes"]):
        missing = sorted(set(state_shapes) - set(info["shapes"]))
        extra = sorted(set(info["shapes"]) - set(state_shapes))
        raise TicketFormatError(
            f"{source}: tensors do not fit architecture {info['arch']!r}: missing {missing[:3]}, extra {extra[:3]}"
        )
    for name, shape in info["shapes"].items():
        if state_shapes[name] != shape:
            raise TicketFormatError(
                f"{source}: tensors do not fit architecture {info['arch']!r}: {name!r} is {shape} in the file "
                f"but {state_shapes[name]} in the model"
            )


def _all_finite(values: torch.Tensor) -> bool:
    """True when no NaN/inf: min and max propagate NaN, and an inf is the min or max (no big temporary)."""
    low, high = torch.aminmax(values.reshape(-1))
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def _tensor_views(data: bytes, header: dict[str, Any], base: int) -> dict[str, torch.Tensor]:
    """Tensors over ``data`` without copying (the framing was checked): read-only views, never written to.

    safetensors' own ``load`` would copy every tensor, doubling the memory of a read.
    """
    if sys.byteorder != "little":  # safetensors is little-endian; let it convert
        return st_load(data)
    tensors: dict[str, torch.Tensor] = {}
    with warnings.catch_warnings():
        # `bytes` is immutable; these views are only read (values are copied out before any write).
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            code, shape = entry["dtype"], entry["shape"]
            dtype = torch.uint8 if code == "BOOL" else _DTYPES[code]
            if end == start:
                tensors[name] = torch.empty(shape, dtype=_DTYPES[code])
                continue
            offset, itemsize = base + start, _ITEMSIZE[code]
            if offset % itemsize:  # a misaligned tensor (not written by us): copy its bytes
                values = torch.frombuffer(bytearray(data[offset : base + end]), dtype=dtype)
            else:
                values = torch.frombuffer(data, dtype=dtype, count=(end - start) // itemsize, offset=offset)
            # a bool byte other than 0/1 would be an invalid bool tensor: normalise
            tensors[name] = (values != 0 if code == "BOOL" else values).reshape(shape)
    return tensors


class _FileTensors:
    """``name -> tensor`` read from an open ticket file one tensor at a time, straight into its own memory.

    Only one tensor's bytes are in flight at a time, so reading a file costs about the decoded ticket
    plus its largest tensor, never a copy of the whole file.
    """

    def __init__(self, f: Any, header: dict[str, Any], base: int, source: str) -> None:
        self.f, self.header, self.base, self.source = f, header, base, source

    def __getitem__(self, name: str) -> torch.Tensor:
        entry = self.header[name]
        start, end = entry["data_offsets"]
        code, shape = entry["dtype"], entry["shape"]
        raw = torch.empty(end - start, dtype=torch.uint8)
        view = memoryview(raw.numpy())
        self.f.seek(self.base + start)
        done = 0
        while done < len(view):
            got = self.f.readinto(view[done:])
            if not got:
                raise TicketFormatError(f"{self.source}: the file was truncated while it was being read")
            done += got
        if code == "BOOL":
            return (raw != 0).reshape(shape)
        return raw.view(_DTYPES[code]).reshape(shape)


def _check_header(header: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """Everything that can be checked without the data: metadata, layout, the architecture builds with
    exactly these tensors. Returns (metadata info, masked names)."""
    info = _read_metadata(header, source)
    masked = _check_layout(header, info, source)
    _check_architecture(info, masked, source)
    return info, masked


def _decode(raw: Any, checked: tuple[dict[str, Any], list[str]], source: str, *, owned: bool) -> Ticket:
    """Validate the tensor data and build the Ticket. ``raw[name]`` gives a tensor of the file; ``owned``
    says whether it is the caller's to keep (read into its own memory) or a view to be copied."""
    info, masked = checked
    masks: dict[str, torch.Tensor] = {}
    init: dict[str, torch.Tensor] = {}
    for name, shape in info["shapes"].items():
        values = raw[f"init.{name}"]
        if values.is_floating_point() and values.numel() and not _all_finite(values):
            raise TicketFormatError(f"{source}: init.{name} contains non-finite values (NaN or inf)")
        if name not in masked:
            init[name] = values if owned else values.clone()  # a view would share the caller's bytes
            continue
        numel = math.prod(shape)
        packed = raw[f"mask.{name}"].numpy()
        bits = np.unpackbits(packed, bitorder=info["bitorder"])
        if bits[numel:].any():
            raise TicketFormatError(f"{source}: mask.{name} has bits set beyond its {numel} weights")
        flat_mask = torch.from_numpy(bits[:numel].view(np.bool_))  # unpackbits gives 0/1: a free view
        kept = int(_POPCOUNT[packed].sum(dtype=np.int64))  # on the packed bytes: 8x less to read
        if kept != values.numel():
            raise TicketFormatError(
                f"{source}: mask.{name} keeps {kept} weights but init.{name} stores {values.numel()} values"
            )
        full = torch.zeros(numel, dtype=values.dtype).masked_scatter_(flat_mask, values)
        masks[name] = flat_mask.reshape(shape)
        init[name] = full.reshape(shape)
    # init was rebuilt from kept values, so pruned entries are zero by construction.
    return Ticket(
        arch=info["arch"],
        arch_kwargs=info["arch_kwargs"],
        masks=masks,
        init=init,
        meta=info["meta"],
        _trusted_zeros=True,
    )


def ticket_from_bytes(data: bytes, source: str = "<bytes>") -> Ticket:
    """Validate and decode format-v1 bytes into a :class:`Ticket` (raises TicketFormatError)."""
    header, header_len = _parse_header(data, len(data), source)
    checked = _check_header(header, source)
    try:
        raw = _tensor_views(data, header, 8 + header_len)
    except Exception as exc:  # the framing was checked above; anything left is corruption
        raise TicketFormatError(f"{source}: corrupt tensor data ({shorten(str(exc))})") from None
    return _decode(raw, checked, source, owned=False)


def _open_checked(f: Any, source: str) -> tuple[int, dict[str, Any], int, tuple[dict[str, Any], list[str]]]:
    """Read and check the header of the open file ``f`` *before* any data: (size, header, header_len, checked).

    Only the 8-byte length and the header are read. A file whose size differs from what the header
    describes (trailing data, a truncated file), or whose header is not a valid ticket of an
    architecture that builds with exactly its tensors, is refused here; the data that remains to be
    read is then at most the size of that architecture's state, whatever the file.
    """
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) == 8:
        (header_len,) = struct.unpack("<Q", head)
        if header_len <= MAX_HEADER_BYTES:
            head += f.read(min(header_len, max(size - 8, 0)))
    header, header_len = _parse_header(head, size, source)
    return size, header, header_len, _check_header(header, source)


def _checked_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # e.g. a name too long for the file system
        is_file = False
    if not is_file:
        raise TicketFormatError(f"{shorten(str(path), 200)}: no such ticket file")
    return path


def read_ticket_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a ticket file, read only after its header passed every check (memory bounded by the ticket).

    For callers that need the bytes themselves (e.g. to check a digest) before
    :func:`ticket_from_bytes`: a file larger or smaller than its header says, or whose header is not a
    valid ticket, raises :class:`TicketFormatError` without its data being read.

    Example:
        >>> import hashlib, shutil, tempfile
        >>> import ticket_zoo as tz
        >>> tmp = tempfile.mkdtemp()
        >>> path = write_ticket(tz.load("lenet_300_100-digits04-5pct"), f"{tmp}/ticket.safetensors")
        >>> data = read_ticket_bytes(path)
        >>> hashlib.sha256(data).hexdigest() == tz.info("lenet_300_100-digits04-5pct")["sha256"]  # as pinned
        True
        >>> ticket_from_bytes(data).meta["level"]
        14
        >>> shutil.rmtree(tmp)
    """
    path = _checked_path(path)
    with open(path, "rb") as f:
        size, _, _, _ = _open_checked(f, str(path))
        f.seek(0)
        data = f.read(size)
    if len(data) != size:
        raise TicketFormatError(f"{path}: the file changed while it was being read; try again")
    return data


def read_ticket(path: str | os.PathLike) -> Ticket:
    """Read and validate a ``ticket.safetensors`` file.

    The header is read and checked first (size, layout, architecture); then each tensor is read into
    its own memory and checked, so peak memory is about the decoded ticket plus its largest tensor
    however large the file is.

    Example:
        >>> import shutil, tempfile
        >>> import ticket_zoo as tz
        >>> tmp = tempfile.mkdtemp()
        >>> path = write_ticket(tz.load("lenet_300_100-digits04-5pct"), f"{tmp}/ticket.safetensors")
        >>> read_ticket(path)
        Ticket(arch='lenet_300_100', density=0.0458, layers=3, num_classes=5, source='digits[0-4]')
        >>> read_ticket(f"{tmp}/missing.safetensors")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.TicketFormatError: .../missing.safetensors: no such ticket file
        >>> shutil.rmtree(tmp)
    """
    path = _checked_path(path)
    source = str(path)
    with open(path, "rb") as f:
        _, header, header_len, checked = _open_checked(f, source)
        if sys.byteorder != "little":  # safetensors is little-endian: let safetensors convert
            f.seek(0)
            return _decode(_tensor_views(f.read(), header, 8 + header_len), checked, source, owned=False)
        return _decode(_FileTensors(f, header, 8 + header_len, source), checked, source, owned=True)
