"""Build the embedded zoo: real small tickets shipped inside the package, loadable offline by name.

Runs the project's own find recipes on scikit-learn digits (LeNet-300-100 and Conv-4, on digits 0-4
and on all ten digits), picks for each target density the pruning level whose density is closest,
copies its ``ticket.safetensors`` to ``ticket_zoo/embedded/NAME.safetensors`` and writes the card
``cards/NAME.md`` (density, source accuracy, recipe, sha256). NAME is the ticket's own name,
``{arch}-{source}-{pct}pct`` with pct the rounded percent of weights remaining.

Everything is seeded, CPU-deterministic and single-threaded: re-running a recipe reproduces the
shipped bytes exactly (same library versions, which the ticket records, and the same CPU kind),
which ``--check`` verifies.

Usage:
    python recipes/build_embedded_zoo.py                      # run all recipes, write files and cards
    python recipes/build_embedded_zoo.py --only conv4-digits04
    python recipes/build_embedded_zoo.py --new-only           # add new entries, keep the shipped bytes
    python recipes/build_embedded_zoo.py --check              # re-run, compare with the shipped sha256s
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ticket_zoo import zoo  # noqa: E402
from ticket_zoo._io import atomic_write_bytes, sha256_hex  # noqa: E402

# recipe (relative to the repo root) -> target percents of weights remaining. The last target is the
# sparsest level of the family (~1.5%), where the lottery-ticket effect shows on digits.
RECIPES: dict[str, tuple[float, ...]] = {
    "recipes/lenet_300_100-digits04.yaml": (51, 20, 5, 1.5),
    "recipes/lenet_300_100-digits.yaml": (51, 20, 5, 1.5),
    "recipes/conv4-digits04.yaml": (51, 20, 6, 1.5),
    "recipes/conv4-digits.yaml": (51, 20, 6, 1.5),
}
#: Where every family's find run stops (``target_density``; not part of a run's fingerprint, so it
#: extends a finished run and leaves the earlier levels untouched): deep enough for the last target.
STOP_DENSITY = 0.016


def pick_levels(rows: list[dict[str, Any]], targets: tuple[float, ...]) -> list[dict[str, Any]]:
    """For each target percent, the summary row whose density is closest (distinct rows, by level).

    Example:
        >>> rows = [{"level": i, "density": 0.8 ** i} for i in range(15)]
        >>> [r["level"] for r in pick_levels(rows, (51, 20, 5))]
        [3, 7, 13]
        >>> [r["level"] for r in pick_levels(rows, (51, 20, 5, 1.5))]
        [3, 7, 13, 14]
    """
    picked: dict[int, dict[str, Any]] = {}
    for target in targets:
        row = min(rows, key=lambda r: (abs(100 * r["density"] - target), r["level"]))
        picked[row["level"]] = row
    return [picked[k] for k in sorted(picked)]


def run_recipe(recipe: str, runs_dir: Path, progress: bool = True) -> list[dict[str, Any]]:
    """Run (or resume) ``recipe`` into ``runs_dir/<recipe stem>``, down to ``STOP_DENSITY``; return its summary rows."""
    import torch

    from ticket_zoo.find import FindConfig, find_tickets

    # One thread: CPU float reductions may be split differently with another thread count, and the
    # shipped bytes must not depend on how many cores the builder had.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = runs_dir / Path(recipe).stem
    try:
        rows = find_tickets(ROOT / recipe, out, progress=progress)
        config = FindConfig.from_yaml(ROOT / recipe)
        if config.target_density is not None and config.target_density > STOP_DENSITY:
            # Two steps: the recipe's own levels first (their tickets record the recipe as written, so
            # they keep the bytes they had before the zoo went deeper), then the run extended to
            # STOP_DENSITY (target_density is not fingerprinted: the finished levels are kept).
            deeper = FindConfig.from_yaml(ROOT / recipe, overrides={"target_density": STOP_DENSITY})
            rows = find_tickets(deeper, out, progress=progress)
        return rows
    finally:
        torch.set_num_threads(threads)


def entries_for(
    recipe: str, rows: list[dict[str, Any]], targets: tuple[float, ...]
) -> list[tuple[dict, bytes]]:
    """(catalogue entry, ticket bytes) for the levels of ``rows`` picked for ``targets``."""
    from ticket_zoo.format import ticket_from_bytes

    out = []
    for row in pick_levels(rows, targets):
        data = (Path(row["path"]) / "ticket.safetensors").read_bytes()
        ticket = ticket_from_bytes(data, source=row["path"])
        name = zoo.validate_name(ticket.name)
        _, source, _ = name.split("-")
        entry = {
            "name": name,
            "arch": ticket.arch,
            "source": source,
            "dataset": ticket.meta.get("source"),
            "density": ticket.density,
            "source_accuracy": ticket.meta.get("source_test_acc"),
            "recipe": recipe,
            "embedded": f"{name}.safetensors",
            "sha256": sha256_hex(data),
        }
        out.append((entry, data))
    return out


def build(
    recipes: list[str] | None = None,
    *,
    runs_dir: Path | None = None,
    cards_dir: Path = ROOT / "cards",
    embedded_dir: Path | None = None,
    write: bool = True,
    progress: bool = True,
    new_only: bool = False,
) -> list[dict[str, Any]]:
    """Run the recipes, then (``write``) install the picked tickets and their cards; return the entries.

    Embedded cards of a rebuilt recipe that the new build no longer produces are removed with their
    files, so the package never ships an orphan. With ``new_only`` only entries that have no card yet
    are written and nothing is removed: the shipped tickets keep their bytes (a build on other library
    versions than theirs would change them).
    """
    embedded_dir = embedded_dir or zoo.embedded_dir()
    recipes = recipes or list(RECIPES)
    entries = []
    with tempfile.TemporaryDirectory(prefix="embedded_zoo_") as tmp:
        runs = runs_dir or Path(tmp)
        for recipe in recipes:
            rows = run_recipe(recipe, runs, progress=progress)
            produced = entries_for(recipe, rows, RECIPES.get(recipe, (51, 20, 5)))
            entries += [e for e, _ in produced]
            if not write:
                continue
            if new_only:
                for entry, data in produced:
                    if not (cards_dir / f"{entry['name']}.md").exists():
                        path = atomic_write_bytes(embedded_dir / entry["embedded"], data)
                        path.chmod(0o644)
                        zoo.write_card(entry, cards_dir)
                continue
            names = {e["name"] for e, _ in produced}
            for old in zoo.list_tickets(cards_dir=cards_dir):
                if old["recipe"] == recipe and old["location"] == "embedded" and old["name"] not in names:
                    Path(old["card"]).unlink()
                    (embedded_dir / old["embedded"]).unlink(missing_ok=True)
            for entry, data in produced:
                path = atomic_write_bytes(embedded_dir / entry["embedded"], data)
                path.chmod(0o644)  # a package file: world-readable whatever the builder's umask
                zoo.write_card(entry, cards_dir)
    return entries


def check(
    recipes: list[str] | None = None, *, runs_dir: Path | None = None, progress: bool = True
) -> list[str]:
    """Re-run the recipes and list every way the result differs from the shipped cards (empty = identical)."""
    recipes = recipes or list(RECIPES)
    problems = []
    shipped = {
        e["name"]: e
        for e in zoo.list_tickets(cards_dir=ROOT / "cards")
        if e["location"] == "embedded" and e["recipe"] in recipes
    }
    produced = build(recipes, runs_dir=runs_dir, write=False, progress=progress)
    for entry in produced:
        old = shipped.get(entry["name"])
        if old is None:
            problems.append(f"{entry['name']}: produced by {entry['recipe']} but not shipped")
        elif old["sha256"] != entry["sha256"]:
            problems.append(
                f"{entry['name']}: sha256 {entry['sha256']} differs from the shipped {old['sha256']}"
            )
    for name in sorted(set(shipped) - {e["name"] for e in produced}):
        problems.append(f"{name}: shipped but no longer produced by {shipped[name]['recipe']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="STEM", help="recipe stem, e.g. conv4-digits04")
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=ROOT / "runs" / "embedded_zoo",
        help="where the find runs go (resumable)",
    )
    parser.add_argument("--check", action="store_true", help="re-run and compare with the shipped sha256s")
    parser.add_argument(
        "--new-only",
        action="store_true",
        help="write only entries that have no card yet; keep every shipped ticket's bytes",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    recipes = list(RECIPES)
    if args.only:
        recipes = [r for r in RECIPES if Path(r).stem in args.only]
        unknown = set(args.only) - {Path(r).stem for r in recipes}
        if unknown:
            parser.error(
                f"unknown recipe stem(s) {sorted(unknown)}; choose from {[Path(r).stem for r in RECIPES]}"
            )
    if args.check:
        problems = check(recipes, runs_dir=None, progress=not args.quiet)
        print("\n".join(problems) or "embedded zoo reproduces bit-identically")
        return 1 if problems else 0
    for entry in build(recipes, runs_dir=args.runs_dir, progress=not args.quiet, new_only=args.new_only):
        print(f"{entry['name']:<32} density {100 * entry['density']:6.2f}%  sha256 {entry['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
