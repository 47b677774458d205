"""The main job's orchestration: find (or the embedded catalogue) -> transfer -> report."""

from __future__ import annotations

import json

import pytest
import yaml

from ticket_zoo.demo import pick_levels, run_demo
from ticket_zoo.errors import ConfigError


def test_pick_levels_spreads_in_log_density_and_keeps_the_sparsest():
    rows = [{"level": i, "density": 0.8**i} for i in range(14)]
    assert [r["level"] for r in pick_levels(rows, 4)] == [1, 5, 9, 13]
    assert [r["level"] for r in pick_levels(rows[:3], 4)] == [1, 2]  # fewer pruned levels than asked
    assert all(r["density"] < 1.0 for r in pick_levels(rows, 20))  # the dense level is never a ticket


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
    # 3 embedded lenet digits04 tickets x (winning, random_ticket) x 2 seeds + one dense per seed.
    assert len(rows) == 3 * 2 * 2 + 2
    assert {r["control"] for r in rows} == {"winning", "random_ticket", "dense"}
    assert {r["source"] for r in rows} == {"digits[0-4]"}
    assert report["comparisons"] and json.loads((out / "timing.json").read_text())["total_seconds"] > 0


def test_demo_without_recipe_or_catalogue_family_explains(tmp_path, monkeypatch):
    monkeypatch.setattr("ticket_zoo.zoo.list_tickets", lambda **kw: [])
    with pytest.raises(ConfigError, match="find_recipe"):
        run_demo(tmp_path / "d", find_recipe=tmp_path / "missing.yaml", transfer_recipe=_tiny_transfer_recipe(tmp_path))
