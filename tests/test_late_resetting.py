"""Late resetting continues the same run: a level >= 1 starts from θk and trains steps k..T.

Frankle et al. (2019/2020) and open_lth's ``start_step`` rewind to step k and then train steps k..T of
the run that produced θk: the LR schedule (warmup, milestones, cosine) and the data order go on from
step k, only the optimizer state starts fresh. Checked here per step (LR, batch indices, the input
itself), end to end (a momentum-free, unpruned level retraces level 0 bit for bit), through resume
after SIGKILL, and in find's summary rows and ticket meta.
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
import safetensors
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

import ticket_zoo
from tests.helpers import TINY_FIND, write_recipe
from ticket_zoo.checkpoint import CHECKPOINT_NAME
from ticket_zoo.errors import CheckpointError, ConfigError
from ticket_zoo.find import find_tickets
from ticket_zoo.train import TrainConfig, build_optimizer, build_scheduler, train

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402
from ddp_worker import make_data, make_masks, make_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

pytestmark = pytest.mark.usefixtures("one_thread")

# 256 examples / batch 32 = 8 steps an epoch; 5 epochs = 40 steps. Warmup over the first 6 steps,
# LR drops at epochs 2 and 4 (steps 16 and 32), one evaluation per epoch; augmentation and dropout on.
LEVEL = dict(
    optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="step", milestones=(2, 4),
    gamma=0.5, warmup=6, epochs=5.0, batch_size=32, augment="cifar", seed=3,
)  # fmt: skip
TOTAL = 40


@pytest.fixture(scope="module")
def data():
    return make_data(256, 1), make_data(64, 2), make_data(64, 3)


class Recording(torch.utils.data.TensorDataset):
    """Batch-indexable training data that logs the indices of every batch it serves, in order."""

    def __init__(self, base: torch.utils.data.TensorDataset, log: list) -> None:
        super().__init__(*base.tensors)
        self.log = log

    def __getitem__(self, index):
        self.log.append(index.tolist())
        return super().__getitem__(index)


def record(model: nn.Module, train_set, val_set, config: TrainConfig, **kw):
    """Train and return (result, per-step LRs, per-step batch indices, per-step network inputs)."""
    lrs, indices, inputs = [], [], []
    opt_hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"])
    )
    fwd_hook = model.register_forward_pre_hook(
        lambda m, args: inputs.append(args[0].detach().clone()) if m.training else None
    )
    try:
        result = train(model, Recording(train_set, indices), val_set, config, progress=False, **kw)
    finally:
        opt_hook.remove()
        fwd_hook.remove()
    return result, lrs, indices, inputs


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def numbers(r) -> dict:
    return {k: v for k, v in vars(r).items() if k not in ("seconds", "captured")}


# --- the schedule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, spe",
    [
        (dict(schedule="step", milestones=(7, 12), warmup=4, iterations=20), None),
        (dict(schedule="cosine", warmup=5, iterations=20), None),
        (dict(schedule="step", milestones=(2, 4), warmup=3, iterations=None, epochs=5.0), 4),
    ],
    ids=["step", "cosine", "step-epochs"],
)
def test_scheduler_at_start_step_continues_the_schedule(kw, spe):
    config = TrainConfig(**{"lr": 0.3, **kw})

    def lrs(start: int) -> list[float]:
        opt = build_optimizer(nn.Linear(2, 2).parameters(), config)
        sched = build_scheduler(opt, config, 20, steps_per_epoch=spe, start_step=start)
        out = []
        for _ in range(start, 20):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out + [opt.param_groups[0]["lr"]]

    full = lrs(0)
    assert len(set(full)) > 4, "the schedule must actually move"
    for k in (1, 2, 6, 9, 19, 20):  # inside warmup, at/after milestones, the last step, the end
        assert lrs(k) == full[k:], k  # exactly: the LR is closed-form in the step
    with pytest.raises(ConfigError, match="start_step"):
        build_scheduler(build_optimizer(nn.Linear(2, 2).parameters(), config), config, 20, start_step=21)


# --- one level against level 0, step by step --------------------------------------------------------


@pytest.mark.parametrize("k", [5, 13], ids=["in-warmup", "mid-epoch"])
def test_level_from_rewind_gets_level_0s_lr_and_batches_from_step_k(data, k):
    tr, va, te = data
    config = TrainConfig(**LEVEL)
    dense = make_model(dropout=0.2)
    r0, lr0, idx0, x0 = record(dense, tr, va, config, test_set=te, capture_at=k)
    assert r0.start_step == 0 and r0.steps == len(lr0) == len(idx0) == len(x0) == TOTAL

    ticket = make_model(dropout=0.2)
    ticket.load_state_dict(r0.captured)  # θk
    masks = make_masks(ticket)
    r1, lr1, idx1, x1 = record(ticket, tr, va, config, test_set=te, masks=masks, start_step=k)

    assert r1.start_step == k and r1.steps == len(lr1) == TOTAL - k
    assert lr1 == lr0[k:]  # warmup and milestones continue: no restart of the schedule
    assert lr1[0] != lr0[0]  # (level 0 starts at the bottom of the warmup; level 1 where level 0 was)
    assert idx1 == idx0[k:]  # same sample order: epoch e is a permutation seeded by (seed, e)
    assert all(torch.equal(a, b) for a, b in zip(x1, x0[k:], strict=True))  # same crops and flips
    # Evaluation cadence (once per epoch, counted from step 0) and best-val selection follow the run.
    assert [h["step"] for h in r1.history] == [h["step"] for h in r0.history if h["step"] > k]
    assert r1.best_step in [h["step"] for h in r1.history]
    assert r1.best_val_acc == max(h["val_acc"] for h in r1.history)
    assert [h["lr"] for h in r1.history] == [h["lr"] for h in r0.history if h["step"] > k]


def test_unpruned_momentum_free_level_retraces_level_0_bit_for_bit(data):
    """With nothing pruned and a stateless optimizer (plain SGD), steps k..T from θk *are* level 0's:
    same weights at the end, bit for bit, with warmup, milestones, augmentation and dropout on."""
    tr, va, te = data
    config = TrainConfig(**{**LEVEL, "momentum": 0.0})
    k = 11
    dense = make_model(dropout=0.3)
    r0 = train(dense, tr, va, config, test_set=te, capture_at=k, progress=False)
    again = make_model(dropout=0.3)
    again.load_state_dict(r0.captured)
    ones = {
        n: torch.ones_like(p, dtype=torch.bool) for n, p in again.named_parameters() if n.endswith("weight")
    }
    r1 = train(again, tr, va, config, test_set=te, masks=ones, start_step=k, progress=False)
    assert_states_equal(state(again), state(dense))
    after = [h for h in r0.history if h["step"] > k]
    strip = lambda hs: [{key: v for key, v in h.items() if key != "train_loss"} for h in hs]  # noqa: E731
    assert strip(r1.history) == strip(after)
    # train_loss averages the steps since the previous evaluation: equal once that window is all >= k.
    assert [h["train_loss"] for h in r1.history[1:]] == [h["train_loss"] for h in after[1:]]
    assert (r1.final_test_acc, r1.final_val_acc) == (r0.final_test_acc, r0.final_val_acc)


def test_start_step_arguments_and_a_level_with_nothing_left_to_train(data):
    tr, va, te = data
    config = TrainConfig(**LEVEL)
    for bad in (-1, TOTAL + 1, 2.0, True):
        with pytest.raises(ConfigError, match="start_step"):
            train(make_model(), tr, va, config, start_step=bad, progress=False)
    with pytest.raises(ConfigError, match=r"capture_at must be an int in \[5, 40\]"):
        train(make_model(), tr, va, config, start_step=5, capture_at=4, progress=False)
    # Rewinding to the very end (k = T) leaves no step to train: the result is θT, evaluated once.
    model = make_model()
    before = state(model)
    r = train(model, tr, va, config, test_set=te, start_step=TOTAL, capture_at=TOTAL, progress=False)
    assert (r.start_step, r.steps, r.best_step) == (TOTAL, 0, TOTAL)
    assert [h["step"] for h in r.history] == [TOTAL] and r.history[0]["train_loss"] is None
    assert_states_equal(state(model), before)
    assert_states_equal(r.captured, before)


def test_checkpoint_records_the_start_step_and_refuses_another(data, tmp_path):
    tr, va, _ = data
    config = TrainConfig(**{**LEVEL, "epochs": 2.0, "milestones": (1,)})
    train(make_model(), tr, va, config, start_step=3, checkpoint_dir=tmp_path, progress=False)
    with safetensors.safe_open(str(tmp_path / CHECKPOINT_NAME), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
    assert (meta["start_step"], meta["step"]) == (3, 16)
    for other in (0, 4):
        with pytest.raises(CheckpointError, match="different run"):
            train(make_model(), tr, va, config, start_step=other, checkpoint_dir=tmp_path, progress=False)


# --- SIGKILL in the middle of a late-resetting run ----------------------------------------------------

_TRAIN_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[1])
    import ddp_worker
    from ticket_zoo.train import train

    original, count, kill_at = torch.optim.SGD.step, [0], int(sys.argv[3])

    def step(self, *args, **kwargs):  # SIGKILL right after the kill_at-th optimizer step of this process
        out = original(self, *args, **kwargs)
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    torch.optim.SGD.step = step
    problem = ddp_worker.resume_problem()
    model = problem.pop("model")
    problem["capture_at"] = int(sys.argv[4])
    train(model, progress=False, checkpoint_dir=sys.argv[2], start_step=int(sys.argv[5]), **problem)
    """
)


def test_sigkill_mid_late_resetting_run_resumes_bit_identically(tmp_path):
    """The resume problem (nesterov momentum, warmup + milestone, augmentation, dropout) from step 37
    (mid-epoch: 12 steps an epoch), killed at step 65 (checkpointed at 60), resumed in-process."""
    start, capture, kill_after = 37, 50, 28
    ckpt = tmp_path / "ckpt"
    script = tmp_path / "kill.py"
    script.write_text(_TRAIN_KILL_SCRIPT)
    argv = [sys.executable, str(script), str(Path(__file__).parent), str(ckpt), str(kill_after), str(capture),
            str(start)]  # fmt: skip
    proc = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    with safetensors.safe_open(str(ckpt / CHECKPOINT_NAME), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
    assert (meta["start_step"], meta["step"]) == (start, 60)

    def run(**kw):
        problem = ddp_worker.resume_problem()
        model = problem.pop("model")
        problem["capture_at"] = capture
        return model, train(model, progress=False, start_step=start, **problem, **kw)

    resumed_model, resumed = run(checkpoint_dir=ckpt)
    ref_model, ref = run()
    assert_states_equal(state(resumed_model), state(ref_model))
    assert numbers(resumed) == numbers(ref)
    assert_states_equal(resumed.captured, ref.captured)
    assert (ref.start_step, ref.steps) == (start, 120 - start)
    assert [h["step"] for h in ref.history] == [45, 60, 75, 90, 105, 120]


# --- find: levels >= 1 train steps k..T, and say so -----------------------------------------------------

LEVELS_1 = {**TINY_FIND, "levels": 1}  # rewind 20, 60 iterations a level, evaluation and checkpoint every 20


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("late")
    recipe = write_recipe(tmp, LEVELS_1)
    out = tmp / "out"
    return recipe, out, find_tickets(recipe, out, progress=False)


def test_find_rows_and_meta_record_start_step_and_steps(found):
    _, out, rows = found
    summary = json.loads((out / "summary.json").read_text())["levels"]
    for level, (start, steps) in enumerate([(0, 60), (20, 40)]):
        done = json.loads((out / f"level_{level:02d}" / "done.json").read_text())
        meta = ticket_zoo.load(out / f"level_{level:02d}").meta
        for where in (rows[level], summary[level], done["row"], meta):
            assert (where["start_step"], where["steps"]) == (start, steps), (level, where)
    assert rows[1]["start_step"] + rows[1]["steps"] == rows[0]["steps"]  # both end at step T


def test_find_level_1_is_train_from_theta_k_at_step_k(found):
    """find's level 1 = train() from θk with the level's masks and start_step=k, bit for bit."""
    from safetensors.torch import load_file

    from ticket_zoo.data import load_splits
    from ticket_zoo.find import FindConfig

    recipe, out, rows = found
    config = FindConfig.from_yaml(recipe)
    ticket = ticket_zoo.load(out / "level_01")
    model = ticket.build()
    model.load_state_dict(load_file(str(out / "rewind.safetensors")))
    splits = load_splits(config.dataset, seed=config.seed)
    r = train(model, splits.train, splits.val, config.effective_train(), masks=ticket.masks,
              test_set=splits.test, start_step=20, progress=False)  # fmt: skip
    assert_states_equal(state(model), load_file(str(out / "level_01" / "final.safetensors")))
    assert (r.test_acc, r.steps, r.start_step) == (rows[1]["test_acc"], 40, 20)


_FIND_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    torch.set_num_threads(1)
    original, count, kill_at = torch.optim.Adam.step, [0], int(sys.argv[3])

    def step(self, *args, **kwargs):  # SIGKILL right after the kill_at-th optimizer step of this process
        out = original(self, *args, **kwargs)
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    torch.optim.Adam.step = step
    from ticket_zoo.find import find_tickets
    find_tickets(sys.argv[1], sys.argv[2], progress=False)
    """
)


def test_find_sigkill_in_a_late_reset_level_resumes_identically(found, tmp_path):
    """Killed in level 1 at step 45 (its 25th step from k = 20; checkpointed at 40), then resumed."""
    recipe, reference, ref_rows = found
    out = tmp_path / "killed"
    script = tmp_path / "kill.py"
    script.write_text(_FIND_KILL_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(recipe), str(out), str(60 + 25)], env=ENV,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out / "level_00" / "done.json").is_file() and not (out / "level_01" / "done.json").exists()
    with safetensors.safe_open(str(out / "level_01" / ".ckpt" / CHECKPOINT_NAME), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
    assert (meta["start_step"], meta["step"]) == (20, 40)
    rows = find_tickets(recipe, out, progress=False)
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "path")} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k not in ("seconds", "path")} for r in ref_rows]
    from safetensors.torch import load_file

    for name in ("level_01/final.safetensors", "level_01/ticket.safetensors", "rewind.safetensors"):
        assert_states_equal(load_file(str(out / name)), load_file(str(reference / name)))


def test_find_rewind_in_epochs_starts_at_that_many_epochs_of_steps(tmp_path):
    from ticket_zoo.data import load_splits

    recipe = write_recipe(tmp_path, {**LEVELS_1, "rewind": "1ep", "train": {**TINY_FIND["train"], "iterations": 40}})
    rows = find_tickets(recipe, tmp_path / "out", progress=False)
    spe = len(load_splits("digits", seed=0).train) // TINY_FIND["train"]["batch_size"]
    assert 0 < spe < 40
    assert [(r["start_step"], r["steps"]) for r in rows] == [(0, 40), (spe, 40 - spe)]
    assert ticket_zoo.load(tmp_path / "out" / "level_01").meta["rewind_step"] == spe
