"""report.py against a hand-made results file whose statistics are worked out by hand below.

The Student-t numbers use closed forms for 2 degrees of freedom, so they do not depend on scipy:
CDF F(t) = 1/2 + t / (2 sqrt(2 + t^2)), hence two-sided p = 1 - |t| / sqrt(2 + t^2), and the 0.975
quantile is q = 0.95 * sqrt(2 / (1 - 0.95^2)) = 4.3027.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import statistics

import numpy as np
import pytest

from ticket_zoo.errors import ConfigError
from ticket_zoo.report import build_report, compare, matching_sparsity, read_results, register_cli, summarize

T975_DF2 = 0.95 * math.sqrt(2 / (1 - 0.95**2))  # Student t(0.975, df=2), closed form

A = ("digits[5-9]", "sgd")  # full grid: dense, winning at 3 densities, random_ticket, reinit
B = ("digits[5-9]", "adam")  # one seed only
C = ("fashion", "sgd")  # no dense run at all

# (target, optimizer, control, density, ticket_density, seed, test_acc) — every number chosen by hand.
HAND_ROWS = [
    (*A, "dense", 1.0, 0.05, 0, 95.0),
    (*A, "dense", 1.0, 0.05, 1, 96.0),
    (*A, "dense", 1.0, 0.05, 2, 97.0),
    (*A, "dense", 1.0, 0.2, 0, 95.0),  # dense re-run beside another ticket, same seed: counted once
    (*A, "winning", 0.5, 0.5, 0, 95.5),
    (*A, "winning", 0.5, 0.5, 1, 96.0),
    (*A, "winning", 0.5, 0.5, 2, 96.5),
    (*A, "winning", 0.2, 0.2, 0, 95.0),
    (*A, "winning", 0.2, 0.2, 1, 95.5),
    (*A, "winning", 0.2, 0.2, 2, 95.0),
    (*A, "winning", 0.05, 0.05, 0, 90.0),
    (*A, "winning", 0.05, 0.05, 1, 92.0),
    (*A, "winning", 0.05, 0.05, 2, 94.0),
    (*A, "random_ticket", 0.05, 0.05, 0, 88.0),
    (*A, "random_ticket", 0.05, 0.05, 1, 89.0),
    (*A, "random_ticket", 0.05, 0.05, 2, 91.0),
    (*A, "random_ticket", 0.05, 0.05, 3, 50.0),  # seed 3 has no winning partner: must not be paired
    (*A, "reinit", 0.05, 0.05, 0, 80.0),
    (*A, "reinit", 0.05, 0.05, 1, 82.0),
    (*A, "reinit", 0.2, 0.2, 0, 93.0),
    (*B, "dense", 1.0, 0.05, 0, 96.0),
    (*B, "winning", 0.05, 0.05, 0, 93.0),
    (*C, "winning", 0.05, 0.05, 0, 70.0),
    (*C, "random_ticket", 0.05, 0.05, 0, 60.0),
]


def _row(target, optimizer, control, density, ticket_density, seed, acc):
    return {
        "ticket": f"conv4-digits04-{round(100 * ticket_density)}pct",
        "source": "digits[0-4]",
        "arch": "conv4",
        "density": density,
        "ticket_density": ticket_density,
        "control": control,
        "target": target,
        "optimizer": optimizer,
        "seed": seed,
        "test_acc": acc,
        "val_acc": acc - 1.0,
        "best_step": 300,
        "steps": 400,
        "train_seconds": 3.2,
        "versions": {"torch": "x"},
    }


def _write(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return path


@pytest.fixture
def rows():
    out = [_row(*r) for r in HAND_ROWS]
    random.Random(0).shuffle(out)  # pairing must go by seed, not by file order
    return out


@pytest.fixture
def out_dir(tmp_path, rows):
    _write(tmp_path / "results.jsonl", rows)
    return tmp_path


def _pick(items, **where):
    found = [r for r in items if all(r[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, found)
    return found[0]


# --- reading -------------------------------------------------------------------------------------------


def test_read_results_returns_every_row(out_dir):
    got = read_results(out_dir / "results.jsonl")
    assert len(got) == len(HAND_ROWS)
    assert sorted(r["test_acc"] for r in got) == sorted(r[-1] for r in HAND_ROWS)


def test_truncated_last_line_is_skipped_with_warning(tmp_path, rows):
    path = _write(tmp_path / "results.jsonl", rows, tail='{"ticket": "conv4-digits04-5pct", "sou')
    with pytest.warns(UserWarning, match="line 25"):
        got = read_results(path)
    assert len(got) == len(rows)


def test_last_line_cut_inside_a_utf8_character_is_skipped(tmp_path, rows):
    path = _write(tmp_path / "results.jsonl", rows)
    path.write_bytes(path.read_bytes() + '{"target": "é'.encode()[:-1])
    with pytest.warns(UserWarning):
        assert len(read_results(path)) == len(rows)


def test_bad_middle_line_is_rejected_with_its_number(tmp_path, rows):
    text = [json.dumps(r) for r in rows]
    text[2] = text[2][:40]  # line 3 cut short, followed by good lines
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 3"):
        read_results(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("test_acc", 150.0, "percentage"),
        ("test_acc", None, "percentage"),
        ("density", 0.0, "density"),
        ("density", 1.5, "density"),
        ("control", "", "control"),
        ("seed", 1.5, "seed"),
    ],
)
def test_invalid_field_is_rejected(tmp_path, rows, field, value, message):
    rows[1][field] = value
    with pytest.raises(ConfigError, match=rf"line 2.*{message}"):
        read_results(_write(tmp_path / "results.jsonl", rows))


def test_missing_field_is_rejected(tmp_path, rows):
    del rows[0]["test_acc"]
    with pytest.raises(ConfigError, match=r"line 1.*test_acc"):
        read_results(_write(tmp_path / "results.jsonl", rows))


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no results file"):
        read_results(tmp_path / "results.jsonl")


# --- summary -------------------------------------------------------------------------------------------


def test_summary_mean_std_and_t_interval_by_hand(rows):
    s = _pick(summarize(rows), target=A[0], optimizer=A[1], control="winning", density=0.05)
    # [90, 92, 94]: mean 92, sample sd 2, halfwidth t(0.975, 2) * 2 / sqrt(3) = 4.303 * 1.1547 = 4.968
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(92.0)
    assert s["std"] == pytest.approx(2.0)
    half = T975_DF2 * 2.0 / math.sqrt(3)
    assert half == pytest.approx(4.968, abs=1e-3)
    assert s["halfwidth"] == pytest.approx(half)
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((92.0 - half, 92.0 + half))
    assert s["single_seed"] is False


def test_summary_with_four_seeds_matches_statistics_module(rows):
    s = _pick(summarize(rows), target=A[0], optimizer=A[1], control="random_ticket", density=0.05)
    vals = [88.0, 89.0, 91.0, 50.0]
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(statistics.mean(vals))
    assert s["std"] == pytest.approx(statistics.stdev(vals))


def test_single_seed_collapses_interval_and_is_flagged(rows):
    s = _pick(summarize(rows), target=B[0], optimizer=B[1], control="dense", density=1.0)
    assert s["n"] == 1 and s["single_seed"] is True
    assert s["std"] is None
    assert s["ci95_low"] == s["ci95_high"] == s["mean"] == 96.0


def test_rows_sharing_a_seed_count_as_one_seed(rows):
    s = _pick(summarize(rows), target=A[0], optimizer=A[1], control="dense", density=1.0)
    assert (s["n"], s["n_runs"]) == (3, 4)
    assert s["mean"] == pytest.approx(96.0)  # seed 0 appears twice with 95.0; [95, 96, 97]
    assert s["std"] == pytest.approx(1.0)


def test_summary_has_one_row_per_group(rows):
    groups = {(r[0], r[1], r[2], r[3]) for r in HAND_ROWS}
    assert len(summarize(rows)) == len(groups)


# --- paired comparison ---------------------------------------------------------------------------------


def test_paired_difference_uses_common_seeds_and_matches_hand_t_test(rows):
    c = _pick(compare(rows), target=A[0], optimizer=A[1], density=0.05)
    # winning [90, 92, 94] vs random_ticket seeds 0..2 [88, 89, 91] -> differences [2, 3, 3];
    # random_ticket's seed 3 (50.0) has no partner and must be left out.
    assert c["baseline"] == "random_ticket"
    assert (c["n_pairs"], c["unpaired"]) == (3, 1)
    diffs = [2.0, 3.0, 3.0]
    mean, sd = 8.0 / 3.0, statistics.stdev(diffs)
    t = mean / (sd / math.sqrt(3))
    assert t == pytest.approx(8.0)
    assert c["mean_diff"] == pytest.approx(mean)
    assert c["std_diff"] == pytest.approx(sd)
    assert c["t_stat"] == pytest.approx(8.0)
    assert c["p_value"] == pytest.approx(1 - 8.0 / math.sqrt(66.0))  # = 0.01526
    half = T975_DF2 * sd / math.sqrt(3)
    assert (c["ci95_low"], c["ci95_high"]) == pytest.approx((mean - half, mean + half))
    assert c["control_mean"] == pytest.approx(92.0)
    assert c["baseline_mean"] == pytest.approx(89.333333)


def test_comparison_is_only_where_both_controls_ran(rows):
    got = compare(rows)
    # random_ticket ran at 0.05 in A and C only.
    assert sorted((c["target"], c["optimizer"], c["density"]) for c in got) == sorted(
        [(*A, 0.05), (*C, 0.05)]
    )


def test_constant_difference_and_single_pair_have_no_p_value(rows):
    got = compare(rows, baseline="reinit")
    const = _pick(got, target=A[0], optimizer=A[1], density=0.05)
    # winning seeds 0, 1 [90, 92] vs reinit [80, 82]: differences [10, 10], zero variance.
    assert const["n_pairs"] == 2 and const["mean_diff"] == pytest.approx(10.0)
    assert const["p_value"] is None and const["t_stat"] is None
    single = _pick(got, target=A[0], optimizer=A[1], density=0.2)
    assert single["n_pairs"] == 1 and single["mean_diff"] == pytest.approx(2.0)
    assert single["p_value"] is None
    assert single["ci95_low"] == single["ci95_high"] == single["mean_diff"]


def test_disjoint_seeds_give_a_visible_empty_pairing(rows):
    for r in rows:
        if r["control"] == "random_ticket":
            r["seed"] += 10
    c = _pick(compare(rows), target=A[0], optimizer=A[1], density=0.05)
    assert c["n_pairs"] == 0 and c["unpaired"] == 7
    assert c["mean_diff"] is None and c["p_value"] is None


# --- matching sparsity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("tolerance", "expected"), [(1.0, 0.2), (0.5, 0.5), (5.0, 0.05), (0.0, 0.5)])
def test_matching_sparsity_picks_lowest_matching_density(rows, tolerance, expected):
    # dense mean 96; winning means: 0.5 -> 96.0, 0.2 -> 95.1667, 0.05 -> 92.0
    m = _pick(matching_sparsity(rows, tolerance=tolerance), target=A[0], optimizer=A[1])
    assert m["dense_mean"] == pytest.approx(96.0)
    assert m["matching_density"] == expected
    assert m["matching_sparsity"] == pytest.approx(1 - expected)


def test_matching_sparsity_none_when_never_or_no_dense(rows):
    got = matching_sparsity(rows)
    never = _pick(got, target=B[0], optimizer=B[1])  # winning 93 vs dense 96
    assert never["dense_mean"] == 96.0 and never["matching_density"] is None
    no_dense = _pick(got, target=C[0], optimizer=C[1])
    assert no_dense["dense_mean"] is None and no_dense["matching_density"] is None


def test_negative_tolerance_is_rejected(rows):
    with pytest.raises(ConfigError, match="tolerance"):
        matching_sparsity(rows, tolerance=-1)


# --- build_report and the CLI -------------------------------------------------------------------------


def test_build_report_writes_agreeing_csv_json_png_and_table(out_dir, capsys):
    report = build_report(out_dir)
    assert json.loads((out_dir / "report.json").read_text()) == report
    assert {c["baseline"] for c in report["comparisons"]} == {"random_ticket", "reinit"}
    assert len(report["matching"]) == 3

    with open(out_dir / "report.csv", newline="") as f:
        table = list(csv.DictReader(f))
    kinds = {"summary": "summary", "comparison": "comparisons", "matching": "matching"}
    for kind, section in kinds.items():
        csv_rows = [r for r in table if r["kind"] == kind]
        assert len(csv_rows) == len(report[section])
        for c, j in zip(csv_rows, report[section], strict=True):
            for key, value in j.items():
                if value is None:
                    assert c[key] == ""
                elif isinstance(value, float):
                    assert float(c[key]) == value
                else:
                    assert c[key] == str(value)

    png = (out_dir / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000
    from matplotlib.image import imread

    img = imread(out_dir / "report.png")
    assert img.shape[0] > 300 and img.shape[1] > 600
    colours = np.unique((img[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 100  # lines, bands, text: far more than a blank or one-colour image

    printed = capsys.readouterr().out
    assert "| conv4 digits[0-4] | digits[5-9] | sgd | 5% |" in printed
    assert "92.00 ± 4.97" in printed  # winning at 5%
    assert "+2.67 ± 1.43 (p=0.0153, n=3)" in printed  # winning − random_ticket
    assert "96.00†" in printed  # single-seed dense under adam
    assert "down to 20% of weights remaining (sparsity 80%)" in printed
    assert "matching sparsity n/a (no dense run)" in printed
    assert not list(out_dir.glob("*.tmp"))  # atomic writes leave no temp files


def test_cli_report_subcommand(out_dir, capsys):
    parser = argparse.ArgumentParser(prog="ticket-zoo")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(out_dir), "--tolerance", "5", "--quiet"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == ""
    report = json.loads((out_dir / "report.json").read_text())
    assert _pick(report["matching"], target=A[0], optimizer=A[1])["matching_density"] == 0.05
    assert (out_dir / "report.png").stat().st_size > 10_000


def test_build_report_without_results_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no results file"):
        build_report(tmp_path, show=False)
    (tmp_path / "results.jsonl").write_text("")
    with pytest.raises(ConfigError, match="no results"):
        build_report(tmp_path, show=False)


def test_difference_constant_up_to_float_noise_has_no_p_value():
    # Real accuracies are multiples of 100/N: 95.90 - 95.34 and 96.28 - 95.72 are "the same" 0.557
    # up to the last float bits, which must not turn into a t-test with p ~ 1e-29.
    n = 179
    win = [100 * 172 / n, 100 * 171 / n, 100 * 170 / n]
    rnd = [100 * 171 / n, 100 * 170 / n, 100 * 169 / n]
    rows = [_row("digits[5-9]", "sgd", "winning", 0.1, 0.1, s, a) for s, a in enumerate(win)]
    rows += [_row("digits[5-9]", "sgd", "random_ticket", 0.1, 0.1, s, a) for s, a in enumerate(rnd)]
    (c,) = compare(rows)
    assert c["mean_diff"] == pytest.approx(100 / n)
    assert c["p_value"] is None and c["t_stat"] is None
