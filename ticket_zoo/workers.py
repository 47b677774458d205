"""Running the units of a transfer grid: in this process or in worker processes, on a fixed thread count.

**The thread policy.** A cell's result must not depend on how many cells run beside it nor on the
machine's load, and torch's CPU kernels reduce in an order that depends on the intra-op thread
count. So the threads per unit are fixed by the grid, never by the number of workers:

* ``threads`` (``--threads``): given, or 1 for small networks (every planned ticket's architecture
  under :data:`SMALL_MODEL` parameters: the LTH networks LeNet, Conv-2/4/6, ResNet-20 leave a core
  mostly idle anyway) and all the cores this process may use (``os.sched_getaffinity``) otherwise;
* ``workers`` (``--workers``): given, or ``max(1, cores // threads)`` on the CPU (one on a GPU:
  workers would share it); never more than there are units to run, and 1 under torchrun
  (``WORLD_SIZE > 1``), where more is refused.

The thread count is applied to every run, in-process ones included (the caller's count is restored
afterwards), so ``--workers 1`` and ``--workers 2`` give the same rows bit for bit.

**Workers** are processes started with ``spawn`` (never ``fork``: torch's thread pools and CUDA do
not survive a fork). Each sets its thread counts before any work, loads each target's splits and each
ticket once per stretch of units that use them (units come in plan order: target, then ticket), runs
units from a shared queue and sends each unit's metrics back. Only the parent appends rows, so a row
is written exactly once. A worker exits as soon as its parent is gone (``PR_SET_PDEATHSIG`` on Linux,
and a watchdog thread that checks the parent's pid), so a ``kill -9`` of the parent leaves no worker
training into ``OUT``. A failure in a worker is raised in the parent as the same exception (class and
message) and stops every worker.

Example (the policy for a LeNet grid: one thread per unit, as many workers as cores):
    >>> default_threads([266_610]), default_threads([20_000_000], cores=8)
    (1, 8)
    >>> choose(workers=None, threads=None, parameters=[266_610], units=10, cores=4)
    (4, 1)
    >>> choose(workers=3, threads=None, parameters=[266_610], units=2, cores=4)  # no more than the units
    (2, 1)
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .configs import TransferConfig
    from .transfer_cells import Cell, TicketRef

__all__ = ["SMALL_MODEL", "UnitRunner", "choose", "cores", "default_threads", "parameter_count", "torch_threads"]

#: Networks with fewer parameters than this train on one thread per unit by default.
SMALL_MODEL = 5_000_000


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which SLURM and taskset set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def parameter_count(ref: TicketRef) -> int:
    """Parameters of ``ref``'s architecture, counted on the meta device (no memory, no init)."""
    from .ticket import create_model

    model = create_model(ref.arch, ref.arch_kwargs, device="meta")
    return sum(p.numel() for p in model.parameters())


def default_threads(parameters: Sequence[int], *, cores: int | None = None) -> int:
    """1 when every network has fewer than :data:`SMALL_MODEL` parameters, else all ``cores``."""
    n = globals()["cores"]() if cores is None else cores
    return 1 if parameters and max(parameters) < SMALL_MODEL else n


def choose(
    *,
    workers: int | None,
    threads: int | None,
    parameters: Sequence[int],
    units: int,
    cores: int | None = None,
    gpu: bool = False,
    world_size: int | None = None,
) -> tuple[int, int]:
    """``(workers, threads per unit)`` by the policy of this module's docstring.

    Example:
        >>> choose(workers=2, threads=None, parameters=[1], units=5, world_size=2)
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.ConfigError: --workers 2 under torchrun: each rank trains every cell with its peers, so workers must be 1 (drop --workers)
    """
    n = globals()["cores"]() if cores is None else cores
    world = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"--{name} must be a whole number >= 1, got {value!r}")
    if world > 1:
        if workers is not None and workers > 1:
            raise ConfigError(
                f"--workers {workers} under torchrun: each rank trains every cell with its peers, "
                "so workers must be 1 (drop --workers)"
            )
        # The ranks of one machine share its cores.
        per_rank = max(1, n // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world))))
        return 1, threads or default_threads(parameters, cores=per_rank)
    t = threads or default_threads(parameters, cores=n)
    w = workers if workers is not None else (1 if gpu else max(1, n // t))
    return max(1, min(w, units)), t


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block on ``threads`` intra-op threads; the caller's count is restored afterwards.

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Loads:
    """Each target's splits and each ticket, loaded once per stretch of units that use them."""

    def __init__(self, cfg: TransferConfig) -> None:
        self.cfg = cfg
        self.splits_key: tuple | None = None
        self.splits: Any = None
        self.ticket: tuple[str, Any] | None = None

    def __call__(self, cell: Cell, *, together: bool = False) -> tuple[Any, Any]:
        from . import _dist
        from .data import load_splits
        from .transfer_cells import load_ticket

        key = (cell.target, cell.ref.input_size)
        if key != self.splits_key:  # units are ordered by target, so each target loads once per size
            kwargs = dict(input_size=cell.ref.input_size, val_fraction=self.cfg.val_fraction,
                          seed=self.cfg.data_seed, limit=self.cfg.limit)  # fmt: skip
            # together: under torchrun a failed download on one rank stops every rank instead of a hang
            self.splits = (_dist.together(load_splits, cell.target, **kwargs) if together
                           else load_splits(cell.target, **kwargs))  # fmt: skip
            self.splits_key = key
        if self.ticket is None or self.ticket[0] != cell.ref.digest:
            self.ticket = (cell.ref.digest, load_ticket(cell.ref))
        return self.ticket[1], self.splits


# --- the worker process --------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Exit when the parent is gone: the kernel's parent-death signal, and a watchdog as a fallback."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.2)

    threading.Thread(target=watch, name="ticket-zoo-parent-watch", daemon=True).start()


def _portable(exc: BaseException) -> tuple[str, str]:
    """What the parent needs to raise ``exc`` again: its class name and its message (plain strings,
    so nothing but text crosses back; see :func:`_rebuild`)."""
    return type(exc).__name__, str(exc)


def _rebuild(name: str, message: str) -> BaseException:
    """The exception a worker raised: a ticket_zoo error or a builtin exception of that name with its
    message (an allow-list: nothing is looked up by an arbitrary name), else a RuntimeError saying both."""
    import builtins

    from . import errors

    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.TicketZooError)):
        cls = getattr(builtins, name, None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            return RuntimeError(f"{name}: {message}")
    try:
        return cls(message)
    except Exception:  # noqa: BLE001 - a class that needs other arguments: keep the text
        return RuntimeError(f"{name}: {message}")


def _worker(cfg: TransferConfig, out: str, threads: int, parent: int, tasks: Any, results: Any) -> None:
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only possible before any parallel work: this is before
        torch.set_num_interop_threads(threads)
    from .transfer_cells import run_unit

    loads = _Loads(cfg)
    while True:
        task = tasks.get()
        if task is None:
            return
        index, unit = task
        try:
            ticket, splits = loads(unit[0])
            results.put((index, True, run_unit(unit, ticket, splits, cfg, Path(out), False)))
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent, which stops the pool
            results.put((index, False, _portable(exc)))
            return


# --- the parent's side ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _main_not_rerun() -> Iterator[None]:
    """Start spawned workers without re-running the caller's script in them.

    ``spawn`` normally imports the parent's ``__main__`` in every child (so that functions defined
    there can be found), which re-runs a user's script that calls ``ticket_zoo.transfer(...,
    workers=2)`` without an ``if __name__ == "__main__":`` guard and then fails. A worker needs nothing
    from ``__main__`` (its target is this module's ``_worker``), so while the workers start the main
    module shows no file or spec, and multiprocessing leaves it alone.
    """
    import __main__ as main  # the caller's script (or the interpreter's main module)

    had_file, file = hasattr(main, "__file__"), getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    try:
        if had_file:
            del main.__file__
        main.__spec__ = None  # multiprocessing reads __spec__.name: None means "no module to import"
        yield
    finally:
        main.__spec__ = spec
        if had_file:
            main.__file__ = file


class UnitRunner:
    """Runs units of cells and yields ``(unit number, metrics)`` as each finishes.

    With ``workers == 1`` the units run here, in order, on ``threads`` threads (the caller's count is
    restored when the runner closes); otherwise in ``workers`` spawned processes, in completion order.
    Use it as a context manager: leaving the block stops every worker.
    """

    def __init__(self, cfg: TransferConfig, out: Path, *, workers: int, threads: int, progress: bool) -> None:
        self.cfg, self.out, self.workers, self.threads, self.progress = cfg, Path(out), workers, threads, progress
        self._procs: list[Any] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> UnitRunner:
        if self.workers == 1:
            self._stack.enter_context(torch_threads(self.threads))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.kill()
        for p in self._procs:
            p.join(timeout=10)
        self._procs = []
        self._stack.close()

    def run(self, units: Sequence[Sequence[Cell]]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Yield ``(index into units, metrics of each cell of that unit)``; a failure is raised here."""
        if self.workers == 1:
            yield from self._here(units)
        else:
            yield from self._pool(units)

    def _here(self, units: Sequence[Sequence[Cell]]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        from .transfer_cells import run_unit

        loads = _Loads(self.cfg)
        for i, unit in enumerate(units):
            ticket, splits = loads(unit[0], together=True)
            yield i, run_unit(list(unit), ticket, splits, self.cfg, self.out, self.progress)

    def _pool(self, units: Sequence[Sequence[Cell]]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        tasks, results = ctx.Queue(), ctx.Queue()
        # Largest units first (a batched unit trains many runs): the workers finish closer together.
        # Which worker trains a unit does not change its numbers, and rows are recorded per cell.
        for i in sorted(range(len(units)), key=lambda i: -len(units[i])):
            tasks.put((i, list(units[i])))
        n = min(self.workers, len(units))
        for _ in range(n):
            tasks.put(None)
        left = len(units)
        try:  # from here on every exit stops the workers and lets the queues go (no hang at exit)
            with _main_not_rerun():
                for k in range(n):
                    p = ctx.Process(target=_worker, name=f"ticket-zoo-worker-{k + 1}", daemon=True,
                                    args=(self.cfg, str(self.out), self.threads, os.getpid(), tasks, results))  # fmt: skip
                    p.start()
                    self._procs.append(p)
            while left:
                try:
                    index, ok, payload = results.get(timeout=1.0)
                except queue.Empty:
                    if not any(p.is_alive() for p in self._procs):  # all gone, results still owed
                        try:
                            index, ok, payload = results.get(timeout=5.0)  # what they sent before exiting
                        except queue.Empty:
                            raise RuntimeError(
                                f"every transfer worker exited with {left} unit(s) left; re-run the same "
                                "command to resume"
                            ) from None
                    else:
                        dead = [p for p in self._procs if not p.is_alive() and p.exitcode != 0]
                        if dead:  # killed (OOM, a signal) without a word: nothing will come back from it
                            raise RuntimeError(
                                f"transfer worker {dead[0].name} died (exit code {dead[0].exitcode}); "
                                "re-run the same command to resume"
                            ) from None
                        continue
                if not ok:
                    raise _rebuild(*payload)
                left -= 1
                yield index, payload
        finally:
            self.close()
            for q in (tasks, results):
                q.cancel_join_thread()
                q.close()
