"""Running under ``torchrun``: one process group, one rank that writes, outcomes every rank shares.

**Setup is explicit.** Every entry point (``find_tickets``, ``transfer``, ``train``) calls
:func:`setup` first, before anything is read or written. Under torchrun (``WORLD_SIZE > 1``) the
first call joins the process group (NCCL on CUDA, gloo on CPU) and registers its teardown with
``atexit`` (a bounded barrier, then ``destroy_process_group``: we started it, we end it); every later
call reuses that group and registers nothing, so calling it again (``find`` calls ``train`` once per
level) has no further effect. A group some other code started is used as it is and left to that code
to end. Without ``WORLD_SIZE > 1`` no group is joined and :func:`setup` only picks the device. Then:

* :func:`is_main`: rank 0 alone writes files, prints tables and shows progress bars. It gives the
  same answer before and after :func:`setup` (torchrun's ``RANK`` until the group is joined), so no
  caller depends on whether some other entry point ran first.
* :func:`on_main` runs a function on rank 0 only (prepare ``--out``, write a level's files, append a
  result row); it is also a barrier, so no rank reads a file before rank 0 has written it. Its
  JSON-able return value is sent to every rank, and if it raises, every rank raises the same error
  (the other ranks would otherwise wait forever for a collective rank 0 never joins).
* :func:`together` runs a function on every rank (validation, reading files rank 0 wrote) and raises
  on every rank if it failed on any.

Outcomes travel as JSON in a uint8 tensor (nothing is pickled). Several processes share one output
folder, so ``OUT`` must be on a file system every rank sees (a single machine, or a shared mount).
Without ``WORLD_SIZE > 1`` everything here is a plain function call.

Example:
    >>> ctx = setup("cpu")  # one process: no group, rank 0 of 1 on the CPU
    >>> (ctx.rank, ctx.world, ctx.device.type, ctx.main), setup("cpu") == ctx, is_main() == ctx.main
    ((0, 1, 'cpu', True), True, True)
    >>> on_main(lambda: "written by rank 0")
    'written by rank 0'
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

__all__ = ["Dist", "barrier", "current", "is_main", "on_main", "setup", "together"]

T = TypeVar("T")


@dataclass
class Dist:
    """This process's place in the run: ``rank`` of ``world`` processes, training on ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def comm(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the device the backend communicates from (NCCL: CUDA, gloo: CPU)."""
        return t.to(self.device if self.device.type == "cuda" else "cpu")

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``t`` (same shape on each), on CPU."""
        if not self.on:
            return [t.cpu()]
        t = self.comm(t.contiguous())
        out = [torch.empty_like(t) for _ in range(self.world)]
        torch.distributed.all_gather(out, t)
        return [o.cpu() for o in out]

    def broadcast_(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's value of ``t``, in place on every rank."""
        if self.on:
            c = self.comm(t)
            torch.distributed.broadcast(c, 0)
            if c is not t:
                t.copy_(c)
        return t


def _group_world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _torchrun_world() -> int:
    """The world size torchrun announces (``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


# True once setup() has registered the teardown of the group it started (registered once per process).
_teardown_registered = False


def setup(device: str = "auto") -> Dist:
    """Join the process group under torchrun and return this process's :class:`Dist`. Idempotent.

    Under torchrun (``WORLD_SIZE > 1``) the first call starts the group and registers its teardown
    with ``atexit``; later calls reuse it. ``device`` is a TrainConfig device: NCCL on CUDA unless it
    is ``"cpu"``, else gloo (the first call decides the backend). Without torchrun: rank 0 of 1 on
    ``device`` (``"auto"``: CUDA if any), and no process-wide state is touched.
    """
    global _teardown_registered
    dist = torch.distributed
    if _torchrun_world() > 1 and dist.is_available() and not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        if not _teardown_registered:  # we started it, we end it at exit (_destroy ends whatever is left)
            atexit.register(_destroy)
            _teardown_registered = True
    if _group_world() > 1:
        return current()
    if device == "auto" or not isinstance(device, str):
        return Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return Dist(device=torch.device(device))


def current() -> Dist:
    """The :class:`Dist` of the process group already joined (rank 0 of 1 on CPU if none)."""
    dist = torch.distributed
    if _group_world() <= 1:
        return Dist()
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    else:
        device = torch.device("cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def is_main() -> bool:
    """True on rank 0, or without torchrun. The same before and after :func:`setup`: until the group
    is joined torchrun's ``RANK`` decides, so a rank > 0 is never taken for the main one, and without
    torchrun (``WORLD_SIZE`` unset or 1) this process is rank 0 of 1, as :func:`setup` says.

    Example:
        >>> is_main()  # a plain process
        True
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    if _torchrun_world() > 1:
        return os.environ.get("RANK", "0").strip() in ("", "0")
    return True


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if _group_world() > 1:
        torch.distributed.barrier()


def on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on rank 0 only; every rank returns its result or raises its error.

    The result must be JSON-able: other ranks get ``json.loads(json.dumps(result))`` (NaN allowed). A barrier:
    no rank returns before rank 0 has finished ``fn``.

    Example:
        >>> on_main(lambda: 3)
        3
    """
    ctx = current()
    if not ctx.on:
        return fn(*args, **kwargs)
    error: BaseException | None = None
    payload = b""
    if ctx.main:
        try:
            value = fn(*args, **kwargs)
            payload = json.dumps({"ok": True, "value": value}).encode()
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the other ranks
            error = exc
            payload = _failure(exc)
    outcome = json.loads(_exchange(ctx, payload)[0])
    if error is not None:
        raise error
    if not outcome["ok"]:
        raise _rebuild(outcome, 0)
    return value if ctx.main else outcome["value"]


def together(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on every rank; if it raised on any rank, it raises on every rank.

    A rank where ``fn`` failed raises its own error; the others raise the first failing rank's
    (same class for ticket_zoo errors and ``OSError``, same message). Use it around work whose
    failure could differ between ranks (validation, reading files), so none is left waiting.

    Example:
        >>> together(lambda: 3)
        3
    """
    ctx = current()
    if not ctx.on:
        return fn(*args, **kwargs)
    error: BaseException | None = None
    try:
        value = fn(*args, **kwargs)
        payload = b'{"ok": true}'
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the other ranks
        error = exc
        payload = _failure(exc)
    outcomes = [json.loads(p) for p in _exchange(ctx, payload)]
    if error is not None:
        raise error
    for rank, outcome in enumerate(outcomes):
        if not outcome["ok"]:
            raise _rebuild(outcome, rank)
    return value


def _failure(exc: BaseException) -> bytes:
    d: dict[str, Any] = {"ok": False, "type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, OSError):
        filename = None if exc.filename is None else str(exc.filename)
        d.update(errno=exc.errno, strerror=exc.strerror, filename=filename)
    return json.dumps(d).encode()


def _rebuild(outcome: dict[str, Any], rank: int) -> BaseException:
    """The error another rank raised, as an exception this rank can raise (same one-line message)."""
    from . import errors

    name, message = outcome.get("type"), outcome.get("message", "")
    cls = getattr(errors, str(name), None)
    if isinstance(cls, type) and issubclass(cls, errors.TicketZooError):
        return cls(message)
    if outcome.get("errno") is not None:
        return OSError(outcome["errno"], outcome.get("strerror") or message, outcome.get("filename"))
    if name == "KeyboardInterrupt":
        return KeyboardInterrupt()
    return RuntimeError(f"rank {rank} failed with {name}: {message}")


def _exchange(ctx: Dist, payload: bytes) -> list[bytes]:
    """Every rank's ``payload`` (bytes of any length), on every rank."""
    sizes = [int(n) for n in ctx.gather(torch.tensor([len(payload)], dtype=torch.int64))]
    buf = torch.zeros(max(sizes), dtype=torch.uint8)
    if payload:
        buf[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    return [bytes(t[:n].numpy()) for t, n in zip(ctx.gather(buf), sizes, strict=True)]


def _destroy() -> None:
    """The teardown :func:`setup` registers with ``atexit``: leave the group together, then destroy it."""
    dist = torch.distributed
    if not dist.is_initialized():
        return
    # Leave together: a gloo rank that tears down while its peer still holds the connection can
    # abort at exit ("terminate called without an active exception"). Bounded, so a crashed peer
    # cannot hang this process (torchrun stops the others anyway).
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        else:
            dist.barrier()
    except Exception:  # a peer is gone: nothing left to synchronise with
        pass
    dist.destroy_process_group()
