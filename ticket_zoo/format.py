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
the header is parsed as JSON here and the tensors by safetensors.

Example:
    >>> write_ticket(ticket, "out/ticket.safetensors")  # doctest: +SKIP
    >>> same = read_ticket("out/ticket.safetensors")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ._io import atomic_write_bytes
from .errors import TicketFormatError, UnknownArchitectureError
from .ticket import Ticket, create_model

FORMAT_NAME = "ticket-zoo"
FORMAT_VERSION = 1
BITORDER = "big"
MAX_HEADER_BYTES = 64 * 1024 * 1024  # a header is JSON describing tensors; anything larger is garbage

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
    return _canonical(st_save(tensors, metadata=metadata))


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


def _parse_header(data: bytes, source: str) -> tuple[dict[str, Any], int]:
    """Check the safetensors framing ourselves so every failure has a clear message."""
    size = len(data)
    if size < 8:
        raise TicketFormatError(
            f"{source}: truncated file ({size} bytes; a ticket starts with an 8-byte header length)"
        )
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES:
        raise TicketFormatError(
            f"{source}: oversized header ({header_len} bytes > {MAX_HEADER_BYTES}); not a ticket file or corrupted"
        )
    if 8 + header_len > size:
        raise TicketFormatError(
            f"{source}: truncated file: header claims {header_len} bytes but only {size - 8} follow"
        )
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TicketFormatError(f"{source}: garbage header: not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise TicketFormatError(f"{source}: garbage header: expected a JSON object")
    data_len = size - 8 - header_len
    ranges: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise TicketFormatError(f"{source}: garbage header: entry {name!r} is not a tensor description")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        # isinstance first: a list or dict here would make the `in` test raise TypeError (unhashable).
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise TicketFormatError(f"{source}: tensor {name!r} has unsupported dtype {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise TicketFormatError(f"{source}: garbage header: tensor {name!r} has shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise TicketFormatError(f"{source}: garbage header: tensor {name!r} has offsets {offsets!r}")
        start, end = offsets
        if end > data_len:
            raise TicketFormatError(
                f"{source}: truncated file: tensor {name!r} ends at byte {end} of the data section, "
                f"which has only {data_len} bytes"
            )
        if not 0 <= start <= end or end - start != math.prod(shape) * _ITEMSIZE[dtype]:
            raise TicketFormatError(
                f"{source}: tensor {name!r} byte range {offsets} does not match {dtype}{shape}"
            )
        ranges.append((start, end, name))
    # safetensors requires the tensors to tile the data section: no overlaps, no holes, no tail.
    position = 0
    for start, end, name in sorted(ranges):
        if start != position:
            raise TicketFormatError(
                f"{source}: bad offsets: tensor {name!r} starts at byte {start} of the data section, expected "
                f"{position} ({'overlaps the previous tensor' if start < position else 'hole before it'})"
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
        value = json.loads(metadata[key])
    except (TypeError, json.JSONDecodeError):
        raise TicketFormatError(f"{source}: metadata field {key!r} is not valid JSON") from None
    if not isinstance(value, kind):
        raise TicketFormatError(f"{source}: metadata field {key!r} must be a JSON {kind.__name__}")
    return value


def _read_metadata(header: dict[str, Any], source: str) -> dict[str, Any]:
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict):
        raise TicketFormatError(
            f"{source}: no ticket metadata: this is a safetensors file but not a ticket-zoo ticket"
        )
    if metadata.get("format") != FORMAT_NAME:
        raise TicketFormatError(
            f"{source}: unknown format {metadata.get('format')!r}: expected {FORMAT_NAME!r} (not a ticket-zoo ticket)"
        )
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise TicketFormatError(
            f"{source}: unsupported format version {metadata.get('format_version')!r}: this ticket_zoo reads "
            f"version {FORMAT_VERSION}; upgrade ticket_zoo to read newer tickets"
        )
    missing = [k for k in _REQUIRED_METADATA if k not in metadata]
    if missing:
        raise TicketFormatError(f"{source}: metadata is missing field(s) {missing}")
    if metadata["bitorder"] not in ("big", "little"):
        raise TicketFormatError(f"{source}: unknown mask bit order {metadata['bitorder']!r}")
    return {
        "arch": metadata["arch"],
        "arch_kwargs": _json_field(metadata, "arch_kwargs", source, dict),
        "shapes": _json_field(metadata, "shapes", source, dict),
        "dtypes": _json_field(metadata, "dtypes", source, dict),
        "meta": _json_field(metadata, "meta", source, dict),
        "bitorder": metadata["bitorder"],
    }


def _check_layout(header: dict[str, Any], info: dict[str, Any], source: str) -> list[str]:
    """Every state entry has its init (and, if masked, its mask); no stray tensors. Returns masked names."""
    shapes, dtypes = info["shapes"], info["dtypes"]
    if set(shapes) != set(dtypes):
        raise TicketFormatError(f"{source}: metadata 'shapes' and 'dtypes' name different tensors")
    tensor_names = {k for k in header if k != "__metadata__"}
    # A mask whose tensor the metadata does not describe is a stray tensor, not a masked entry.
    masked = sorted(
        k[len("mask.") :] for k in tensor_names if k.startswith("mask.") and k[len("mask.") :] in shapes
    )
    expected = {f"init.{n}" for n in shapes} | {f"mask.{n}" for n in masked}
    missing = sorted(expected - tensor_names)
    extra = sorted(tensor_names - expected)
    if extra:
        raise TicketFormatError(f"{source}: unexpected tensor(s) {extra[:5]} not described by the metadata")
    if missing:
        raise TicketFormatError(f"{source}: missing tensor(s) {missing[:5]}")
    for name in shapes:
        dtype = dtypes[name]
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise TicketFormatError(f"{source}: tensor {name!r} has unknown dtype {dtype!r} in metadata")
        shape = shapes[name]
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise TicketFormatError(f"{source}: metadata shape of {name!r} is invalid: {shape!r}")
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
            f"{source}: cannot build architecture {info['arch']!r} with {info['arch_kwargs']}: {exc}"
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


def ticket_from_bytes(data: bytes, source: str = "<bytes>") -> Ticket:
    """Validate and decode format-v1 bytes into a :class:`Ticket` (raises TicketFormatError)."""
    header, _ = _parse_header(data, source)
    info = _read_metadata(header, source)
    masked = _check_layout(header, info, source)
    _check_architecture(info, masked, source)
    try:
        raw = st_load(data)
    except Exception as exc:  # the framing was checked above; anything left is corruption
        raise TicketFormatError(f"{source}: corrupt tensor data ({exc})") from None

    masks: dict[str, torch.Tensor] = {}
    init: dict[str, torch.Tensor] = {}
    for name, shape in info["shapes"].items():
        values = raw[f"init.{name}"]
        if values.is_floating_point() and values.numel() and not _all_finite(values):
            raise TicketFormatError(f"{source}: init.{name} contains non-finite values (NaN or inf)")
        if name not in masked:
            init[name] = values
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


def read_ticket(path: str | os.PathLike) -> Ticket:
    """Read and validate a ``ticket.safetensors`` file.

    Example:
        >>> ticket = read_ticket("runs/digits/level_03/ticket.safetensors")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise TicketFormatError(f"{path}: no such ticket file")
    return ticket_from_bytes(path.read_bytes(), source=str(path))
