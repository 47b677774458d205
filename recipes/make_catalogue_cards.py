"""Write the catalogue cards of the Morcos et al. (2019) grid ("One ticket to win them all") into cards/.

VGG19 and ResNet50 × {ImageNet, Places365, CIFAR-100, CIFAR-10, SVHN, Fashion-MNIST, MNIST} at
80, 51, 20, 10, 5, 2 and 1 percent of weights remaining: one card per entry, marked not published,
naming the recipe that produces it (``recipes/{arch}-{source}.yaml``). Cards that are already
published (a Hub pin or an embedded file) are left untouched, so re-running is safe.

Usage:
    python recipes/make_catalogue_cards.py            # write/refresh cards/
    python recipes/make_catalogue_cards.py --check    # exit 1 if cards/ is out of date; list missing recipes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ticket_zoo import zoo  # noqa: E402

ARCHS = ("vgg19", "resnet50")
SOURCES = ("imagenet", "places365", "cifar100", "cifar10", "svhn", "fashion_mnist", "mnist")
PCTS = (80, 51, 20, 10, 5, 2, 1)


def grid_entries(root: Path = ROOT) -> list[dict]:
    """One unpublished entry per (arch, source, pct); ``arch`` is the recipe's timm arch when it exists."""
    entries = []
    for arch in ARCHS:
        for source in SOURCES:
            recipe = f"recipes/{arch}-{source}.yaml"
            timm_arch, dataset = arch, source
            if (root / recipe).is_file():
                raw = yaml.safe_load((root / recipe).read_text(encoding="utf-8")) or {}
                timm_arch, dataset = raw.get("arch", arch), raw.get("dataset", source)
            for pct in PCTS:
                entries.append(
                    {
                        "name": f"{arch}-{source}-{pct}pct",
                        "arch": timm_arch,
                        "source": source,
                        "dataset": dataset,
                        "density": pct / 100,
                        "source_accuracy": None,
                        "recipe": recipe,
                    }
                )
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards-dir", default=str(ROOT / "cards"))
    parser.add_argument("--check", action="store_true", help="only report; write nothing")
    args = parser.parse_args(argv)
    cards = Path(args.cards_dir)
    # read the catalogue once: asking per card would re-parse every card after each write
    published = (
        {e["name"] for e in zoo.list_tickets(published=True, cards_dir=cards)} if cards.is_dir() else set()
    )
    entries = grid_entries()
    stale, kept = [], 0
    for entry in entries:
        path = cards / f"{entry['name']}.md"
        if entry["name"] in published:
            kept += 1  # a published card is the record of a real upload: never overwrite it
            continue
        text = zoo.render_entry_card(entry, cards_dir=cards)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            zoo.write_card(entry, cards)
    missing = sorted({e["recipe"] for e in entries if not (ROOT / e["recipe"]).is_file()})
    verb = "out of date" if args.check else "written"
    print(f"{len(stale)} card(s) {verb}, {kept} published card(s) kept")
    if missing:
        print("recipes still to write:\n  " + "\n  ".join(missing))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
