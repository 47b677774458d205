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
from ._recipe import resolve_recipe
from .configs import number
from .errors import ConfigError

# The recipes shipped with the package (ticket_zoo/recipes in a wheel, the repo's recipes/ otherwise),
# as absolute paths: `ticket-zoo demo` runs from any directory.
DEFAULT_FIND_RECIPE = str(resolve_recipe("lenet_300_100-digits04"))
DEFAULT_TRANSFER_RECIPE = str(resolve_recipe("transfer-digits"))


#: Where the demo's find stops (overrides the recipe's ``target_density``, which is not part of a run's
#: fingerprint): ~1.5% of weights remaining, where a winning ticket beats a random one on digits.
DEMO_TARGET_DENSITY = 0.016
#: The densest level the demo transfers: above ~50% of weights remaining every control matches dense,
#: so the spread starts here and spends its levels where the curves separate.
DEMO_DENSEST = 0.5


def pick_levels(rows: list[dict[str, Any]], count: int, *, densest: float = DEMO_DENSEST) -> list[dict[str, Any]]:
    """``count`` pruned levels spread evenly in log-density from the level nearest ``densest`` down to
    the sparsest level (always included).

    Example:
        >>> rows = [{"level": i, "density": 0.8 ** i} for i in range(20)]
        >>> [r["level"] for r in pick_levels(rows, 5)]
        [3, 7, 11, 15, 19]
    """
    pruned = [r for r in rows if r["density"] < 1.0]
    if len(pruned) <= count:
        return pruned
    top = min(pruned, key=lambda r: (abs(math.log(r["density"]) - math.log(densest)), r["level"]))
    span = [r for r in pruned if r["density"] <= top["density"]]
    if len(span) <= count:
        span = pruned[-count:]
    lo, hi = math.log(span[-1]["density"]), math.log(span[0]["density"])
    chosen: list[dict[str, Any]] = []
    for i in range(count):
        target = hi + (lo - hi) * i / (count - 1) if count > 1 else lo
        best = min(span, key=lambda r: abs(math.log(r["density"]) - target))
        if best not in chosen:
            chosen.append(best)
    return sorted(chosen, key=lambda r: r["level"])


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    find_recipe: str | Path = DEFAULT_FIND_RECIPE,
    transfer_recipe: str | Path = DEFAULT_TRANSFER_RECIPE,
    levels: int = 5,
    target_density: float | None = DEMO_TARGET_DENSITY,
    from_catalogue: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run find → transfer → report into ``out_dir`` and return the report dict. Resumable.

    Example (not run as a doctest: it trains for one to two minutes on a CPU):
        >>> report = run_demo("runs/demo")  # doctest: +SKIP
        >>> sorted(report)  # doctest: +SKIP
        ['comparisons', 'headline', 'matching', 'summary']
    """
    import torch

    # A file in the way, no permission, /proc, a read-only disk: one OutputDirError line before any work.
    out = prepare_out_dir(out_dir, what="--out")
    # One thread: LeNet-300-100 on 8x8 digits is far too small for intra-op parallelism to pay, and on
    # a shared or busy box a second spinning thread makes every step several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(out, find_recipe, transfer_recipe, levels, target_density, from_catalogue, progress)
    finally:
        torch.set_num_threads(threads)


def _run(
    out: Path,
    find_recipe: str | Path,
    transfer_recipe: str | Path,
    levels: int,
    target_density: float | None,
    from_catalogue: bool,
    progress: bool,
) -> dict[str, Any]:
    from .find import FindConfig, find_tickets
    from .transfer_grid import TransferConfig, transfer

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
        find_config = FindConfig.from_yaml(
            find_recipe, overrides={"target_density": target_density} if target_density else None
        )
        stop = f" down to {100 * find_config.target_density:.1f}%" if find_config.target_density else ""
        print(f"[demo] 1/3 find: IMP with rewinding{stop}, {find_recipe} -> {out / 'find'}")
        rows = find_tickets(find_config, out / "find", progress=progress)
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
        target_density=args.target_density,
        from_catalogue=args.from_catalogue,
        progress=not args.no_progress,
    )
    return 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="the main job on offline digits data: find -> transfer -> report")
    p.add_argument("--out", default="runs/demo", help="output directory (re-running resumes)")
    p.add_argument("--find-recipe", default=DEFAULT_FIND_RECIPE)
    p.add_argument("--transfer-recipe", default=DEFAULT_TRANSFER_RECIPE)
    p.add_argument("--levels", type=number(int, low=1), default=5, help="how many pruning levels to transfer")
    p.add_argument("--target-density", type=number(float, low=0, high=1, low_open=True, high_open=True),
                   default=DEMO_TARGET_DENSITY,
                   help="where find stops (fraction of weights remaining; default %(default)s)")
    p.add_argument("--from-catalogue", action="store_true", help="skip find; use the embedded catalogue family")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or log lines")
    p.set_defaults(func=_cli)
