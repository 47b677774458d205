"""Files and folders under stress: unusable --out folders, hostile recipe files, replaced levels,
failed runs that must not lock their folder, copied run folders and stale temporaries.

Every failure here must reach the user as one ``ticket-zoo: error: ...`` line (exit code 2), never a
traceback. Budgets are tiny: one shared find run of 3 levels x 30 iterations.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import ticket_zoo
from tests.helpers import TINY_FIND, write_recipe
from ticket_zoo.cli import main
from ticket_zoo.errors import CheckpointError, ConfigError, OutputDirError
from ticket_zoo.find import FindConfig, find_tickets
from ticket_zoo.report import build_report
from ticket_zoo.transfer_grid import TransferConfig, transfer

ROOT = Path(__file__).resolve().parents[1]

SMALL = {
    **TINY_FIND,
    "levels": 2,
    "rewind": 10,
    "train": {**TINY_FIND["train"], "iterations": 30, "eval_every": 10, "checkpoint_every": 10},
}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One finished find run (levels 0..2) that tests copy before changing anything."""
    tmp = tmp_path_factory.mktemp("small")
    recipe = write_recipe(tmp, SMALL)
    out = tmp / "run"
    rows = find_tickets(recipe, out, progress=False)
    return recipe, out, rows


def _copy_run(small_run, dest: Path) -> Path:
    _, out, _ = small_run
    shutil.copytree(out, dest)
    return dest


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def _assert_one_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ticket-zoo: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "path")} for r in rows]


# --- item 10: hostile recipe files ------------------------------------------------------------------


def _bad_recipe(tmp: Path, kind: str) -> Path:
    path = tmp / f"{kind}.yaml"
    if kind == "random_bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "png":
        png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
        path.write_bytes(png + bytes(range(256)))
    elif kind == "huge":
        path.write_text("arch: lenet_300_100\n" + "# padding\n" * 200_000, encoding="utf-8")  # 2 MB
    elif kind == "alias_bomb":  # "billion laughs": 9^9 strings once expanded
        lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
            lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif kind == "self_alias":
        path.write_text("train: &t {lr: 0.1, again: *t}\n", encoding="utf-8")
    elif kind == "deep":
        path.write_text("a: " + "[" * 5_000 + "]" * 5_000 + "\n", encoding="utf-8")
    else:
        raise AssertionError(kind)
    return path


_BAD_KINDS = ("random_bytes", "png", "huge", "alias_bomb", "self_alias", "deep")
_BAD_MESSAGES = {
    "random_bytes": "not a text file",
    "png": "not a text file",
    "huge": "more than a recipe can be",
    "alias_bomb": "expands to more than",
    "self_alias": "expands to more than",
    "deep": "nested too deeply",
}


@pytest.mark.parametrize("kind", _BAD_KINDS)
def test_hostile_recipe_is_one_config_error_line_for_find_and_transfer(tmp_path, capsys, kind):
    path = _bad_recipe(tmp_path, kind)
    with pytest.raises(ConfigError, match=_BAD_MESSAGES[kind]):
        FindConfig.from_yaml(path)
    with pytest.raises(ConfigError, match=_BAD_MESSAGES[kind]):
        TransferConfig.from_yaml(path)
    code, err = _cli(["find", "--config", str(path), "--out", str(tmp_path / "f"), "--quiet"], capsys)
    _assert_one_line(code, err, str(path), _BAD_MESSAGES[kind])
    code, err = _cli(["transfer", "--config", str(path), "--out", str(tmp_path / "t"), "--quiet"], capsys)
    _assert_one_line(code, err, str(path), _BAD_MESSAGES[kind])
    assert not (tmp_path / "f").exists() and not (tmp_path / "t").exists()


def test_recipe_that_is_a_directory_or_device_is_one_line(tmp_path, capsys):
    for path, message in ((tmp_path, "is a directory"), (Path("/dev/null"), "not a regular file")):
        code, err = _cli(["find", "--config", str(path), "--out", str(tmp_path / "f")], capsys)
        _assert_one_line(code, err, message)
        code, err = _cli(["transfer", "--config", str(path), "--out", str(tmp_path / "t")], capsys)
        _assert_one_line(code, err, message)


def test_garbage_stored_config_of_a_finished_run_is_refused_in_one_line(small_run, tmp_path, capsys):
    recipe, _, _ = small_run
    out = _copy_run(small_run, tmp_path / "run")
    (out / "config.yaml").write_bytes(random.Random(1).randbytes(512))
    code, err = _cli(["find", "--config", str(recipe), "--out", str(out), "--quiet"], capsys)
    _assert_one_line(code, err, "cannot be read", "finished level", "new --out")


# --- item 10: unusable --out folders --------------------------------------------------------------------


@pytest.fixture
def afile(tmp_path) -> Path:
    path = tmp_path / "afile"
    path.write_text("not a folder\n")
    return path


def _unusable_outs(afile: Path) -> list[tuple[str, str]]:
    return [
        ("/proc/ticket_zoo_x", "cannot create a folder there"),
        ("/sys/ticket_zoo_x", "cannot create a folder there"),
        ("/proc/self", "cannot write files there"),
        (str(afile / "sub"), "a part of the path is a file"),
        (str(afile), "exists and is not a directory"),
    ]


def test_unusable_out_is_one_line_for_find_transfer_and_demo(small_run, afile, monkeypatch, capsys):
    import ticket_zoo.train as train_mod
    from ticket_zoo.demo import run_demo

    def no_training(*args, **kwargs):
        raise AssertionError("training started although --out is unusable")

    monkeypatch.setattr(train_mod, "train", no_training)
    recipe, run, _ = small_run
    for out, message in _unusable_outs(afile):
        code, err = _cli(["find", "--config", str(recipe), "--out", out, "--quiet"], capsys)
        _assert_one_line(code, err, f"--out {out}", message)
        argv = ["transfer", "--ticket", str(run / "level_01"), "--target", "digits[5-9]", "--out", out,
                "--iterations", "2", "--quiet"]  # fmt: skip
        code, err = _cli(argv, capsys)
        _assert_one_line(code, err, f"--out {out}", message)
        with pytest.raises(OutputDirError, match=message):
            run_demo(out, find_recipe=recipe, progress=False)
    assert afile.read_text() == "not a folder\n"


def test_report_on_unusable_folder_is_one_line(afile, tmp_path, capsys):
    code, err = _cli(["report", str(afile / "sub"), "--quiet"], capsys)
    _assert_one_line(code, err, "is not a folder")
    code, err = _cli(["report", "/proc/self", "--quiet"], capsys)
    _assert_one_line(code, err, "no results file")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.jsonl").mkdir()  # a folder where the results file should be
    code, err = _cli(["report", str(tmp_path / "r"), "--quiet"], capsys)
    _assert_one_line(code, err, f"cannot read {tmp_path / 'r' / 'results.jsonl'} (is a directory)")


_RESULT_ROWS = [
    {"target": "digits[5-9]", "optimizer": "adam", "control": c, "density": d, "seed": s, "test_acc": 90.0 + s,
     "arch": "lenet_300_100", "source": "digits"}
    for c, d in (("winning", 0.2), ("random_ticket", 0.2), ("dense", 1.0))
    for s in (0, 1)
]  # fmt: skip

_RO_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, os, sys
    ro = sys.argv[1]
    try:  # the test is only meaningful if this folder really refuses writes
        with open(os.path.join(ro, "report", "probe"), "w"):
            pass
        writable = True
    except OSError:
        writable = False
    from ticket_zoo.cli import main
    results = []
    for argv in json.loads(sys.argv[2]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv)
        results.append({"code": code, "stderr": err.getvalue()})
    print(json.dumps({"writable": writable, "results": results}))
    """
)


def test_read_only_out_is_one_line_for_find_transfer_and_report(small_run, tmp_path):
    """A really read-only folder: a read-only bind mount in a private mount namespace when root
    (chmod does not stop root), else chmod 0o500."""
    recipe, run, _ = small_run
    ro = tmp_path / "ro"
    for sub in ("find", "transfer", "report"):
        (ro / sub).mkdir(parents=True)
    (ro / "report" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _RESULT_ROWS))
    script = tmp_path / "ro_script.py"
    script.write_text(_RO_SCRIPT)
    argvs = [
        ["find", "--config", str(recipe), "--out", str(ro / "find"), "--quiet"],
        ["transfer", "--ticket", str(run / "level_01"), "--target", "digits[5-9]", "--out", str(ro / "transfer"),
         "--iterations", "2", "--quiet"],
        ["report", str(ro / "report"), "--quiet"],
    ]  # fmt: skip
    cmd = [sys.executable, str(script), str(ro), json.dumps(argvs)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    chmodded = []
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("running as root without unshare: no way to make a read-only folder")
        mount = 'mount --bind -o ro "$0" "$0" || exit 97; exec "$@"'
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, str(ro), *cmd]
    else:
        chmodded = [ro / sub for sub in ("find", "transfer", "report")]
        for d in chmodded:
            d.chmod(0o500)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for d in chmodded:
            d.chmod(0o700)
    if os.geteuid() == 0 and (proc.returncode == 97 or proc.stderr.startswith("unshare:")):
        pytest.skip(f"cannot bind-mount read-only here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["writable"] is False, "the folder was writable: the test would prove nothing"
    reasons = ("read-only file system", "permission denied")
    for (argv, result), name in zip(zip(argvs, got["results"], strict=True), ("find", "transfer", "report"),
                                    strict=True):  # fmt: skip
        _assert_one_line(result["code"], result["stderr"], str(ro / name), "cannot write files there")
        assert any(r in result["stderr"] for r in reasons), (argv, result)
    # The report read the results before refusing to write beside them; nothing was written.
    assert sorted(p.name for p in (ro / "report").iterdir()) == ["results.jsonl"]
    assert not any((ro / "find").iterdir()) and not any((ro / "transfer").iterdir())


# --- item 11: a level replaced after it was done -------------------------------------------------------


def test_replaced_level_ticket_is_detected_on_resume(small_run, tmp_path, capsys):
    recipe, _, rows = small_run
    out = _copy_run(small_run, tmp_path / "run")
    record = json.loads((out / "level_01" / "done.json").read_text())
    data = (out / "level_01" / "ticket.safetensors").read_bytes()
    assert record["ticket_sha256"] == hashlib.sha256(data).hexdigest()
    # What `ticket-zoo pull NAME --out run/level_01` does: another ticket (and card) in that folder.
    other = ticket_zoo.load(out / "level_02")
    ticket_zoo.save(other, out / "level_01", name="someone-elses-ticket")
    with pytest.raises(CheckpointError, match=r"level 1 .*changed.*sha256.*delete .*level_01.*level_02"):
        find_tickets(recipe, out, progress=False)
    code, err = _cli(["find", "--config", str(recipe), "--out", str(out), "--quiet"], capsys)
    _assert_one_line(code, err, "level 1", "delete", "level_01", "re-run")
    # Following the advice works: delete level_01 and later levels, re-run, get the original results back.
    shutil.rmtree(out / "level_01")
    shutil.rmtree(out / "level_02")
    again = find_tickets(recipe, out, progress=False)
    assert _strip(again) == _strip(rows)


def test_old_done_record_without_digest_checks_the_ticket_density(small_run, tmp_path):
    """done.json of an older version: no ticket_sha256 and an absolute path (of a run since moved)."""
    recipe, original, rows = small_run
    out = _copy_run(small_run, tmp_path / "run")
    for level in range(3):
        done = out / f"level_{level:02d}" / "done.json"
        record = json.loads(done.read_text())
        del record["ticket_sha256"]
        record["row"]["path"] = str(tmp_path / "gone" / f"level_{level:02d}")  # an absolute path elsewhere
        done.write_text(json.dumps(record))
    summary = json.loads((out / "summary.json").read_text())
    for row in summary["levels"]:
        row["path"] = str(tmp_path / "gone" / row["path"])
    (out / "summary.json").write_text(json.dumps(summary))
    # Intact: resumes, and the old absolute paths are replaced by this run's folders.
    again = find_tickets(recipe, out, progress=False)
    assert _strip(again) == _strip(rows)
    assert [r["path"] for r in again] == [str(out / f"level_{i:02d}") for i in range(3)]
    assert [r["path"] for r in json.loads((out / "summary.json").read_text())["levels"]] == [
        "level_00", "level_01", "level_02"
    ]  # fmt: skip
    # Replaced: the density no longer matches the record.
    shutil.copy(out / "level_02" / "ticket.safetensors", out / "level_01" / "ticket.safetensors")
    with pytest.raises(CheckpointError, match=r"level 1 .*changed.*density.*delete"):
        find_tickets(recipe, out, progress=False)


def test_unreadable_done_record_is_a_checkpoint_error(small_run, tmp_path):
    recipe, _, _ = small_run
    out = _copy_run(small_run, tmp_path / "run")
    (out / "level_01" / "done.json").write_bytes(b"\x00\xff{")
    with pytest.raises(CheckpointError, match=r"done.json cannot be read.*delete .*level_01"):
        find_tickets(recipe, out, progress=False)


# --- item 12: a failed run must not lock its folder -------------------------------------------------------


def test_run_that_failed_before_any_work_does_not_lock_its_folder(tmp_path, monkeypatch, capsys):
    import ticket_zoo.train as train_mod

    out = tmp_path / "out"
    # Too large a batch: refused before OUT is claimed.
    big = write_recipe(tmp_path, {**SMALL, "train": {**SMALL["train"], "batch_size": 100_000}}, "big.yaml")
    code, err = _cli(["find", "--config", str(big), "--out", str(out), "--quiet"], capsys)
    _assert_one_line(code, err, "batch_size")
    assert not (out / "config.yaml").exists()

    # A run that claims OUT and then dies before training anything (no checkpoint, no level done).
    def crash(*args, **kwargs):
        raise RuntimeError("crashed before the first step")

    monkeypatch.setattr(train_mod, "train", crash)
    first = write_recipe(tmp_path, {**SMALL, "train": {**SMALL["train"], "lr": 5e-4}}, "first.yaml")
    with pytest.raises(RuntimeError, match="crashed"):
        find_tickets(first, out, progress=False)
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["lr"] == 5e-4
    # The fixed recipe is accepted: it replaces the config of the run that never did anything.
    fixed = write_recipe(tmp_path, SMALL, "fixed.yaml")
    with pytest.raises(RuntimeError, match="crashed"):
        find_tickets(fixed, out, progress=False)
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["lr"] == SMALL["train"]["lr"]


def test_partly_trained_level_zero_of_another_config_says_how_to_start_over(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path, {**SMALL, "levels": 0}, "zero.yaml")
    real_step = torch.optim.Adam.step
    count = {"n": 0}

    def step(self, *args, **kwargs):  # dies at step 15: the checkpoint of step 10 is on disk
        count["n"] += 1
        if count["n"] == 15:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    with pytest.raises(KeyboardInterrupt):
        find_tickets(recipe, out, progress=False)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    assert (out / "level_00" / ".ckpt" / "checkpoint.safetensors").is_file()
    other = write_recipe(tmp_path, {**SMALL, "levels": 0, "seed": 1}, "other.yaml")
    code, err = _cli(["find", "--config", str(other), "--out", str(out), "--quiet"], capsys)
    _assert_one_line(
        code, err, "different config", f"delete {out / 'level_00'}", "partial training", "new --out"
    )
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 0  # unchanged
    # Following the advice: delete level_00, and the new config runs.
    shutil.rmtree(out / "level_00")
    rows = find_tickets(other, out, progress=False)
    assert [r["level"] for r in rows] == [0]
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 1


def test_finished_levels_of_another_config_keep_refusing_with_how_to_start_over(small_run, tmp_path, capsys):
    out = _copy_run(small_run, tmp_path / "run")
    other = write_recipe(tmp_path, {**SMALL, "train": {**SMALL["train"], "lr": 1e-3}}, "other.yaml")
    code, err = _cli(["find", "--config", str(other), "--out", str(out), "--quiet"], capsys)
    _assert_one_line(code, err, "different config", "train.lr", "3 finished level", "new --out",
                     f"delete {out}")  # fmt: skip


# --- item 13: copied run folders and stale temporaries ------------------------------------------------


def test_copied_run_resumes_from_its_new_place_and_stale_temps_are_removed(small_run, tmp_path):
    recipe, _, rows = small_run
    first = _copy_run(small_run, tmp_path / "first")
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    shutil.rmtree(first)  # the original place is gone
    for path in (moved / "summary.json", *moved.glob("level_*/done.json")):
        assert str(first) not in path.read_text(), f"{path} names the old place"
    assert [r["path"] for r in json.loads((moved / "summary.json").read_text())["levels"]] == [
        "level_00", "level_01", "level_02"
    ]  # fmt: skip
    # Leftovers of atomic writes of a killed run, and files that are not ours.
    stale = [moved / "level_01" / ".ticket.safetensors.abc123.tmp", moved / ".summary.json.0f0f0f.tmp",
             moved / "level_02" / ".ckpt" / ".checkpoint.safetensors.deadbe.tmp"]  # fmt: skip
    kept = [moved / "notes.tmp", moved / "mine" / ".draft.v1.tmp"]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    # Resume in the new place and extend by one level (levels only says where to stop).
    more = FindConfig.from_yaml(recipe, {"levels": 3})
    again = find_tickets(more, moved, progress=False)
    assert _strip(again[:3]) == _strip(rows) and again[3]["level"] == 3
    assert [r["path"] for r in again] == [str(moved / f"level_{i:02d}") for i in range(4)]
    assert not any(p.exists() for p in stale), [p for p in stale if p.exists()]
    assert all(p.exists() for p in kept)
    # Use it: the tickets through the summary's paths, and a transfer pointed at the copied run.
    summary = json.loads((moved / "summary.json").read_text())
    assert [r["path"] for r in summary["levels"]] == [f"level_{i:02d}" for i in range(4)]
    tickets = [ticket_zoo.load(moved / r["path"]) for r in summary["levels"]]
    assert [t.meta["level"] for t in tickets] == [0, 1, 2, 3]
    assert all(ticket_zoo.load(r["path"]).density == pytest.approx(r["density"]) for r in again)
    cfg = TransferConfig(tickets=[str(moved)], targets=["digits[5-9]"], controls=["winning"], seeds=[0],
                         optimizers={"adam": {"optimizer": "adam", "lr": 1e-3}},
                         train={"iterations": 2, "batch_size": 32, "eval_every": 2})  # fmt: skip
    tout = tmp_path / "transfer"
    trows = transfer(cfg, tout, progress=False, report=False)
    assert sorted(r["level"] for r in trows) == [0, 1, 2, 3]
    # Transfer resume removes its own stale temporaries too.
    tstale = [
        tout / ".results.jsonl.abc123.tmp",
        tout / "cells" / "x" / "ckpt" / ".checkpoint.safetensors.1a2b3c.tmp",
    ]
    for path in tstale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    assert transfer(cfg, tout, progress=False, report=False) == trows
    assert not any(p.exists() for p in tstale)


def test_build_report_writes_beside_results(tmp_path):
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _RESULT_ROWS))
    report = build_report(tmp_path, show=False)
    assert report["summary"] and (tmp_path / "report.json").is_file() and (tmp_path / "report.png").is_file()
