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
from ticket_zoo.report import (
    build_report,
    compare,
    matching_sparsity,
    plot,
    read_results,
    register_cli,
    summarize,
)

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
    assert "| conv4-digits[0-4] | digits[5-9] | sgd | 5% |" in printed
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


# --- headline, families, config refusal, split mode, plot ---------------------------------------------

FAM_A = "conv4-digits04@aaaaaaaa"
FAM_B = "conv4-digits04@bbbbbbbb"


def _crow(control, density, seed, acc, *, family=None, target="digits[5-9]", optimizer="sgd", **train):
    """A row as the transfer engine now writes it: family and the full train config recorded."""
    r = _row(target, optimizer, control, density, density, seed, acc)
    if family is not None:
        r["family"] = family
    r["train_config"] = {"optimizer": optimizer, "lr": 0.1, "iterations": 400, "seed": seed, **train}
    r["new_head"] = True
    r["input_size"] = [1, 8, 8]
    r["data_split"] = {"val_fraction": 0.1, "data_seed": 0}
    return r


# winning − random_ticket per seed at each density, chosen so the answer is known by hand:
#   0.5  -> [5, 6, 7]    mean 6,    t = 10.39, p = 0.009   (wins)
#   0.2  -> [2, 3, 3]    mean 8/3,  t = 8,     p = 0.0153  (wins: the lowest qualifying density)
#   0.05 -> [-5, -6, -7] mean -6,   p = 0.009              (significant, but winning is *worse*)
#   0.02 -> [1, -1, 0.5] mean 1/6,  p ~ 0.8                (positive, not significant)
HEADLINE_DIFFS = {
    0.5: [5.0, 6.0, 7.0],
    0.2: [2.0, 3.0, 3.0],
    0.05: [-5.0, -6.0, -7.0],
    0.02: [1.0, -1.0, 0.5],
}


def _headline_rows(diffs=HEADLINE_DIFFS, **kw):
    out = []
    for density, ds in diffs.items():
        for seed, d in enumerate(ds):
            base = 80.0 + seed
            out.append(_crow("random_ticket", density, seed, base, **kw))
            out.append(_crow("winning", density, seed, base + d, **kw))
    return out


def test_headline_is_lowest_density_where_winning_significantly_beats_random(tmp_path, capsys):
    _write(tmp_path / "results.jsonl", _headline_rows())
    report = build_report(tmp_path)
    (h,) = report["headline"]
    assert (h["target"], h["optimizer"]) == ("digits[5-9]", "sgd")
    assert h["density"] == 0.2  # not 0.05 (winning worse) nor 0.02 (not significant)
    assert h["mean_diff"] == pytest.approx(8.0 / 3.0)
    assert h["p_value"] == pytest.approx(1 - 8.0 / math.sqrt(66.0))
    assert h["halfwidth"] == pytest.approx(T975_DF2 * statistics.stdev([2.0, 3.0, 3.0]) / math.sqrt(3))
    assert h["n_pairs"] == 3
    assert h["family"] == "conv4-digits[0-4]"
    assert "20%" in h["text"]
    printed = capsys.readouterr().out
    assert h["text"] in printed.splitlines()
    assert json.loads((tmp_path / "report.json").read_text())["headline"] == report["headline"]


def test_headline_is_null_when_no_density_qualifies(tmp_path, capsys):
    diffs = {0.2: [1.0, -1.0, 0.5], 0.05: [-5.0, -6.0, -7.0]}
    _write(tmp_path / "results.jsonl", _headline_rows(diffs))
    report = build_report(tmp_path)
    (h,) = report["headline"]
    assert h["density"] is None
    assert h["mean_diff"] is None and h["p_value"] is None and h["halfwidth"] is None
    assert h["n_pairs"] is None
    assert "no density" in h["text"]
    assert "%" not in h["text"].split("p <")[0]  # names no density
    assert h["text"] in capsys.readouterr().out.splitlines()


def test_headline_line_is_in_markdown_table():
    from ticket_zoo.report import markdown_table

    entry = {"text": "headline: SENTINEL-LINE"}
    report = {"summary": [], "comparisons": [], "matching": [], "headline": [entry]}
    assert "headline: SENTINEL-LINE" in markdown_table(report).splitlines()


def test_headline_single_pair_does_not_qualify(tmp_path):
    # One seed: a big difference but no test, so no headline density.
    _write(tmp_path / "results.jsonl", _headline_rows({0.2: [9.0]}))
    (h,) = build_report(tmp_path, show=False)["headline"]
    assert h["density"] is None


def test_two_families_of_one_arch_and_source_are_two_groups(tmp_path, capsys):
    rows = _headline_rows(family=FAM_A) + _headline_rows({0.2: [-1.0, 1.0, -0.5]}, family=FAM_B)
    _write(tmp_path / "results.jsonl", rows)
    report = build_report(tmp_path)
    assert {s["family"] for s in report["summary"]} == {FAM_A, FAM_B}
    win = [s for s in report["summary"] if s["control"] == "winning" and s["density"] == 0.2]
    assert sorted(s["family"] for s in win) == [FAM_A, FAM_B]
    a = _pick(win, family=FAM_A)
    assert a["n"] == 3  # seeds of the other family are not pooled in
    assert a["mean"] == pytest.approx(statistics.mean([82.0, 84.0, 85.0]))
    heads = {h["family"]: h["density"] for h in report["headline"]}
    assert heads == {FAM_A: 0.2, FAM_B: None}
    comps = [c for c in report["comparisons"] if c["density"] == 0.2]
    assert sorted(c["family"] for c in comps) == [FAM_A, FAM_B]
    assert all(c["n_pairs"] == 3 and c["unpaired"] == 0 for c in comps)
    printed = capsys.readouterr().out
    # Same name prefix: the table must show the full family so the two rows can be told apart.
    assert f"| {FAM_A} |" in printed and f"| {FAM_B} |" in printed
    fig = plot(report["summary"])
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2


def test_rows_without_family_fall_back_to_arch_source(tmp_path):
    rows = _headline_rows()
    other = _headline_rows({0.2: [2.0, 3.0, 3.0]})
    for r in other:
        r["source"] = "fashion"
    _write(tmp_path / "results.jsonl", rows + other)
    report = build_report(tmp_path, show=False)
    assert {s["family"] for s in report["summary"]} == {"conv4-digits[0-4]", "conv4-fashion"}
    assert {r["family"] for r in read_results(tmp_path / "results.jsonl")} == {
        "conv4-digits[0-4]",
        "conv4-fashion",
    }


@pytest.mark.parametrize(("field", "other"), [("iterations", 800), ("lr", 0.05)])
def test_rows_differing_in_train_config_are_refused(tmp_path, field, other):
    rows = _headline_rows()  # 24 rows
    changed = _headline_rows({0.2: [2.0, 3.0, 3.0]}, **{field: other})  # 6 rows
    _write(tmp_path / "results.jsonl", rows + changed)
    with pytest.raises(ConfigError) as info:
        build_report(tmp_path, show=False)
    msg = str(info.value)
    assert f"train_config.{field}" in msg
    old = json.dumps(400 if field == "iterations" else 0.1)
    assert f"{old} (24 rows)" in msg
    assert f"{json.dumps(other)} (6 rows)" in msg
    assert "--split-differing" in msg
    assert not (tmp_path / "report.json").exists()


def test_rows_differing_only_in_seed_are_not_refused(tmp_path):
    rows = _headline_rows()
    assert len({r["train_config"]["seed"] for r in rows}) == 3
    _write(tmp_path / "results.jsonl", rows)
    report = build_report(tmp_path, show=False)
    assert {s["config"] for s in report["summary"]} == {""}


def test_different_configs_in_different_families_are_not_refused(tmp_path):
    rows = _headline_rows(family=FAM_A) + _headline_rows(family=FAM_B, iterations=800)
    _write(tmp_path / "results.jsonl", rows)
    report = build_report(tmp_path, show=False)
    assert {s["family"] for s in report["summary"]} == {FAM_A, FAM_B}


@pytest.mark.parametrize("field", ["new_head", "input_size", "data_split", "versions"])
def test_rows_differing_in_other_config_fields_are_refused(tmp_path, field):
    rows = _headline_rows()
    rows[0][field] = "something else"
    _write(tmp_path / "results.jsonl", rows)
    with pytest.raises(ConfigError, match=rf"{field}.*\(1 rows\)"):
        build_report(tmp_path, show=False)


def _split_rows():
    return _headline_rows() + _headline_rows({0.2: [-1.0, 1.0, -0.5]}, iterations=800)


def _check_split(report):
    configs = {s["config"] for s in report["summary"]}
    assert configs == {"train_config.iterations=400", "train_config.iterations=800"}
    win = [s for s in report["summary"] if s["control"] == "winning" and s["density"] == 0.2]
    assert len(win) == 2 and all(s["n"] == 3 for s in win)
    heads = {h["config"]: h["density"] for h in report["headline"]}
    assert heads == {"train_config.iterations=400": 0.2, "train_config.iterations=800": None}


def test_split_differing_reports_variants_apart(tmp_path, capsys):
    _write(tmp_path / "results.jsonl", _split_rows())
    report = build_report(tmp_path, split_differing=True)
    _check_split(report)
    printed = capsys.readouterr().out
    assert "[train_config.iterations=800]" in printed
    assert len([ax for ax in plot(report["summary"]).axes if ax.get_visible()]) == 2


def test_cli_split_differing(tmp_path, capsys):
    from ticket_zoo.cli import main

    _write(tmp_path / "results.jsonl", _split_rows())
    assert main(["report", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train_config.iterations" in err and "--split-differing" in err
    assert not (tmp_path / "report.json").exists()
    assert main(["report", str(tmp_path), "--split-differing"]) == 0
    assert "[train_config.iterations=400]" in capsys.readouterr().out
    _check_split(json.loads((tmp_path / "report.json").read_text()))


def test_concatenated_results_files_with_different_configs_are_refused(tmp_path):
    first, second = tmp_path / "run1", tmp_path / "run2"
    first.mkdir()
    second.mkdir()
    _write(first / "results.jsonl", _headline_rows())
    _write(second / "results.jsonl", _headline_rows(lr=0.01))
    build_report(first, show=False)  # each file alone is fine
    build_report(second, show=False)
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "results.jsonl").write_bytes(
        (first / "results.jsonl").read_bytes() + (second / "results.jsonl").read_bytes()
    )
    with pytest.raises(ConfigError, match=r"train_config\.lr is 0\.01 \(24 rows\), 0\.1 \(24 rows\)"):
        build_report(merged, show=False)


def test_plot_panels_share_one_y_range(rows):
    summary = summarize(rows)
    fig = plot(summary)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3  # the three settings of HAND_ROWS
    limits = {ax.get_ylim() for ax in axes}
    assert len(limits) == 1
    ((lo, hi),) = limits
    # The range spans every mean and interval end, padded by 6% of that span (at least half a point).
    values = [v for s in summary for v in (s["mean"], s["ci95_low"], s["ci95_high"])]
    pad = max(0.06 * (max(values) - min(values)), 0.5)
    assert lo == pytest.approx(max(min(values) - pad, 0.0))
    assert lo <= min(s["ci95_low"] for s in summary)  # the lowest panel (fashion, 60%) fits
    # Interval ends above 100% (random_ticket's outlier seed) are clipped at 100 plus padding.
    assert max(s["ci95_high"] for s in summary) > 100.0 >= max(s["mean"] for s in summary)
    assert hi == pytest.approx(100.0 + pad)


def test_plot_draws_error_bars_with_a_single_density():
    from matplotlib.container import ErrorbarContainer

    rows = [_row("t", "sgd", "winning", 0.1, 0.1, s, a) for s, a in enumerate([90.0, 92.0, 94.0])]
    rows += [_row("t", "sgd", "random_ticket", 0.1, 0.1, s, a) for s, a in enumerate([85.0, 86.0, 90.0])]
    summary = summarize(rows)
    (ax,) = [ax for ax in plot(summary).axes if ax.get_visible()]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2
    win = _pick(summary, control="winning")
    lengths = []
    for bar in bars:
        assert bar.has_yerr
        (segments,) = [lc.get_segments() for lc in bar.lines[2]]
        assert len(segments) == 1  # one density, one bar
        lengths.append(abs(segments[0][1][1] - segments[0][0][1]))
    rnd = _pick(summary, control="random_ticket")
    assert sorted(lengths) == pytest.approx(sorted([2 * win["halfwidth"], 2 * rnd["halfwidth"]]))
    assert min(lengths) > 1.0
    lo, hi = ax.get_xlim()
    assert lo < 0.1 < hi


# --- ticket families (transfer engine) -----------------------------------------------------------------


def test_ticket_family_same_for_one_find_run_and_differs_by_recipe(tmp_path):
    # The family the transfer grid plans for a saved ticket (TicketRef.family, recorded in every row).
    from tests.helpers import LENET, digits_ticket
    from ticket_zoo.api import save
    from ticket_zoo.transfer_cells import inspect_tickets
    from ticket_zoo.transfer_grid import TransferConfig

    ticket = digits_ticket("lenet_300_100", LENET, 0.5, steps=0)
    saved = iter(range(100))

    def family(name: str, recipe: dict | None) -> str:
        meta = {**ticket.meta, "name": name}
        if recipe is not None:
            meta["recipe"] = recipe
        folder = save(ticket.with_(meta=meta), tmp_path / f"t{next(saved)}")
        cfg = TransferConfig(tickets=[str(folder)], targets=["digits[5-9]"], optimizers={"adam": None})
        (ref,) = inspect_tickets(cfg)
        return ref.family

    recipe = {"arch": "conv4", "source": "digits[0-4]", "train": {"iterations": 400, "lr": 0.1}}
    a = family("conv4-digits04-5pct", recipe)
    b = family("conv4-digits04-20pct", recipe)
    assert a == b
    assert a.startswith("conv4-digits04@") and len(a.split("@")[1]) == 8
    int(a.split("@")[1], 16)
    other = {**recipe, "train": {"iterations": 800, "lr": 0.1}}
    assert family("conv4-digits04-5pct", other) != a
    # Runtime-only fields (device) do not make a different find run.
    assert family("conv4-digits04-5pct", {**recipe, "device": "cuda"}) == a
    # A different name prefix is a different family even with the same recipe.
    assert family("conv4-digits59-5pct", recipe) != a
    # No recipe: the bare prefix.
    assert family("conv4-digits04-12.5pct", None) == "conv4-digits04"
