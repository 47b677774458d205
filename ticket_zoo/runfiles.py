"""What a resumable run keeps on disk, one way for every stage: fingerprints and result rows.

* :func:`fingerprint` — the identity of a run: a hash of its config's fingerprinted fields
  (:meth:`ticket_zoo.config.Config.fingerprint_dict`) and anything else that decides the result
  (shapes, masks, data sizes). Find's ``config.yaml``, train's checkpoints and transfer's cells
  all compare this one kind of hash.
* :func:`read_rows` / :func:`append_row` — a ``.jsonl`` file of result rows, appended one fsync'd
  line at a time. A torn last line is what a killed writer leaves: it is dropped (and, for the
  writer resuming, cut from the file); a bad line anywhere else is an error naming it.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.jsonl"
    >>> append_row(path, {"cell": "a", "acc": 90.0})
    >>> _ = path.open("ab").write(b'{"cell": "b", "ac')   # a writer killed mid-line
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     [r["cell"] for r in read_rows(path, repair=True)]
    ['a']
    >>> "skipping unreadable last line 2" in str(caught[0].message)
    True
    >>> path.read_bytes().endswith(b"90.0}\\n")
    True
    >>> fingerprint({"lr": 0.1}) == fingerprint({"lr": 0.1}) != fingerprint({"lr": 0.2})
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._io import append_line, atomic_write_bytes, os_reason
from .errors import ConfigError

__all__ = ["append_row", "fingerprint", "read_rows"]


def fingerprint(data: Mapping[str, Any], tensors: Mapping[str, Any] | None = None) -> str:
    """SHA-256 (hex) of ``data`` as canonical JSON, then of each tensor in ``tensors`` by sorted name.

    Tensors (masks) are hashed by their bytes as ``bool`` on the CPU, so the same mask gives the
    same hash whatever its device or dtype.
    """
    h = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode())
    for name in sorted(tensors or {}):
        h.update(name.encode())
        t = tensors[name]
        h.update(t.detach().to("cpu").bool().contiguous().numpy().tobytes())
    return h.hexdigest()


def append_row(path: str | os.PathLike, row: Mapping[str, Any]) -> None:
    """Append ``row`` as one JSON line, fsync'd (NaN refused: rows are strict JSON)."""
    append_line(path, json.dumps(dict(row), allow_nan=False))


def read_rows(
    path: str | os.PathLike, *, repair: bool = False, missing_ok: bool = True, line_numbers: bool = False
) -> list[Any]:
    """The JSON object rows of a ``.jsonl`` file (``(line number, row)`` pairs with ``line_numbers``).

    A malformed *last* line is a killed writer's: it is dropped with a ``UserWarning``, and with
    ``repair=True`` (the writer resuming) the file is rewritten without it, atomically. A malformed
    line elsewhere raises :class:`ConfigError` naming it. Blank lines are ignored. A missing file is
    ``[]`` with ``missing_ok``, else a :class:`ConfigError` saying how to make it.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        if missing_ok:
            return []
        raise ConfigError(
            f"no results file at {path}; run `ticket-zoo transfer` to produce it, or pass the right OUT folder"
        ) from None
    except OSError as exc:  # a directory of that name, no permission, an I/O error
        raise ConfigError(f"cannot read {path} ({os_reason(exc)})") from None
    # Bytes, not text: a killed writer can cut a multi-byte character in half.
    raws = data.split(b"\n")
    nonblank = [i for i, r in enumerate(raws) if r.strip()]
    torn = bool(data) and not data.endswith(b"\n")
    good: list[bytes] = []
    rows: list[Any] = []
    for i in nonblank:
        try:
            row = json.loads(raws[i].decode("utf-8"))
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as exc:
            if i == nonblank[-1]:
                warnings.warn(
                    f"{path}: skipping unreadable last line {i + 1} (a writer was probably interrupted): {exc}",
                    UserWarning,
                    stacklevel=2,
                )
                torn = True
                continue
            raise ConfigError(f"{path}: line {i + 1} is not a JSON result row ({exc}); fix or delete that line") from None
        good.append(raws[i])
        rows.append((i + 1, row) if line_numbers else row)
    if torn and repair:
        atomic_write_bytes(path, b"".join(g + b"\n" for g in good))
    return rows
