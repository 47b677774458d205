"""Shards of a transfer grid: which cells a shard runs, where its rows go, what is still missing.

A grid that outgrows one machine is cut into ``N`` shards run anywhere that sees the same ``OUT``
(by hand, or as a SLURM job array through :mod:`ticket_zoo.submit`). The rule is deterministic and
needs no coordination between shards:

* the plan's cells are grouped into *units* (:func:`ticket_zoo.transfer_cells.group_cells`: cells that
  train together; cells sharing a run are always in one unit), in plan order, numbered 0, 1, 2, ...;
* shard ``K`` of ``N`` (``1 <= K <= N``) runs the units whose number ``u`` has ``u % N == K - 1``
  (:func:`shard_units`), so a unit is never split and shards get interleaved, similar work;
* shard ``K`` of ``N`` appends its rows to ``OUT/results.shard-K-of-N.jsonl`` (:func:`results_name`);
  an unsharded run keeps ``OUT/results.jsonl``. Only one process appends to each file.

Every run, sharded or not, skips the cells recorded in *any* results file of ``OUT``
(:func:`results_files`, :func:`read_recorded`), so a shard resubmitted after a kill (or an unsharded
re-run) finishes only what is missing. ``OUT/plan.json`` (:func:`write_plan`) lists every planned
cell and its unit, so ``ticket-zoo report OUT`` can say which cells are missing and which shard
should have run them (:func:`missing_cells`). All shards must be run with the same config and the
same ``--no-batch`` setting (the units, hence the partition, depend on both).

Example:
    >>> parse_shard("2/3"), results_name((2, 3)), results_name(None)
    ((2, 3), 'results.shard-2-of-3.jsonl', 'results.jsonl')
    >>> units = [["a"], ["b", "c"], ["d"], ["e"]]
    >>> shard_units(units, (1, 2)), shard_units(units, (2, 2))
    ([['a'], ['d']], [['b', 'c'], ['e']])
    >>> parse_shard("4/3")
    Traceback (most recent call last):
    ...
    ticket_zoo.errors.ConfigError: --shard must be K/N with 1 <= K <= N (e.g. 2/3), got '4/3'
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ._io import atomic_write_text
from .errors import ConfigError, shorten
from .runfiles import read_rows

__all__ = [
    "PLAN_FILE",
    "RESULTS_FILE",
    "TIMING_FIELDS",
    "missing_cells",
    "parse_shard",
    "read_plan",
    "read_recorded",
    "results_files",
    "results_name",
    "shard_of",
    "shard_units",
    "write_plan",
]

RESULTS_FILE = "results.jsonl"
PLAN_FILE = "plan.json"
#: Fields of a result row that measure the machine or say how the run was executed, not the experiment
#: (ignored when rows are compared). ``batched`` (how many runs trained together) may differ for the same
#: cell: a unit resumed after a kill trains its remaining runs together.
TIMING_FIELDS = ("train_seconds", "images_per_second", "finished_at", "batched")
_SHARD_FILE = re.compile(r"^results\.shard-(\d+)-of-(\d+)\.jsonl$")
T = TypeVar("T")


def parse_shard(value: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"K/N"`` (or ``(K, N)``) checked to ``1 <= K <= N``; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
        parts = (int(m.group(1)), int(m.group(2))) if m else None
    else:
        try:
            k, n = value
            parts = (k, n) if all(isinstance(v, int) and not isinstance(v, bool) for v in (k, n)) else None
        except (TypeError, ValueError):
            parts = None
    if parts is None or not 1 <= parts[0] <= parts[1]:
        raise ConfigError(f"--shard must be K/N with 1 <= K <= N (e.g. 2/3), got {shorten(value)!r}")
    return parts


def results_name(shard: tuple[int, int] | None) -> str:
    """The results file a run appends to: ``results.jsonl``, or ``results.shard-K-of-N.jsonl``."""
    return RESULTS_FILE if shard is None else f"results.shard-{shard[0]}-of-{shard[1]}.jsonl"


def shard_of(unit_index: int, shards: int) -> int:
    """The shard (1-based) of unit number ``unit_index`` when the grid is cut into ``shards``."""
    return unit_index % shards + 1


def shard_units(units: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """The units shard ``(K, N)`` runs: those whose position ``u`` in plan order has ``u % N == K - 1``."""
    if shard is None:
        return list(units)
    k, n = shard
    return [u for i, u in enumerate(units) if shard_of(i, n) == k]


def results_files(out: str | os.PathLike) -> list[Path]:
    """Every results file in ``out``: ``results.jsonl`` first (if any), then the shard files by (N, K)."""
    out = Path(out)
    found = []
    if out.is_dir():
        for p in out.iterdir():
            m = _SHARD_FILE.match(p.name)
            if m and p.is_file():
                found.append(((int(m.group(2)), int(m.group(1))), p))
    main = [out / RESULTS_FILE] if (out / RESULTS_FILE).is_file() else []
    return main + [p for _, p in sorted(found)]


def read_recorded(out: str | os.PathLike, *, own: str | None = None) -> list[dict[str, Any]]:
    """The rows of every results file in ``out``, in file order (duplicates kept).

    ``own`` names the file this process appends to: a torn last line there is cut (the writer
    resuming). In the other files, which other shards may be appending to right now, a torn last
    line is skipped silently and left alone.
    """
    out = Path(out)
    rows: list[dict[str, Any]] = []
    if own is not None:
        rows += read_rows(out / own, repair=True)
    for path in results_files(out):
        if own is not None and path.name == own:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # another writer may be mid-line
            rows += read_rows(path)
    return rows


def write_plan(out: str | os.PathLike, units: Iterable[Iterable[str]], shards: int | None) -> None:
    """Write ``OUT/plan.json`` (atomically): every planned cell id with its unit number, and the
    shard count of the run that wrote it (``null`` for an unsharded run)."""
    cells = [{"cell": cid, "unit": u} for u, unit in enumerate(units) for cid in unit]
    text = json.dumps({"cells": cells, "shards": shards}, indent=1) + "\n"
    atomic_write_text(Path(out) / PLAN_FILE, text)


def read_plan(out: str | os.PathLike) -> dict[str, Any] | None:
    """``OUT/plan.json`` as written by :func:`write_plan`, or ``None`` if absent or unreadable."""
    try:
        data = json.loads((Path(out) / PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        return None
    return data


def missing_cells(out: str | os.PathLike, recorded: Iterable[str]) -> tuple[list[str], int, str]:
    """``(missing cell ids in plan order, planned cell count, one-line summary)`` for ``out``.

    The summary is ``""`` when nothing is missing or ``out`` holds no ``plan.json``.

    Example:
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> write_plan(out, [["a"], ["b", "c"], ["d"]], shards=3)
        >>> missing_cells(out, ["a", "d"])
        (['b', 'c'], 4, '2 of 4 planned cells missing (shard 2/3 not finished?)')
        >>> missing_cells(out, ["a", "b", "c", "d"])
        ([], 4, '')
    """
    plan = read_plan(out)
    if plan is None:
        return [], 0, ""
    done = set(recorded)
    entries = [e for e in plan["cells"] if isinstance(e, dict) and isinstance(e.get("cell"), str)]
    missing = [e for e in entries if e["cell"] not in done]
    if not missing:
        return [], len(entries), ""
    text = f"{len(missing)} of {len(entries)} planned cells missing"
    shards = plan.get("shards")
    if isinstance(shards, int) and shards >= 1:
        which = sorted({shard_of(int(e.get("unit", 0)), shards) for e in missing})
        names = ", ".join(f"{k}/{shards}" for k in which)
        text += f" (shard{'s' if len(which) > 1 else ''} {names} not finished?)"
    else:
        text += " (the transfer run not finished? re-run it to finish them)"
    return [e["cell"] for e in missing], len(entries), text
