"""The one training loop, shared by ticket finding (IMP) and transfer.

It knows nothing about tickets: it trains an ``nn.Module`` on a dataset of ``(image, label)``
pairs, optionally holding a dict of masks ``{parameter name: bool tensor}`` exact (pruned weights
and their optimizer state stay zero), evaluates on a validation set, and keeps the best-val
weights. What makes it fit for reproducible research:

* **Deterministic.** The sample order of epoch ``e`` is ``randperm`` under a generator seeded by
  ``(seed, e)``; the augmentation of step ``s`` draws from a generator seeded by ``(seed, s)``, and
  the global RNG (dropout) is re-seeded from ``(seed, s)`` before step ``s``, inside a forked RNG
  scope, so the caller's RNG is left alone. Same seed, same weights, bit for bit on CPU.
* **Late resetting.** ``start_step=k`` trains steps ``k..T`` of the run that ``config`` describes:
  the schedule is positioned at step ``k`` and every step sees the batch (indices, augmentation,
  dropout) it has in the run from step 0. The optimizer state starts fresh, as in Frankle et al.
  (2019/2020) and open_lth's ``start_step``: only the weights (θk) carry over.
* **Resumable.** With ``checkpoint_dir`` the whole state (model, optimizer, scheduler, AMP
  scaler, RNG states, best-val and captured weights, history, position in the epoch) is written
  atomically as one safetensors file; a run killed at any point and started again with the same
  arguments ends with the same weights and numbers as one that never stopped. Nothing is pickled.
* **Distributed.** Under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in DDP and each
  rank takes an interleaved slice of every global batch, so the global sample order is that of a
  one-process run.

Example:
    >>> cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, iterations=200, batch_size=32)
    >>> result = train(model, splits.train, splits.val, cfg, masks=ticket.masks)  # doctest: +SKIP
    >>> result.best_val_acc, result.test_acc  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._dist import Dist
from ._dist import setup as _dist_setup
from ._io import append_line, atomic_write_bytes, atomic_write_text
from .augment import AUGMENTATIONS, augment_batch
from .config import Config, _is_int, setting
from .errors import CheckpointError, ConfigError
from .masked import apply_masks_, hold_masks
from .optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from .runfiles import fingerprint

__all__ = ["TrainConfig", "TrainResult", "build_optimizer", "build_scheduler", "evaluate", "train"]

CHECKPOINT_NAME = "checkpoint.safetensors"
_CHECKPOINT_FORMAT = "ticket-zoo-train-checkpoint"
_CHECKPOINT_VERSION = 1
# The sample order of epoch e comes from a generator seeded with seed * _SEED_STRIDE + e.
_SEED_STRIDE = 1_000_003


# --- config ----------------------------------------------------------------------------------------


def _optimizer_names() -> tuple[str, ...]:
    return OPTIMIZERS.names()


def _schedule_names() -> tuple[str, ...]:
    return SCHEDULES.names()


def _augment_names() -> tuple[str, ...]:
    return AUGMENTATIONS.names()


@dataclass
class TrainConfig(Config):
    """Everything that decides a training run (with the data, model, masks and seed).

    The budget is exactly one of ``iterations`` or ``epochs`` (an epoch is
    ``len(train_set) // batch_size`` iterations: the last partial batch is dropped so every step
    sees a full global batch). ``milestones`` are in the budget's unit. ``warmup`` is in iterations.

    Example:
        >>> TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05, epochs=2, schedule="cosine").validate()
        >>> TrainConfig.from_dict({"lr": 0.05, "iterations": 10}).lr
        0.05
        >>> TrainConfig(iterations=10, augment="cifr").validate()
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: augment must be one of 'none', 'cifar', got 'cifr' (did you mean 'cifar'?)
    """

    section: ClassVar[str] = "train config"

    optimizer: str = setting("sgd", help="optimizer", choices=_optimizer_names)
    lr: float = setting(0.1, help="peak learning rate", low=0, low_open=True, flag="--lr")
    momentum: float = setting(0.0, help="SGD momentum", low=0)
    nesterov: bool = setting(False, help="Nesterov momentum (SGD with momentum > 0)")
    weight_decay: float = setting(0.0, help="weight decay (decoupled for adamw)", low=0)
    betas: tuple[float, float] = setting((0.9, 0.999), help="Adam betas", low=0, high=1, high_open=True)
    eps: float = setting(1e-8, help="Adam epsilon", low=0, low_open=True)
    schedule: str = setting("constant", help="learning-rate schedule", choices=_schedule_names)
    milestones: tuple[float, ...] = setting((), help="step-schedule milestones, in the budget's unit", low=0, low_open=True)
    gamma: float = setting(0.1, help="step-schedule decay factor", low=0, low_open=True)
    warmup: int = setting(0, help="linear warmup, in iterations", low=0)
    iterations: int | None = setting(
        None, help="training budget in iterations", low=1, flag="--iterations", replaces=("epochs",)
    )
    epochs: float | None = setting(
        None, help="training budget in epochs", low=0, low_open=True, flag="--epochs", replaces=("iterations",)
    )
    batch_size: int = setting(64, help="global batch size", low=1, flag="--batch-size")
    eval_every: int | None = setting(None, help="evaluate every N iterations (default: once per epoch)", low=1)
    seed: int = setting(0, help="seed of the data order, augmentation and dropout", low=0, high=2**32, high_open=True)
    augment: str = setting("none", help="batch augmentation", choices=_augment_names)
    amp: bool = setting(False, help="mixed precision on CUDA")
    channels_last: bool = setting(False, help="channels-last memory format on CUDA")
    device: str = setting("auto", help="auto, cpu, cuda or cuda:N", fingerprint=False)
    num_workers: int = setting(0, help="data loader worker processes", low=0, fingerprint=False)
    checkpoint_every: int | None = setting(None, help="checkpoint every N iterations", low=1, fingerprint=False)

    @classmethod
    def recipe_kind(cls) -> str:
        return "find"

    def check(self) -> None:
        """The rules that relate fields (the declarations checked types, names and ranges).

        Example:
            >>> TrainConfig(lr=-1, iterations=5).validate()
            Traceback (most recent call last):
            ...
            ticket_zoo.errors.ConfigError: lr must be a positive number, got -1
        """
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ConfigError("nesterov needs optimizer 'sgd' with momentum > 0")
        if (self.iterations is None) == (self.epochs is None):
            raise ConfigError("give exactly one budget: iterations or epochs (got both or neither)")
        budget = self.iterations if self.iterations is not None else self.epochs
        ms = tuple(self.milestones)
        if self.schedule == "step" and not ms:
            raise ConfigError("milestones must not be empty for schedule 'step' (e.g. milestones: [80, 120])")
        if self.schedule != "step" and ms:
            raise ConfigError(f"milestones only apply to schedule 'step', but schedule is {self.schedule!r}")
        if any(b <= a for a, b in zip(ms, ms[1:], strict=False)):
            raise ConfigError(f"milestones must be positive and strictly increasing, got {list(ms)}")
        if ms and ms[-1] > budget:
            raise ConfigError(
                f"milestones {list(ms)} go past the budget ({budget}); they are in the budget's unit"
            )
        if self.iterations is not None and self.warmup >= self.iterations:
            raise ConfigError(f"warmup ({self.warmup}) must be shorter than iterations ({self.iterations})")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device is {self.device!r} but CUDA is not available; use device: auto or cpu")


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
        >>> r = train(model, tr, va, TrainConfig(iterations=10), capture_at=0)  # doctest: +SKIP
        >>> r.history[-1]["val_acc"] == r.final_val_acc  # doctest: +SKIP
        True
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


# --- optimizer and schedule ------------------------------------------------------------------------


# --- data ------------------------------------------------------------------------------------------


def _batch_indexable(dataset: Any) -> bool:
    """True for datasets that return a whole batch for a tensor of indices (one op, no collation)."""
    if isinstance(dataset, torch.utils.data.TensorDataset):
        return True
    data = sys.modules.get("ticket_zoo.data")  # if it was never imported, the dataset is not one of its own
    return data is not None and isinstance(dataset, data.ImageTensorDataset)


def _derive_seed(*parts: Any) -> int:
    """A 63-bit seed for one named random stream (e.g. ``("aug", seed, epoch, rank)``); streams never overlap."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def _seed_global_rng(seed: int, device: torch.device) -> None:
    """Seed the global RNG of the CPU and of ``device``. (``torch.manual_seed`` would also seed every
    other backend, through a lazy-call path that formats a stack trace: ~1 ms, too slow per step.)"""
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)


def _quiet_generator() -> torch.Generator:
    """For DataLoader(generator=...): each new DataLoader iterator draws a worker base seed, by default
    from the global RNG, which would shift the dropout stream by a count that differs after a resume."""
    return torch.Generator().manual_seed(0)


def _is_stream(dataset: Any) -> bool:
    return isinstance(dataset, torch.utils.data.IterableDataset)


def _batches(dataset: Any, batch_size: int, num_workers: int = 0, pin: bool = False) -> Iterator[tuple]:
    """Sequential batches of a dataset (all of it), for evaluation."""
    if _batch_indexable(dataset):
        for start in range(0, len(dataset), batch_size):
            yield tuple(dataset[torch.arange(start, min(start + batch_size, len(dataset)))])
        return
    yield from torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin, generator=_quiet_generator()
    )


class _GlobalBatches(torch.utils.data.Sampler):
    """Index lists of one epoch for one rank: global batch ``b`` is ``perm[b*B:(b+1)*B]`` and rank ``r``
    takes ``[r::world]`` of it. Mutable position, so one persistent DataLoader serves every epoch."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.n // self.batch_size - self.start

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        for b in range(self.start, self.n // self.batch_size):
            yield perm[b * self.batch_size : (b + 1) * self.batch_size][self.rank :: self.world].tolist()


def _epoch_batches(dataset: Any, sampler: _GlobalBatches, loader: Any) -> Iterator[tuple]:
    if loader is None:  # batch-indexable data in the main process: one indexing op per batch
        for idx in sampler:
            yield tuple(dataset[torch.tensor(idx, dtype=torch.long)])
    else:
        yield from loader


def _stream_batches(
    dataset: Any, local_batch: int, rank: int, world: int, skip: int, num_workers: int
) -> Iterator[tuple]:
    """Global batches of a stream in stream order, pass after pass; skips ``skip`` global batches.

    A stream cannot be indexed, so resuming re-reads (and drops) the batches already consumed, and
    under DDP every rank reads each whole global batch and keeps its slice (same order as 1 process).
    Shuffling a stream is the stream's business (e.g. a seeded shuffle buffer)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=local_batch * world,
        drop_last=True,
        num_workers=num_workers,
        generator=_quiet_generator(),
    )
    seen = 0
    while True:
        empty = True
        for batch in loader:
            empty = False
            seen += 1
            if seen > skip:
                yield tuple(t[rank::world] for t in batch)
        if empty:
            raise ConfigError(
                f"training stream yields fewer than one batch of {local_batch * world} examples"
            )


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
        >>> evaluate(model, splits.test)  # doctest: +SKIP
        97.5
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
        for x, y, *_ in _batches(dataset, batch_size, num_workers=num_workers):
            x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise ConfigError("evaluation dataset is empty; give a validation/test set with at least one example")
    return 100.0 * correct / total


# --- distributed -----------------------------------------------------------------------------------

# The process group lives in _dist (find and transfer join it through the same function); train
# keeps these names for its own use.
_Dist = Dist


def _setup(config: TrainConfig) -> _Dist:
    """Pick the device; under torchrun (``WORLD_SIZE > 1``), join or start the process group."""
    return _dist_setup(config.device)


# --- checkpoints -----------------------------------------------------------------------------------


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous CPU copy of the state dict (safe to keep while training goes on)."""
    return {
        k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        for k, v in module.state_dict().items()
    }


def _fingerprint(
    config: TrainConfig,
    model: nn.Module,
    masks: Mapping[str, torch.Tensor] | None,
    n_train: Any,
    n_val: Any,
    capture_at: int | None,
    start_step: int,
) -> str:
    """What a checkpoint must agree on to be resumed: config (minus housekeeping), model shapes, masks,
    data sizes, the capture point (a checkpoint past it must already hold the captured state) and the
    start step (a late-resetting run from step k is another run than one from step 0)."""
    data = {
        "config": config.fingerprint_dict(),
        "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
        "n_train": n_train,
        "n_val": n_val,
        "capture_at": capture_at,
        "start_step": start_step,
    }
    return fingerprint(data, tensors=masks)


def _fix_group_types(saved: list[dict], current: list[dict]) -> list[dict]:
    """JSON turns tuples (Adam's betas) into lists; give them back their original type."""
    out = []
    for s, c in zip(saved, current, strict=True):
        out.append({k: tuple(v) if isinstance(c.get(k), tuple) else v for k, v in s.items()})
    return out


@dataclass
class _State:
    """Loop state that is not inside the model/optimizer/scheduler objects."""

    step: int = 0  # steps of the run done so far (from 0, not from start_step)
    start_step: int = 0
    history: list[dict] = field(default_factory=list)
    best_val: float | None = None
    best_step: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    captured: dict[str, torch.Tensor] | None = None
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    loss_count: int = 0
    eval_workers: int = 0  # loader workers for evaluation too: photo sets decode per item (not saved)


def _save_checkpoint(
    path: Path, ctx: _Dist, module, optimizer, scheduler, scaler, st: _State, fingerprint: str
) -> None:
    """Write the resumable state atomically (collective: every rank must call it)."""
    per_rank = {
        "rng.cpu": torch.get_rng_state(),
        "loss": st.loss_sum.detach().to("cpu", torch.float64).reshape(1),
    }
    if ctx.device.type == "cuda":
        per_rank["rng.cuda"] = torch.cuda.get_rng_state(ctx.device)
    gathered = {k: ctx.gather(v) for k, v in per_rank.items()}
    if not ctx.main:
        return
    tensors: dict[str, torch.Tensor] = {}
    for k, vals in gathered.items():
        for r, v in enumerate(vals):
            tensors[f"rank{r}.{k}"] = v
    tensors.update({f"model.{k}": v for k, v in _snapshot(module).items()})
    if st.best_state is not None:
        tensors.update({f"best.{k}": v for k, v in st.best_state.items()})
    if st.captured is not None:
        tensors.update({f"captured.{k}": v for k, v in st.captured.items()})
    osd = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, s in osd["state"].items():
        for key, v in s.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{key}"] = (
                    v.detach().to("cpu").clone(memory_format=torch.contiguous_format)
                )
            else:
                scalars.setdefault(str(idx), {})[key] = v
    meta = {
        "step": st.step,
        "start_step": st.start_step,
        "world_size": ctx.world,
        "fingerprint": fingerprint,
        "history": st.history,
        "best_val": st.best_val,
        "best_step": st.best_step,
        "loss_count": st.loss_count,
        "has_best": st.best_state is not None,
        "has_captured": st.captured is not None,
        "param_groups": osd["param_groups"],
        "optim_scalars": scalars,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "torch": torch.__version__,
    }
    data = safetensors.torch.save(
        tensors,
        metadata={
            "format": _CHECKPOINT_FORMAT,
            "format_version": str(_CHECKPOINT_VERSION),
            "state": json.dumps(meta),
        },
    )
    atomic_write_bytes(path, data)


def _load_checkpoint(
    path: Path, ctx: _Dist, module, optimizer, scheduler, scaler, fingerprint: str
) -> _State:
    """Restore everything :func:`_save_checkpoint` wrote; raise CheckpointError if it is not this run's."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if header.get("format") != _CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path} is not a ticket-zoo training checkpoint; remove it or use another checkpoint_dir"
            )
        if header.get("format_version") != str(_CHECKPOINT_VERSION):
            raise CheckpointError(
                f"{path} has checkpoint format version {header.get('format_version')!r}, expected {_CHECKPOINT_VERSION}"
            )
        meta = json.loads(header["state"])
    except CheckpointError:
        raise
    except Exception as e:  # truncated/corrupt file: safetensors or json complain in their own words
        raise CheckpointError(f"cannot read checkpoint {path}: {e}; delete it to start the run afresh") from e
    if meta["fingerprint"] != fingerprint:
        raise CheckpointError(
            f"checkpoint {path} belongs to a different run (config, model, masks or data differ); "
            "use a fresh checkpoint_dir or restore the original arguments"
        )
    if meta["world_size"] != ctx.world:
        raise CheckpointError(
            f"checkpoint {path} was written by {meta['world_size']} process(es), this run has {ctx.world}; "
            "resume with the same number of processes"
        )

    def group(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    module.load_state_dict(group("model."))
    state: dict[int, dict[str, Any]] = {}
    for k, v in group("optim.").items():
        idx, key = k.split(".", 1)
        state.setdefault(int(idx), {})[key] = v
    for idx, s in meta["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(s)
    groups = _fix_group_types(meta["param_groups"], optimizer.state_dict()["param_groups"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict(meta["scheduler"])
    if scaler is not None and meta["scaler"]:
        scaler.load_state_dict(meta["scaler"])
    r = f"rank{ctx.rank}."
    torch.set_rng_state(tensors[r + "rng.cpu"])
    if ctx.device.type == "cuda" and r + "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors[r + "rng.cuda"], ctx.device)
    st = _State(
        step=meta["step"],
        start_step=meta["start_step"],
        history=meta["history"],
        best_val=meta["best_val"],
        best_step=meta["best_step"],
        best_state=group("best.") if meta["has_best"] else None,
        captured=group("captured.") if meta["has_captured"] else None,
        loss_sum=tensors[r + "loss"].reshape(()).to(ctx.device),
        loss_count=meta["loss_count"],
    )
    return st


def _clean_stale_tmp(directory: Path) -> None:
    """Remove temp files that a writer killed mid-write left behind (they are never read)."""
    for p in directory.glob(f".{CHECKPOINT_NAME}.*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()


# --- the loop --------------------------------------------------------------------------------------


def _budget(config: TrainConfig, train_set: Any, global_batch: int) -> tuple[int, int | None]:
    """(total iterations, iterations per epoch or None for a stream of unknown length)."""
    n = _len(train_set)
    if n is not None and not _is_stream(train_set):
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

    Under torchrun every rank calls ``train``; each rank returns the same result; only rank 0 writes
    files. With augmentation each rank draws from its own generator, so augmented DDP runs see the
    same samples as a one-process run but not the same crops; BatchNorm statistics are per rank.

    Example:
        >>> cfg = TrainConfig(optimizer="adam", lr=1e-3, epochs=3, batch_size=64, augment="cifar")
        >>> r = train(model, s.train, s.val, cfg, test_set=s.test, capture_at=0, checkpoint_dir="runs/a")  # doctest: +SKIP
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
    ctx = _setup(config)
    if config.batch_size % ctx.world:
        raise ConfigError(
            f"batch_size ({config.batch_size}) must be divisible by the number of processes ({ctx.world})"
        )
    local_batch = config.batch_size // ctx.world
    total, spe = _budget(config, train_set, config.batch_size)
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
    ckpt_every = config.checkpoint_every or eval_every
    cuda = ctx.device.type == "cuda"
    use_amp = config.amp and cuda
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
    scheduler = build_scheduler(optimizer, config, total, steps_per_epoch=spe, start_step=start_step)
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    fingerprint = _fingerprint(config, module, masks, _len(train_set), _len(val_set), capture_at, start_step)

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if ckpt_path is not None and ctx.main:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_tmp(ckpt_path.parent)

    rng_devices = [ctx.device] if cuda else []
    with torch.random.fork_rng(devices=rng_devices, device_type="cuda"):
        # Global RNG (dropout etc.) seeded per run and rank, inside a fork so the caller's RNG is untouched.
        torch.manual_seed(_derive_seed("global", config.seed, ctx.rank))
        if ckpt_path is not None and ckpt_path.exists():
            st = _load_checkpoint(ckpt_path, ctx, module, optimizer, scheduler, scaler, fingerprint)
        else:
            st = _State(
                step=start_step,
                start_step=start_step,
                loss_sum=torch.zeros((), dtype=torch.float64, device=ctx.device),
            )
        st.eval_workers = config.num_workers
        if capture_at == start_step and st.captured is None:
            st.captured = _snapshot(module)
        if log_path is not None and ctx.main:  # rewrite from history: a resumed run never duplicates lines
            atomic_write_text(log_path, "".join(json.dumps(h) + "\n" for h in st.history))
        net = (
            nn.parallel.DistributedDataParallel(module, device_ids=[ctx.device] if cuda else None)
            if ctx.on
            else module
        )

        def save() -> None:
            if ckpt_path is not None:
                _save_checkpoint(ckpt_path, ctx, module, optimizer, scheduler, scaler, st, fingerprint)

        try:
            _run(net, module, train_set, val_set, test_set, config, ctx, st, optimizer, scheduler, scaler,
                 total=total, spe=spe, local_batch=local_batch, eval_every=eval_every, ckpt_every=ckpt_every,
                 capture_at=capture_at, save=save, log_path=log_path, progress=progress)  # fmt: skip
            result = _finish(module, st, test_set, ctx, final_model, total)
        finally:
            if handle is not None:
                handle.remove()
    result.seconds = time.perf_counter() - t0
    return result


def _len(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


def _run(net, module, train_set, val_set, test_set, config, ctx, st, optimizer, scheduler, scaler, *,
         total, spe, local_batch, eval_every, ckpt_every, capture_at, save, log_path, progress) -> None:  # fmt: skip
    """The iterations themselves, from ``st.step`` to ``total``.

    Everything random in step ``s`` comes from streams seeded by ``(seed, s)`` (batch indices through
    the epoch's permutation, augmentation, dropout), so step ``s`` is the same whether the loop got
    there from step 0, from a checkpoint or from a late-resetting ``start_step``."""
    cuda = ctx.device.type == "cuda"
    augment = aug_gen = None
    if config.augment != "none":
        augment = augment_batch
        aug_gen = torch.Generator()

    stream = spe is None or _is_stream(train_set)
    sampler = loader = None
    if not stream:
        sampler = _GlobalBatches(len(train_set), config.batch_size, config.seed, ctx.rank, ctx.world)
        if config.num_workers > 0 or not _batch_indexable(train_set):
            loader = torch.utils.data.DataLoader(
                train_set, batch_sampler=sampler, num_workers=config.num_workers,
                pin_memory=cuda, persistent_workers=config.num_workers > 0, generator=_quiet_generator(),
            )  # fmt: skip
    else:
        batches = _stream_batches(train_set, local_batch, ctx.rank, ctx.world, st.step, config.num_workers)

    desc = progress if isinstance(progress, str) else "train"
    # A named bar belongs to a caller's outer bar (find's levels, transfer's cells): clear it when done
    # so the terminal keeps one line per level/cell rather than a stack of finished inner bars.
    bar = tqdm(
        total=total,
        initial=st.step,
        desc=desc,
        disable=progress is False or not ctx.main,
        dynamic_ncols=True,
        leave=not isinstance(progress, str),
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.float16) if config.amp and cuda else contextlib.nullcontext()
    )
    net.train()
    try:
        if st.step == total and not st.history:  # start_step == total: nothing to train, one evaluation
            _evaluate_now(
                module, val_set, test_set, ctx, st, spe, optimizer.param_groups[0]["lr"], log_path, bar
            )
            save()
        while st.step < total:
            if not stream:
                epoch, start = divmod(st.step, spe)
                sampler.set_position(epoch, start)
                batches = _epoch_batches(train_set, sampler, loader)
            for x, y, *_ in batches:
                # Dropout (and any other global-RNG draw) of step s: a stream of (seed, s, rank).
                _seed_global_rng(_derive_seed("global", config.seed, st.step, ctx.rank), ctx.device)
                x = x.to(ctx.device, non_blocking=True)
                y = torch.as_tensor(y).to(ctx.device, non_blocking=True)
                if augment is not None:
                    aug_gen.manual_seed(_derive_seed("aug", config.seed, st.step, ctx.rank))
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
                if st.step == capture_at:
                    st.captured = _snapshot(module)
                if st.step % eval_every == 0 or st.step == total:
                    _evaluate_now(module, val_set, test_set, ctx, st, spe, lr, log_path, bar)
                if st.step % ckpt_every == 0 or st.step == total:
                    save()
                if st.step == total or (not stream and st.step % spe == 0):
                    break
    finally:
        bar.close()


def _evaluate_now(module, val_set, test_set, ctx: _Dist, st: _State, spe, lr: float, log_path, bar) -> None:
    """One evaluation: rank 0 measures, every rank gets the numbers and updates best/history alike."""
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
        accs[0] = evaluate(module, val_set, device=ctx.device, num_workers=st.eval_workers)
        if test_set is not None:
            accs[1] = evaluate(module, test_set, device=ctx.device, num_workers=st.eval_workers)
    ctx.broadcast_(accs)
    val_acc = float(accs[0])
    entry = {
        "step": st.step,
        "epoch": st.step / spe if spe else None,
        "train_loss": train_loss,
        "val_acc": val_acc,
        "lr": lr,
    }
    if test_set is not None:
        entry["test_acc"] = float(accs[1])
    st.history.append(entry)
    st.loss_sum.zero_()
    st.loss_count = 0
    if st.best_val is None or val_acc > st.best_val:  # strict: the earliest of equal accuracies wins
        st.best_val, st.best_step, st.best_state = val_acc, st.step, _snapshot(module)
    if log_path is not None and ctx.main:
        append_line(log_path, json.dumps(entry))
    bar.set_postfix(loss="-" if train_loss is None else f"{train_loss:.4f}", val=f"{val_acc:.2f}")


def _finish(module, st: _State, test_set, ctx: _Dist, final_model: str, total: int) -> TrainResult:
    """Test accuracies (best-val and last weights) and the final weights in ``module``."""
    last = st.history[-1]
    test_acc = final_test = None
    if test_set is not None:
        accs = torch.full((2,), float("nan"), dtype=torch.float64)
        if ctx.main:
            accs[1] = evaluate(module, test_set, device=ctx.device, num_workers=st.eval_workers)
            if st.best_step == st.step:
                accs[0] = accs[1]
            else:
                last_state = _snapshot(module) if final_model == "last" else None
                module.load_state_dict(st.best_state)
                accs[0] = evaluate(module, test_set, device=ctx.device, num_workers=st.eval_workers)
                if last_state is not None:
                    module.load_state_dict(last_state)
        ctx.broadcast_(accs)
        test_acc, final_test = float(accs[0]), float(accs[1])
    if final_model == "best" and st.best_step != st.step:
        module.load_state_dict(st.best_state)
    return TrainResult(
        best_val_acc=float(st.best_val),
        best_step=st.best_step,
        final_val_acc=last["val_acc"],
        test_acc=test_acc,
        final_test_acc=final_test,
        steps=total - st.start_step,
        seconds=0.0,
        captured=st.captured,
        history=[dict(h) for h in st.history],
        start_step=st.start_step,
    )
