"""The one config schema (ticket_zoo.config), the one registry (ticket_zoo.registry) and the one
resume file format (ticket_zoo.runfiles)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from ticket_zoo.config import Config, apply_overrides, parse_set, setting
from ticket_zoo.errors import ConfigError
from ticket_zoo.registry import Registry
from ticket_zoo.runfiles import append_row, fingerprint, read_rows
from ticket_zoo.train import TrainConfig


@dataclass
class Inner(Config):
    section: ClassVar[str] = "inner config"

    rate: float = setting(0.5, help="a rate", low=0, high=1, low_open=True, high_open=True, flag="--rate")
    steps: int | None = setting(None, help="steps", low=1, flag="--steps", replaces=("epochs",))
    epochs: float | None = setting(None, help="epochs", low=0, low_open=True, replaces=("steps",))
    workers: int = setting(0, help="workers", low=0, fingerprint=False)


@dataclass
class Outer(Config):
    section: ClassVar[str] = "outer config"
    renamed: ClassVar[dict[str, str]] = {"old_name": "name"}

    name: str = setting(help="required name", flag="--name")
    mode: str = setting("a", help="mode", choices=("a", "b"), flag="--mode")
    sizes: tuple[int, ...] = setting((), help="sizes", low=1)
    tags: list[str] = setting(default_factory=list, help="tags", flag="--tags")
    flag_on: bool = setting(False, help="a switch", flag="--flag-on")
    inner: Inner = setting(default_factory=Inner, help="nested")


def test_from_dict_builds_nested_configs_and_refuses_unknown_and_missing_keys():
    cfg = Outer.from_dict({"name": "x", "sizes": [1, 2], "inner": {"rate": 0.25}})
    assert cfg.sizes == (1, 2) and isinstance(cfg.inner, Inner) and cfg.inner.rate == 0.25
    with pytest.raises(ConfigError, match=r"unknown outer config field 'mdoe' \(did you mean 'mode'\?\)"):
        Outer.from_dict({"name": "x", "mdoe": "a"})
    with pytest.raises(ConfigError, match="missing the required field 'name'"):
        Outer.from_dict({})
    with pytest.raises(ConfigError, match=r"^inner: unknown inner config field 'rte'"):
        Outer.from_dict({"name": "x", "inner": {"rte": 1}})
    with pytest.raises(ConfigError, match="must be a mapping"):
        Outer.from_dict(["name"])


def test_renamed_keys_of_older_files_are_read_under_the_new_name():
    assert Outer.from_dict({"old_name": "legacy"}).name == "legacy"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "c"}, r"mode must be one of 'a', 'b', got 'c'"),
        ({"mode": "bb"}, r"\(did you mean 'b'\?\)"),
        ({"name": ""}, r"name must be a non-empty string"),
        ({"name": 3}, r"name must be a non-empty string, got 3"),
        ({"sizes": (1, 0)}, r"sizes must be a list, each a positive int, got \(1, 0\)"),
        ({"sizes": "12"}, r"sizes must be"),
        ({"tags": [1]}, r"tags must be a list"),
        ({"flag_on": 1}, r"flag_on must be true or false, got 1"),
        ({"inner": Inner(rate=1.0)}, r"^inner: rate must be a fraction in \(0, 1\), got 1.0"),
        ({"inner": Inner(rate=float("nan"))}, r"^inner: rate must be a fraction in \(0, 1\)"),
        ({"inner": Inner(rate=True)}, r"^inner: rate must be a fraction"),
        ({"inner": Inner(steps=0)}, r"^inner: steps must be a positive int or null, got 0"),
        ({"inner": Inner(workers=-1)}, r"^inner: workers must be a non-negative int, got -1"),
    ],
)
def test_validate_names_the_field_and_the_rule(changes, message):
    cfg = Outer(name="x").replace(**changes)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_enum_values_are_checked_before_any_run():
    # A typo in an enum used to pass validation and fail at the first batch.
    with pytest.raises(ConfigError, match=r"augment must be one of 'none', 'cifar', got 'cifr' \(did you mean 'cifar'\?\)"):
        TrainConfig(iterations=5, augment="cifr").validate()
    with pytest.raises(ConfigError, match="optimizer must be one of 'sgd', 'adam', 'adamw'"):
        TrainConfig(iterations=5, optimizer="lamb").validate()


def test_to_dict_round_trips_through_from_dict():
    cfg = Outer(name="x", sizes=(3,), tags=["t"], inner=Inner(steps=4))
    d = cfg.to_dict()
    assert d["sizes"] == [3] and d["inner"] == {"rate": 0.5, "steps": 4, "epochs": None, "workers": 0}
    assert json.loads(json.dumps(d)) == d
    assert Outer.from_dict(d) == cfg
    tc = TrainConfig(iterations=7, betas=(0.8, 0.9), milestones=(2, 5), schedule="step")
    assert TrainConfig.from_dict(tc.to_dict()) == tc


def test_overrides_have_one_meaning():
    raw = {"name": "x", "inner": {"rate": 0.1, "epochs": 3}}
    dotted = apply_overrides(raw, {"inner.steps": 9}, Outer)
    nested = apply_overrides(raw, {"inner": {"steps": 9}}, Outer)
    # A mapping value is applied key by key: the same as the dotted form, and siblings are kept.
    assert dotted == nested == {"name": "x", "inner": {"rate": 0.1, "steps": 9}}
    # `replaces` drops the other budget, unless both are overridden.
    both = apply_overrides(raw, {"inner.steps": 9, "inner.epochs": 2}, Outer)
    assert both["inner"] == {"rate": 0.1, "steps": 9, "epochs": 2}
    assert raw == {"name": "x", "inner": {"rate": 0.1, "epochs": 3}}  # the input is not modified
    assert Outer.from_dict(raw, overrides={"mode": "b", "inner.rate": 0.2}).inner.rate == 0.2
    with pytest.raises(ConfigError, match="bad override key"):
        apply_overrides(raw, {"inner..rate": 1})
    with pytest.raises(ConfigError, match="'name' is not a section"):
        apply_overrides(raw, {"name.first": 1})


def test_fingerprint_ignores_housekeeping_at_every_level():
    a = Outer(name="x", inner=Inner(workers=0))
    assert a.fingerprint() == Outer(name="x", inner=Inner(workers=8)).fingerprint()
    assert a.fingerprint() != Outer(name="x", inner=Inner(rate=0.4)).fingerprint()
    assert a.differences(Outer(name="x", inner=Inner(rate=0.4, workers=3))) == ["inner.rate: 0.5 -> 0.4"]
    t = TrainConfig(iterations=5)
    assert t.fingerprint() == t.replace(device="cpu", num_workers=2, checkpoint_every=3).fingerprint()
    assert t.fingerprint() != t.replace(lr=0.2).fingerprint()


def test_cli_flags_are_generated_with_help_and_range_checks(capsys):
    parser = argparse.ArgumentParser(prog="x", exit_on_error=False)
    Outer.add_flags(parser)
    args = parser.parse_args(["--name", "n", "--rate", "0.25", "--steps", "3", "--tags", "a", "b", "--flag-on"])
    assert Outer.flag_overrides(args) == {
        "name": "n", "inner.rate": 0.25, "inner.steps": 3, "tags": ["a", "b"], "flag_on": True,
    }  # fmt: skip
    assert Outer.flag_overrides(parser.parse_args([])) == {}
    help_text = parser.format_help()
    assert "--rate" in help_text and "a rate" in help_text and "(one of: a, b)" in help_text
    assert "--workers" not in help_text  # only fields declared with a flag
    with pytest.raises(argparse.ArgumentError, match=r"out of range: must be a fraction in \(0, 1\)"):
        parser.parse_args(["--rate", "5"])
    with pytest.raises(argparse.ArgumentError, match="is not an int"):
        parser.parse_args(["--steps", "x"])


def test_parse_set_reads_yaml_values_and_refuses_malformed_items():
    assert parse_set(["a.b=0.5", "c=[1, 2]", "d=true", "e=text"]) == {"a.b": 0.5, "c": [1, 2], "d": True, "e": "text"}
    with pytest.raises(ConfigError, match="write key=value"):
        parse_set(["novalue"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_set(["a=[1,"])


def test_from_yaml_reads_a_recipe_and_applies_overrides(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lr: 0.05\nepochs: 2\naugment: cifar\n")
    cfg = TrainConfig.from_yaml(path, {"iterations": 10})
    assert (cfg.lr, cfg.iterations, cfg.epochs, cfg.augment) == (0.05, 10, None, "cifar")
    path.write_text("- not\n- a mapping\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        TrainConfig.from_yaml(path)


# --- registry ----------------------------------------------------------------------------------------


def test_registry_registers_once_and_names_unknown_entries():
    reg: Registry = Registry("widget")

    @reg.register("one", size=1)
    def one() -> int:
        return 1

    reg.add("two", lambda: 2, size=2)
    assert reg.names() == ("one", "two") and "one" in reg and len(reg) == 2 and list(reg) == ["one", "two"]
    assert reg.get("two")() == 2 and reg.info("one") == {"size": 1}
    reg.info("one")["size"] = 9  # a copy: the registry's facts are not changed through it
    assert reg.info("one") == {"size": 1}
    with pytest.raises(ValueError, match="already registered"):
        reg.add("one", lambda: 0)
    with pytest.raises(ConfigError, match=r"unknown widget 'on' \(did you mean 'one'\?\); known: one, two"):
        reg.get("on")
    with pytest.raises(ConfigError, match="unknown widget"):
        reg.get(["unhashable"])


# --- runfiles ----------------------------------------------------------------------------------------


def test_result_rows_survive_a_torn_last_line_and_refuse_a_bad_middle_line(tmp_path):
    path = tmp_path / "results.jsonl"
    assert read_rows(path) == []
    with pytest.raises(ConfigError, match="no results file"):
        read_rows(path, missing_ok=False)
    append_row(path, {"cell": "a"})
    append_row(path, {"cell": "b"})
    with path.open("ab") as f:
        f.write(b'{"cell": "c", "acc": 9\xc3')  # killed mid-write, inside a multi-byte character
    with pytest.warns(UserWarning, match="last line 3"):
        assert [r["cell"] for r in read_rows(path)] == ["a", "b"]
    assert not path.read_bytes().endswith(b"\n")  # a reader does not modify the file
    with pytest.warns(UserWarning):
        assert read_rows(path, repair=True, line_numbers=True) == [(1, {"cell": "a"}), (2, {"cell": "b"})]
    assert path.read_bytes() == b'{"cell": "a"}\n{"cell": "b"}\n'
    path.write_bytes(b'{"cell": "a"}\n[1]\n{"cell": "b"}\n')
    with pytest.raises(ConfigError, match="line 2 is not a JSON result row"):
        read_rows(path)
    with pytest.raises(ValueError):
        append_row(path, {"acc": float("nan")})


def test_fingerprint_covers_data_and_masks_whatever_their_dtype():
    m = {"w": torch.tensor([True, False])}
    assert fingerprint({"a": 1}, m) == fingerprint({"a": 1}, {"w": torch.tensor([1, 0], dtype=torch.uint8)})
    assert fingerprint({"a": 1}, m) != fingerprint({"a": 1}, {"w": torch.tensor([False, True])})
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1}) != fingerprint({"a": 2, "b": 2})
