"""Early-Bird tickets: the mask distance, the stopping rule on a constructed sequence, the training
hook that stops a run at an epoch's end (and decides again on resume), and the method end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import ticket_zoo
import ticket_zoo.find
import ticket_zoo.masks
from ticket_zoo.errors import ConfigError
from ticket_zoo.find import FindConfig, find_tickets
from ticket_zoo.methods import options_for
from ticket_zoo.methods.early_bird import EarlyBirdOptions, EarlyBirdStop, mask_distance
from ticket_zoo.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


def bits(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


# --- mask_distance ------------------------------------------------------------------------------------


def test_mask_distance_counts_differing_bits_over_all_weights():
    a = {"x": bits(1, 1, 0, 0), "y": torch.tensor([[1, 0], [0, 1]], dtype=torch.bool)}
    b = {"x": bits(0, 1, 0, 1), "y": torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)}
    assert mask_distance(a, b) == 3 / 8
    assert mask_distance(b, a) == 3 / 8
    assert mask_distance(a, a) == 0.0
    assert mask_distance({"x": bits(1, 1)}, {"x": bits(0, 0)}) == 1.0
    with pytest.raises(ConfigError, match="different parameters"):
        mask_distance(a, {"x": a["x"]})
    with pytest.raises(ConfigError, match="shape"):
        mask_distance({"x": bits(1, 0)}, {"x": bits(1, 0, 0)})


# --- the stopping rule ----------------------------------------------------------------------------------


def flips(counts: list[int], n: int = 10) -> list[dict[str, torch.Tensor]]:
    """Masks over ``n`` weights where mask i+1 differs from mask i in its first ``counts[i]`` bits."""
    masks = [{"w": torch.zeros(n, dtype=torch.bool)}]
    for c in counts:
        m = masks[-1]["w"].clone()
        m[:c] = ~m[:c]
        masks.append({"w": m})
    return masks


def test_rule_stops_at_the_first_epoch_whose_last_window_distances_are_below_epsilon():
    masks = flips([5, 3, 2, 1, 0, 0, 0])  # distances 0.5 0.3 0.2 0.1 0.0 0.0 0.0
    stop = EarlyBirdStop(window=3, epsilon=0.25)
    answers = [stop.observe(100 * (i + 1), m) for i, m in enumerate(masks)]
    # after mask 5 the last 3 are 0.3 0.2 0.1 (max 0.3); after mask 6, 0.2 0.1 0.0: stop at step 600
    assert answers == [False, False, False, False, False, True, True, True]
    assert stop.history == [0.5, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0]
    assert stop.stop_step == 600
    assert stop.steps == [100 * (i + 1) for i in range(8)]
    assert torch.equal(stop.last_mask["w"], masks[-1]["w"])


def test_rule_is_strict_needs_a_full_window_and_may_never_stop():
    masks = flips([2, 2, 2, 2, 2])  # every distance exactly 0.2
    at_epsilon = EarlyBirdStop(window=2, epsilon=0.2)  # 0.2 is not below 0.2
    assert not any(at_epsilon.observe(i, m) for i, m in enumerate(masks))
    assert at_epsilon.stop_step is None
    above = EarlyBirdStop(window=2, epsilon=0.21)
    assert [above.observe(i, m) for i, m in enumerate(masks)] == [False, False, True, True, True, True]
    assert above.stop_step == 2  # needs window=2 distances: the third mask at the earliest
    loose = EarlyBirdStop(window=4, epsilon=1.0)  # anything is below 1.0: only the window counts
    assert [loose.observe(i, m) for i, m in enumerate(masks)] == [False] * 4 + [True, True]
    one = EarlyBirdStop(window=1, epsilon=0.15)
    assert [one.observe(i, m) for i, m in enumerate(flips([3, 1, 0]))] == [False, False, True, True]


def test_rule_is_keyed_by_step():
    masks = flips([4, 0, 0])
    stop = EarlyBirdStop(window=2, epsilon=0.1)
    assert [stop.observe(s, m) for s, m in zip((5, 10, 15), masks[:3], strict=True)] == [False, False, False]
    assert stop.observe(10, {"w": ~masks[1]["w"]}) is False  # seen before: the mask is ignored
    assert stop.history == [0.4, 0.0]
    assert stop.observe(20, masks[3]) is True and stop.observe(20, None) is True
    assert stop.history == [0.4, 0.0, 0.0] and stop.stop_step == 20
    with pytest.raises(ValueError, match="never observed"):
        stop.observe(12, masks[0])
    # rebuilt from its record (what a resumed run does), it answers the same
    again = EarlyBirdStop(2, 0.1, steps=stop.steps, history=stop.history, last_mask=stop.last_mask)
    assert [again.observe(s, None) for s in (5, 10, 15, 20)] == [False, False, False, True]


def test_options_are_validated():
    assert options_for("early_bird", {}) == EarlyBirdOptions(window=5, epsilon=0.1)
    assert options_for("early_bird", {"window": 2, "epsilon": 0.5}).window == 2
    for bad in ({"window": 0}, {"epsilon": 1.5}, {"epsilon": -0.1}, {"patience": 3}):
        with pytest.raises(ConfigError, match="method_options"):
            options_for("early_bird", bad)


# --- the training hook ----------------------------------------------------------------------------------


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 2, generator=g)
    return torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())  # 128 / 32 = 4 steps an epoch


def run(data, iterations, hook=None, eval_every=3, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, iterations=iterations, batch_size=32, eval_every=eval_every)
    extra = {} if hook is None else {"on_epoch_end": hook}
    result = train(model, data, data, cfg, test_set=data, progress=False, **extra, **kw)
    return model, result


def test_hook_stops_the_run_at_an_epoch_end_as_if_its_budget_ended_there(data):
    seen = []

    def hook(step, module):
        assert isinstance(module, nn.Sequential)  # the unwrapped model
        seen.append(step)
        return step == 12

    model, r = run(data, 24, hook, capture_at=5)
    assert seen == [4, 8, 12]
    assert r.steps == 12 and r.start_step == 0
    assert [h["step"] for h in r.history] == [3, 6, 9, 12]  # step 12 evaluated though eval_every is 3
    assert r.final_val_acc == r.history[-1]["val_acc"]
    assert r.best_val_acc == max(h["val_acc"] for h in r.history)
    assert r.captured is not None and r.test_acc is not None and r.final_test_acc is not None
    # With a constant LR the first 12 steps of a 24-step run are a 12-step run: same weights, same numbers.
    short, s = run(data, 12)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), short.parameters(), strict=True))
    assert [h["step"] for h in s.history] == [3, 6, 9, 12]
    assert [h["val_acc"] for h in s.history] == [h["val_acc"] for h in r.history]
    assert s.final_test_acc == r.final_test_acc and s.test_acc == r.test_acc


def test_hook_is_called_at_the_last_step_and_never_stopping_changes_nothing(data):
    seen = []
    model, r = run(data, 10, lambda step, m: seen.append(step) or False)  # 10 steps: epochs end at 4, 8
    assert seen == [4, 8, 10]
    plain_model, plain = run(data, 10)
    assert r.steps == plain.steps == 10 and r.history == plain.history
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), plain_model.parameters(), strict=True))


def test_a_resumed_run_decides_again_at_the_boundary_it_resumed_from(data, tmp_path):
    def stop_at_12(step, module):
        return step == 12

    _, unkilled = run(data, 24, stop_at_12, eval_every=None)

    class Killed(Exception):
        pass

    def dies_at_8(step, module):
        if step == 8:
            raise Killed  # after step 8's checkpoint (eval_every = checkpoint_every = one epoch)
        return False

    with pytest.raises(Killed):
        run(data, 24, dies_at_8, eval_every=None, checkpoint_dir=tmp_path)
    seen = []
    model, resumed = run(data, 24, lambda s, m: seen.append(s) or stop_at_12(s, m), eval_every=None, checkpoint_dir=tmp_path)
    assert seen == [8, 12]  # 8 again before training on
    assert resumed.steps == 12 and resumed.history == unkilled.history
    assert (resumed.best_val_acc, resumed.test_acc, resumed.final_test_acc) == (
        unkilled.best_val_acc, unkilled.test_acc, unkilled.final_test_acc,
    )  # fmt: skip
    seen.clear()
    _, again = run(data, 24, lambda s, m: seen.append(s) or stop_at_12(s, m), eval_every=None, checkpoint_dir=tmp_path)
    assert seen == [12] and again.steps == 12 and again.history == unkilled.history


def test_stop_without_a_scheduled_evaluation_is_checkpointed_with_its_evaluation(data, tmp_path):
    hook = lambda s, m: s == 8  # noqa: E731
    _, first = run(data, 24, hook, eval_every=6, checkpoint_dir=tmp_path)
    assert [h["step"] for h in first.history] == [6, 8]
    _, again = run(data, 24, hook, eval_every=6, checkpoint_dir=tmp_path)
    assert again.history == first.history and again.steps == 8


def test_hook_refused_for_a_stream(data):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(data)

        def __len__(self):
            return len(data)

    with pytest.raises(ConfigError, match="on_epoch_end needs epochs"):
        run(Stream(), 8, lambda s, m: False)


# --- the method end to end -------------------------------------------------------------------------------


def config(**options) -> FindConfig:
    return FindConfig(
        arch="lenet_300_100",
        dataset="digits[0-4]",
        levels=3,
        method="early_bird",
        method_options={"window": 2, "epsilon": 0.5, **options},
        train=TrainConfig(optimizer="adam", lr=1.2e-3, epochs=6, batch_size=60),
    )


@pytest.fixture(scope="module")
def unkilled(tmp_path_factory):
    out = tmp_path_factory.mktemp("early_bird")
    rows = find_tickets(config(), out, progress=False)
    return out, rows


def test_one_ticket_at_the_last_levels_density_with_the_stop_recorded(unkilled):
    out, rows = unkilled
    assert [r["level"] for r in rows] == [3]  # one ticket, at the last level: no dense ticket, no levels 1-2
    assert not (out / "level_01").exists() and not (out / "level_03" / "final.safetensors").exists()
    assert not (out / "level_00").exists()  # the dense training's checkpoint is gone once the ticket is written
    ticket = ticket_zoo.load(out / "level_03")
    meta = ticket.meta
    assert meta["method"] == "early_bird-global" and meta["method_options"] == {"window": 2, "epsilon": 0.5}
    steps, distances = meta["early_bird_steps"], meta["early_bird_distances"]
    assert steps == [10, 20, 30]  # 600 examples / 60 = 10 steps an epoch
    assert len(distances) == 2 and max(distances) < 0.5
    assert meta["early_bird_stopped"] is True and meta["early_bird_stop_step"] == 30
    assert meta["early_bird_trained_steps"] == 30  # of 60
    assert ticket_zoo.masks.overall_density(ticket.masks) == pytest.approx(0.8**3, abs=1e-3)
    assert isinstance(ticket.build(), nn.Module)
    assert (out / "rewind.safetensors").exists()  # θk, as IMP writes it


def test_never_stopping_gives_the_mask_at_the_end_of_training(tmp_path):
    rows = find_tickets(config(epsilon=0.0), tmp_path, progress=False)  # no distance is below 0
    meta = ticket_zoo.load(tmp_path / "level_03").meta
    assert [r["level"] for r in rows] == [3]
    assert meta["early_bird_stopped"] is False and meta["early_bird_stop_step"] is None
    assert meta["early_bird_steps"] == [10, 20, 30, 40, 50, 60] and len(meta["early_bird_distances"]) == 5
    assert meta["early_bird_trained_steps"] == 60


def test_a_rerun_resumes_and_a_killed_run_writes_the_same_ticket(unkilled, tmp_path, monkeypatch):
    out, rows = unkilled
    before = (out / "level_03" / "ticket.safetensors").read_bytes()
    again = find_tickets(config(), out, progress=False)
    assert [r["level"] for r in again] == [3]
    assert (out / "level_03" / "ticket.safetensors").read_bytes() == before

    # Kill the run inside the hook at the second epoch end (after that step's checkpoint), then resume.
    real, calls = ticket_zoo.masks.magnitude_masks, []

    class Killed(Exception):
        pass

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(ticket_zoo.masks, "magnitude_masks", dying)
    with pytest.raises(Killed):
        find_tickets(config(), tmp_path, progress=False)
    assert json.loads((tmp_path / "early_bird" / "state.json").read_text())["steps"] == [10]
    monkeypatch.setattr(ticket_zoo.masks, "magnitude_masks", real)
    find_tickets(config(), tmp_path, progress=False)
    a, b = ticket_zoo.load(out / "level_03"), ticket_zoo.load(tmp_path / "level_03")
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    keys = [k for k in a.meta if k.startswith("early_bird_")]
    assert keys and {k: a.meta[k] for k in keys} == {k: b.meta[k] for k in keys}
    assert all(torch.equal(x, y) for x, y in zip(a.build().state_dict().values(), b.build().state_dict().values(), strict=True))
