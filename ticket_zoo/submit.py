"""Submitting the shards of a transfer grid as a job array through ``submitit`` (SLURM, or this machine).

``ticket-zoo transfer ... --submit slurm --shards N`` hands the grid to an existing scheduler instead
of a home-made one: :func:`submit_shards` makes a ``submitit.AutoExecutor(folder=OUT/submitit)``
(``cluster="slurm"``, or ``"local"`` for ``--submit local``, which runs the jobs as processes on this
machine and is how the test suite exercises the path), sets its parameters (partition, GPUs and CPUs
per task, time limit) and submits one array job whose task ``K`` runs shard ``K/N`` of the grid
(:mod:`ticket_zoo.shards`). What a task runs is a top-level function taking plain data (the config as
a dict), given by the caller (:func:`ticket_zoo.transfer_grid.run_shard`), so this module does not
import the grid.

Submitting is idempotent in effect: every shard skips the cells recorded in any results file of
``OUT``, so re-submitting the same command after a shard died (a timeout, a node failure) finishes only
the missing cells; the caller submits only the shards that still have missing cells.

Example (submitit's error for a cluster that is not there becomes one line):
    >>> import shutil, tempfile
    >>> if shutil.which("srun") is None:
    ...     try:
    ...         executor("slurm", tempfile.mkdtemp())
    ...     except ConfigError as exc:
    ...         print(str(exc)[:68])
    ... else:
    ...     print("--submit slurm: submitit cannot submit to SLURM from this machine")
    --submit slurm: submitit cannot submit to SLURM from this machine (C
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, one_line

__all__ = ["CLUSTERS", "executor", "submit_shards", "wait"]

#: ``--submit`` values and the submitit cluster each selects.
CLUSTERS = {"slurm": "slurm", "local": "local"}
SUBMITIT_DIR = "submitit"


def executor(
    cluster: str,
    out: str | os.PathLike,
    *,
    partition: str | None = None,
    gpus_per_task: int = 0,
    cpus_per_task: int | None = None,
    timeout_min: int = 24 * 60,
    name: str = "ticket-zoo",
) -> Any:
    """A ``submitit.AutoExecutor`` writing its logs to ``OUT/submitit``, parameters set.

    ``cluster`` is ``"slurm"`` or ``"local"``; a cluster submitit cannot reach (no ``srun``/``sbatch``
    on this machine) is one :class:`ConfigError` line.
    """
    if cluster not in CLUSTERS:
        raise ConfigError(f"--submit must be one of {', '.join(CLUSTERS)}, got {cluster!r}")
    try:
        import submitit
    except ImportError:  # pragma: no cover - a dependency
        raise ConfigError("--submit needs submitit: pip install 'submitit>=1.5'") from None
    folder = Path(out) / SUBMITIT_DIR
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster=CLUSTERS[cluster])
    except Exception as exc:  # noqa: BLE001 - submitit raises RuntimeError/ValueError for a missing cluster
        raise ConfigError(
            f"--submit {cluster}: submitit cannot submit to SLURM from this machine ({one_line(exc)}); "
            "run on a SLURM login node (sbatch and srun on PATH) or use --submit local"
            if cluster == "slurm" else f"--submit {cluster}: {one_line(exc)}"
        ) from None
    params: dict[str, Any] = {"timeout_min": int(timeout_min), "name": name, "tasks_per_node": 1, "nodes": 1}
    if gpus_per_task:
        params["gpus_per_node"] = int(gpus_per_task)
    if cpus_per_task:
        params["cpus_per_task"] = int(cpus_per_task)
    if partition:
        params["slurm_partition"] = partition
    try:
        ex.update_parameters(**params)
    except Exception as exc:  # noqa: BLE001 - submitit's own parameter checks
        raise ConfigError(f"--submit {cluster}: {one_line(exc)}") from None
    return ex


def submit_shards(
    fn: Callable[..., Any], args: Sequence[Any], shards: Sequence[int], total: int, ex: Any
) -> list[Any]:
    """Submit ``fn(*args, (k, total))`` for every ``k`` of ``shards`` as one job array; the jobs.

    ``fn`` must be a top-level function (submitit pickles it by reference) taking plain data.
    """
    calls = [(*args, (k, total)) for k in shards]
    try:
        return list(ex.map_array(fn, *zip(*calls, strict=True)))
    except Exception as exc:  # noqa: BLE001 - sbatch refusing the job, a full disk under OUT/submitit
        raise ConfigError(f"submitting {len(calls)} shard jobs failed: {one_line(exc)}") from None


def wait(jobs: Sequence[Any], shards: Sequence[int], total: int) -> None:
    """Wait for every job; a failed one is a :class:`ConfigError` naming its shard, its last error line
    and its log (the other jobs are waited for first, so their rows are in)."""
    failed: list[str] = []
    for job, k in zip(jobs, shards, strict=True):
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - submitit's FailedJobError holds the job's traceback
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            last = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
            failed.append(f"shard {k}/{total} (job {job.job_id}): {one_line(last, 160)}; log {job.paths.stderr}")
    if failed:
        raise ConfigError(
            f"{len(failed)} shard job(s) failed: {failed[0]}"
            f"{' (and more)' if len(failed) > 1 else ''}; fix it and submit the same command again"
        )
