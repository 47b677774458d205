"""The main job's orchestration: find (or the embedded catalogue) -> transfer -> report."""

from __future__ import annotations

import json

import pytest
import yaml

from ticket_zoo.demo import pick_levels, run_demo
from ticket_zoo.errors import ConfigError


def test_pick_levels_spreads_in_log_density_and_keeps_the_sparsest():
    rows = [{"level": i, "density": 0.8**i} for i in range(14)]
    assert [r["level"] for r in pick_levels(rows, 4, densest=1.0)] == [1, 5, 9, 13]
    assert [r["level"] for r in pick_levels(rows[:3], 4)] == [1, 2]  # fewer pruned levels than asked
    assert [r["level"] for r in pick_levels(rows[:6], 4)] == [2, 3, 4, 5]  # widened to give 4 levels
    assert all(r["density"] < 1.0 for r in pick_levels(rows, 20))  # the dense level is never a ticket


def test_pick_levels_picks_the_demo_spread_down_to_the_sparsest_level():
    # The demo's find schedule (20% of hidden weights per level) down to ~1.5% of weights remaining.
    rows = [{"level": i, "density": 0.8**i} for i in range(20)]
    chosen = pick_levels(rows, 5)
    assert [round(100 * r["density"], 1) for r in chosen] == [51.2, 21.0, 8.6, 3.5, 1.4]
    assert chosen[-1] is rows[-1]  # the sparsest level, where the effect shows, is always transferred
    assert [r["level"] for r in pick_levels(rows, 1)] == [19]


def _tiny_transfer_recipe(tmp_path):
    recipe = {
        "tickets": ["placeholder"],
        "targets": ["digits[5-9]"],
        "optimizers": {"adam": {"optimizer": "adam", "lr": 0.0012}},
        "controls": ["winning", "random_ticket", "dense"],
        "seeds": [0, 1],
        "train": {"iterations": 20, "batch_size": 32, "eval_every": 10},
    }
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_demo_from_the_embedded_catalogue_writes_the_full_report(tmp_path, capsys):
    out = tmp_path / "demo"
    report = run_demo(out, transfer_recipe=_tiny_transfer_recipe(tmp_path), from_catalogue=True, progress=False)
    printed = capsys.readouterr().out
    assert "embedded catalogue family" in printed and "winning − random_ticket" in printed
    for name in ("results.jsonl", "report.csv", "report.json", "report.png"):
        assert (out / "transfer" / name).stat().st_size > 0
    rows = [json.loads(line) for line in (out / "transfer" / "results.jsonl").read_text().splitlines()]
    # 4 embedded lenet digits04 tickets (51%, 21%, 5%, 1.6%) x (winning, random_ticket) x 2 seeds
    # + one dense per seed.
    assert len(rows) == 4 * 2 * 2 + 2
    assert {r["control"] for r in rows} == {"winning", "random_ticket", "dense"}
    assert {r["source"] for r in rows} == {"digits[0-4]"}
    assert report["comparisons"] and json.loads((out / "timing.json").read_text())["total_seconds"] > 0


def test_demo_without_recipe_or_catalogue_family_explains(tmp_path, monkeypatch):
    monkeypatch.setattr("ticket_zoo.zoo.list_tickets", lambda **kw: [])
    with pytest.raises(ConfigError, match="find_recipe"):
        run_demo(tmp_path / "d", find_recipe=tmp_path / "missing.yaml", transfer_recipe=_tiny_transfer_recipe(tmp_path))


def test_reduced_demo_finds_down_to_the_target_and_reports_the_headline(tmp_path, capsys):
    find = {
        "arch": "lenet_300_100",
        "dataset": "digits[0-4]",
        "scope": "layerwise",
        "prune_fraction": 0.5,
        "rewind": 0,
        "target_density": 0.9,  # the demo's target_density replaces the recipe's stop rule
        "seed": 0,
        "train": {"optimizer": "adam", "lr": 1.2e-3, "batch_size": 32, "iterations": 20, "eval_every": 10},
    }
    find_recipe = tmp_path / "find.yaml"
    find_recipe.write_text(yaml.safe_dump(find))
    out = tmp_path / "demo"
    report = run_demo(
        out,
        find_recipe=find_recipe,
        transfer_recipe=_tiny_transfer_recipe(tmp_path),
        levels=2,
        target_density=0.2,
        progress=False,
    )
    printed = capsys.readouterr().out
    summary = json.loads((out / "find" / "summary.json").read_text())
    densities = [r["density"] for r in summary["levels"]]
    assert min(densities) <= 0.2 < sorted(densities)[1]  # stopped at the first level at or below the target
    rows = [json.loads(line) for line in (out / "transfer" / "results.jsonl").read_text().splitlines()]
    transferred = sorted({r["density"] for r in rows if r["control"] == "winning"})
    assert len(transferred) == 2 and transferred[0] == min(densities)  # the sparsest level is transferred
    # The headline: per setting, the lowest density where winning beats random_ticket (or None).
    assert report["headline"]
    assert report["headline"] == json.loads((out / "transfer" / "report.json").read_text())["headline"]
    for h in report["headline"]:
        assert {"density", "p_value", "text"} <= set(h) and h["text"] in printed
