"""Ways to find a ticket as plug-ins (ticket_zoo.methods): the registry, the shared selection, the
``oneshot`` method against an independent computation, and how methods show up in recipes, the CLI,
tickets and the transfer report.

SNIP and SynFlow are tested in test_prune_at_init.py, Early-Bird in test_early_bird.py; adding a
method is the worked example of docs/architecture.md, run by test_docs_examples.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ticket_zoo
from tests.helpers import TINY_FIND
from ticket_zoo.config import Config
from ticket_zoo.configs import FindConfig, TrainConfig
from ticket_zoo.errors import ConfigError
from ticket_zoo.find import find_tickets
from ticket_zoo.masks import magnitude_masks, select_masks
from ticket_zoo.methods import METHODS, options_for

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(**changes) -> FindConfig:
    raw = {**TINY_FIND, **changes}
    return FindConfig.from_dict(raw)


# --- the registry and the config ---------------------------------------------------------------------


def test_every_method_is_registered_with_options_summary_and_cost() -> None:
    assert METHODS.names() == ("imp", "oneshot", "early_bird", "snip", "synflow")
    for name in METHODS.names():
        info = METHODS.info(name)
        assert issubclass(info["options"], Config)
        assert info["summary"] and info["cost"] and info["writes"] in ("all", "pruned", "last")
        options_for(name, {})  # every method runs with its defaults


def test_unknown_method_and_options_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match=r"method must be one of .* got 'snp' \(did you mean 'snip'\?\)"):
        _config(method="snp").validate()
    with pytest.raises(ConfigError, match=r"method_options: unknown oneshot options field 'train_ticket'"):
        _config(method="oneshot", method_options={"train_ticket": True}).validate()
    with pytest.raises(ConfigError, match="method_options: .*train_tickets"):
        _config(method="oneshot", method_options={"train_tickets": "yes"}).validate()


def test_options_are_recorded_in_full_and_a_written_default_is_the_same_run() -> None:
    implicit = _config(method="oneshot")
    explicit = _config(method="oneshot", method_options={"train_tickets": False})
    assert implicit.to_dict()["method_options"] == {"train_tickets": False}
    assert implicit.fingerprint() == explicit.fingerprint()
    assert implicit.fingerprint() != _config(method="oneshot", method_options={"train_tickets": True}).fingerprint()
    assert implicit.fingerprint() != _config().fingerprint()  # imp and oneshot are different runs


def test_old_one_shot_flag_reads_as_oneshot_with_trained_tickets() -> None:
    old = FindConfig.from_dict({**TINY_FIND, "one_shot": True})
    assert old.method == "oneshot" and old.method_options == {"train_tickets": True}
    assert FindConfig.from_dict({**TINY_FIND, "one_shot": False}) == _config()
    with pytest.raises(ConfigError, match="one_shot is the old spelling of method: oneshot"):
        FindConfig.from_dict({**TINY_FIND, "one_shot": True, "method": "snip"})


def test_find_help_lists_the_methods_and_their_options_without_torch() -> None:
    code = (
        "import sys\n"
        "from ticket_zoo.cli import main\n"
        "try:\n    main(['find', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.rstrip().endswith("NO-TORCH")
    for name in METHODS.names():
        assert f"\n  {name} " in out
    assert "--method NAME" in out and "option train_tickets" in out


# --- the shared selection ------------------------------------------------------------------------------


def test_magnitude_masks_is_select_masks_of_absolute_weights() -> None:
    g = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(40, 30, generator=g), "b": torch.randn(10, 40, generator=g)}
    for scope in ("global", "layerwise"):
        for fixed in (None, {"b": 0.5}):
            assert_same(
                magnitude_masks(weights, 0.2, scope=scope, fixed_densities=fixed),
                select_masks({n: w.abs() for n, w in weights.items()}, 0.2, scope=scope, fixed_densities=fixed),
            )


def test_select_masks_ranks_float64_scores_without_rounding() -> None:
    # Two scores that float32 cannot tell apart: ranked as float32 they would tie and the earlier win.
    close = torch.tensor([1.0, 1.0 + 1e-12, 0.5], dtype=torch.float64)
    assert select_masks({"a": close}, 1 / 3)["a"].tolist() == [False, True, False]
    assert select_masks({"a": close.float()}, 1 / 3)["a"].tolist() == [True, False, False]


def test_select_masks_is_exact_top_k_with_ties_to_the_lower_index() -> None:
    g = torch.Generator().manual_seed(1)
    scores = {"a": torch.randint(0, 5, (50,), generator=g).double(), "b": torch.randint(0, 5, (30,), generator=g).double()}
    flat = torch.cat([scores["a"], scores["b"]])
    k = round(0.3 * flat.numel())
    # Independent: sort by (-score, index) and take the first k.
    order = sorted(range(flat.numel()), key=lambda i: (-float(flat[i]), i))[:k]
    expected = torch.zeros(flat.numel(), dtype=torch.bool)
    expected[order] = True
    got = select_masks(scores, 0.3)
    assert torch.equal(torch.cat([got["a"], got["b"]]), expected)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for n in a:
        assert torch.equal(a[n], b[n]), n


# --- oneshot: one training, every density from the dense weights ---------------------------------------


@pytest.fixture(scope="module")
def oneshot_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("oneshot") / "out"
    cfg = _config(method="oneshot")
    calls = []
    import ticket_zoo.train as train_module

    real = train_module.train

    def counting(*args, **kwargs):
        calls.append(kwargs.get("start_step", 0))
        return real(*args, **kwargs)

    train_module.train = counting
    try:
        rows = find_tickets(cfg, out, progress=False)
    finally:
        train_module.train = real
    return cfg, out, rows, calls


def test_oneshot_trains_once_and_prunes_the_dense_weights_to_each_density(oneshot_run) -> None:
    cfg, out, rows, calls = oneshot_run
    assert calls == [0]  # one training: the dense network (level 0)
    assert [r["level"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["test_acc"] is not None and all(r["test_acc"] is None and r["steps"] == 0 for r in rows[1:])
    final = load_file(str(out / "level_00" / "final.safetensors"))
    rewind = load_file(str(out / "rewind.safetensors"))
    prunable = ["fc1.weight", "fc2.weight", "head.weight"]  # layerwise 20%, head 10% per level
    for row in rows[1:]:
        level = row["level"]
        ticket = ticket_zoo.load(out / f"level_{level:02d}")
        assert ticket.meta["method"] == "oneshot-layerwise" and ticket.meta["level"] == level
        assert ticket.meta["method_options"] == {"train_tickets": False}
        assert ticket.meta["source_test_acc"] is None
        assert not (out / f"level_{level:02d}" / "final.safetensors").exists()
        for name in prunable:
            # Independent: the k largest |w| of the dense final weights, per layer, k by the schedule.
            rate = 0.1 if name == "head.weight" else 0.2
            w = final[name].flatten().abs()
            k = round((1 - rate) ** level * w.numel())
            expected = torch.zeros_like(w, dtype=torch.bool)
            expected[torch.topk(w, k).indices] = True
            assert torch.equal(ticket.masks[name].flatten(), expected), (level, name)
            kept = ticket.masks[name]
            assert torch.equal(ticket.init[name][kept], rewind[name][kept])  # rewound to θk
    # Tickets are not nested across densities by construction; they are here only because |w| is fixed.
    assert rows[-1]["density"] < rows[1]["density"]


def test_oneshot_resumes_without_training_again(oneshot_run, monkeypatch) -> None:
    cfg, out, rows, _ = oneshot_run
    import ticket_zoo.train as train_module

    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("a finished run trained again"))
    assert find_tickets(cfg, out, progress=False) == rows


def test_oneshot_with_train_tickets_trains_each_ticket_from_theta_k(tmp_path) -> None:
    cfg = _config(method="oneshot", method_options={"train_tickets": True}, levels=1)
    rows = find_tickets(cfg, tmp_path / "out", progress=False)
    assert [r["level"] for r in rows] == [0, 1]
    assert rows[1]["test_acc"] is not None and rows[1]["start_step"] == TINY_FIND["rewind"]


def test_methods_are_separate_families_in_transfer_and_the_report(oneshot_run, tmp_path) -> None:
    from ticket_zoo.transfer_grid import TransferConfig, transfer

    _, out, _, _ = oneshot_run
    imp_out = tmp_path / "imp"
    # Level 1 of IMP is level 1 of oneshot (both prune the dense weights once): compare level 2.
    find_tickets(_config(levels=2), imp_out, progress=False)
    cfg = TransferConfig.from_dict({
        "tickets": [str(out / "level_02"), str(imp_out / "level_02")], "targets": ["digits[5-9]"],
        "optimizers": {"adam": {"optimizer": "adam", "lr": 1e-3}}, "controls": ["winning"], "seeds": [0],
        "train": {"iterations": 5, "batch_size": 32},
    })  # fmt: skip
    rows = transfer(cfg, tmp_path / "transfer", progress=False, report=True)
    families = {r["family"] for r in rows}
    assert len(families) == 2
    assert any(f.startswith("lenet_300_100-digits@") for f in families)
    assert (tmp_path / "transfer" / "report.csv").exists()


def test_imp_tickets_keep_the_family_of_tickets_found_before_methods() -> None:
    from ticket_zoo.transfer_cells import _ticket_family

    def family(recipe):
        return _ticket_family(type("T", (), {"meta": {"recipe": recipe}})(), "x-5pct")

    for config, one_shot in ((_config(), False), (_config(method="oneshot", method_options={"train_tickets": True}), True)):
        recipe = config.to_dict()
        old = {k: v for k, v in recipe.items() if k not in ("method", "method_options")} | {"one_shot": one_shot}
        assert family(recipe) == family(old)
    assert family(_config(method="oneshot").to_dict()) != family(_config().to_dict())


# --- the CLI ----------------------------------------------------------------------------------------


def test_cli_find_with_a_method_prints_dashes_for_untrained_tickets(tmp_path, capsys) -> None:
    from ticket_zoo.cli import main

    code = main([
        "find", "--arch", "lenet_300_100", "--dataset", "digits[0-4]", "--levels", "1", "--iterations", "20",
        "--method", "oneshot", "--out", str(tmp_path / "o"), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["level", "density"]
    assert lines[2].split()[2:4] == ["-", "-"]  # level 1: written, not trained
    assert TrainConfig  # the CLI's defaults are TrainConfig fields (used above through --iterations)
