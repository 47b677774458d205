"""The ``ticket-zoo`` command line: a light start, seed lists, defaults without a recipe, range-checked
options, a quiet broken pipe and one name for "no progress bars"."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from ticket_zoo import cli
from ticket_zoo.configs import parse_seeds
from ticket_zoo.errors import ConfigError

# Runs cli.main, then says on stderr whether torch (or scipy) was ever imported.
_WRAPPER = (
    "import sys\nfrom ticket_zoo.cli import main\n"
    "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
    "print('HEAVY', sorted(m for m in ('torch', 'timm', 'scipy', 'datasets') if m in sys.modules), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["find", "--help"], ["transfer", "--help"], ["report", "--help"], ["list"],
     ["info", "lenet_300_100-digits04-5pct"]],
)  # fmt: skip
def test_help_list_and_info_load_no_torch(argv):
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr, done.stderr
    assert done.stdout.strip()  # it did print its help, table or entry


def test_the_static_table_matches_each_declaration():
    # Every command is declared where the table says, with the same one-line help.
    for name, command in cli.COMMANDS.items():
        parser = cli.build_parser([name])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert list(sub.choices) == list(cli.COMMANDS)  # --help lists every command, in order
        helps = {a.dest: a.help for a in sub._choices_actions}
        assert helps[name] == command.help, name
        assert sub.choices[name].add_help, name  # really declared, not a placeholder


def test_unknown_command_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["lst"])
    assert info.value.code == 2
    assert "invalid choice: 'lst'" in capsys.readouterr().err


# --- seeds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seeds",
    [("0-4", [0, 1, 2, 3, 4]), ("0,2,5", [0, 2, 5]), (["0", "1", "2"], [0, 1, 2]), (["0-2", "7"], [0, 1, 2, 7]),
     ("3", [3]), (5, [5]), ("0-0", [0])],
)  # fmt: skip
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text, message", [("4-0", "runs downwards"), ("-1", "is not a seed"),
                                           ("a", "is not a seed"), ("4294967296", "out of range")])  # fmt: skip
def test_parse_seeds_refuses_with_one_line(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_seeds(text)
    assert "\n" not in str(info.value)


def test_transfer_seeds_flag_takes_ranges_and_lists():
    for argv, seeds in ((["--seeds", "0-4"], [0, 1, 2, 3, 4]), (["--seeds", "0,2,5"], [0, 2, 5]),
                        (["--seeds", "0", "1", "2"], [0, 1, 2]), (["--seeds", "0-2", "7"], [0, 1, 2, 7])):  # fmt: skip
        args = cli.build_parser(["transfer"]).parse_args(["transfer", "--out", "o", *argv])
        assert args.seeds == seeds


def test_a_recipe_may_write_seeds_as_a_range():
    from ticket_zoo.configs import TransferConfig

    cfg = TransferConfig.from_dict(
        {"tickets": ["t"], "targets": ["digits"], "optimizers": {"adam": {"optimizer": "adam"}}, "seeds": "0-2"}
    )
    assert cfg.seeds == [0, 1, 2]


# --- range-checked options ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["list", "--max-density", "5"], "argument --max-density: 5 is out of range: must be a number in [0, 1]"),
        (["list", "--min-density", "-0.1"], "argument --min-density: -0.1 is out of range"),
        (["find", "--out", "o", "--levels", "-1"], "argument --levels: -1 is out of range: must be an int in [0, 500]"),
        (["find", "--out", "o", "--target-density", "0"], "argument --target-density: 0 is out of range: must be a fraction in (0, 1)"),
        (["transfer", "--out", "o", "--iterations", "0"], "argument --iterations: 0 is out of range: must be a positive int"),
        (["transfer", "--out", "o", "--seeds", "-1"], "argument --seeds: '-1' is not a seed"),
        (["transfer", "--out", "o", "--seeds", "4-0"], "argument --seeds: range '4-0' runs downwards"),
        (["report", "o", "--tolerance", "-1"], "argument --tolerance: -1 is out of range"),
        (["demo", "--levels", "0"], "argument --levels: 0 is out of range: must be a positive int"),
        (["demo", "--target-density", "1.5"], "argument --target-density: 1.5 is out of range"),
    ],
)  # fmt: skip
def test_numeric_options_are_range_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1


# --- defaults without a recipe ----------------------------------------------------------------------


def test_find_and_transfer_run_without_a_recipe(tmp_path, capsys):
    import ticket_zoo

    find_out, transfer_out = tmp_path / "find", tmp_path / "transfer"
    assert cli.main(["find", "--arch", "lenet_300_100", "--dataset", "digits[0-4]", "--levels", "1",
                     "--iterations", "20", "--out", str(find_out), "--no-progress"]) == 0  # fmt: skip
    import yaml

    effective = yaml.safe_load((find_out / "config.yaml").read_text())
    assert effective["train"]["optimizer"] == "adam" and effective["train"]["lr"] == 1.2e-3
    assert effective["train"]["batch_size"] == 60 and effective["train"]["iterations"] == 20
    assert ticket_zoo.load(find_out / "level_01").meta["level"] == 1

    assert cli.main(["transfer", "--ticket", str(find_out / "level_01"), "--target", "digits[5-9]",
                     "--iterations", "20", "--seeds", "0-1", "--controls", "winning", "--out", str(transfer_out),
                     "--no-progress", "--no-report"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in (transfer_out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["optimizer"], r["seed"]) for r in rows) == [("adam", 0), ("adam", 1), ("sgd", 0), ("sgd", 1)]
    assert {r["steps"] for r in rows} == {20}
    recorded = json.loads((transfer_out / "transfer.json").read_text())
    assert recorded["train"]["batch_size"] == 64 and recorded["train"]["schedule"] == "cosine"


def test_the_default_transfer_budget_is_documented(capsys):
    from ticket_zoo.configs import DEFAULT_TRANSFER_TRAIN
    from ticket_zoo.transfer_grid import TransferConfig

    cfg = TransferConfig.from_dict({"tickets": ["t"], "targets": ["digits"], "optimizers": {"adam": {}},
                                    "train": dict(DEFAULT_TRANSFER_TRAIN)})  # fmt: skip
    assert cfg.train_config("adam").iterations == DEFAULT_TRANSFER_TRAIN["iterations"]
    with pytest.raises(SystemExit):
        cli.main(["transfer", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"iterations {DEFAULT_TRANSFER_TRAIN['iterations']}" in text and "presets" in text


def test_find_without_a_recipe_names_what_is_missing(tmp_path, capsys):
    assert cli.main(["find", "--dataset", "digits", "--levels", "1", "--out", str(tmp_path / "o")]) == 2
    assert "without --config, give --arch" in capsys.readouterr().err


# --- pipes and progress -----------------------------------------------------------------------------


def test_a_closed_pipe_ends_quietly():
    # `ticket-zoo list | head -1`: the reader closes early; no BrokenPipe traceback, exit as on SIGPIPE.
    code = "import sys; from ticket_zoo.cli import main; sys.exit(main(['list']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) in (0, 141)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("command", ["find", "transfer"])
def test_no_progress_is_the_name_and_quiet_still_works(command, capsys):
    parser = cli.build_parser([command])
    assert parser.parse_args([command, "--out", "o", "--no-progress"]).no_progress is True
    assert parser.parse_args([command, "--out", "o", "--quiet"]).no_progress is True  # old scripts
    assert parser.parse_args([command, "--out", "o"]).no_progress is False
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    assert "--no-progress" in text and "--quiet" not in text

