"""Batched seeds: train K small networks of one architecture as one vmapped ensemble.

The seeds (and controls) of one transfer (ticket, target, optimizer) are K trainings of the same
architecture with the same train config except the seed; only the initial weights, the masks and the
data order differ. Small LTH networks leave a CPU (and even more a GPU) mostly idle, so
:func:`train_ensemble` trains them together:

* the K models' parameters are stacked (``torch.func.stack_module_state``) into tensors of shape
  ``(K, ...)``; one forward/backward is ``torch.vmap`` over ``torch.func.functional_call`` of the
  architecture, and the loss is the sum of the members' mean cross-entropies, so the gradient of
  each slice is exactly that member's gradient;
* ONE optimizer (:func:`ticket_zoo.optim.build_optimizer`, the same ``TrainConfig`` fields) steps
  the stacked tensors: SGD (momentum, nesterov, weight decay), Adam and AdamW are element-wise, so
  this is the update of K separate optimizers; one LR scheduler
  (:func:`ticket_zoo.optim.build_scheduler`) serves every member (the configs only differ in seed);
* masks are held with :func:`ticket_zoo.masked.hold_masks` itself, on the stacked tensors (a member
  without a mask for a tensor gets an all-True slice): pruned weights and their optimizer state stay
  exactly zero in every member;
* member ``k`` sees the batches :func:`ticket_zoo.train.train` gives its seed: the epoch permutation
  of :class:`~ticket_zoo.batches.GlobalBatches` for that seed and the augmentation generator seeded
  by ``("aug", seed, step, 0)``;
* every ``eval_every`` steps (and at the end) each member is evaluated on the validation (and test)
  set, its best-val weights kept (earliest of equal accuracies), and a ``log.jsonl`` line written
  with the fields ``train`` writes. The results are one :class:`~ticket_zoo.train.TrainResult` per
  member, and each member's model ends holding its best (``final_model="best"``) or last weights.

Each member's loss matches its own ``train`` run to float rounding (vmapped kernels sum in another
order); the tests check the first 20 steps within ``1e-5`` relative. The same call twice gives the
same numbers bit for bit on CPU.

**When it applies** (:func:`why_not_batchable`): K >= 2 members of one architecture (same parameter
names, shapes, dtypes); no buffers at all (BatchNorm's running statistics would be updated in place
per member, which vmap cannot do: so ``vgg*_cifar`` and ``resnet*_cifar`` and most timm models are
trained one by one); no Dropout or DropPath with ``p > 0`` (its global-RNG draws are per process,
not per member: ``train`` seeds them per step and seed); the same ``TrainConfig`` except ``seed``;
no ``amp`` or ``channels_last`` (CUDA-only paths not batched); ``num_workers == 0`` (K members would
start K loaders); one process (``WORLD_SIZE <= 1``: DDP trains one model); map-style training data
(streams have one order, not one per seed). ``lenet_300_100`` and ``conv2/4/6`` qualify. No
checkpoint is written: a killed ensemble starts again from step 0.

Example:
    >>> from torch import nn
    >>> from ticket_zoo.train import TrainConfig
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(128, 2)
    >>> data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    >>> def net(seed):
    ...     torch.manual_seed(seed)
    ...     return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> def cfg(seed):
    ...     return TrainConfig(optimizer="sgd", lr=0.5, momentum=0.9, iterations=24, batch_size=32, eval_every=8, seed=seed)
    >>> members = [Member(net(s), cfg(s)) for s in (0, 1, 2)]
    >>> members[2].masks = {"0.weight": torch.tensor([[True, False]] * 8)}  # member 2 sees x[0] only
    >>> results = train_ensemble(members, data, data)
    >>> [r.steps for r in results], [[h["step"] for h in r.history] for r in results][0]
    ([24, 24, 24], [8, 16, 24])
    >>> all(r.best_val_acc > 90 for r in results), bool(members[2].model[0].weight[:, 1].eq(0).all())
    (True, True)
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import _dist
from . import progress as _progress
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
    sequential_batches,
)
from .configs import TrainConfig
from .errors import ConfigError
from .masked import apply_masks_, hold_masks
from .optim import build_optimizer, build_scheduler
from .train import TrainResult, step_budget

__all__ = ["Member", "architecture_problem", "batchable", "train_ensemble", "why_not_batchable"]


@dataclass
class Member:
    """One training of an ensemble: its model (initial weights), config, masks and learning curve."""

    model: nn.Module
    config: TrainConfig
    masks: Mapping[str, torch.Tensor] | None = None  # {param name: bool tensor}, as train() takes them
    log_path: str | os.PathLike | None = None  # one JSON line per evaluation, as train() writes


# --- when it applies -----------------------------------------------------------------------------------


def architecture_problem(model: nn.Module) -> str | None:
    """Why ``model``'s architecture cannot be vmapped as an ensemble member, or None if it can.

    Example:
        >>> from torch import nn
        >>> architecture_problem(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))  # None: it can
        >>> architecture_problem(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
        'it has buffers (1.running_mean, ...: BatchNorm running statistics or others), updated in place per model'
        >>> architecture_problem(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)))
        'it has dropout (1: Dropout, p=0.5), whose random draws are per process, not per member'
    """
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        return (
            f"it has buffers ({buffers[0]}, ...: BatchNorm running statistics or others), "
            "updated in place per model"
        )
    for name, module in model.named_modules():
        p = getattr(module, "p", None) if isinstance(module, nn.modules.dropout._DropoutNd) else None
        if p is None and "drop" in type(module).__name__.lower():  # timm's DropPath, DropBlock
            p = getattr(module, "drop_prob", None)
        if isinstance(p, (int, float)) and p > 0:
            return (
                f"it has dropout ({name}: {type(module).__name__}, p={p}), whose random draws are "
                "per process, not per member"
            )
    return None


def _same_except_seed(configs: Sequence[TrainConfig]) -> bool:
    first = {k: v for k, v in configs[0].to_dict().items() if k != "seed"}
    return all({k: v for k, v in c.to_dict().items() if k != "seed"} == first for c in configs[1:])


def _signature(model: nn.Module) -> list[tuple]:
    return [(n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in model.named_parameters()]


def why_not_batchable(
    models: Sequence[nn.Module], configs: Sequence[TrainConfig], train_set: Any = None
) -> str | None:
    """Why these models and configs cannot train as one ensemble, or None if they can (see the module doc).

    Example:
        >>> from torch import nn
        >>> cfgs = [TrainConfig(iterations=5, seed=s) for s in (0, 1)]
        >>> why_not_batchable([nn.Linear(2, 2), nn.Linear(2, 2)], cfgs)  # None: they can
        >>> why_not_batchable([nn.Linear(2, 2), nn.Linear(2, 3)], cfgs)
        'the members are not one architecture (different parameter names, shapes or dtypes)'
        >>> why_not_batchable([nn.Linear(2, 2)] * 2, [cfgs[0], TrainConfig(iterations=6, seed=1)])
        'the members train with different configs (only the seed may differ)'
    """
    if len(models) != len(configs):
        raise ConfigError(f"got {len(models)} models and {len(configs)} configs; give one config per model")
    if len(models) < 2:
        return "one member: nothing to batch"
    if not _same_except_seed(configs):
        return "the members train with different configs (only the seed may differ)"
    config = configs[0]
    if config.amp or config.channels_last:
        return "amp and channels_last (CUDA-only paths) are not batched"
    if config.num_workers > 0:
        return f"num_workers={config.num_workers}: each member would start its own data loader workers"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "under torchrun (WORLD_SIZE > 1) each process trains one DDP model"
    if train_set is not None and (is_stream(train_set) or dataset_len(train_set) is None):
        return "the training data is a stream: it has one order, not one per seed"
    first = _signature(models[0])
    if any(type(m) is not type(models[0]) or _signature(m) != first for m in models[1:]):
        return "the members are not one architecture (different parameter names, shapes or dtypes)"
    for model in models:
        problem = architecture_problem(model)
        if problem is not None:
            return f"{type(model).__name__}: {problem}"
    return None


def batchable(models: Sequence[nn.Module], configs: Sequence[TrainConfig], train_set: Any = None) -> bool:
    """True if :func:`train_ensemble` can train these members together (:func:`why_not_batchable`)."""
    return why_not_batchable(models, configs, train_set) is None


# --- the ensemble -------------------------------------------------------------------------------------


class _Stack(nn.Module):
    """The stacked tensors as parameters of one module, so :func:`hold_masks` holds them as it holds a model."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.names = list(tensors)
        for i, name in enumerate(self.names):
            t = tensors[name]
            self.register_parameter(f"p{i}", nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad))

    def by_name(self) -> dict[str, nn.Parameter]:
        return {name: getattr(self, f"p{i}") for i, name in enumerate(self.names)}


@torch.no_grad()
def _accuracies(base: nn.Module, params: Mapping[str, torch.Tensor], dataset: Any, device: torch.device) -> list[float]:
    """Top-1 accuracy (percent) of every member on ``dataset``, as :func:`ticket_zoo.train.evaluate`."""
    from torch.func import functional_call, vmap

    def logits(p: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, p, (x,))

    k = next(iter(params.values())).shape[0]
    correct = torch.zeros(k, dtype=torch.long, device=device)
    total = 0
    was_training = base.training
    base.eval()
    try:
        for x, y, *_ in sequential_batches(dataset, 512):
            x, y = x.to(device), torch.as_tensor(y).to(device)
            correct += (vmap(logits, in_dims=(0, None))(params, x).argmax(dim=-1) == y).sum(dim=1)
            total += int(y.numel())
    finally:
        base.train(was_training)
    if total == 0:
        raise ConfigError("evaluation dataset is empty; give a validation/test set with at least one example")
    return [100.0 * int(c) / total for c in correct.cpu()]


def train_ensemble(
    members: Sequence[Member],
    train_set: Any,
    val_set: Any,
    *,
    test_set: Any = None,
    final_model: str = "best",
    progress: bool | str = False,
    losses: list[list[float]] | None = None,
) -> list[TrainResult]:
    """Train ``members`` together; one :class:`~ticket_zoo.train.TrainResult` each, in order.

    Each member's run is the one :func:`ticket_zoo.train.train` gives ``member.model`` with
    ``member.config`` and ``member.masks`` (see the module docstring for how, and for what cannot be
    batched: a :class:`ConfigError` says why). Afterwards each model holds its best-val weights
    (``final_model="best"``) or its last ones (``"last"``). ``losses``, if given, gets one list of the
    K training losses per step. ``result.seconds`` is the whole ensemble's wall time (every member
    trained during all of it). Nothing is checkpointed: a killed ensemble restarts from step 0.
    """
    from torch.func import functional_call, stack_module_state, vmap

    t0 = time.perf_counter()
    if final_model not in ("last", "best"):
        raise ConfigError(f"final_model must be 'last' or 'best', got {final_model!r}")
    if val_set is None:
        raise ConfigError("val_set is required: it selects the best weights (carve it from train)")
    configs = [m.config for m in members]
    for c in configs:
        if not isinstance(c, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig (use TrainConfig.from_dict), got {type(c).__name__}")
        c.validate()
    models = [m.model for m in members]
    problem = why_not_batchable(models, configs, train_set)
    if problem is not None:
        raise ConfigError(f"cannot train these {len(members)} runs as one ensemble: {problem}; train them one by one")
    config, k = configs[0], len(members)
    device = _dist.setup(config.device).device
    total, spe = step_budget(config, train_set, config.batch_size)
    eval_every = config.eval_every or spe or total

    for m in members:
        m.model.to(device)
        if m.masks:
            apply_masks_(m.model, m.masks)
    params, _ = stack_module_state(models)  # no buffers: why_not_batchable refused them
    stack = _Stack(params)
    stacked = stack.by_name()
    base = copy.deepcopy(models[0]).to("meta")  # the architecture only; weights come from `stacked`
    base.train()
    optimizer = build_optimizer([p for p in stack.parameters() if p.requires_grad], config)
    # hold_masks itself, on the stacked tensors: a member without a mask for a tensor keeps all of it.
    masks = {}
    for i, name in enumerate(stack.names):
        if any(m.masks and name in m.masks for m in members):
            shape = stacked[name].shape[1:]
            full = torch.ones(shape, dtype=torch.bool)
            masks[f"p{i}"] = torch.stack([(m.masks or {}).get(name, full).to("cpu") for m in members])
    handle = hold_masks(stack, optimizer, masks) if masks else None
    scheduler = build_scheduler(optimizer, config, total, steps_per_epoch=spe)

    def member_loss(p: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(base, p, (x,)), y)

    batched_loss = vmap(member_loss)
    seeds = [c.seed for c in configs]
    n = len(train_set)
    samplers = [GlobalBatches(n, config.batch_size, s, 0, 1) for s in seeds]
    loaders: list[Any] = [None] * k
    if not batch_indexable(train_set):  # the DataLoader path of train(), one per member
        loaders = [
            torch.utils.data.DataLoader(train_set, batch_sampler=s, num_workers=0, generator=quiet_generator())
            for s in samplers
        ]
    aug_gen = torch.Generator() if config.augment != "none" else None

    logs = [None if m.log_path is None else Path(m.log_path) for m in members]
    for path in logs:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, "")
    histories: list[list[dict]] = [[] for _ in members]
    best_val: list[float | None] = [None] * k
    best_step = [0] * k
    best_state: list[dict[str, torch.Tensor] | None] = [None] * k
    loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
    loss_count = 0
    desc = progress if isinstance(progress, str) else f"ensemble of {k}"
    bar = _progress.bar(total=total, desc=desc, enabled=progress is not False, leave=not isinstance(progress, str))

    def evaluate_now(step: int, lr: float) -> None:
        nonlocal loss_count
        with torch.no_grad():
            current = {name: p.detach() for name, p in stacked.items()}
        val = _accuracies(base, current, val_set, device)
        test = _accuracies(base, current, test_set, device) if test_set is not None else None
        train_loss = (loss_sum / max(1, loss_count)).tolist()
        for j in range(k):
            entry = {"step": step, "epoch": step / spe if spe else None, "train_loss": train_loss[j],
                     "val_acc": val[j], "lr": lr}  # fmt: skip
            if test is not None:
                entry["test_acc"] = test[j]
            histories[j].append(entry)
            if best_val[j] is None or val[j] > best_val[j]:  # strict: the earliest of equal accuracies wins
                best_val[j], best_step[j] = val[j], step
                best_state[j] = {name: t[j].clone() for name, t in current.items()}
            if logs[j] is not None:
                append_line(logs[j], json.dumps(entry))
        loss_sum.zero_()
        loss_count = 0
        bar.set_postfix(val=f"{max(val):.2f}")

    iters: list[Any] = []
    try:
        with torch.random.fork_rng(devices=[]):  # nothing here draws from it; the caller's stays as it was
            for step in range(total):
                epoch, start = divmod(step, spe)
                if start == 0 or not iters:  # a new epoch: each member's own permutation
                    for s in samplers:
                        s.set_position(epoch, start)
                    iters = [epoch_batches(train_set, s, loader) for s, loader in zip(samplers, loaders, strict=True)]
                xs, ys = [], []
                for j, it in enumerate(iters):
                    x, y, *_ = next(it)
                    x, y = x.to(device), torch.as_tensor(y).to(device)
                    if aug_gen is not None:
                        aug_gen.manual_seed(derive_seed("aug", seeds[j], step, 0))
                        x = augment_batch(x, config.augment, aug_gen)
                    xs.append(x)
                    ys.append(y)
                step_losses = batched_loss(stacked, torch.stack(xs), torch.stack(ys))
                optimizer.zero_grad(set_to_none=True)
                step_losses.sum().backward()  # each slice's gradient is its member's own
                optimizer.step()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                detached = step_losses.detach()
                loss_sum += detached.double()
                loss_count += 1
                if losses is not None:
                    losses.append(detached.tolist())
                bar.update(1)
                if (step + 1) % eval_every == 0 or step + 1 == total:
                    evaluate_now(step + 1, lr)
    finally:
        bar.close()
        if handle is not None:
            handle.remove()

    # Test accuracy of the best-val weights (the last ones where the best is the last evaluation).
    final_test: list[float | None] = [h[-1].get("test_acc") for h in histories]
    test_acc = list(final_test)
    if test_set is not None and any(b != total for b in best_step):
        best = {name: torch.stack([s[name] for s in best_state]) for name in stack.names}
        at_best = _accuracies(base, best, test_set, device)
        test_acc = [final_test[j] if best_step[j] == total else at_best[j] for j in range(k)]
    with torch.no_grad():
        for j, m in enumerate(members):
            state = best_state[j] if final_model == "best" else {n_: t[j] for n_, t in stacked.items()}
            for name, p in m.model.named_parameters():
                p.copy_(state[name])
    seconds = time.perf_counter() - t0
    return [
        TrainResult(
            best_val_acc=float(best_val[j]),
            best_step=best_step[j],
            final_val_acc=histories[j][-1]["val_acc"],
            test_acc=test_acc[j],
            final_test_acc=final_test[j],
            steps=total,
            seconds=seconds,
            captured=None,
            history=histories[j],
        )
        for j in range(k)
    ]
