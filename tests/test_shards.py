"""Shards of the transfer grid: the partition, per-shard results files, the merged report, --submit local."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ticket_zoo.cli import main
from ticket_zoo.errors import ConfigError
from ticket_zoo.report import build_report, read_results
from ticket_zoo.runfiles import read_rows
from ticket_zoo.shards import missing_cells, parse_shard, read_recorded, results_files, shard_units
from ticket_zoo.transfer_grid import TIMING_FIELDS, TransferConfig, transfer

pytestmark = pytest.mark.usefixtures("one_thread")

TICKET = "lenet_300_100-digits04-5pct"
# 2 controls x 2 seeds, --no-batch: 4 units, so 3 shards get units {0, 3}, {1}, {2}
GRID = {
    "tickets": [TICKET],
    "targets": ["digits[5-9]"],
    "optimizers": {"adam": {"optimizer": "adam", "lr": 1e-3}},
    "controls": ["winning", "random_ticket"],
    "seeds": [0, 1],
    "train": {"iterations": 10, "batch_size": 32, "eval_every": 5},
}


def _stable(rows: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows), key=lambda r: r["cell"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("one")
    return transfer(TransferConfig.from_dict(GRID), out, progress=False, report=False, workers=1, batch=False)


def test_partition_is_deterministic_and_never_splits_a_unit() -> None:
    units = [[f"u{i}a", f"u{i}b"] for i in range(7)]
    parts = [shard_units(units, (k, 3)) for k in (1, 2, 3)]
    assert parts == [[units[0], units[3], units[6]], [units[1], units[4]], [units[2], units[5]]]
    assert sorted(c for p in parts for u in p for c in u) == sorted(c for u in units for c in u)
    assert parse_shard("3/3") == (3, 3) and parse_shard((1, 2)) == (1, 2) and parse_shard(None) is None
    for bad in ("0/3", "4/3", "x", "1/0", (2, 1)):
        with pytest.raises(ConfigError, match="--shard must be K/N with 1 <= K <= N"):
            parse_shard(bad)


def test_shards_by_hand_then_report_merges_and_names_missing(reference, tmp_path: Path, capsys) -> None:
    cfg = TransferConfig.from_dict(GRID)
    one = transfer(cfg, tmp_path, progress=False, report=True, workers=1, batch=False, shard=(1, 3))
    assert len(one) == 2 and (tmp_path / "results.shard-1-of-3.jsonl").is_file()
    assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "report.json").exists()
    assert "no report yet: 2 of 4 planned cells missing (shards 2/3, 3/3 not finished?)" in capsys.readouterr().err
    transfer(cfg, tmp_path, progress=False, report=False, workers=1, batch=False, shard="2/3")
    report = build_report(tmp_path, show=False)  # the report at any time: partial, and says so
    assert len(report["missing"]) == 1
    assert "1 of 4 planned cells missing (shard 3/3 not finished?)" in capsys.readouterr().err
    # the last shard completes the grid and builds the report
    transfer(cfg, tmp_path, progress=False, report=True, workers=1, batch=False, shard=(3, 3))
    assert json.loads((tmp_path / "report.json").read_text())["missing"] == []
    assert [p.name for p in results_files(tmp_path)] == [f"results.shard-{k}-of-3.jsonl" for k in (1, 2, 3)]
    assert _stable(read_recorded(tmp_path)) == _stable(reference)
    assert sorted(r["cell"] for r in read_results(tmp_path)) == sorted(r["cell"] for r in reference)
    # an unsharded re-run (or any shard) finds every cell recorded in some file: nothing trains, nothing appended
    before = {p.name: p.read_bytes() for p in results_files(tmp_path)}
    assert _stable(transfer(cfg, tmp_path, progress=False, report=False, workers=1, batch=False)) == _stable(reference)
    assert {p.name: p.read_bytes() for p in results_files(tmp_path)} == before


def test_report_merges_duplicates_and_refuses_conflicts(reference, tmp_path: Path) -> None:
    rows = [dict(r) for r in reference]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    twice = [{**rows[0], "train_seconds": 99.0}]  # the same cell again, only its timing differs
    (tmp_path / "results.shard-1-of-2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in twice))
    assert len(read_results(tmp_path)) == 4
    assert "missing" not in build_report(tmp_path, show=False)  # no plan.json: nothing to compare with
    other = [{**rows[0], "train_config": {**rows[0]["train_config"], "lr": 0.5}}]
    (tmp_path / "results.shard-2-of-2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other))
    with pytest.raises(ConfigError, match=r"recorded twice with different values .*train_config differs") as err:
        build_report(tmp_path, show=False)
    assert "\n" not in str(err.value)
    assert missing_cells(tmp_path, []) == ([], 0, "")


def test_submit_local_three_shards_then_a_killed_shard_resubmitted(reference, tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(GRID))
    args = ["transfer", "--config", str(recipe), "--no-batch", "--no-progress", "--submit", "local", "--shards", "3"]
    # 3 shards as concurrent local jobs: merged, the rows of one process
    out = tmp_path / "all"
    assert main([*args, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "submitted 3 of 3 shards (4 cells to run) as jobs 1/3: " in err
    assert _stable(read_recorded(out)) == _stable(reference)
    assert len(results_files(out)) == 3 and (out / "report.json").is_file()
    # a killed shard: shard 3 never ran (its file is gone); submitting the same command runs only it
    part = tmp_path / "part"
    shutil.copytree(out, part, ignore=shutil.ignore_patterns("submitit", "report.*"))
    (part / "results.shard-3-of-3.jsonl").unlink()
    kept = {p.name: p.read_bytes() for p in results_files(part)}
    assert main([*args, "--out", str(part)]) == 0
    err = capsys.readouterr().err
    assert "submitted 1 of 3 shards (1 cells to run) as jobs 3/3: " in err
    assert all((part / name).read_bytes() == data for name, data in kept.items())
    assert _stable(read_recorded(part)) == _stable(reference) and (part / "report.json").is_file()
    assert len(read_rows(part / "results.shard-3-of-3.jsonl")) == 1
    # and once more: nothing left to submit
    assert main([*args, "--out", str(part)]) == 0
    assert "nothing to submit" in capsys.readouterr().err


def test_submit_slurm_without_a_cluster_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(GRID))
    code = main(["transfer", "--config", str(recipe), "--out", str(tmp_path / "o"), "--submit", "slurm",
                 "--shards", "2", "--slurm-partition", "gpu", "--gpus-per-task", "1", "--timeout", "60"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("ticket-zoo: error: --submit slurm: submitit cannot submit to SLURM from this machine")
    assert "--submit local" in err[0]


def test_cli_refuses_mixed_shard_options(tmp_path: Path, capsys) -> None:
    base = ["transfer", "--ticket", TICKET, "--target", "digits[5-9]", "--out", str(tmp_path / "o")]
    assert main([*base, "--shards", "3"]) == 2
    assert "--shards N goes with --submit" in capsys.readouterr().err
    assert main([*base, "--shard", "4/3"]) == 2
    assert "--shard must be K/N" in capsys.readouterr().err
    assert main([*base, "--submit", "local"]) == 2
    assert "needs --shards N" in capsys.readouterr().err
