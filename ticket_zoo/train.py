"""The one training loop, shared by ticket finding (IMP) and transfer.

It knows nothing about tickets: it trains an ``nn.Module`` on a dataset of ``(image, label)``
pairs, optionally holding a dict of masks ``{parameter name: bool tensor}`` exact (pruned weights
and their optimizer state stay zero), evaluates on a validation set, and keeps the best-val
weights. What makes it fit for reproducible research:

* **Deterministic.** The sample order of epoch ``e`` is ``randperm`` under a generator seeded by
  ``(seed, e)``; the augmentation of step ``s`` draws from a generator seeded by ``(seed, s)``, and
  the global RNG (dropout) is re-seeded from ``(seed, s)`` before step ``s``, inside a forked RNG
  scope, so the caller's RNG is left alone. Same seed, same weights, bit for bit on CPU. (The data
  order and the seeded streams live in :mod:`ticket_zoo.batches`.)
* **Late resetting.** ``start_step=k`` trains steps ``k..T`` of the run that ``config`` describes:
  the schedule is positioned at step ``k`` and every step sees the batch (indices, augmentation,
  dropout) it has in the run from step 0. The optimizer state starts fresh, as in Frankle et al.
  (2019/2020) and open_lth's ``start_step``: only the weights (θk) carry over.
* **Resumable.** With ``checkpoint_dir`` the whole state (model, optimizer, scheduler, AMP
  scaler, RNG states, best-val and captured weights, history, position in the epoch) is written
  atomically as one safetensors file (:mod:`ticket_zoo.checkpoint`); a run killed at any point and
  started again with the same arguments ends with the same weights and numbers as one that never
  stopped. Nothing is pickled.
* **Distributed.** Under ``torchrun`` (``WORLD_SIZE > 1``) ``train`` joins the process group first
  (:func:`ticket_zoo._dist.setup`, once per process), the model is wrapped in DDP and each rank
  takes an interleaved slice of every global batch, so the global sample order is that of a
  one-process run.

Example:
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(128, 2)
    >>> data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())  # label: the sign of x[0]
    >>> model = nn.Linear(2, 2)
    >>> cfg = TrainConfig(optimizer="sgd", lr=0.5, momentum=0.9, iterations=24, batch_size=32)
    >>> result = train(model, data, data, cfg, progress=False)
    >>> result.steps, [h["step"] for h in result.history], result.best_val_acc > 90
    (24, [4, 8, 12, 16, 20, 24], True)
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import _dist
from . import progress as _progress
from ._dist import Dist
from ._io import append_line, atomic_write_text
from .augment import augment_batch
from .batches import (
    GlobalBatches,
    batch_indexable,
    dataset_len,
    derive_seed,
    epoch_batches,
    is_stream,
    quiet_generator,
    seed_global_rng,
    sequential_batches,
    stream_batches,
)
from .checkpoint import CHECKPOINT_NAME, Checkpoint, Trainables, TrainState, run_fingerprint, snapshot
from .config import _is_int
from .configs import TrainConfig  # declared there (torch-free); re-exported here
from .errors import ConfigError
from .masked import apply_masks_, hold_masks
from .optim import build_optimizer, build_scheduler

__all__ = ["TrainConfig", "TrainResult", "build_optimizer", "build_scheduler", "evaluate", "step_budget", "train"]


# --- config ----------------------------------------------------------------------------------------


# TrainConfig is declared in configs.py (torch-free, so the CLI builds --help without torch).


# --- result ----------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a run produced. Accuracies are percentages.

    ``test_acc`` is measured on the weights selected by validation (best ``val_acc``, earliest on a
    tie); ``final_test_acc`` on the last weights. ``captured`` is a CPU copy of the model's state at
    iteration ``capture_at`` (0 = before any step), e.g. the rewind point of IMP. ``start_step`` is
    where this call began (0, or ``k`` for late resetting) and ``steps`` how many steps it trained:
    the run ends at step ``start_step + steps``. Steps in ``best_step`` and ``history`` count from
    the start of the run, not of this call.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(64, 2)
        >>> data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
        >>> model = nn.Linear(2, 2)
        >>> r = train(model, data, data, TrainConfig(iterations=10, batch_size=16), capture_at=0, progress=False)
        >>> r.history[-1]["val_acc"] == r.final_val_acc, torch.equal(r.captured["weight"], model.weight)
        (True, False)
    """

    best_val_acc: float
    best_step: int
    final_val_acc: float
    test_acc: float | None
    final_test_acc: float | None
    steps: int
    seconds: float
    captured: dict[str, torch.Tensor] | None
    history: list[dict] = field(default_factory=list)
    start_step: int = 0


# --- evaluation ------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Any,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` in percent (eval mode; the mode is restored after).

    Example:
        >>> model = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))  # predicts the sign of x[0]
        >>> x = torch.tensor([[-2.0, 0.0], [3.0, 1.0], [1.0, 5.0], [-1.0, 2.0]])
        >>> evaluate(model, torch.utils.data.TensorDataset(x, torch.tensor([0, 1, 1, 1])))
        75.0
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y, *_ in sequential_batches(dataset, batch_size, num_workers=num_workers):
            x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise ConfigError("evaluation dataset is empty; give a validation/test set with at least one example")
    return 100.0 * correct / total


# --- the loop --------------------------------------------------------------------------------------


def step_budget(config: TrainConfig, train_set: Any, global_batch: int) -> tuple[int, int | None]:
    """A run's (total iterations, iterations per epoch or None for a stream of unknown length); the
    batched ensemble (ensemble.py) counts its steps with it too."""
    n = dataset_len(train_set)
    if n is not None and not is_stream(train_set):
        if n < global_batch:
            raise ConfigError(f"batch_size ({global_batch}) is larger than the training set ({n} examples)")
        spe = n // global_batch
    elif n is not None:
        spe = max(1, n // global_batch)
    else:
        spe = None
    if config.iterations is not None:
        return config.iterations, spe
    if spe is None:
        raise ConfigError("epochs need a training set with a known length; give iterations instead")
    return max(1, round(config.epochs * spe)), spe


@dataclass(frozen=True)
class _Plan:
    """The loop's fixed inputs: the data, where the run ends, and when it evaluates, captures,
    checkpoints and logs. (What changes as it runs is a :class:`~ticket_zoo.checkpoint.TrainState`.)"""

    config: TrainConfig
    ctx: Dist
    train_set: Any
    val_set: Any
    test_set: Any | None
    total: int  # the run's last step, T (steps count from 0 even when it starts at start_step)
    steps_per_epoch: int | None  # None: a stream of unknown length
    eval_every: int
    checkpoint_every: int
    capture_at: int | None
    checkpoint: Checkpoint | None
    log_path: str | os.PathLike | None
    progress: bool | str
    final_model: str
    on_epoch_end: Callable[[int, nn.Module], bool] | None = None

    @property
    def local_batch(self) -> int:
        return self.config.batch_size // self.ctx.world

    @property
    def stream(self) -> bool:
        """Read in stream order (no epochs to permute): iterable-only data, or no known length."""
        return self.steps_per_epoch is None or is_stream(self.train_set)

    @property
    def cuda(self) -> bool:
        return self.ctx.device.type == "cuda"


def train(
    model: nn.Module,
    train_set: Any,
    val_set: Any,
    config: TrainConfig,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    test_set: Any = None,
    capture_at: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    progress: bool | str = True,
    final_model: str = "last",
    start_step: int = 0,
    on_epoch_end: Callable[[int, nn.Module], bool] | None = None,
) -> TrainResult:
    """Train ``model`` in place and return what happened.

    Cross-entropy on ``(x, y)`` batches. Evaluates on ``val_set`` every ``eval_every`` iterations
    (default: once per epoch) and at the end. ``masks`` (``{param name: bool tensor}``, names of
    the unwrapped model) are applied first and held through every step. ``capture_at=k`` returns a
    copy of the state after ``k`` steps. ``checkpoint_dir`` makes the run resumable: starting again
    with the same arguments continues where it stopped. ``log_path`` gets one JSON line per
    evaluation. Afterwards ``model`` holds the last weights (``final_model="last"``) or the
    best-val ones (``"best"``).

    ``start_step=k`` (late resetting) trains only steps ``k..T`` of the run: ``model`` should hold
    θk; the LR schedule continues from step ``k`` (warmup, milestones and cosine are not restarted),
    step ``s`` gets the same batch (indices, augmentation, dropout) as in the run from 0, and
    evaluation and checkpoints fall on the same steps. The optimizer state (momentum, Adam moments,
    AMP scaler) starts fresh. Steps in the result and the log count from 0; ``capture_at`` must be
    ``>= k``.

    ``on_epoch_end(step, module)`` (not for streams, which have no epochs) is called with the
    unwrapped module at every epoch boundary the run reaches after ``start_step`` and at its last
    step, after that step's evaluation and checkpoint. Returning True stops the run there, as if its
    budget ended at that step: the step gets an evaluation if ``eval_every`` did not give it one,
    best-val, test accuracies and ``final_model`` work as usual, and ``result.steps`` counts the
    steps actually trained (e.g. Early-Bird tickets). A run resumed from a checkpoint taken at a
    boundary calls it again at that step before training further, so a stop decided there is decided
    again: the hook must give the same answer when called twice for one step (key its state by step).
    Under torchrun rank 0's answer counts.

    Data that is batch-indexable (a ``TensorDataset``, or a class declaring ``batch_indexable = True``,
    see :mod:`ticket_zoo.batches`) is batched in one indexing op per step; other datasets go through a
    DataLoader. Both give the same run.

    Under torchrun every rank calls ``train``; each rank returns the same result; only rank 0 writes
    files. With augmentation each rank draws from its own generator, so augmented DDP runs see the
    same samples as a one-process run but not the same crops; BatchNorm statistics are per rank.

    Example:
        >>> import tempfile
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(128, 2)
        >>> data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
        >>> model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> masks = {"0.weight": torch.tensor([[True, False]] * 8)}  # hidden units see x[0] only
        >>> cfg = TrainConfig(optimizer="adam", lr=1e-2, iterations=30, batch_size=32, eval_every=10)
        >>> with tempfile.TemporaryDirectory() as run:
        ...     r = train(model, data, data, cfg, masks=masks, capture_at=0, checkpoint_dir=run, progress=False)
        ...     again = train(model, data, data, cfg, masks=masks, capture_at=0, checkpoint_dir=run, progress=False)
        >>> [h["step"] for h in r.history], bool(model[0].weight[:, 1].eq(0).all()), r.best_val_acc > 90
        ([10, 20, 30], True, True)
        >>> again.history == r.history  # the finished run was resumed from its checkpoint: nothing to train
        True

        Stopping early at an epoch boundary (4 steps an epoch here; the budget is 24 steps):

        >>> seen = []
        >>> def stop_after_two_epochs(step, module):
        ...     seen.append(step)
        ...     return step >= 8
        >>> cfg = TrainConfig(iterations=24, batch_size=32, eval_every=3)
        >>> r = train(nn.Linear(2, 2), data, data, cfg, on_epoch_end=stop_after_two_epochs, progress=False)
        >>> seen, r.steps, [h["step"] for h in r.history]  # step 8 gets an evaluation of its own
        ([4, 8], 8, [3, 6, 8])
    """
    t0 = time.perf_counter()
    if not isinstance(config, TrainConfig):
        raise ConfigError(
            f"config must be a TrainConfig (use TrainConfig.from_dict), got {type(config).__name__}"
        )
    config.validate()
    if final_model not in ("last", "best"):
        raise ConfigError(f"final_model must be 'last' or 'best', got {final_model!r}")
    if val_set is None:
        raise ConfigError("val_set is required: it selects the best weights (carve it from train)")
    # train is an entry point: under torchrun it joins the process group here (once per process, a
    # no-op when find or transfer already did); otherwise this only picks the device.
    ctx = _dist.setup(config.device)
    if config.batch_size % ctx.world:
        raise ConfigError(
            f"batch_size ({config.batch_size}) must be divisible by the number of processes ({ctx.world})"
        )
    total, spe = step_budget(config, train_set, config.batch_size)
    if on_epoch_end is not None and (spe is None or is_stream(train_set)):
        raise ConfigError("on_epoch_end needs epochs: the training data is a stream; give a sized dataset")
    if not _is_int(start_step) or not 0 <= start_step <= total:
        raise ConfigError(
            f"start_step must be an int in [0, {total}] (the run's iterations), got {start_step!r}"
        )
    if capture_at is not None and (not _is_int(capture_at) or not start_step <= capture_at <= total):
        raise ConfigError(
            f"capture_at must be an int in [{start_step}, {total}] (the run's iterations from start_step), "
            f"got {capture_at!r}"
        )
    eval_every = config.eval_every or spe or total
    cuda = ctx.device.type == "cuda"
    for flag in ("amp", "channels_last"):
        if getattr(config, flag) and not cuda:
            warnings.warn(
                f"{flag} applies to CUDA only; ignored on {ctx.device.type}", RuntimeWarning, stacklevel=2
            )

    module = model.to(ctx.device)
    if config.channels_last and cuda:
        module = module.to(memory_format=torch.channels_last)
    if masks:
        apply_masks_(module, masks)
    optimizer = build_optimizer([p for p in module.parameters() if p.requires_grad], config)
    handle = hold_masks(module, optimizer, masks) if masks else None
    parts = Trainables(
        module=module,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config, total, steps_per_epoch=spe, start_step=start_step),
        scaler=torch.amp.GradScaler("cuda") if config.amp and cuda else None,
    )
    checkpoint = None
    if checkpoint_dir is not None:
        run_id = run_fingerprint(
            config, module, masks, dataset_len(train_set), dataset_len(val_set), capture_at, start_step
        )
        checkpoint = Checkpoint(Path(checkpoint_dir) / CHECKPOINT_NAME, run_id)
        checkpoint.prepare(ctx)
    plan = _Plan(
        config=config,
        ctx=ctx,
        train_set=train_set,
        val_set=val_set,
        test_set=test_set,
        total=total,
        steps_per_epoch=spe,
        eval_every=eval_every,
        checkpoint_every=config.checkpoint_every or eval_every,
        capture_at=capture_at,
        checkpoint=checkpoint,
        log_path=log_path,
        progress=progress,
        final_model=final_model,
        on_epoch_end=on_epoch_end,
    )

    rng_devices = [ctx.device] if cuda else []
    with torch.random.fork_rng(devices=rng_devices, device_type="cuda"):
        # Global RNG (dropout etc.) seeded per run and rank, inside a fork so the caller's RNG is untouched.
        torch.manual_seed(derive_seed("global", config.seed, ctx.rank))
        if checkpoint is not None and checkpoint.exists():
            st = checkpoint.load(ctx, parts)
        else:
            st = TrainState(
                step=start_step,
                start_step=start_step,
                loss_sum=torch.zeros((), dtype=torch.float64, device=ctx.device),
            )
        if capture_at == start_step and st.captured is None:
            st.captured = snapshot(module)
        if log_path is not None and ctx.main:  # rewrite from history: a resumed run never duplicates lines
            atomic_write_text(log_path, "".join(json.dumps(h) + "\n" for h in st.history))
        net = (
            nn.parallel.DistributedDataParallel(module, device_ids=[ctx.device] if cuda else None)
            if ctx.on
            else module
        )
        try:
            _run(plan, parts, net, st)
            result = _finish(plan, module, st)
        finally:
            if handle is not None:
                handle.remove()
    result.seconds = time.perf_counter() - t0
    return result


def _save(plan: _Plan, parts: Trainables, st: TrainState) -> None:
    if plan.checkpoint is not None:
        plan.checkpoint.save(plan.ctx, parts, st)


def _run(plan: _Plan, parts: Trainables, net: nn.Module, st: TrainState) -> None:
    """The iterations themselves, from ``st.step`` to ``plan.total``; ``net`` is ``parts.module``,
    wrapped in DDP under torchrun.

    Everything random in step ``s`` comes from streams seeded by ``(seed, s)`` (batch indices through
    the epoch's permutation, augmentation, dropout), so step ``s`` is the same whether the loop got
    there from step 0, from a checkpoint or from a late-resetting ``start_step``."""
    config, ctx, train_set = plan.config, plan.ctx, plan.train_set
    module, optimizer, scheduler, scaler = parts.module, parts.optimizer, parts.scheduler, parts.scaler
    cuda, total, spe = plan.cuda, plan.total, plan.steps_per_epoch
    augment = aug_gen = None
    if config.augment != "none":
        augment = augment_batch
        aug_gen = torch.Generator()

    sampler = loader = None
    if not plan.stream:
        sampler = GlobalBatches(len(train_set), config.batch_size, config.seed, ctx.rank, ctx.world)
        if config.num_workers > 0 or not batch_indexable(train_set):
            loader = torch.utils.data.DataLoader(
                train_set, batch_sampler=sampler, num_workers=config.num_workers,
                pin_memory=cuda, persistent_workers=config.num_workers > 0, generator=quiet_generator(),
            )  # fmt: skip
    else:
        batches = stream_batches(train_set, plan.local_batch, ctx.rank, ctx.world, st.step, config.num_workers)

    progress = plan.progress
    desc = progress if isinstance(progress, str) else "train"
    # A named bar belongs to a caller's outer bar (find's levels, transfer's cells): clear it when done
    # so the terminal keeps one line per level/cell rather than a stack of finished inner bars.
    # Per-step progress is for a terminal only: in a log file it prints nothing (see progress.py).
    bar = _progress.bar(
        total=total,
        initial=st.step,
        desc=desc,
        enabled=progress is not False and ctx.main,
        leave=not isinstance(progress, str),
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.float16) if config.amp and cuda else contextlib.nullcontext()
    )
    net.train()
    try:
        # Resumed at an epoch boundary: the hook decides again before training further.
        if _epoch_end(plan, parts, st, None, bar):
            return
        if st.step == total and not st.history:  # start_step == total: nothing to train, one evaluation
            _evaluate_now(plan, module, st, optimizer.param_groups[0]["lr"], bar)
            _save(plan, parts, st)
        while st.step < total:
            if not plan.stream:
                epoch, start = divmod(st.step, spe)
                sampler.set_position(epoch, start)
                batches = epoch_batches(train_set, sampler, loader)
            for x, y, *_ in batches:
                # Dropout (and any other global-RNG draw) of step s: a stream of (seed, s, rank).
                seed_global_rng(derive_seed("global", config.seed, st.step, ctx.rank), ctx.device)
                x = x.to(ctx.device, non_blocking=True)
                y = torch.as_tensor(y).to(ctx.device, non_blocking=True)
                if augment is not None:
                    aug_gen.manual_seed(derive_seed("aug", config.seed, st.step, ctx.rank))
                    x = augment(x, config.augment, aug_gen)
                if config.channels_last and cuda and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast:
                    loss = F.cross_entropy(net(x), y)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                st.loss_sum += loss.detach().double()
                st.loss_count += 1
                st.step += 1
                bar.update(1)
                if st.step == plan.capture_at:
                    st.captured = snapshot(module)
                if st.step % plan.eval_every == 0 or st.step == total:
                    _evaluate_now(plan, module, st, lr, bar)
                if st.step % plan.checkpoint_every == 0 or st.step == total:
                    _save(plan, parts, st)
                if st.step == total or (not plan.stream and st.step % spe == 0):
                    if _epoch_end(plan, parts, st, lr, bar):
                        return
                    break
    finally:
        bar.close()


def _epoch_end(plan: _Plan, parts: Trainables, st: TrainState, lr: float | None, bar: _progress.Bar) -> bool:
    """Call ``plan.on_epoch_end`` at an epoch boundary or the last step (after ``start_step``);
    True: the run stops at ``st.step``, evaluated (and checkpointed) there. ``lr`` is the LR of the
    step just taken (None on resume: recomputed from the schedule, which is LambdaLR, closed-form)."""
    hook, spe = plan.on_epoch_end, plan.steps_per_epoch
    if hook is None or st.step <= st.start_step or (st.step % spe and st.step != plan.total):
        return False
    stop = torch.tensor([1.0 if hook(st.step, parts.module) else 0.0], dtype=torch.float64)
    if not plan.ctx.broadcast_(stop).item():
        return False
    if not st.history or st.history[-1]["step"] != st.step:
        if lr is None:
            lr = parts.scheduler.base_lrs[0] * parts.scheduler.lr_lambdas[0](st.step - 1)
        _evaluate_now(plan, parts.module, st, lr, bar)
        _save(plan, parts, st)
    return True


def _evaluate_now(plan: _Plan, module: nn.Module, st: TrainState, lr: float, bar: _progress.Bar) -> None:
    """One evaluation: rank 0 measures, every rank gets the numbers and updates best/history alike."""
    ctx, workers = plan.ctx, plan.config.num_workers  # loader workers for evaluation too: photo sets decode per item
    if ctx.on:
        for b in module.buffers():  # rank 0's BatchNorm statistics are the model's
            ctx.broadcast_(b)
        total_loss = ctx.comm(st.loss_sum.reshape(1).clone())
        torch.distributed.all_reduce(total_loss)
        train_loss = float(total_loss) / ctx.world / max(1, st.loss_count)
    else:
        train_loss = float(st.loss_sum) / max(1, st.loss_count)
    if st.loss_count == 0:  # an evaluation with no step before it (start_step == total)
        train_loss = None
    accs = torch.full((2,), float("nan"), dtype=torch.float64)
    if ctx.main:
        accs[0] = evaluate(module, plan.val_set, device=ctx.device, num_workers=workers)
        if plan.test_set is not None:
            accs[1] = evaluate(module, plan.test_set, device=ctx.device, num_workers=workers)
    ctx.broadcast_(accs)
    val_acc = float(accs[0])
    spe = plan.steps_per_epoch
    entry = {
        "step": st.step,
        "epoch": st.step / spe if spe else None,
        "train_loss": train_loss,
        "val_acc": val_acc,
        "lr": lr,
    }
    if plan.test_set is not None:
        entry["test_acc"] = float(accs[1])
    st.history.append(entry)
    st.loss_sum.zero_()
    st.loss_count = 0
    if st.best_val is None or val_acc > st.best_val:  # strict: the earliest of equal accuracies wins
        st.best_val, st.best_step, st.best_state = val_acc, st.step, snapshot(module)
    if plan.log_path is not None and ctx.main:
        append_line(plan.log_path, json.dumps(entry))
    bar.set_postfix(loss="-" if train_loss is None else f"{train_loss:.4f}", val=f"{val_acc:.2f}")


def _finish(plan: _Plan, module: nn.Module, st: TrainState) -> TrainResult:
    """Test accuracies (best-val and last weights) and the final weights in ``module``."""
    ctx, test_set, workers = plan.ctx, plan.test_set, plan.config.num_workers
    last = st.history[-1]
    test_acc = final_test = None
    if test_set is not None:
        accs = torch.full((2,), float("nan"), dtype=torch.float64)
        if ctx.main:
            accs[1] = evaluate(module, test_set, device=ctx.device, num_workers=workers)
            if st.best_step == st.step:
                accs[0] = accs[1]
            else:
                last_state = snapshot(module) if plan.final_model == "last" else None
                module.load_state_dict(st.best_state)
                accs[0] = evaluate(module, test_set, device=ctx.device, num_workers=workers)
                if last_state is not None:
                    module.load_state_dict(last_state)
        ctx.broadcast_(accs)
        test_acc, final_test = float(accs[0]), float(accs[1])
    if plan.final_model == "best" and st.best_step != st.step:
        module.load_state_dict(st.best_state)
    return TrainResult(
        best_val_acc=float(st.best_val),
        best_step=st.best_step,
        final_val_acc=last["val_acc"],
        test_acc=test_acc,
        final_test_acc=final_test,
        steps=st.step - st.start_step,
        seconds=0.0,
        captured=st.captured,
        history=[dict(h) for h in st.history],
        start_step=st.start_step,
    )
