"""Aggregate transfer results into the comparison Morcos et al. (2019) report.

The transfer engine appends one JSON object per finished cell to ``OUT/results.jsonl``. This module
turns those rows into

* a **summary**: mean, sample std and Student-t 95% interval of test accuracy over seeds, per
  (setting, control, density);
* **comparisons**: winning minus a control (``random_ticket``, ``reinit``, ``random_mask``),
  paired by seed, with a 95% interval and a paired t-test;
* **matching sparsity**: the lowest density at which the winning ticket stays within a tolerance of
  the dense network;

and writes them as ``report.csv``, ``report.json``, ``report.png`` and a markdown table. The rows of
a sharded grid (``OUT/results.shard-K-of-N.jsonl``, :mod:`ticket_zoo.shards`) are merged by cell with
``OUT/results.jsonl``, and the cells of ``OUT/plan.json`` still missing are named.

A *setting* is ``(family, arch, source, target, optimizer, config)``: one ticket family transferred
to one target with one optimizer. The family is the find run (or catalogue family) the tickets came
from, recorded in each row by the transfer engine as ``NAME-PREFIX@HASH`` (ticket name without its
``-NNpct`` suffix, plus a hash of the find recipe); rows written before it existed fall back to
``ARCH-SOURCE``. So two find runs of the same architecture on the same source are two curves, and a
results file holding tickets from several sources is never averaged across sources.

The report never pools rows that were produced differently: within a ``(family, target,
optimizer)`` every row must record the same ``train_config``, ``new_head``, ``input_size``,
``data_split`` and ``versions`` (see :data:`CONFIG_FIELDS`; rows lacking one count as "not
recorded"). Concatenated or merged results files that break this make :func:`build_report` raise a
:class:`~ticket_zoo.errors.ConfigError` naming the field, the values and their row counts, unless
``split_differing=True``: then each variant becomes its own setting, its ``config`` naming the
differing values (``config`` is ``""`` when nothing differs). Accuracies are percent (0..100).

Example::

    >>> from ticket_zoo.report import build_report
    >>> report = build_report("runs/conv4-digits", show=False)  # doctest: +SKIP
    >>> report["matching"][0]["matching_density"]  # doctest: +SKIP
    0.05
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from ._io import atomic_write_bytes, atomic_write_text, prepare_out_dir
from .errors import ConfigError, shorten
from .runfiles import read_rows
from .shards import RESULTS_FILE, TIMING_FIELDS, missing_cells, results_files

if TYPE_CHECKING:  # matplotlib loads only when a plot is drawn
    from matplotlib.figure import Figure

__all__ = [
    "CONTROL_ORDER",
    "CONFIG_FIELDS",
    "read_results",
    "summarize",
    "compare",
    "matching_sparsity",
    "build_report",
    "plot",
    "register_cli",
]

#: Known controls in the order they appear in tables and legends; unknown ones follow, sorted.
CONTROL_ORDER: tuple[str, ...] = ("winning", "random_ticket", "reinit", "random_mask", "dense")
#: Baselines ``build_report`` compares the winning ticket against, when present in the results.
BASELINES: tuple[str, ...] = ("random_ticket", "reinit", "random_mask")

_SETTING = ("family", "arch", "source", "target", "optimizer", "config")
#: Row fields that must agree before rows of one (family, target, optimizer) are pooled or compared.
CONFIG_FIELDS: tuple[str, ...] = ("train_config", "new_head", "input_size", "data_split", "versions")
_NOT_RECORDED = "(not recorded)"
_PER_CELL_FIELDS = ("train_config.seed",)  # vary across the seeds of one setting by design
_REQUIRED = ("target", "optimizer", "control", "density", "seed", "test_acc")
# Fixed per control so a colour means the same thing in every panel and every report.
_STYLE: dict[str, tuple[str, str, str]] = {  # control -> (colour, marker, line style)
    "winning": ("#1f77b4", "o", "-"),
    "random_ticket": ("#d62728", "s", "--"),
    "reinit": ("#2ca02c", "^", ":"),
    "random_mask": ("#9467bd", "D", "-."),
    "dense": ("#444444", "", "--"),
}
_FALLBACK_COLOURS = ("#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
_DENSITY_DIGITS = 10  # densities are keyed after rounding so 0.05 and 0.05000000000001 agree


# --- reading -----------------------------------------------------------------------------------------


def _check_row(row: Any, where: str) -> dict[str, Any]:
    """Validate one result row and return a normalised copy (setting keys as str, rounded density)."""
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise ConfigError(
            f"{where}: missing field(s) {missing}; every result row needs {list(_REQUIRED)} "
            "(rows are written by ticket_zoo.transfer())"
        )
    out = dict(row)
    for key in ("target", "optimizer", "control"):
        if not isinstance(row[key], str) or not row[key]:
            raise ConfigError(f"{where}: field {key!r} must be a non-empty string, got {row[key]!r}")
    for key in ("arch", "source"):
        # Optional for hand-made files; "-" keeps them groupable and printable.
        out[key] = str(row.get(key) or "-")
    # Rows written before families were recorded: one family per architecture and source.
    out["family"] = str(row.get("family") or f"{out['arch']}-{out['source']}")
    out["config"] = ""  # set by _separate_configs when split_differing labels variants apart
    density = row["density"]
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise ConfigError(
            f"{where}: 'density' must be the fraction of weights kept, in (0, 1], got {density!r}"
        )
    out["density"] = round(float(density), _DENSITY_DIGITS)
    acc = row["test_acc"]
    if (
        isinstance(acc, bool)
        or not isinstance(acc, (int, float))
        or not math.isfinite(acc)
        or not 0 <= acc <= 100
    ):
        raise ConfigError(f"{where}: 'test_acc' must be a percentage in [0, 100], got {acc!r}")
    out["test_acc"] = float(acc)
    seed = row["seed"]
    if isinstance(seed, bool) or not isinstance(seed, (int, str)):
        raise ConfigError(f"{where}: 'seed' must be an integer, got {seed!r}")
    return out


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a ``results.jsonl`` written by the transfer engine, or, given a folder, every results file
    in it (``results.jsonl`` and each shard's ``results.shard-K-of-N.jsonl``) merged by cell: a cell
    recorded twice with the same values (timing fields aside) is one row, with different values a
    :class:`~ticket_zoo.errors.ConfigError`.

    A malformed *last* line is what a writer killed mid-write leaves behind: it is skipped with a
    ``UserWarning``. A malformed line anywhere else, or a row missing required fields, raises
    :class:`~ticket_zoo.errors.ConfigError` naming the line number. Blank lines are ignored.

    Example::

        >>> rows = read_results("runs/demo/results.jsonl")  # doctest: +SKIP
        >>> rows[0]["control"], rows[0]["test_acc"]  # doctest: +SKIP
        ('winning', 97.1)
    """
    path = Path(path)
    if path.is_dir():
        return _read_merged(path)
    rows = read_rows(path, missing_ok=False, line_numbers=True)
    return [_check_row(obj, f"{path}: line {lineno}") for lineno, obj in rows]


def _read_merged(out: Path) -> list[dict[str, Any]]:
    """Every results file of ``out`` (``results.jsonl`` and each shard's), merged by cell id.

    A cell recorded twice with the same values (timing fields aside) is one row; with different
    values it is a :class:`ConfigError` naming the cell, the files and the first differing field.
    Rows without a cell id (hand-made files) are all kept.
    """
    files = results_files(out)
    if not files:
        read_rows(out / RESULTS_FILE, missing_ok=False)  # the one "no results file" message
    merged: list[dict[str, Any]] = []
    seen: dict[str, tuple[dict[str, Any], str]] = {}
    for path in files:
        for lineno, obj in read_rows(path, line_numbers=True):
            where = f"{path.name}: line {lineno}"
            row = _check_row(obj, f"{path}: line {lineno}")
            cell = obj.get("cell")
            if not isinstance(cell, str):
                merged.append(row)
                continue
            if cell in seen:
                first, first_where = seen[cell]
                differ = sorted(k for k in {*first, *row} - set(TIMING_FIELDS) if first.get(k) != row.get(k))
                if differ:
                    raise ConfigError(
                        f"cell {shorten(cell)} is recorded twice with different values ({first_where} and {where}: "
                        f"{differ[0]} differs); the results files in {out} come from different runs: keep one "
                        "run's files per folder"
                    )
                continue
            seen[cell] = (row, where)
            merged.append(row)
    return merged


# --- statistics ----------------------------------------------------------------------------------------


def _normalise(rows: Iterable[dict[str, Any]], split_differing: bool = False) -> list[dict[str, Any]]:
    return _separate_configs([_check_row(r, f"row {i}") for i, r in enumerate(rows)], split_differing)


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for k in sorted(value, key=str):
            _flatten(value[k], f"{prefix}.{k}", out)
    else:
        out[prefix] = json.dumps(value, sort_keys=True, default=str)


def _config_signature(row: dict[str, Any]) -> dict[str, str]:
    """Dotted field -> JSON text of everything in :data:`CONFIG_FIELDS`, e.g. ``train_config.lr``."""
    flat: dict[str, str] = {}
    for name in CONFIG_FIELDS:
        if name in row:
            _flatten(row[name], name, flat)
        else:
            flat[name] = _NOT_RECORDED
    # The seed is the unit of replication (it is paired on), not a config difference.
    for per_cell in _PER_CELL_FIELDS:
        flat.pop(per_cell, None)
    return flat


def _separate_configs(rows: list[dict[str, Any]], split: bool) -> list[dict[str, Any]]:
    """Refuse (or, with ``split``, label apart) rows of one setting whose configs differ."""
    by_setting: dict[tuple, list[tuple[dict[str, Any], dict[str, str]]]] = {}
    for r in rows:
        key = (r["family"], r["target"], r["optimizer"])
        by_setting.setdefault(key, []).append((r, _config_signature(r)))
    for (family, target, optimizer), items in sorted(by_setting.items()):
        fields = sorted({f for _, sig in items for f in sig})
        differing = [f for f in fields if len({sig.get(f, _NOT_RECORDED) for _, sig in items}) > 1]
        if not differing:
            continue
        if not split:
            first = differing[0]
            counts: dict[str, int] = {}
            for _, sig in items:
                counts[sig.get(first, _NOT_RECORDED)] = counts.get(sig.get(first, _NOT_RECORDED), 0) + 1
            values = ", ".join(f"{v} ({n} rows)" for v, n in sorted(counts.items()))
            more = f" (also differing: {', '.join(differing[1:])})" if len(differing) > 1 else ""
            raise ConfigError(
                f"results for {family} → {target}, {optimizer} mix different configs and would be averaged "
                f"together: {first} is {values}{more}. Rows from different transfer runs cannot be pooled; "
                "report them as separate groups with `ticket-zoo report --split-differing` "
                "(build_report(..., split_differing=True)) or keep the runs in separate results files"
            )
        for r, sig in items:
            r["config"] = "; ".join(f"{f}={sig.get(f, _NOT_RECORDED)}" for f in differing)
    return rows


def _control_rank(control: str) -> tuple[int, str]:
    return (CONTROL_ORDER.index(control), "") if control in CONTROL_ORDER else (len(CONTROL_ORDER), control)


def _per_seed(rows: list[dict[str, Any]]) -> dict[tuple, dict[Any, list[float]]]:
    """(setting..., control, density) -> {seed: [test_acc, ...]}."""
    groups: dict[tuple, dict[Any, list[float]]] = {}
    for r in rows:
        key = (*(r[k] for k in _SETTING), r["control"], r["density"])
        groups.setdefault(key, {}).setdefault(r["seed"], []).append(r["test_acc"])
    return groups


def _seed_values(by_seed: dict[Any, list[float]]) -> dict[Any, float]:
    # The seed is the unit of replication. Several rows for one seed happen legitimately (the dense
    # control is re-run beside every ticket of a family, or a cell was re-run): average them, so a
    # seed is counted once in n and in the pairing.
    return {s: float(np.mean(v)) for s, v in by_seed.items()}


def _t_interval(values: Sequence[float]) -> tuple[float, float | None, float]:
    """(mean, sample std or None, halfwidth) of a Student-t 95% interval; halfwidth 0 when n == 1."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, None, 0.0
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(x) - 1) * sd / math.sqrt(len(x)))
    return mean, sd, half


def _setting_dict(key: tuple) -> dict[str, Any]:
    return dict(zip(_SETTING, key[: len(_SETTING)], strict=True))


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, sample std and Student-t 95% interval of test accuracy over seeds.

    One row per (arch, source, target, optimizer, control, density), with ``n`` distinct seeds
    (rows sharing a seed are averaged first; ``n_runs`` counts rows). With one seed the interval
    collapses to the mean, ``std`` is None and ``single_seed`` is True.

    Example::

        >>> rows = [dict(target="t", optimizer="sgd", control="winning", density=0.1, seed=s,
        ...              test_acc=a) for s, a in enumerate([90.0, 92.0, 94.0])]
        >>> s = summarize(rows)[0]
        >>> s["mean"], s["std"], round(s["ci95_high"] - s["mean"], 3)
        (92.0, 2.0, 4.968)
    """
    return _summarize(_per_seed(_normalise(rows)))


def _summarize(groups: dict[tuple, dict[Any, list[float]]]) -> list[dict[str, Any]]:
    out = []
    for key, by_seed in groups.items():
        values = list(_seed_values(by_seed).values())
        mean, sd, half = _t_interval(values)
        out.append(
            {
                **_setting_dict(key),
                "control": key[-2],
                "density": key[-1],
                "n": len(values),
                "n_runs": sum(len(v) for v in by_seed.values()),
                "mean": mean,
                "std": sd,
                "halfwidth": half,
                "ci95_low": mean - half,
                "ci95_high": mean + half,
                "single_seed": len(values) < 2,
            }
        )
    out.sort(key=lambda r: (*(r[k] for k in _SETTING), _control_rank(r["control"]), -r["density"]))
    return out


def compare(
    rows: Iterable[dict[str, Any]], baseline: str = "random_ticket", *, control: str = "winning"
) -> list[dict[str, Any]]:
    """``control`` minus ``baseline`` test accuracy, paired by seed, per setting and density.

    Only seeds present for both controls are paired (``n_pairs``; ``unpaired`` counts the rest).
    Reports the mean difference with a Student-t 95% interval and the two-sided paired t-test
    (``scipy.stats.ttest_rel``); ``t_stat``/``p_value`` are None with fewer than two pairs or when
    every difference is identical (the test is undefined). A row is produced wherever both controls
    were run at a density, even with no common seed, so a missing pairing is visible.

    Example::

        >>> mk = lambda c, s, a: dict(target="t", optimizer="sgd", control=c, density=0.1, seed=s, test_acc=a)
        >>> rows = [mk("winning", 0, 91.0), mk("winning", 1, 93.0), mk("random_ticket", 0, 90.0),
        ...         mk("random_ticket", 1, 90.0)]
        >>> c = compare(rows)[0]
        >>> c["mean_diff"], c["n_pairs"], round(c["p_value"], 3)
        (2.0, 2, 0.295)
    """
    return _compare(_per_seed(_normalise(rows)), baseline, control)


def _compare(
    groups: dict[tuple, dict[Any, list[float]]], baseline: str, control: str
) -> list[dict[str, Any]]:
    out = []
    for key, by_seed in groups.items():
        if key[-2] != control:
            continue
        base_key = (*key[:-2], baseline, key[-1])
        if base_key not in groups:
            continue
        a, b = _seed_values(by_seed), _seed_values(groups[base_key])
        common = sorted(set(a) & set(b), key=str)
        row: dict[str, Any] = {
            **_setting_dict(key),
            "density": key[-1],
            "control": control,
            "baseline": baseline,
            "n_pairs": len(common),
            "unpaired": len(set(a) ^ set(b)),
            "mean_diff": None,
            "std_diff": None,
            "halfwidth": None,
            "ci95_low": None,
            "ci95_high": None,
            "t_stat": None,
            "p_value": None,
            "control_mean": None,
            "baseline_mean": None,
        }
        if common:
            xa = np.array([a[s] for s in common])
            xb = np.array([b[s] for s in common])
            mean, sd, half = _t_interval(xa - xb)
            row.update(
                mean_diff=mean,
                std_diff=sd,
                halfwidth=half,
                ci95_low=mean - half,
                ci95_high=mean + half,
                control_mean=float(xa.mean()),
                baseline_mean=float(xb.mean()),
            )
            # Accuracies are multiples of 100/N, so "identical" differences can differ in the last
            # float bits; a t-test on that noise would report p ~ 1e-29. Treat it as zero variance.
            if len(common) >= 2 and sd is not None and sd > 1e-9 * max(1.0, abs(mean)):
                res = stats.ttest_rel(xa, xb)
                row.update(t_stat=float(res.statistic), p_value=float(res.pvalue))
        out.append(row)
    out.sort(key=lambda r: (*(r[k] for k in _SETTING), -r["density"]))
    return out


def matching_sparsity(
    rows: Iterable[dict[str, Any]], tolerance: float = 1.0, *, control: str = "winning"
) -> list[dict[str, Any]]:
    """Per setting, the lowest density at which ``control`` matches the dense network.

    "Matches" means the control's mean test accuracy is at least the dense mean minus ``tolerance``
    percentage points (doing better than dense also matches). ``matching_density`` is None when the
    control never matches or the setting has no dense run.

    Example::

        >>> mk = lambda c, d, a: dict(target="t", optimizer="sgd", control=c, density=d, seed=0, test_acc=a)
        >>> rows = [mk("dense", 1.0, 95.0), mk("winning", 0.2, 94.5), mk("winning", 0.05, 90.0)]
        >>> matching_sparsity(rows)[0]["matching_density"]
        0.2
    """
    _check_tolerance(tolerance)
    return _matching(summarize(rows), tolerance, control)


def _check_tolerance(tolerance: float) -> None:
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ConfigError(f"tolerance must be a non-negative number of accuracy points, got {tolerance!r}")


def _matching(summary: list[dict[str, Any]], tolerance: float, control: str) -> list[dict[str, Any]]:
    by_setting: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for s in summary:
        by_setting.setdefault(tuple(s[k] for k in _SETTING), {}).setdefault(s["control"], []).append(s)
    out = []
    for key, controls in sorted(by_setting.items()):
        dense = controls.get("dense", [])
        # Dense normally has the single density 1.0; pool all its seeds' means if it has more.
        dense_mean = float(np.mean([d["mean"] for d in dense])) if dense else None
        match = None
        if dense_mean is not None:
            ok = [s for s in controls.get(control, []) if s["mean"] >= dense_mean - tolerance]
            match = min(ok, key=lambda s: s["density"]) if ok else None
        out.append(
            {
                **_setting_dict(key),
                "control": control,
                "tolerance": float(tolerance),
                "dense_mean": dense_mean,
                "matching_density": match["density"] if match else None,
                "matching_sparsity": round(1.0 - match["density"], _DENSITY_DIGITS) if match else None,
                "matched_mean": match["mean"] if match else None,
            }
        )
    return out


def _family_labels(families: Iterable[str]) -> dict[str, str]:
    """Family -> display name: the name prefix alone unless two families in view share it."""
    families = set(families)
    prefixes = [f.rsplit("@", 1)[0] for f in families]
    return {f: (p if prefixes.count(p) == 1 else f) for f, p in zip(families, prefixes, strict=True)}


def _where(row: dict[str, Any], labels: dict[str, str], *, target: bool = True) -> str:
    text = labels.get(row["family"], row["family"])
    if target:
        text += f" → {row['target']}, {row['optimizer']}"
    return f"{text} [{row['config']}]" if row.get("config") else text


def _headline(
    comparisons: list[dict[str, Any]],
    *,
    control: str = "winning",
    baseline: str = "random_ticket",
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Per setting, the lowest density where ``control`` beats ``baseline`` (mean > 0, paired p < alpha).

    One entry per setting that has a ``control`` − ``baseline`` comparison; ``density`` (and the
    difference, interval and p-value at it) is None when no density qualifies. ``text`` is the
    one-line sentence the terminal table prints.

    Example::

        >>> mk = lambda d, s, diff, p: dict(family="f", arch="a", source="s", target="t", optimizer="sgd",
        ...     config="", control="winning", baseline="random_ticket", density=d, mean_diff=diff,
        ...     halfwidth=1.0, p_value=p, n_pairs=3)
        >>> h = _headline([mk(0.5, 0, 5.0, 0.01), mk(0.1, 0, 3.0, 0.02), mk(0.02, 0, 1.0, 0.3)])[0]
        >>> h["density"], h["text"]
        (0.1, 'headline: f → t, sgd: lowest density where winning beats random_ticket (p < 0.05): 10% of weights remaining (+3.0 ± 1.0 points, p=0.02)')
    """
    labels = _family_labels(c["family"] for c in comparisons)
    by_setting: dict[tuple, list[dict[str, Any]]] = {}
    for c in comparisons:
        if c["control"] == control and c["baseline"] == baseline:
            by_setting.setdefault(tuple(c[k] for k in _SETTING), []).append(c)
    out = []
    for key, items in sorted(by_setting.items()):
        wins = [
            c
            for c in items
            if c["mean_diff"] is not None
            and c["mean_diff"] > 0
            and c["p_value"] is not None
            and c["p_value"] < alpha
        ]
        best = min(wins, key=lambda c: c["density"]) if wins else None
        entry = {
            **_setting_dict(key),
            "control": control,
            "baseline": baseline,
            "alpha": alpha,
            "density": best["density"] if best else None,
            "mean_diff": best["mean_diff"] if best else None,
            "halfwidth": best["halfwidth"] if best else None,
            "p_value": best["p_value"] if best else None,
            "n_pairs": best["n_pairs"] if best else None,
        }
        entry["text"] = _headline_text(entry, labels)
        out.append(entry)
    return out


def _headline_text(h: dict[str, Any], labels: dict[str, str]) -> str:
    where = _where(h, labels)
    if h["density"] is None:
        return (
            f"headline: {where}: no density where {h['control']} beats {h['baseline']} at p < {h['alpha']:g}"
        )
    return (
        # "lowest density where", not "down to": denser levels may well be ties (it says nothing of them).
        f"headline: {where}: lowest density where {h['control']} beats {h['baseline']} (p < {h['alpha']:g}): "
        f"{100 * h['density']:.3g}% of weights remaining ({h['mean_diff']:+.1f} ± {h['halfwidth']:.1f} points, "
        f"p={h['p_value']:.2g})"
    )


# --- writing -----------------------------------------------------------------------------------------


def _write_csv(path: Path, report: dict[str, list[dict[str, Any]]]) -> None:
    tidy = [
        {"kind": kind, **r}
        for kind, section in (("summary", "summary"), ("comparison", "comparisons"), ("matching", "matching"))
        for r in report[section]
    ]
    columns: list[str] = []
    for r in tidy:
        columns += [k for k in r if k not in columns]

    buffer = io.StringIO(newline="")
    w = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    w.writeheader()
    for r in tidy:
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    atomic_write_text(path, buffer.getvalue())


def _fmt_ci(mean: float | None, half: float | None, single: bool = False, signed: bool = False) -> str:
    if mean is None:
        return "–"
    m = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return f"{m}†" if single or half is None else f"{m} ± {half:.2f}"


def _fmt_density(d: float) -> str:
    return f"{100 * d:.4g}%"


def markdown_table(report: dict[str, list[dict[str, Any]]]) -> str:
    """Render a report dict as markdown: one row per setting and density, then matching sparsity."""
    summary, comparisons = report["summary"], report["comparisons"]
    controls = sorted({s["control"] for s in summary}, key=_control_rank)
    baseline = next((b for b in BASELINES if any(c["baseline"] == b for c in comparisons)), None)
    labels = _family_labels(s["family"] for s in summary)
    head = ["ticket family", "target", "optimizer", "density", *controls]
    if baseline:
        head.append(f"winning − {baseline} (p)")
    cells: dict[tuple, dict[str, str]] = {}
    for s in summary:
        key = (*(s[k] for k in _SETTING), s["density"])
        cells.setdefault(key, {})[s["control"]] = _fmt_ci(s["mean"], s["halfwidth"], s["single_seed"])
    for c in comparisons:
        if c["baseline"] == baseline:
            key = (*(c[k] for k in _SETTING), c["density"])
            p = "p n/a" if c["p_value"] is None else f"p={c['p_value']:.3g}"
            text = _fmt_ci(c["mean_diff"], c["halfwidth"], c["n_pairs"] < 2, signed=True)
            cells.setdefault(key, {})["diff"] = f"{text} ({p}, n={c['n_pairs']})"
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in sorted(cells, key=lambda k: (*k[:-1], -k[-1])):
        family, _arch, _source, target, opt, config, density = key
        name = labels.get(family, family) + (f" [{config}]" if config else "")
        row = [name, target, opt, _fmt_density(density)]
        row += [cells[key].get(c, "") for c in controls]
        if baseline:
            row.append(cells[key].get("diff", ""))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "Cells: mean test accuracy (%) ± half-width of the 95% Student-t interval over seeds; † = one seed, no interval."
    )
    for h in report.get("headline", []):
        lines.append(h["text"])
    for m in report["matching"]:
        where = _where(m, labels)
        if m["dense_mean"] is None:
            lines.append(f"- {where}: matching sparsity n/a (no dense run)")
        elif m["matching_density"] is None:
            lines.append(
                f"- {where}: {m['control']} never within {m['tolerance']:g} points of dense ({m['dense_mean']:.2f}%)"
            )
        else:
            lines.append(
                f"- {where}: {m['control']} matches dense ({m['dense_mean']:.2f}%) within {m['tolerance']:g} points "
                f"down to {_fmt_density(m['matching_density'])} of weights remaining "
                f"(sparsity {_fmt_density(m['matching_sparsity'])})"
            )
    return "\n".join(lines) + "\n"


def _style(control: str, unknown: list[str]) -> tuple[str, str, str]:
    if control in _STYLE:
        return _STYLE[control]
    return _FALLBACK_COLOURS[unknown.index(control) % len(_FALLBACK_COLOURS)], "v", (0, (5, 1, 1, 1))


def _y_limits(summary: list[dict[str, Any]]) -> tuple[float, float]:
    """One y range for every panel: all means and interval ends, padded; at least 2 points tall."""
    values = [v for s in summary for v in (s["mean"], s["ci95_low"], s["ci95_high"])]
    lo, hi = (min(values), max(values)) if values else (0.0, 100.0)
    pad = max(0.06 * (hi - lo), 0.5)
    if hi - lo + 2 * pad < 2.0:
        pad = (2.0 - (hi - lo)) / 2
    return max(lo - pad, 0.0 if lo >= 0 else lo - pad), min(hi + pad, 100.0 + pad)


def _bars_caption(summary: list[dict[str, Any]]) -> str:
    ns = sorted({s["n"] for s in summary})
    if not ns or ns == [1]:
        return "one seed per point: no interval"
    seeds = f"{ns[0]} seeds" if len(ns) == 1 else f"{ns[0]}–{ns[-1]} seeds"
    one = "; single-seed points have no bar" if ns[0] == 1 else ""
    return f"bars: mean ± 95% t interval over {seeds}{one}"


def plot(summary: list[dict[str, Any]]) -> Figure:
    """The report plot of ``summary`` as a matplotlib ``Figure``: one panel per setting.

    ``summary`` is :func:`summarize`'s result or ``report["summary"]`` of :func:`build_report` (which
    saves this figure as ``report.png``). The figure has its own Agg canvas and touches no pyplot
    state, so it can be restyled or saved anywhere (``fig.savefig("plot.pdf")``).

    Every panel shares one y range (all means and interval ends, padded by 6% of their span and at
    least half a point, clipped at 0 and at 100 plus that padding) so panels compare at a glance.
    Tickets and controls are lines with 95% t-interval error bars, each control with its own colour,
    marker and line style and a small horizontal offset so overlapping bars stay readable; dense is
    a dashed level with a shaded band.

    Example::

        >>> rows = [dict(target="t", optimizer="sgd", control=c, density=0.1, seed=s, test_acc=a)
        ...         for c, accs in (("winning", [90.0, 92.0]), ("random_ticket", [85.0, 87.0]))
        ...         for s, a in enumerate(accs)]
        >>> fig = plot(summarize(rows))
        >>> [ax.get_title().splitlines()[-1] for ax in fig.axes if ax.get_visible()]  # one panel
        ['optimizer: sgd']
        >>> fig.savefig(io.BytesIO(), format="png")  # or any path: the figure needs no pyplot
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    panels: dict[tuple, list[dict[str, Any]]] = {}
    for s in summary:
        panels.setdefault(tuple(s[k] for k in _SETTING), []).append(s)
    labels = _family_labels(s["family"] for s in summary)
    controls = sorted({s["control"] for s in summary}, key=_control_rank)
    unknown = [c for c in controls if c not in _STYLE]
    lined = [c for c in controls if c != "dense"]
    ylim = _y_limits(summary)
    ncols = min(3, max(1, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig = Figure(figsize=(5.2 * ncols, 3.9 * nrows + 0.9), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (key, items) in zip(axes.flat, sorted(panels.items()), strict=False):
        densities = sorted({s["density"] for s in items if s["control"] != "dense"}) or [1.0]
        for control in controls:
            pts = sorted((s for s in items if s["control"] == control), key=lambda s: s["density"])
            if not pts:
                continue
            colour, marker, ls = _style(control, unknown)
            if control == "dense":
                # Dense has one density: a reference level with its interval across the whole panel.
                for p in pts:
                    ax.axhline(p["mean"], color=colour, ls=ls, lw=1.4, zorder=2)
                    ax.axhspan(p["ci95_low"], p["ci95_high"], color=colour, alpha=0.12, lw=0, zorder=1)
                continue
            # Dodge each control a little along the log x axis so four overlapping bars stay apart.
            shift = 10 ** (0.012 * (lined.index(control) - (len(lined) - 1) / 2))
            x = [p["density"] * shift for p in pts]
            ax.errorbar(
                x,
                [p["mean"] for p in pts],
                yerr=[p["halfwidth"] for p in pts],
                color=colour,
                marker=marker,
                ms=5,
                ls=ls,
                lw=1.6,
                capsize=3,
                elinewidth=1.2,
                zorder=3,
                label=control,
            )
        ax.set_xscale("log")
        lo, hi = densities[0], densities[-1]
        ax.set_xlim(lo / 1.5, max(hi * 1.5, 1.1) if hi >= 0.5 else hi * 1.5)
        # Tick the densities themselves, or 1-2-5 per decade when there are many: never colliding.
        if len(densities) <= 8:  # few densities (or one): tick exactly those
            ax.xaxis.set_major_locator(FixedLocator(densities))
        else:
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{100 * v:.3g}%"))
        ax.set_ylim(*ylim)
        ax.set_xlabel("weights remaining (log scale)")
        ax.set_ylabel("test accuracy (%)")
        family, _arch, _source, target, opt, config = key
        title = f"{labels.get(family, family)} → {target}\noptimizer: {opt}"
        if config:
            title += f"\n{config}"
        ax.set_title(title, fontsize=9 if config else 10)
        ax.grid(True, which="major", alpha=0.35)
    handles: list[Any] = []
    for control in controls:
        colour, marker, ls = _style(control, unknown)
        if control == "dense":
            handles.append(Line2D([], [], color=colour, ls=ls, lw=1.4, label="dense (band: 95% CI)"))
        else:
            handles.append(Line2D([], [], color=colour, marker=marker, ls=ls, lw=1.6, label=control))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    fig.suptitle(
        f"Ticket transfer: test accuracy vs weights remaining ({_bars_caption(summary)})", fontsize=11
    )
    return fig


def _write_png(path: Path, summary: list[dict[str, Any]]) -> None:
    fig = plot(summary)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    atomic_write_bytes(path, png.getvalue())


def build_report(
    out_dir: str | os.PathLike[str],
    *,
    results_name: str = "results.jsonl",
    show: bool = True,
    tolerance: float = 1.0,
    split_differing: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Read ``OUT/results.jsonl`` and write ``report.csv``, ``report.json`` and ``report.png`` beside it.

    Comparisons are winning minus each baseline present (``random_ticket``, ``reinit``,
    ``random_mask``); matching sparsity uses ``tolerance`` accuracy points; ``headline`` holds, per
    setting, the lowest density where winning beats ``random_ticket`` (mean difference > 0, paired
    t-test p < 0.05) or None, with the sentence the table prints (``text``). Prints a markdown table
    and the headline lines when ``show``. Returns ``{"summary": [...], "comparisons": [...],
    "matching": [...], "headline": [...]}``, the same dict that ``report.json`` holds.

    Rows of one (family, target, optimizer) that differ in any of :data:`CONFIG_FIELDS` (e.g. two
    transfer runs with different budgets appended to one results file) raise
    :class:`~ticket_zoo.errors.ConfigError` naming the field and values; with ``split_differing``
    they are reported as separate settings instead.

    With the default ``results_name`` the rows are those of every results file in ``OUT`` merged by
    cell (:func:`read_results` on the folder: shards of one grid). When ``OUT/plan.json`` (written by
    ``transfer``) lists cells that have no row yet, the report covers the recorded ones, says on
    stderr how many are missing and which shard should have run them, and the returned dict (and
    ``report.json``) gains ``"missing"``: those cell ids.

    Example::

        >>> report = build_report("runs/conv4-digits", show=False)  # doctest: +SKIP
        >>> sorted(report)  # doctest: +SKIP
        ['comparisons', 'headline', 'matching', 'summary']
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise ConfigError(f"{out} is not a folder; pass the OUT folder the transfer run wrote to")
    # The default name stands for every results file of OUT: results.jsonl and each shard's.
    merged = results_name == RESULTS_FILE
    rows = read_results(out if merged else out / results_name)
    # report.csv/json/png go beside the results: a read-only or virtual folder is one clear line.
    prepare_out_dir(out, what="report folder")
    if not rows:
        raise ConfigError(
            f"{out / results_name} holds no results yet; run or resume `ticket-zoo transfer` first"
        )
    missing, planned, missing_text = (
        missing_cells(out, [r["cell"] for r in rows if isinstance(r.get("cell"), str)]) if merged else ([], 0, "")
    )
    _check_tolerance(tolerance)
    rows = _separate_configs(rows, split_differing)
    # read_results has checked the rows already: group them once for every statistic.
    groups = _per_seed(rows)
    summary = _summarize(groups)
    present = {r["control"] for r in rows}
    report = {
        "summary": summary,
        "comparisons": [c for b in BASELINES if b in present for c in _compare(groups, b, "winning")],
        "matching": _matching(summary, tolerance, "winning"),
    }
    report["headline"] = _headline(report["comparisons"])
    if planned:  # OUT/plan.json exists (written by transfer): which planned cells have no row yet
        report["missing"] = missing
    _write_csv(out / "report.csv", report)
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    atomic_write_text(out / "report.json", text)
    _write_png(out / "report.png", report["summary"])
    if show:
        print(markdown_table(report))
    if missing_text:  # a partial report: say so even when the table is not printed
        print(f"ticket-zoo report: {missing_text}; the report covers the {planned - len(missing)} recorded",
              file=sys.stderr)  # fmt: skip
    return report


# --- command line ------------------------------------------------------------------------------------


def _cli(args: argparse.Namespace) -> int:
    build_report(
        args.out_dir,
        results_name=args.results_name,
        show=not args.quiet,
        tolerance=args.tolerance,
        split_differing=args.split_differing,
    )
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``ticket-zoo report OUT`` to an argparse subparsers object (options declared in
    :func:`ticket_zoo.configs.report_arguments`, which loads neither numpy nor scipy).

    Example::

        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="ticket-zoo")
        >>> register_cli(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["report", "runs/demo", "--quiet"])
        >>> args.out_dir, args.quiet
        ('runs/demo', True)
    """
    from .configs import report_arguments

    report_arguments(subparsers).set_defaults(func=_cli)
