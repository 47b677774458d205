"""IMP with rewinding (ticket_zoo.find) on real digits data: schedule, nesting, rewinding, resume, recipes.

Budgets are tiny (60 iterations a level) except for the science regression, which runs the shipped
digits recipe and checks the lottery-ticket claim itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import ticket_zoo
from tests.helpers import TINY_FIND, write_recipe
from ticket_zoo.errors import ConfigError, UnknownArchitectureError, UnknownDatasetError
from ticket_zoo.find import FindConfig, density_schedule, find_tickets, register_cli

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One uninterrupted tiny IMP run shared by the tests below."""
    tmp = tmp_path_factory.mktemp("imp")
    recipe = write_recipe(tmp, TINY_FIND)
    out = tmp / "out"
    torch.set_num_threads(1)
    rows = find_tickets(recipe, out, progress=False)
    return recipe, out, rows


def _theta_k(k: int) -> dict[str, torch.Tensor]:
    """θk captured independently: same seeded init, same data, plain train(capture_at=k)."""
    from ticket_zoo.data import load_splits
    from ticket_zoo.ticket import create_model
    from ticket_zoo.train import TrainConfig, train

    splits = load_splits("digits", seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("lenet_300_100", {"num_classes": 10, "in_chans": 1, "img_size": 8})
    cfg = TrainConfig.from_dict({**TINY_FIND["train"], "seed": 0})
    return train(model, splits.train, splits.val, cfg, capture_at=k, progress=False).captured


def test_levels_follow_schedule_are_nested_and_rewind_to_theta_k(tiny_run):
    _, out, rows = tiny_run
    assert [r["level"] for r in rows] == [0, 1, 2, 3]
    tickets = [ticket_zoo.load(out / f"level_{level:02d}") for level in range(4)]
    theta = _theta_k(20)
    head = {"head.weight"}
    for level, ticket in enumerate(tickets):
        assert set(ticket.masks) == {"fc1.weight", "fc2.weight", "head.weight"}
        for name, mask in ticket.masks.items():
            fraction = 0.1 if name in head else 0.2
            expected = (1 - fraction) ** level * mask.numel()
            assert abs(int(mask.sum()) - expected) <= 1, (level, name, int(mask.sum()), expected)
            # The ticket's init is θk on the survivors, bit for bit, and exactly zero elsewhere.
            assert torch.equal(ticket.init[name][mask], theta[name][mask])
            assert not ticket.init[name][~mask].any()
        for name, value in ticket.init.items():
            if name not in ticket.masks:
                assert torch.equal(value, theta[name]), name
        assert ticket.meta["level"] == level and ticket.meta["rewind_step"] == 20
        assert ticket.meta["method"] == "imp-layerwise" and ticket.meta["source"] == "digits"
        assert ticket.meta["source_test_acc"] == pytest.approx(rows[level]["test_acc"])
        assert ticket.meta["name"] == f"lenet_300_100-digits-{round(100 * ticket.density)}pct"
        assert rows[level]["density"] == pytest.approx(ticket.density)
    for prev, nxt in zip(tickets[:-1], tickets[1:], strict=True):
        for name in prev.masks:
            assert not (nxt.masks[name] & ~prev.masks[name]).any(), f"{name} revived a pruned weight"
            assert int(nxt.masks[name].sum()) < int(prev.masks[name].sum())
    # Level 0 is the dense ticket; the built network of a pruned level has exact zeros where pruned.
    assert tickets[0].density == 1.0
    model = tickets[3].build()
    assert not dict(model.named_parameters())["fc1.weight"][~tickets[3].masks["fc1.weight"]].any()


def test_pruning_uses_final_weights_of_previous_level(tiny_run):
    """Level L's mask = top-|w| of level L-1's trained weights among its survivors (not of θk)."""
    from safetensors.torch import load_file

    from ticket_zoo.masks import magnitude_masks

    _, out, _ = tiny_run
    final1 = load_file(str(out / "level_01" / "final.safetensors"))
    t1, t2 = ticket_zoo.load(out / "level_01"), ticket_zoo.load(out / "level_02")
    density, explicit = density_schedule(
        {n: m.numel() for n, m in t1.masks.items()}, 2, scope="layerwise", prune_fraction=0.2,
        layer_fractions={"head.weight": 0.1},
    )  # fmt: skip
    expected = magnitude_masks({n: final1[n] for n in t1.masks}, density, "layerwise", t1.masks, explicit)
    for name in expected:
        assert torch.equal(expected[name], t2.masks[name])


def test_run_files_summary_and_no_redo(tiny_run):
    recipe, out, rows = tiny_run
    summary = json.loads((out / "summary.json").read_text())
    assert [r["level"] for r in summary["levels"]] == [0, 1, 2, 3]
    assert summary["config"]["arch"] == "lenet_300_100"
    assert FindConfig.from_yaml(out / "config.yaml").to_dict() == FindConfig.from_yaml(recipe).to_dict()
    for level in range(4):
        ldir = out / f"level_{level:02d}"
        assert (ldir / "done.json").is_file() and (ldir / "README.md").is_file()
        assert not (ldir / ".ckpt").exists(), "checkpoints are deleted once a level is done"
    assert (out / "rewind.safetensors").is_file()
    stamp = (out / "level_02" / "ticket.safetensors").stat().st_mtime_ns
    again = find_tickets(recipe, out, progress=False)  # everything done: nothing retrains
    assert again == rows
    assert (out / "level_02" / "ticket.safetensors").stat().st_mtime_ns == stamp


def test_different_config_in_same_out_is_refused(tiny_run, tmp_path):
    _, out, _ = tiny_run
    other = write_recipe(tmp_path, {**TINY_FIND, "train": {**TINY_FIND["train"], "lr": 1e-3}})
    with pytest.raises(ConfigError, match=r"different config.*train\.lr"):
        find_tickets(other, out, progress=False)


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    torch.set_num_threads(1)
    kill_at = int(sys.argv[3])
    original = torch.optim.Adam.step
    count = 0

    def step(self, *args, **kwargs):  # SIGKILL the process right after its kill_at-th optimizer step
        global count
        out = original(self, *args, **kwargs)
        count += 1
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    torch.optim.Adam.step = step
    from ticket_zoo.find import find_tickets
    find_tickets(sys.argv[1], sys.argv[2], progress=False)
    """
)


def test_sigkill_and_resume_gives_identical_results(tiny_run, tmp_path):
    recipe, reference, ref_rows = tiny_run
    out = tmp_path / "killed"
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # Run 1 dies in level 0 after the rewind capture (step 20, checkpointed) at step 30.
    # Run 2 resumes level 0 from step 20 (40 steps), does level 1 (steps 20..60: 40) and dies in
    # level 2 at step 45 (its 25th step: late resetting starts it at the rewind step 20).
    for kill_at, marker in ((30, "level_00/.ckpt"), (40 + 40 + 25, "level_02/.ckpt")):
        proc = subprocess.run([sys.executable, str(script), str(recipe), str(out), str(kill_at)], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert (out / marker).is_dir(), f"expected a half-done level at {marker}"
    assert (out / "level_01" / "done.json").is_file() and not (out / "level_02" / "done.json").exists()
    rows = find_tickets(recipe, out, progress=False)
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "path")} for r in rows]
    ref = [{k: v for k, v in r.items() if k not in ("seconds", "path")} for r in ref_rows]
    assert strip == ref
    for level in range(4):
        a = ticket_zoo.load(out / f"level_{level:02d}")
        b = ticket_zoo.load(reference / f"level_{level:02d}")
        assert all(torch.equal(a.masks[n], b.masks[n]) for n in b.masks)
        assert all(torch.equal(a.init[n], b.init[n]) for n in b.init)


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        ({"dataset": "digitz"}, UnknownDatasetError, "dataset"),
        ({"arch": "lenet_300_10"}, UnknownArchitectureError, "arch"),
        ({"train": {**TINY_FIND["train"], "optimizer": "adma"}}, ConfigError, "optimizer"),
        ({"prune_fracton": 0.2}, ConfigError, "prune_fracton"),
        ({"target_density": 1.5}, ConfigError, "target_density"),
        ({"target_density": 0.0}, ConfigError, "target_density"),
        ({"prune_fraction": 1.0}, ConfigError, "prune_fraction"),
        ({"levels": -1}, ConfigError, "levels"),
        ({"levels": None}, ConfigError, "levels"),
        ({"rewind": 61}, ConfigError, "rewind"),
        ({"rewind": "3ep"}, ConfigError, "rewind"),  # 3 epochs = 63 iterations > 60
        ({"rewind": "soon"}, ConfigError, "rewind"),
        ({"scope": "layer"}, ConfigError, "scope"),
        ({"layer_prune_fractions": {"conv*": 0.1}}, ConfigError, "layer_prune_fractions"),
        ({"overrides": {"conv*": 0.1}}, ConfigError, "layer_prune_fractions"),  # the old name, read as the new
        ({"layer_prune_fractions": {"fc1.weight": 1.0}}, ConfigError, r"layer_prune_fractions\['fc1.weight'\]"),
        ({"arch_kwargs": {"num_classes": 7}}, ConfigError, "num_classes"),
        ({"train": {**TINY_FIND["train"], "seed": 3}}, ConfigError, "seed"),
    ],
)
def test_bad_recipes_are_rejected_before_training(tmp_path, monkeypatch, change, error, field):
    import ticket_zoo.train

    def no_training(*args, **kwargs):
        raise AssertionError("training started for an invalid recipe")

    monkeypatch.setattr(ticket_zoo.train, "train", no_training)
    recipe = write_recipe(tmp_path, {**TINY_FIND, **change})
    with pytest.raises(error, match=field):
        find_tickets(recipe, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "level_00").exists()


def test_cli_flags_override_recipe_fields(tmp_path):
    import argparse

    recipe = write_recipe(tmp_path, {**TINY_FIND, "train": {**TINY_FIND["train"], "iterations": None, "epochs": 5}})
    parser = argparse.ArgumentParser(prog="ticket-zoo")
    register_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "out"
    args = parser.parse_args(
        ["find", "--config", str(recipe), "--out", str(out), "--levels", "1", "--iterations", "40",
         "--seed", "3", "--set", "train.lr=0.002", "--set", "scope=global", "--set", "rewind=0", "--quiet"]
    )  # fmt: skip
    assert args.func(args) == 0
    effective = yaml.safe_load((out / "config.yaml").read_text())
    assert effective["levels"] == 1 and effective["seed"] == 3 and effective["scope"] == "global"
    assert effective["train"]["iterations"] == 40 and effective["train"]["epochs"] is None
    assert effective["train"]["lr"] == 0.002
    ticket = ticket_zoo.load(out / "level_01")
    assert ticket.meta["seed"] == 3 and ticket.meta["method"] == "imp-global"
    assert ticket.meta["train_steps"] == 40
    # Global scope: the non-head layers share one budget of 80%, the head keeps its own 90%.
    fc = [ticket.masks["fc1.weight"], ticket.masks["fc2.weight"]]
    kept = sum(int(m.sum()) for m in fc)
    assert abs(kept - 0.8 * sum(m.numel() for m in fc)) <= 1
    assert abs(int(ticket.masks["head.weight"].sum()) - 0.9 * ticket.masks["head.weight"].numel()) <= 1
    assert len(json.loads((out / "summary.json").read_text())["levels"]) == 2


def test_levels_can_be_extended_later(tiny_run, tmp_path):
    """levels only says where to stop: re-running with more levels continues the same run."""
    import shutil

    recipe, reference, ref_rows = tiny_run
    out = tmp_path / "extend"
    shutil.copytree(reference, out)
    more = FindConfig.from_yaml(recipe, {"levels": 4})
    rows = find_tickets(more, out, progress=False)
    # Same results; paths name the copy (rows store their level folder relative to OUT).
    assert [{**r, "path": Path(r["path"]).name} for r in rows[:4]] == [
        {**r, "path": Path(r["path"]).name} for r in ref_rows
    ]
    assert [r["path"] for r in rows] == [str(out / f"level_{i:02d}") for i in range(5)]
    assert rows[4]["level"] == 4
    assert rows[4]["density"] < rows[3]["density"]


def test_recipes_parse_and_validate():
    """Every shipped find recipe is a valid FindConfig (no training)."""
    recipes = sorted(p for p in RECIPES.glob("*.yaml") if "transfer" not in p.name)
    assert len(recipes) >= 11
    for path in recipes:
        raw = yaml.safe_load(path.read_text())
        if "arch" not in raw:
            continue  # not a find recipe
        FindConfig.from_yaml(path).validate()


def test_density_schedule_compounds_per_group():
    sizes = {"a": 1000, "b": 500, "head": 100}
    d, explicit = density_schedule(
        sizes, 3, scope="global", prune_fraction=0.2, layer_fractions={"head": 0.1}
    )
    assert explicit == {"head": pytest.approx(0.9**3)}
    assert d == pytest.approx((round(0.8**3 * 1500) + round(0.9**3 * 100)) / 1600)
    d, explicit = density_schedule(sizes, 2, scope="layerwise", prune_fraction=0.5)
    assert explicit == {"a": 0.25, "b": 0.25, "head": 0.25} and d == 0.25


@pytest.mark.slow
def test_science_winning_ticket_beats_random_mask(tmp_path):
    """Frankle & Carbin's claim on digits with the shipped recipe (fixed seeds).

    At ~5% density the ticket (rewound to θ0, trained) is within 2 points of the dense network's test
    accuracy and ahead of random masks with the same per-layer density on the same θ0.
    """
    from safetensors.torch import load_file

    from ticket_zoo.data import load_splits
    from ticket_zoo.masks import random_masks
    from ticket_zoo.ticket import create_model
    from ticket_zoo.train import train

    config = FindConfig.from_yaml(RECIPES / "lenet_300_100-digits.yaml")
    out = tmp_path / "science"
    rows = find_tickets(config, out, progress=False)
    dense, last = rows[0], rows[-1]
    assert 0.04 < last["density"] < 0.06
    ticket = ticket_zoo.load(last["path"])
    theta0 = load_file(str(out / "rewind.safetensors"))  # the full θ0 (the ticket keeps survivors only)
    splits = load_splits(config.dataset, seed=config.seed)
    controls = []
    for seed in (0, 1):
        masks = random_masks(ticket.masks, seed)
        model = create_model(ticket.arch, ticket.arch_kwargs)
        model.load_state_dict(theta0)
        result = train(model, splits.train, splits.val, config.effective_train(), masks=masks,
                       test_set=splits.test, progress=False)  # fmt: skip
        controls.append(result.test_acc)
    random_mean = sum(controls) / len(controls)
    print(
        f"dense {dense['test_acc']:.2f}  ticket@{last['density']:.3f} {last['test_acc']:.2f}  random {controls}"
    )
    assert last["test_acc"] >= dense["test_acc"] - 2.0
    assert last["test_acc"] > random_mean


ONE_SHOT = {
    **TINY_FIND,
    "arch": "conv4",
    "rewind": 0,
    "levels": 2,
    "one_shot": True,
    "layer_prune_fractions": {"features.*": 0.1},
    "train": {**TINY_FIND["train"], "iterations": 20, "lr": 3e-4},
}


@pytest.fixture(scope="module")
def one_shot_run(tmp_path_factory):
    """A one-shot conv4 run whose conv layers follow their own rate (layer_prune_fractions)."""
    tmp = tmp_path_factory.mktemp("oneshot")
    recipe = write_recipe(tmp, ONE_SHOT)
    out = tmp / "oneshot"
    torch.set_num_threads(1)
    rows = find_tickets(recipe, out, progress=False)
    return recipe, out, rows


def test_one_shot_with_layer_prune_fractions_on_conv4(one_shot_run):
    """One-shot: every level prunes the dense trained weights; conv layers follow their own 10% rate."""
    from safetensors.torch import load_file

    from ticket_zoo.masks import magnitude_masks

    _, out, _ = one_shot_run
    dense_final = load_file(str(out / "level_00" / "final.safetensors"))
    ticket = ticket_zoo.load(out / "level_02")
    assert ticket.meta["method"] == "oneshot-layerwise"
    for name, mask in ticket.masks.items():
        rate = 0.1 if name.startswith("features.") else (0.1 if name.startswith("head.") else 0.2)
        assert abs(int(mask.sum()) - (1 - rate) ** 2 * mask.numel()) <= 1, name
        weights = {name: dense_final[name]}
        expected = magnitude_masks(weights, 0.5, "layerwise", fixed_densities={name: (1 - rate) ** 2})[name]
        assert torch.equal(mask, expected), f"{name} is not the one-shot top-|w| of the dense weights"
    assert ticket.meta["layer_prune_fractions"] == {"features.*": 0.1}


def test_config_yaml_written_before_the_rename_still_resumes(one_shot_run, tmp_path):
    """A run folder whose config.yaml says `overrides:` (the old name of layer_prune_fractions) resumes
    under a recipe using either name, and nothing is retrained."""
    import shutil

    recipe, reference, rows = one_shot_run
    out = tmp_path / "old"
    shutil.copytree(reference, out)
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["layer_prune_fractions"] == {"features.*": 0.1}
    old = {("overrides" if k == "layer_prune_fractions" else k): v for k, v in stored.items()}
    (out / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    stamp = (out / "level_02" / "ticket.safetensors").stat().st_mtime_ns
    assert find_tickets(recipe, out, progress=False) == [{**r, "path": str(out / Path(r["path"]).name)} for r in rows]
    assert (out / "level_02" / "ticket.safetensors").stat().st_mtime_ns == stamp
    # config.yaml is now written with the new name; an old recipe still resumes it.
    assert "overrides" not in yaml.safe_load((out / "config.yaml").read_text())
    legacy = {("overrides" if k == "layer_prune_fractions" else k): v for k, v in ONE_SHOT.items()}
    again = find_tickets(write_recipe(tmp_path, legacy, "legacy.yaml"), out, progress=False)
    assert [r["density"] for r in again] == [r["density"] for r in rows]
    # A different value under the old name is a different config.
    changed = {**legacy, "overrides": {"features.*": 0.3}}
    with pytest.raises(ConfigError, match=r"different config.*layer_prune_fractions"):
        find_tickets(write_recipe(tmp_path, changed, "changed.yaml"), out, progress=False)


def test_resume_accepts_housekeeping_and_stop_changes_and_refuses_training_changes(tiny_run, tmp_path):
    """train.device and levels are declared fingerprint=False; train.lr is part of the run."""
    import shutil

    recipe, reference, ref_rows = tiny_run
    out = tmp_path / "resume"
    shutil.copytree(reference, out)
    stamp = (out / "level_02" / "ticket.safetensors").stat().st_mtime_ns
    rows = find_tickets(recipe, out, overrides={"train.device": "cpu", "levels": 2}, progress=False)
    assert [{**r, "path": Path(r["path"]).name} for r in rows] == [
        {**r, "path": Path(r["path"]).name} for r in ref_rows[:3]
    ]
    assert (out / "level_02" / "ticket.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match=r"different config \(train\.lr: 0\.0012 -> 0\.001\)") as info:
        find_tickets(recipe, out, overrides={"train.lr": 1e-3, "train.device": "cpu"}, progress=False)
    assert "device" not in str(info.value) and "levels" not in str(info.value)


def test_misspelled_augment_in_a_find_recipe_is_one_line_naming_augment(tmp_path):
    config = FindConfig.from_yaml(write_recipe(tmp_path, {**TINY_FIND, "train": {**TINY_FIND["train"], "augment": "cifr"}}))
    with pytest.raises(ConfigError) as info:
        config.validate()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("train: augment must be one of 'none', 'cifar'")
    assert "did you mean 'cifar'" in message


def test_seed_is_one_knob_train_seed_follows_it():
    config = FindConfig.from_dict({**TINY_FIND, "seed": 5})
    assert config.train.seed == 5 and config.effective_train().seed == 5
    assert "seed" not in config.to_dict()["train"] and config.to_dict()["seed"] == 5
    config.validate()
    assert FindConfig.from_dict(config.to_dict()) == config
    assert [d for d in config.differences(FindConfig.from_dict({**TINY_FIND, "seed": 6}))] == ["seed: 5 -> 6"]
    with pytest.raises(ConfigError, match=r"train\.seed \(3\) differs from seed \(5\).*top-level seed"):
        FindConfig.from_dict({**TINY_FIND, "seed": 5, "train": {**TINY_FIND["train"], "seed": 3}}).validate()


def test_find_help_lists_the_flags_the_schema_declares(capsys):
    """`ticket-zoo find --help` shows every flag declared on FindConfig (and its TrainConfig), with its help."""
    import dataclasses

    from ticket_zoo.cli import main
    from ticket_zoo.train import TrainConfig

    with pytest.raises(SystemExit) as info:
        main(["find", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    declared = {
        f.metadata["setting"].flag: f.metadata["setting"].help
        for cls in (FindConfig, TrainConfig)
        for f in dataclasses.fields(cls)
        if f.metadata.get("setting") is not None and f.metadata["setting"].flag
    }
    assert {"--levels", "--target-density", "--seed", "--iterations", "--lr"} <= set(declared)
    for flag, help_text in declared.items():
        assert flag in text and help_text in text, (flag, help_text)
    for kept in ("--config", "--out", "--set", "--no-progress"):
        assert kept in text


def test_find_trains_on_the_thread_policy_and_restores_the_callers_count(tmp_path, monkeypatch) -> None:
    """A find run's thread count is fixed (1 for a LeNet; --threads N otherwise), not the machine's."""
    import ticket_zoo.train as train_mod

    seen = []
    real = train_mod.train

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train", spy)
    cfg = FindConfig.from_dict({**TINY_FIND, "levels": 1})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        find_tickets(cfg, tmp_path / "policy", progress=False)
        assert seen == [1, 1] and torch.get_num_threads() == 2  # LeNet: one thread; the caller's count back
        find_tickets(cfg, tmp_path / "given", progress=False, threads=2)
        assert seen[2:] == [2, 2]
    finally:
        torch.set_num_threads(before)
    parser = __import__("argparse").ArgumentParser(prog="ticket-zoo")
    register_cli(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["find", "--out", "o", "--threads", "3"]).threads == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["find", "--out", "o", "--threads", "0"])
