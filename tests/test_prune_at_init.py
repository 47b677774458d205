"""Pruning at initialization: the ``snip`` and ``synflow`` methods (issue 11).

Each method's masks are checked against a few-line reference written here from the definitions
(plain torch: ``loss.backward()`` / the SynFlow loop, then ``torch.topk``), on setups where the
reference's top-k has no tie at the threshold (asserted, so the comparison cannot pass by luck).
"""

from __future__ import annotations

import copy
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticket_zoo.errors import ConfigError
from ticket_zoo.find_levels import Schedule, density_schedule
from ticket_zoo.masks import overall_density, select_masks
from ticket_zoo.methods import METHODS, options_for
from ticket_zoo.methods.snip import SnipOptions, snip_scores
from ticket_zoo.methods.synflow import SynflowOptions, synflow_masks

pytestmark = pytest.mark.usefixtures("one_thread")


# --- references, from the definitions ----------------------------------------------------------------


def _topk_masks(scores: dict[str, torch.Tensor], k: int, alive: dict[str, torch.Tensor] | None = None):
    """Global top-k over the concatenated scores (dead weights excluded); asserts no tie at the threshold."""
    names = list(scores)
    flat = torch.cat([scores[n].flatten() for n in names]).clone()
    if alive is not None:
        flat[~torch.cat([alive[n].flatten() for n in names])] = -float("inf")
    ordered = torch.sort(flat, descending=True).values
    assert ordered[k - 1] > ordered[k], "the reference setup has a tie at the threshold"
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.topk(flat, k).indices] = True
    out, offset = {}, 0
    for n in names:
        out[n] = keep[offset : offset + scores[n].numel()].reshape(scores[n].shape)
        offset += scores[n].numel()
    return out


def _reference_snip(model, batches, names, density):
    net = copy.deepcopy(model).train()
    for x, y in batches:
        F.cross_entropy(net(x), y).backward()
    params = dict(net.named_parameters())
    scores = {n: (params[n].grad * params[n]).abs().detach() for n in names}
    total = sum(s.numel() for s in scores.values())
    return _topk_masks(scores, round(density * total))


def _reference_synflow(model, names, input_size, density, rounds):
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
        for b in net.buffers():
            if b.is_floating_point():
                b.abs_()
    params = dict(net.named_parameters())
    w = {n: params[n].detach().clone() for n in names}
    mask = {n: torch.ones_like(w[n], dtype=torch.bool) for n in names}
    total = sum(t.numel() for t in w.values())
    for r in range(1, rounds + 1):
        with torch.no_grad():
            for n in names:
                params[n].copy_(w[n] * mask[n])
        net.zero_grad()
        net(torch.ones(1, *input_size, dtype=torch.float64)).sum().backward()
        scores = {n: (params[n] * params[n].grad).abs().detach() for n in names}
        mask = _topk_masks(scores, round(density ** (r / rounds) * total), alive=mask)
    return mask


# --- small networks ------------------------------------------------------------------------------------


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.Tanh(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 4))


def _batches(n, seed=1, size=16):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 6, generator=g), torch.randint(0, 4, (size,), generator=g)) for _ in range(n)]


def _convnet(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 10), nn.ReLU(), nn.Linear(10, 3)
    )
    with torch.no_grad():  # BatchNorm with signed statistics and affine: the absolute value matters
        bn = net[1]
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    return net


MLP_NAMES = ["0.weight", "3.weight", "5.weight"]
CONV_NAMES = ["0.weight", "4.weight", "6.weight"]


# --- snip ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_batches", [1, 3])
def test_snip_masks_equal_an_independent_reference(n_batches):
    model, batches = _mlp(), _batches(n_batches)
    scores = snip_scores(model, batches, MLP_NAMES)
    for density in (0.5, 0.1):
        ours = select_masks(scores, density)
        ref = _reference_snip(model, batches, MLP_NAMES, density)
        assert all(torch.equal(ours[n], ref[n]) for n in MLP_NAMES), density


def test_snip_matches_the_reference_on_lenet():
    import timm

    import ticket_zoo.models  # noqa: F401  (registers lenet_300_100)

    torch.manual_seed(3)
    model = timm.create_model("lenet_300_100", num_classes=5, in_chans=1, img_size=8)
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(20, 1, 8, 8, generator=g), torch.randint(0, 5, (20,), generator=g))]
    names = ["fc1.weight", "fc2.weight"]
    ours = select_masks(snip_scores(model, batches, names), 0.05)
    ref = _reference_snip(model, batches, names, 0.05)
    assert all(torch.equal(ours[n], ref[n]) for n in names)


def test_snip_scores_shapes_non_negative_float32_and_model_untouched():
    model, batches = _mlp(), _batches(2)
    before = copy.deepcopy(model.state_dict())
    scores = snip_scores(model, batches, MLP_NAMES)
    params = dict(model.named_parameters())
    assert list(scores) == MLP_NAMES
    for n, s in scores.items():
        assert s.shape == params[n].shape and s.dtype == torch.float32
        assert bool((s >= 0).all()) and bool(s.gt(0).any())
    # A copy is scored: BatchNorm running statistics, the weights and .grad are as they were.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # its mode is not changed either


def test_snip_is_deterministic_and_depends_on_the_batches():
    a = select_masks(snip_scores(_mlp(0), _batches(2), MLP_NAMES), 0.2)
    b = select_masks(snip_scores(_mlp(0), _batches(2), MLP_NAMES), 0.2)
    c = select_masks(snip_scores(_mlp(0), _batches(2, seed=9), MLP_NAMES), 0.2)
    assert all(torch.equal(a[n], b[n]) for n in MLP_NAMES)
    assert not all(torch.equal(a[n], c[n]) for n in MLP_NAMES)


def test_snip_refuses_no_batches_and_unknown_names():
    with pytest.raises(ConfigError, match="no training batch"):
        snip_scores(_mlp(), [], MLP_NAMES)
    with pytest.raises(ConfigError, match="no parameter 'nope.weight'"):
        snip_scores(_mlp(), _batches(1), ["nope.weight"])


# --- synflow ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("density", "rounds"), [(0.3, 1), (0.2, 10), (0.05, 20)])
def test_synflow_masks_equal_an_independent_reference(density, rounds):
    model = _convnet()
    ours = synflow_masks(model, CONV_NAMES, (1, 6, 6), density, rounds=rounds)
    ref = _reference_synflow(model, CONV_NAMES, (1, 6, 6), density, rounds)
    assert all(torch.equal(ours[n], ref[n]) for n in CONV_NAMES)
    total = sum(m.numel() for m in ours.values())
    assert overall_density(ours) == round(density * total) / total


def test_synflow_iterating_differs_from_one_shot():
    # The rounds matter: 20 rounds and a single round keep different weights at 5%.
    model = _convnet()
    one = synflow_masks(model, CONV_NAMES, (1, 6, 6), 0.05, rounds=1)
    many = synflow_masks(model, CONV_NAMES, (1, 6, 6), 0.05, rounds=20)
    assert not all(torch.equal(one[n], many[n]) for n in CONV_NAMES)


def test_synflow_leaves_the_model_untouched_and_is_deterministic():
    model = _convnet()
    before = copy.deepcopy(model.state_dict())
    a = synflow_masks(model, CONV_NAMES, (1, 6, 6), 0.1, rounds=5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # signs included
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert model[0].weight.dtype == torch.float32
    b = synflow_masks(_convnet(), CONV_NAMES, (1, 6, 6), 0.1, rounds=5)
    assert all(torch.equal(a[n], b[n]) and a[n].dtype == torch.bool for n in CONV_NAMES)


def test_synflow_fixed_rates_compound_per_group_and_end_exactly():
    # A layer pruned far faster than the rest (its own rate) with the global pool: every round
    # keeps each group's final density ** (r/R), so no round needs to revive a weight, and the last
    # round keeps exactly the budget select_masks gives the final densities.
    model = _convnet()
    sizes = {n: p.numel() for n, p in model.named_parameters() if n in CONV_NAMES}
    density, fixed = density_schedule(sizes, 4, scope="global", prune_fraction=0.1, layer_fractions={"4.weight": 0.7})
    masks = synflow_masks(model, CONV_NAMES, (1, 6, 6), density, rounds=8, fixed_densities=fixed)
    assert int(masks["4.weight"].sum()) == round(fixed["4.weight"] * sizes["4.weight"])
    total = sum(sizes.values())
    assert int(sum(int(m.sum()) for m in masks.values())) == round(density * total)
    layerwise = synflow_masks(model, CONV_NAMES, (1, 6, 6), 0.3, rounds=4, scope="layerwise")
    assert all(int(layerwise[n].sum()) == round(0.3 * sizes[n]) for n in CONV_NAMES)


# --- options -------------------------------------------------------------------------------------------


def test_methods_are_registered_with_their_options():
    assert {"snip", "synflow"} <= set(METHODS.names())
    assert METHODS.info("snip")["options"] is SnipOptions
    assert METHODS.info("synflow")["options"] is SynflowOptions
    assert options_for("snip", {}) == SnipOptions(batches=1)
    assert options_for("synflow", None) == SynflowOptions(rounds=100)
    assert options_for("synflow", {"rounds": 3}).rounds == 3


@pytest.mark.parametrize(
    ("method", "raw", "message"),
    [
        ("snip", {"batches": 0}, "method_options: batches must be a positive int, got 0"),
        ("snip", {"batches": 1.5}, "method_options: batches must be a positive int, got 1.5"),
        ("snip", {"rounds": 3}, "method_options: unknown snip options field 'rounds'"),
        ("synflow", {"rounds": 0}, "method_options: rounds must be a positive int, got 0"),
        ("synflow", {"round": 5}, "method_options: unknown synflow options field 'round' (did you mean 'rounds'?)"),
    ],
)
def test_bad_options_are_one_config_error_line(method, raw, message):
    with pytest.raises(ConfigError) as info:
        options_for(method, raw)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text


# --- run(find, options) against a stand-in for FindRun ----------------------------------------------------


class _FakeFind:
    """The FindRun calls snip and synflow rely on, recorded (the real one is tested end to end below)."""

    def __init__(self, model, *, rewind_step=0, levels=(1, 2), done=(), input_size=(1, 6, 6)):
        self._model = model
        names = [n for n in dict(model.named_parameters()) if n.endswith("weight") and model.get_parameter(n).dim() > 1]
        self.names = names
        self.rewind_step = rewind_step
        self.config = types.SimpleNamespace(scope="global", rewind=rewind_step)
        self.schedule = Schedule({n: model.get_parameter(n).numel() for n in names}, prune_fraction=0.5)
        self.levels = list(levels)
        self.splits = types.SimpleNamespace(input_size=input_size)
        self.done = set(done)
        self.calls: list = []
        self.tickets: dict[int, tuple] = {}

    def dense_model(self):
        self.calls.append("dense_model")
        return self._model

    def train_batches(self, n):
        self.calls.append(("train_batches", n))
        return _batches(n)

    def save_rewind(self, state):
        self.calls.append("save_rewind")
        self.rewind_state = state

    def level(self, level, make):
        return {"level": level, "done": True} if level in self.done else make()

    def write_ticket(self, level, masks, rewind, meta=None, *, seconds=None):
        assert seconds is not None and seconds >= 0  # the method times its own work
        self.tickets[level] = (masks, rewind, meta)
        return {"level": level}


@pytest.mark.parametrize("method", ["snip", "synflow"])
def test_run_writes_one_ticket_per_level_from_theta0(method):
    model = _mlp() if method == "snip" else _convnet()
    find = _FakeFind(model, input_size=(1, 6, 6))
    options = options_for(method, {"batches": 2} if method == "snip" else {"rounds": 3})
    METHODS.get(method)(find, options)
    assert sorted(find.tickets) == [1, 2]
    assert find.calls.count("save_rewind") == 1
    if method == "snip":
        assert ("train_batches", 2) in find.calls
        scores = snip_scores(model, _batches(2), find.names)
    for level, (masks, rewind, meta) in find.tickets.items():
        density, fixed = find.schedule.densities(level)
        if method == "snip":
            want = select_masks(scores, density, fixed_densities=fixed)
            assert meta == {"snip_batches": 2}
        else:
            want = synflow_masks(model, find.names, (1, 6, 6), density, rounds=3)
            assert meta == {"synflow_rounds": 3}
        assert all(torch.equal(masks[n], want[n]) for n in find.names)
        assert rewind is find.rewind_state
        assert all(torch.equal(rewind[k], v) for k, v in model.state_dict().items())  # θ0, signs and all


@pytest.mark.parametrize("method", ["snip", "synflow"])
def test_run_on_a_finished_run_computes_nothing(method):
    find = _FakeFind(_mlp() if method == "snip" else _convnet(), done=(1, 2))
    METHODS.get(method)(find, options_for(method, {}))
    assert find.calls == [] and find.tickets == {}


@pytest.mark.parametrize("method", ["snip", "synflow"])
def test_run_requires_rewind_zero(method):
    find = _FakeFind(_mlp(), rewind_step=50)
    with pytest.raises(ConfigError, match=r"at initialization: set rewind: 0 \(got rewind: 50\)"):
        METHODS.get(method)(find, options_for(method, {}))
    assert find.calls == []


# --- end to end, through find_tickets ----------------------------------------------------------------------


def _find_config(method, options=None):
    from ticket_zoo.find import FindConfig, TrainConfig

    return FindConfig(
        arch="lenet_300_100",
        dataset="digits[0-4]",
        levels=3,
        method=method,
        method_options=dict(options or {}),
        train=TrainConfig(optimizer="adam", lr=1.2e-3, iterations=20, batch_size=60),
    )


@pytest.mark.parametrize(("method", "options"), [("snip", {}), ("synflow", {"rounds": 5})])
def test_find_tickets_end_to_end_and_resume(tmp_path, monkeypatch, method, options):
    import ticket_zoo
    from ticket_zoo.find import find_tickets
    from ticket_zoo.find_folder import load_tensors

    out = tmp_path / "out"
    config = _find_config(method, options)
    rows = find_tickets(config, out, progress=False)
    assert [r["level"] for r in rows if r["level"] >= 1] == [1, 2, 3]
    assert (out / "rewind.safetensors").is_file()
    theta0 = load_tensors(out / "rewind.safetensors")
    for row in rows:
        if row["level"] == 0:
            continue
        path = out / f"level_{row['level']:02d}"
        assert Path(row["path"]) == path and path.is_dir()
        ticket = ticket_zoo.load(path)
        sizes = {n: m.numel() for n, m in ticket.masks.items()}
        assert ticket.density == pytest.approx(density_schedule(sizes, row["level"])[0], abs=1e-12)
        assert row["density"] == pytest.approx(ticket.density, abs=1e-12)
        assert str(ticket.meta["method"]).startswith(method)
        for name, mask in ticket.masks.items():  # the init is θ0 on the kept weights
            assert torch.equal(ticket.init[name][mask], theta0[name][mask])
        net = ticket.build()  # an ordinary ticket: it builds and runs
        assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 5)

    # Re-running resumes: the same rows, and nothing is scored or written again.
    def refuse(*args, **kwargs):
        raise AssertionError("a resumed run recomputed a level")

    monkeypatch.setattr(f"ticket_zoo.methods.{method}.{method}_{'scores' if method == 'snip' else 'masks'}", refuse)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    assert find_tickets(config, out, progress=False) == rows
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == stamps


def test_find_tickets_refuses_a_rewind_for_snip(tmp_path):
    from ticket_zoo.find import find_tickets

    config = _find_config("snip").replace(rewind=5)
    with pytest.raises(ConfigError, match="snip scores the weights at initialization: set rewind: 0"):
        find_tickets(config, tmp_path / "out", progress=False)
