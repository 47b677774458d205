"""The training checkpoint: one safetensors file that resumes a run exactly where it stopped.

What it holds: the model, the optimizer state (tensors as tensors, scalars as JSON), the scheduler
and AMP scaler state, every rank's RNG state and running train loss (uint8/float tensors), the loop's
:class:`TrainState` (step, history, best-val and captured weights) and a fingerprint of what the run
must agree on to be resumed (:func:`run_fingerprint`). Nothing is pickled: the header is JSON and
the file is written atomically (temp file + ``os.replace``), so a run killed mid-write leaves the
previous checkpoint intact and a stale temp file that :meth:`Checkpoint.prepare` removes.

Example:
    >>> import tempfile
    >>> model = nn.Linear(2, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> parts = Trainables(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))
    >>> tmp = tempfile.TemporaryDirectory()
    >>> ckpt = Checkpoint(Path(tmp.name) / CHECKPOINT_NAME, fingerprint="run-a")
    >>> ckpt.save(Dist(), parts, TrainState(step=3, history=[{"step": 3}]))
    >>> ckpt.load(Dist(), parts).step
    3
    >>> Checkpoint(ckpt.path, fingerprint="run-b").load(Dist(), parts)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ticket_zoo.errors.CheckpointError: checkpoint ... belongs to a different run (config, model, masks or data differ); ...
    >>> tmp.cleanup()
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from ._dist import Dist
from ._io import atomic_write_bytes
from .config import Config
from .errors import CheckpointError
from .runfiles import fingerprint

__all__ = ["CHECKPOINT_NAME", "Checkpoint", "TrainState", "Trainables", "run_fingerprint", "snapshot"]

CHECKPOINT_NAME = "checkpoint.safetensors"
_FORMAT = "ticket-zoo-train-checkpoint"
_VERSION = 1


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous CPU copy of the state dict (safe to keep while training goes on)."""
    return {
        k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        for k, v in module.state_dict().items()
    }


@dataclass
class TrainState:
    """The loop's mutable state that is not inside the model, optimizer or scheduler objects."""

    step: int = 0  # steps of the run done so far (from 0, not from start_step)
    start_step: int = 0
    history: list[dict] = field(default_factory=list)
    best_val: float | None = None
    best_step: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    captured: dict[str, torch.Tensor] | None = None
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    loss_count: int = 0


@dataclass
class Trainables:
    """The objects being trained, whose state a checkpoint holds beside :class:`TrainState`."""

    module: nn.Module  # unwrapped (not the DDP wrapper): its state_dict names are the model's
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None


def run_fingerprint(
    config: Config,
    model: nn.Module,
    masks: Mapping[str, torch.Tensor] | None,
    n_train: int | None,
    n_val: int | None,
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


@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint file of one run: ``path``, and the ``fingerprint`` it must carry to be resumed."""

    path: Path
    fingerprint: str

    def exists(self) -> bool:
        return self.path.exists()

    def prepare(self, ctx: Dist) -> None:
        """Create the folder and remove temp files a writer killed mid-write left (rank 0 only)."""
        if not ctx.main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for p in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # never read; only our own name
            with contextlib.suppress(OSError):
                p.unlink()

    def save(self, ctx: Dist, parts: Trainables, st: TrainState) -> None:
        """Write the resumable state atomically (collective: every rank must call it; rank 0 writes)."""
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
        tensors.update({f"model.{k}": v for k, v in snapshot(parts.module).items()})
        if st.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in st.best_state.items()})
        if st.captured is not None:
            tensors.update({f"captured.{k}": v for k, v in st.captured.items()})
        osd = parts.optimizer.state_dict()
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
            "fingerprint": self.fingerprint,
            "history": st.history,
            "best_val": st.best_val,
            "best_step": st.best_step,
            "loss_count": st.loss_count,
            "has_best": st.best_state is not None,
            "has_captured": st.captured is not None,
            "param_groups": osd["param_groups"],
            "optim_scalars": scalars,
            "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
            "torch": torch.__version__,
        }
        data = safetensors.torch.save(
            tensors,
            metadata={"format": _FORMAT, "format_version": str(_VERSION), "state": json.dumps(meta)},
        )
        atomic_write_bytes(self.path, data)

    def load(self, ctx: Dist, parts: Trainables) -> TrainState:
        """Restore everything :meth:`save` wrote into ``parts`` and this rank's RNG; return the loop state.

        Raises CheckpointError if the file is not a readable checkpoint of this very run."""
        path = self.path
        try:
            with safetensors.safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            if header.get("format") != _FORMAT:
                raise CheckpointError(
                    f"{path} is not a ticket-zoo training checkpoint; remove it or use another checkpoint_dir"
                )
            if header.get("format_version") != str(_VERSION):
                raise CheckpointError(
                    f"{path} has checkpoint format version {header.get('format_version')!r}, expected {_VERSION}"
                )
            meta = json.loads(header["state"])
        except CheckpointError:
            raise
        except Exception as e:  # truncated/corrupt file: safetensors or json complain in their own words
            raise CheckpointError(f"cannot read checkpoint {path}: {e}; delete it to start the run afresh") from e
        if meta["fingerprint"] != self.fingerprint:
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

        parts.module.load_state_dict(group("model."))
        state: dict[int, dict[str, Any]] = {}
        for k, v in group("optim.").items():
            idx, key = k.split(".", 1)
            state.setdefault(int(idx), {})[key] = v
        for idx, s in meta["optim_scalars"].items():
            state.setdefault(int(idx), {}).update(s)
        groups = _fix_group_types(meta["param_groups"], parts.optimizer.state_dict()["param_groups"])
        parts.optimizer.load_state_dict({"state": state, "param_groups": groups})
        parts.scheduler.load_state_dict(meta["scheduler"])
        if parts.scaler is not None and meta["scaler"]:
            parts.scaler.load_state_dict(meta["scaler"])
        r = f"rank{ctx.rank}."
        torch.set_rng_state(tensors[r + "rng.cpu"])
        if ctx.device.type == "cuda" and r + "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors[r + "rng.cuda"], ctx.device)
        return TrainState(
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


def _fix_group_types(saved: list[dict], current: list[dict]) -> list[dict]:
    """JSON turns tuples (Adam's betas) into lists; give them back their original type."""
    out = []
    for s, c in zip(saved, current, strict=True):
        out.append({k: tuple(v) if isinstance(c.get(k), tuple) else v for k, v in s.items()})
    return out
