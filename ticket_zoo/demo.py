"""The main job, end to end on a fresh offline machine: find → transfer → report.

1. **find** a family of tickets with IMP + rewinding on ``digits[0-4]`` (real 8x8 handwritten
   digits from scikit-learn) — or, with ``--from-catalogue``, take the embedded catalogue family;
2. **transfer** a spread of them to ``digits[5-9]`` with SGD and Adam against ``random_ticket``,
   ``reinit`` and ``dense`` over several seeds;
3. **report** the comparison: table on the terminal, ``report.csv``/``report.json``/``report.png``.

Example:
    $ ticket-zoo demo --out runs/demo
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from ._io import atomic_write_text, prepare_out_dir
from .errors import ConfigError

DEFAULT_FIND_RECIPE = "recipes/lenet_300_100-digits04.yaml"
DEFAULT_TRANSFER_RECIPE = "recipes/transfer-digits.yaml"


def pick_levels(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` pruned levels spread evenly in log-density (always including the sparsest).

    Example:
        >>> rows = [{"level": i, "density": 0.8 ** i} for i in range(14)]
        >>> [r["level"] for r in pick_levels(rows, 4)]
        [1, 5, 9, 13]
    """
    pruned = [r for r in rows if r["density"] < 1.0]
    if len(pruned) <= count:
        return pruned
    lo, hi = math.log(pruned[-1]["density"]), math.log(pruned[0]["density"])
    chosen: list[dict[str, Any]] = []
    for i in range(count):
        target = hi + (lo - hi) * i / (count - 1)
        best = min(pruned, key=lambda r: abs(math.log(r["density"]) - target))
        if best not in chosen:
            chosen.append(best)
    return sorted(chosen, key=lambda r: r["level"])


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    find_recipe: str | Path = DEFAULT_FIND_RECIPE,
    transfer_recipe: str | Path = DEFAULT_TRANSFER_RECIPE,
    levels: int = 5,
    from_catalogue: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run find → transfer → report into ``out_dir`` and return the report dict. Resumable.

    Example:
        >>> report = run_demo("runs/demo")  # doctest: +SKIP
    """
    from .find import find_tickets
    from .transfer_engine import TransferConfig, transfer

    # A file in the way, no permission, /proc, a read-only disk: one OutputDirError line before any work.
    out = prepare_out_dir(out_dir, what="--out")
    t0 = time.perf_counter()
    if from_catalogue or not Path(find_recipe).is_file():
        from .zoo import list_tickets

        entries = [e for e in list_tickets(source="digits04", arch="lenet_300_100") if e.get("embedded")]
        if not entries:
            raise ConfigError(
                f"find_recipe {find_recipe} not found and the catalogue has no embedded digits[0-4] family; "
                "run from the repository root or pass --find-recipe"
            )
        tickets = [e["name"] for e in sorted(entries, key=lambda e: -e["density"])]
        print(f"[demo] using the embedded catalogue family: {', '.join(tickets)}")
    else:
        print(f"[demo] 1/3 find: IMP with rewinding, {find_recipe} -> {out / 'find'}")
        rows = find_tickets(find_recipe, out / "find", progress=progress)
        chosen = pick_levels(rows, levels)
        tickets = [r["path"] for r in chosen]
        dense = next(r for r in rows if r["level"] == 0)
        print(f"[demo]     dense source test accuracy {dense['test_acc']:.2f}%; transferring levels "
              + ", ".join(f"{r['level']} ({100 * r['density']:.1f}%)" for r in chosen))
    t_find = time.perf_counter() - t0

    print(f"[demo] 2/3 transfer: {transfer_recipe} -> {out / 'transfer'}")
    config = TransferConfig.from_yaml(transfer_recipe, overrides={"tickets": tickets})
    transfer(config, out / "transfer", progress=progress, report=False)
    t_transfer = time.perf_counter() - t0 - t_find

    print("[demo] 3/3 report")
    from .report import build_report

    report = build_report(out / "transfer", show=True)
    timing = {"find_seconds": round(t_find, 1), "transfer_seconds": round(t_transfer, 1),
              "total_seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(out / "timing.json", json.dumps(timing, indent=2))
    print(f"[demo] wrote {out / 'transfer' / 'report.png'}, report.csv, report.json; "
          f"wall time {timing['total_seconds']:.0f} s (find {t_find:.0f} s, transfer {t_transfer:.0f} s)")
    return report


def _cli(args: argparse.Namespace) -> int:
    run_demo(
        args.out,
        find_recipe=args.find_recipe,
        transfer_recipe=args.transfer_recipe,
        levels=args.levels,
        from_catalogue=args.from_catalogue,
        progress=not args.no_progress,
    )
    return 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="the main job on offline digits data: find -> transfer -> report")
    p.add_argument("--out", default="runs/demo", help="output directory (re-running resumes)")
    p.add_argument("--find-recipe", default=DEFAULT_FIND_RECIPE)
    p.add_argument("--transfer-recipe", default=DEFAULT_TRANSFER_RECIPE)
    p.add_argument("--levels", type=int, default=5, help="how many pruning levels to transfer")
    p.add_argument("--from-catalogue", action="store_true", help="skip find; use the embedded catalogue family")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cli)
