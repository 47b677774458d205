"""Logs that read well: bars on a terminal, plain lines in a file; an offline dataset is one line.

- stderr to a file or a pipe (CI, nohup, SLURM): no ``\\r`` redraws, no escape codes, one line per
  find level / transfer cell and a summary, a small log; inner training bars print nothing.
- stderr a terminal: tqdm bars, no plain lines.
- ``progress=False``: nothing at all.
- a Hub dataset while offline (or with the network down): one ``ConfigError`` line naming the dataset
  and what to do, no retry warnings, exit code 2 from the CLI.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY_FIND, write_recipe

from ticket_zoo import progress
from ticket_zoo.errors import ConfigError
from ticket_zoo.find import find_tickets

# Dense + two pruned levels of 20 steps, rewinding to step 10: a real IMP run in a few seconds.
TWO_LEVELS = {
    **TINY_FIND,
    "levels": 2,
    "rewind": 10,
    "train": {**TINY_FIND["train"], "iterations": 20, "eval_every": 10, "checkpoint_every": 10},
}

# The shipped digits transfer recipe cut to two cells (one ticket, one control, one seed, two optimizers).
TWO_CELLS = [
    "--config", "transfer-digits",
    "--set", "tickets=[lenet_300_100-digits04-5pct]",
    "--set", "controls=[winning]",
    "--set", "seeds=[0]",
    "--set", "train.iterations=20",
]  # fmt: skip


def _fake_tty(monkeypatch) -> None:
    """Make the (captured) stderr claim to be a terminal, as it is for a person at a shell."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)


def _assert_plain_log(text: str) -> None:
    assert "\r" not in text, "a carriage return (tqdm redraw) in a log"
    assert "\x1b" not in text, "an escape code in a log"
    assert len(text.encode()) < 2048, f"a {len(text.encode())}-byte log for a tiny run:\n{text}"


# --- the policy ------------------------------------------------------------------------------------


def test_bar_is_tqdm_on_a_terminal_and_silent_otherwise(monkeypatch, capsys):
    quiet = progress.bar(total=3, desc="x")
    assert quiet.disable  # capsys's stderr is not a terminal
    quiet.update(1)
    quiet.close()
    _fake_tty(monkeypatch)
    shown = progress.bar(total=3, desc="x")
    assert not shown.disable
    shown.update(1)
    shown.close()
    assert progress.bar(total=3, desc="x", enabled=False).disable  # progress=False: never shown
    assert "\r" in capsys.readouterr().err  # the terminal got a real bar


def test_line_prints_only_when_not_a_terminal(monkeypatch, capsys):
    progress.line("level 1")
    progress.line("hidden", enabled=False)
    assert capsys.readouterr().err == "level 1\n"
    _fake_tty(monkeypatch)
    progress.line("level 2")  # the bar says it on a terminal
    assert capsys.readouterr().err == ""


# --- find ------------------------------------------------------------------------------------------


def test_find_to_a_log_file_writes_one_line_per_level(tmp_path, capsys):
    recipe = write_recipe(tmp_path, TWO_LEVELS)
    rows = find_tickets(recipe, tmp_path / "out")
    err = capsys.readouterr().err
    _assert_plain_log(err)
    lines = err.splitlines()
    level_lines = [ln for ln in lines if ln.startswith("find level ")]
    assert [ln.split(":")[0] for ln in level_lines] == ["find level 0/2", "find level 1/2", "find level 2/2"]
    assert f"density {rows[2]['density']:.3f}" in level_lines[2]
    assert f"test {rows[2]['test_acc']:.1f}%" in level_lines[2]
    assert lines[-1].startswith("find done: levels 0-2 in ")
    assert len(lines) == 4, err  # nothing else: the per-step training bars print nothing

    # Resuming a finished run says so, still one line per level.
    find_tickets(recipe, tmp_path / "out")
    again = capsys.readouterr().err.splitlines()
    assert len(again) == 4 and all(ln.endswith("(done before)") for ln in again[:3]), again
    assert again[-1].startswith("find done: levels 0-2, 3 done before in ")


def test_find_on_a_terminal_draws_bars_and_no_lines(tmp_path, monkeypatch, capsys):
    _fake_tty(monkeypatch)
    find_tickets(write_recipe(tmp_path, TWO_LEVELS), tmp_path / "out")
    err = capsys.readouterr().err
    assert "IMP levels" in err and "\r" in err  # tqdm's bar
    assert "find level" not in err and "find done" not in err


def test_find_with_progress_false_prints_nothing(tmp_path, monkeypatch, capsys):
    recipe = write_recipe(tmp_path, TWO_LEVELS)
    find_tickets(recipe, tmp_path / "a", progress=False)
    assert capsys.readouterr().err == ""
    _fake_tty(monkeypatch)
    find_tickets(recipe, tmp_path / "b", progress=False)
    assert capsys.readouterr().err == ""


def test_training_bar_prints_nothing_in_a_log(capsys):
    from ticket_zoo.data import load_splits
    from ticket_zoo.ticket import create_model
    from ticket_zoo.train import TrainConfig, train

    splits = load_splits("digits[0-4]")
    model = create_model("lenet_300_100", {"num_classes": 5, "in_chans": 1, "img_size": 8})
    train(model, splits.train, splits.val, TrainConfig(iterations=10, batch_size=16), progress=True)
    assert capsys.readouterr().err == ""


# --- transfer --------------------------------------------------------------------------------------


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env.pop("COLUMNS", None)
    return env


def test_transfer_cli_to_a_log_file_writes_one_line_per_cell(tmp_path):
    log = tmp_path / "transfer.log"
    with log.open("w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "ticket_zoo.cli", "transfer", *TWO_CELLS, "--no-report", "--out", str(tmp_path / "o")],
            stdout=subprocess.DEVNULL, stderr=err, env=_cli_env(tmp_path), timeout=300,
        )  # fmt: skip
    text = log.read_text()
    assert proc.returncode == 0, text
    _assert_plain_log(text)
    lines = text.splitlines()
    cells = [ln for ln in lines if ln.startswith("transfer cell ")]
    assert len(cells) == 2, text
    cells.sort()  # numbered by plan position; with --workers (the CLI's default) they finish in any order
    assert cells[0].startswith("transfer cell 1/2: winning lenet_300_100-digits04-5pct -> digits[5-9] sgd seed 0: test ")
    assert cells[1].startswith("transfer cell 2/2: winning lenet_300_100-digits04-5pct -> digits[5-9] adam seed 0: test ")
    assert any(ln.startswith("transfer done: 2 cells in ") for ln in lines), text


def test_transfer_on_a_terminal_draws_a_bar(tmp_path, monkeypatch, capsys):
    from ticket_zoo.transfer_grid import transfer

    _fake_tty(monkeypatch)
    transfer("transfer-digits", tmp_path / "o", report=False,
             overrides={"tickets": ["lenet_300_100-digits04-5pct"], "controls": ["winning"], "seeds": [0],
                        "optimizers": {"adam": {}}, "train.iterations": 10})  # fmt: skip
    err = capsys.readouterr().err
    assert "transfer:" in err and "\r" in err
    assert "transfer cell" not in err


# --- a Hub dataset while offline ---------------------------------------------------------------------


def _offline_env(tmp_path: Path) -> dict[str, str]:
    # An empty cache, so cifar10 cannot be there whatever this machine has downloaded.
    return _cli_env(tmp_path, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
                    HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"))  # fmt: skip


def test_offline_dataset_is_one_error_not_a_connection_traceback(tmp_path):
    code = "from ticket_zoo.data import load_splits; load_splits('cifar10')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_offline_env(tmp_path), timeout=300)  # fmt: skip
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ticket_zoo.errors.ConfigError: cifar10 needs to be downloaded from the Hugging Face Hub")
    assert "uoft-cs/cifar10" in last and "HF_HUB_OFFLINE=1" in last and "imagefolder:PATH" in last
    # The library's error is not chained on (the line says it all), and no retry warnings.
    for noise in ("During handling", "direct cause", "Retrying", "ConnectionError"):
        assert noise not in proc.stderr


def test_offline_dataset_through_the_cli_is_one_line_and_exit_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ticket_zoo.cli", "transfer", "--config", "transfer-digits",
         "--set", "targets=[cifar10]", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=_offline_env(tmp_path), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ticket-zoo: error: cifar10 needs to be downloaded from the Hugging Face Hub")
    assert "Traceback" not in proc.stderr and "\r" not in proc.stderr


def test_unreachable_network_is_one_error_and_retry_warnings_are_silenced(monkeypatch, caplog):
    """A refused connection (simulated: no network wait) maps to one line; the retries log nothing."""
    import datasets

    from ticket_zoo.data import load_splits

    http_log = logging.getLogger("huggingface_hub.utils._http")

    def unreachable(*args, **kwargs):
        for attempt in (1, 2):  # what huggingface_hub logs on each attempt
            http_log.warning("'[Errno 111] Connection refused' thrown while requesting HEAD https://x/README.md")
            http_log.warning(f"Retrying in {attempt}s [Retry {attempt}/5].")
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise ConnectionError("Couldn't reach 'uoft-cs/cifar10' on the Hub (LocalEntryNotFoundError)") from exc

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    caplog.set_level(logging.WARNING)
    with pytest.raises(ConfigError) as info:
        load_splits("cifar10")
    message = str(info.value)
    assert message.startswith("cifar10 needs to be downloaded from the Hugging Face Hub (uoft-cs/cifar10) but ")
    assert "network is unreachable ([Errno 111] Connection refused)" in message
    assert "\n" not in message
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")], caplog.text
    # The filter is scoped to the call: afterwards huggingface_hub logs as before.
    http_log.warning("Retrying in 1s [Retry 1/5].")
    assert "Retrying in 1s" in caplog.text


def test_other_dataset_errors_are_not_called_offline(monkeypatch):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    from ticket_zoo.data import load_splits

    def missing(*args, **kwargs):
        raise DatasetNotFoundError("Dataset 'uoft-cs/cifar10' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(DatasetNotFoundError):
        load_splits("cifar10")
