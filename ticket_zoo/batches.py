"""The data order of a training run: which examples step ``s`` sees, and its seeded random streams.

Everything here is a pure function of ``(seed, step)`` (or ``(seed, epoch)``), so step ``s`` gets the
same batch whether a run got there from step 0, from a checkpoint or from a late-resetting
``start_step``, and under DDP the global sample order is that of one process:

* :class:`GlobalBatches`: the index lists of one epoch for one rank. Global batch ``b`` of epoch
  ``e`` is ``perm[b*B:(b+1)*B]`` with ``perm = randperm(n)`` under a generator seeded by
  ``seed * SEED_STRIDE + e``; rank ``r`` of ``world`` takes ``[r::world]`` of it.
* :func:`epoch_batches` / :func:`stream_batches`: the batches themselves, for map-style data and for
  streams; :func:`sequential_batches` the whole dataset in order, for evaluation.
* :func:`derive_seed`: a 63-bit seed for one named stream (``("aug", seed, step, rank)``);
  :func:`seed_global_rng` seeds dropout's global RNG with one.

**Batch indexing.** A dataset whose ``dataset[tensor_of_indices]`` returns the whole batch in one op
says so with a class attribute ``batch_indexable = True`` (torch's ``TensorDataset`` is recognised
as such; a subclass may set ``batch_indexable = False`` to opt out). Such data is batched without a
DataLoader or collation; any other dataset goes through a DataLoader item by item. The two paths give
the same batches, only the speed differs.

Example:
    >>> import torch
    >>> sampler = GlobalBatches(n=10, batch_size=4, seed=0, rank=0, world=1)
    >>> len(sampler), [len(b) for b in sampler]  # the last partial batch is dropped
    (2, [4, 4])
    >>> list(sampler) == list(GlobalBatches(10, 4, seed=0, rank=0, world=1))  # a pure function of the seed
    True
    >>> ds = torch.utils.data.TensorDataset(torch.arange(10.0), torch.arange(10))
    >>> batch_indexable(ds)
    True
    >>> x, y = next(epoch_batches(ds, sampler))  # one indexing op: ds[tensor of 4 indices]
    >>> y.tolist() == next(iter(sampler))
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler, TensorDataset

from .errors import ConfigError

__all__ = [
    "SEED_STRIDE",
    "GlobalBatches",
    "batch_indexable",
    "dataset_len",
    "derive_seed",
    "epoch_batches",
    "is_stream",
    "quiet_generator",
    "seed_global_rng",
    "sequential_batches",
    "stream_batches",
]

# The sample order of epoch e comes from a generator seeded with seed * SEED_STRIDE + e.
SEED_STRIDE = 1_000_003


def batch_indexable(dataset: Any) -> bool:
    """True if ``dataset[tensor_of_indices]`` returns a whole batch (one op, no collation).

    A dataset class declares it with ``batch_indexable = True``; torch's ``TensorDataset`` (and its
    subclasses, unless they set ``batch_indexable = False``) is recognised explicitly. The attribute
    is read from the class, not the instance, so a wrapper that forwards attribute lookups to the data
    it wraps (``__getattr__``) does not inherit a promise its own ``__getitem__`` does not keep.

    Example:
        >>> class Batched(torch.utils.data.Dataset):
        ...     batch_indexable = True
        >>> batch_indexable(Batched()), batch_indexable(torch.utils.data.Dataset())
        (True, False)
    """
    declared = getattr(type(dataset), "batch_indexable", None)
    if declared is not None:
        return declared is True
    return isinstance(dataset, TensorDataset)


def is_stream(dataset: Any) -> bool:
    """True for iterable-only data (no indexing: read in stream order)."""
    return isinstance(dataset, IterableDataset)


def dataset_len(dataset: Any) -> int | None:
    """``len(dataset)``, or None for a stream of unknown length."""
    try:
        return len(dataset)
    except TypeError:
        return None


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed for one named random stream (e.g. ``("aug", seed, step, rank)``); streams never overlap.

    Example:
        >>> derive_seed("aug", 0, 5, 0) == derive_seed("aug", 0, 5, 0) != derive_seed("aug", 0, 6, 0)
        True
    """
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def seed_global_rng(seed: int, device: torch.device) -> None:
    """Seed the global RNG of the CPU and of ``device``. (``torch.manual_seed`` would also seed every
    other backend, through a lazy-call path that formats a stack trace: ~1 ms, too slow per step.)"""
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)


def quiet_generator() -> torch.Generator:
    """For ``DataLoader(generator=...)``: each new DataLoader iterator draws a worker base seed, by default
    from the global RNG, which would shift the dropout stream by a count that differs after a resume."""
    return torch.Generator().manual_seed(0)


class GlobalBatches(Sampler):
    """Index lists of one epoch for one rank: global batch ``b`` is ``perm[b*B:(b+1)*B]`` and rank ``r``
    takes ``[r::world]`` of it. Mutable position, so one persistent DataLoader serves every epoch.

    Example:
        >>> s = GlobalBatches(n=8, batch_size=4, seed=1, rank=1, world=2)
        >>> s.set_position(epoch=3, start=1)  # epoch 3 from its second global batch
        >>> len(s), [len(b) for b in s]
        (1, [2])
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        """Serve epoch ``epoch`` from its global batch ``start`` on."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.n // self.batch_size - self.start

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * SEED_STRIDE + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        for b in range(self.start, self.n // self.batch_size):
            yield perm[b * self.batch_size : (b + 1) * self.batch_size][self.rank :: self.world].tolist()


def epoch_batches(dataset: Any, sampler: GlobalBatches, loader: DataLoader | None = None) -> Iterator[tuple]:
    """The batches of ``sampler``'s epoch: one indexing op each (batch-indexable data in this process),
    or from ``loader``, a DataLoader over ``dataset`` with ``batch_sampler=sampler``."""
    if loader is None:
        for idx in sampler:
            yield tuple(dataset[torch.tensor(idx, dtype=torch.long)])
    else:
        yield from loader


def stream_batches(
    dataset: Any, local_batch: int, rank: int, world: int, skip: int, num_workers: int
) -> Iterator[tuple]:
    """Global batches of a stream in stream order, pass after pass; skips ``skip`` global batches.

    A stream cannot be indexed, so resuming re-reads (and drops) the batches already consumed, and
    under DDP every rank reads each whole global batch and keeps its slice (same order as 1 process).
    Shuffling a stream is the stream's business (e.g. a seeded shuffle buffer)."""
    loader = DataLoader(
        dataset,
        batch_size=local_batch * world,
        drop_last=True,
        num_workers=num_workers,
        generator=quiet_generator(),
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


def sequential_batches(dataset: Any, batch_size: int, num_workers: int = 0, pin: bool = False) -> Iterator[tuple]:
    """Sequential batches of a dataset (all of it, the last one partial), for evaluation.

    Example:
        >>> ds = torch.utils.data.TensorDataset(torch.arange(5))
        >>> [b[0].tolist() for b in sequential_batches(ds, 2)]
        [[0, 1], [2, 3], [4]]
    """
    if batch_indexable(dataset):
        for start in range(0, len(dataset), batch_size):
            yield tuple(dataset[torch.arange(start, min(start + batch_size, len(dataset)))])
        return
    yield from DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin, generator=quiet_generator()
    )
