"""The OUT folder of a find run: what is written where, how a run claims it and how it resumes.

::

    OUT/config.yaml            the effective config; a run of a different config is refused here
    OUT/rewind.safetensors     θk, the full state at the rewind step (written with level 0)
    OUT/summary.json           {fingerprint, config, levels: one row per level done so far}
    OUT/level_XX/ticket.safetensors + README.md   the level's ticket and card
    OUT/level_XX/final.safetensors                its trained weights (IMP's next level prunes them;
                                               absent for a ticket a method wrote untrained)
    OUT/level_XX/done.json     written last: {row, ticket_sha256, meta}; the level is finished
    OUT/level_XX/.ckpt/        the level's training checkpoint while it trains

Rows name their level folder relative to OUT (``"level_05"``), so a copied or moved run stays valid.
Every writer here runs on rank 0 only (the driver calls them through :func:`ticket_zoo._dist.on_main`);
the readers (:func:`load_tensors`, :func:`done_levels`) run on every rank.

Example:
    >>> import tempfile, pathlib, torch
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> save_tensors(out / REWIND_FILE, {"w": torch.ones(2)})
    >>> load_tensors(out / REWIND_FILE)["w"].tolist(), done_levels(out), level_dir(out, 3).name
    ([1.0, 1.0], set(), 'level_03')
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from ._io import atomic_write_bytes, atomic_write_text, os_reason, prepare_out_dir, remove_stale_temps
from ._recipe import read_yaml_file
from .checkpoint import CHECKPOINT_NAME
from .config import _is_real
from .errors import CheckpointError, ConfigError, one_line

if TYPE_CHECKING:  # pragma: no cover
    from .find import FindConfig

__all__ = [
    "CONFIG_FILE",
    "DONE_FILE",
    "FINAL_FILE",
    "REWIND_FILE",
    "SUMMARY_FILE",
    "TICKET_FILE",
    "check_out",
    "claim",
    "claim_and_clean",
    "done_levels",
    "done_row",
    "drop_dense_checkpoint",
    "level_dir",
    "load_tensors",
    "save_tensors",
    "write_level",
    "write_summary",
]

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
REWIND_FILE = "rewind.safetensors"
FINAL_FILE = "final.safetensors"
DONE_FILE = "done.json"
TICKET_FILE = "ticket.safetensors"
CHECKPOINT_DIR = ".ckpt"


def level_dir(out: Path, level: int) -> Path:
    """``OUT/level_XX``."""
    return out / f"level_{level:02d}"


# --- claiming OUT ----------------------------------------------------------------------------------


def claim(out: Path, config: FindConfig, *, write: bool = True) -> None:
    """Write OUT/config.yaml, or check that the run already in ``out`` used the same config.

    Configs are the same when their fingerprints are (:meth:`~ticket_zoo.config.Config.fingerprint`:
    fields declared ``fingerprint=False``, such as ``levels`` or ``train.device``, may change). A run
    that never finished a unit of work (no level done, no level-0 training checkpoint) does not lock
    its folder: a new config simply replaces its config.yaml. Otherwise a different config is
    refused with the way to start over. ``write=False`` only checks.
    """
    path = out / CONFIG_FILE
    if path.exists():
        try:
            raw = read_yaml_file(path, what="stored config")
            stored = type(config).from_dict(raw if raw is not None else {})
            problem = None
            if stored.fingerprint() != config.fingerprint():
                problem = f"a run with a different config ({'; '.join(stored.differences(config)[:5])})"
        except ConfigError as exc:
            problem = f"a run whose {CONFIG_FILE} cannot be read ({exc})"
        if problem is not None:
            done = sorted(p.parent.name for p in out.glob(f"level_*/{DONE_FILE}"))
            partial = level_dir(out, 0) / CHECKPOINT_DIR / CHECKPOINT_NAME
            if done:
                raise ConfigError(
                    f"{out} holds {problem} with {len(done)} finished level(s) ({', '.join(done[:3])}"
                    f"{', ...' if len(done) > 3 else ''}); re-run with the original recipe to resume, or "
                    f"start over with a new --out (or delete {out})"
                )
            if partial.exists():
                raise ConfigError(
                    f"{out} holds {problem} whose level 0 is partly trained; re-run with the original "
                    f"recipe to resume, or start over: delete {level_dir(out, 0)} (partial training of the "
                    "old config) or use a new --out"
                )
            # Nothing was finished under the old config (e.g. it failed before training): replace it.
    if write:
        out.mkdir(parents=True, exist_ok=True)
        header = f"# effective config of this ticket-zoo find run (fingerprint {config.fingerprint()})\n"
        atomic_write_text(path, header + yaml.safe_dump(config.to_dict(), sort_keys=False))


def check_out(out_dir: str | os.PathLike, config: FindConfig) -> None:
    """Before any data is read: OUT can be written, and holds no run of another config."""
    out = prepare_out_dir(out_dir, what="--out")
    claim(out, config, write=False)


def claim_and_clean(out: Path, config: FindConfig) -> None:
    """Once every check has passed: write config.yaml and remove a killed run's temporaries."""
    claim(out, config)
    _remove_stale_temps(out)


def _remove_stale_temps(out: Path) -> None:
    """Delete the ``.NAME.<hex>.tmp`` files of atomic writes that a killed run left in OUT.

    Only where a find run writes (OUT itself and its ``level_XX`` folders, checkpoints included), so an
    ``--out`` pointed at a shared folder never loses another program's temporaries."""
    remove_stale_temps(out, recursive=False)
    for ldir in out.glob("level_*"):
        if ldir.is_dir() and not ldir.is_symlink():
            remove_stale_temps(ldir)


# --- tensors ---------------------------------------------------------------------------------------


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """``tensors`` as one safetensors file, written atomically (CPU, contiguous)."""
    import safetensors.torch

    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, safetensors.torch.save(data))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A tensor file a finished level left (θk, final weights); missing means the folder is incomplete."""
    import safetensors.torch

    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing although its level is marked done; the run folder is incomplete: "
            "delete that level's folder (and later ones) and re-run to redo them"
        )
    return safetensors.torch.load_file(str(path))


# --- levels done -----------------------------------------------------------------------------------


def write_level(
    out: Path,
    level: int,
    *,
    model: torch.nn.Module,
    masks: Mapping[str, torch.Tensor],
    arch: str,
    arch_kwargs: Mapping[str, Any],
    rewind: Mapping[str, torch.Tensor],
    save_rewind: bool,
    meta: dict[str, Any],
    row: dict[str, Any],
    final: bool = True,
) -> None:
    """Write a level: θk (with level 0), final weights (``final``: a trained level), ticket + card,
    then ``done.json``.

    ``done.json`` comes last, so its presence means everything else is complete on disk; it records
    the ticket's sha256 so that a resume notices a level replaced afterwards (e.g. by a pull). The
    level's training checkpoint is deleted after."""
    from .api import save
    from .ticket import Ticket

    ldir = level_dir(out, level)
    if save_rewind:
        save_tensors(out / REWIND_FILE, rewind)
    if final:
        save_tensors(ldir / FINAL_FILE, model.state_dict())
    ticket = Ticket.from_model(model, masks, arch=arch, arch_kwargs=arch_kwargs, init_state=rewind, meta=meta)
    save(ticket, ldir, name=meta["name"])
    record = {"row": row, "ticket_sha256": _sha256_file(ldir / TICKET_FILE), "meta": meta}
    atomic_write_text(ldir / DONE_FILE, json.dumps(record, indent=2, default=str) + "\n")
    shutil.rmtree(ldir / CHECKPOINT_DIR, ignore_errors=True)


def drop_dense_checkpoint(out: Path) -> None:
    """Remove ``level_00/.ckpt`` (and ``level_00`` if it is then empty) when level 0 wrote no ticket:
    a method that trained the dense network only to score it has finished with that checkpoint."""
    ldir = level_dir(out, 0)
    if (ldir / DONE_FILE).exists() or not (ldir / CHECKPOINT_DIR).is_dir():
        return
    shutil.rmtree(ldir / CHECKPOINT_DIR, ignore_errors=True)
    try:
        ldir.rmdir()
    except OSError:  # something else is in it: leave it
        pass


def done_levels(out: Path) -> set[int]:
    """The levels of ``out`` marked done (their ``done.json`` exists)."""
    return {int(p.parent.name[len("level_") :]) for p in out.glob(f"level_*/{DONE_FILE}")}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _redo_hint(out: Path, level: int) -> str:
    """How to redo ``level``: delete its folder and every later level's, then re-run."""
    names = sorted(
        (p.name for p in out.glob("level_*") if p.name[len("level_") :].isdigit()
         and int(p.name[len("level_") :]) >= level),
        key=lambda n: int(n[len("level_") :]),
    )  # fmt: skip
    names = names or [level_dir(out, level).name]
    listed = names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]}"
    return (
        f"to redo it, delete {out / names[0]}"
        + (f" and the later level folders ({listed})" if len(names) > 1 else "")
        + " and re-run the same command"
    )


def done_row(out: Path, level: int) -> dict[str, Any]:
    """The summary row of a level marked done, once its ticket is checked against its done record.

    ``done.json`` records the sha256 of the level's ``ticket.safetensors``; one written before that
    field existed is checked by the ticket's own level and density instead. The row's ``path`` is the
    level folder relative to OUT (older runs stored an absolute path)."""
    from .errors import TicketFormatError
    from .format import read_ticket

    ldir = level_dir(out, level)
    done = ldir / DONE_FILE
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
        row = record["row"]
        if not isinstance(row, dict) or not _is_real(row.get("density")):
            raise ValueError("no row with a density")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        reason = os_reason(exc) if isinstance(exc, OSError) else one_line(exc)
        raise CheckpointError(
            f"{done} cannot be read ({reason}); level {level} cannot be resumed: {_redo_hint(out, level)}"
        ) from None
    ticket_path = ldir / TICKET_FILE
    if not ticket_path.is_file():
        raise CheckpointError(
            f"{ticket_path} is missing although level {level} is marked done; {_redo_hint(out, level)}"
        )
    changed = (
        f"level {level} ({ldir}) was changed after this run finished it: its {TICKET_FILE} is not the "
        "ticket the run wrote (replaced by `ticket-zoo pull --out` or a copy?)"
    )
    recorded = record.get("ticket_sha256")
    if recorded is not None:
        if _sha256_file(ticket_path) != recorded:
            raise CheckpointError(f"{changed}: its sha256 differs from {DONE_FILE}; {_redo_hint(out, level)}")
    else:  # done.json of an older version without the digest: check level and density
        try:
            ticket = read_ticket(ticket_path)
        except TicketFormatError as exc:
            raise CheckpointError(f"{changed}: {exc}; {_redo_hint(out, level)}") from None
        meta_level = ticket.meta.get("level")
        wrong_level = meta_level is not None and meta_level != level
        if wrong_level or abs(ticket.density - float(row["density"])) > 1e-9:
            raise CheckpointError(
                f"{changed}: it is level {meta_level} at density {ticket.density:.4f}, {DONE_FILE} "
                f"recorded level {level} at density {float(row['density']):.4f}; {_redo_hint(out, level)}"
            )
    return {**row, "path": ldir.name}


# --- summary ---------------------------------------------------------------------------------------


def write_summary(out: Path, config: FindConfig, rows: list[dict[str, Any]]) -> None:
    """OUT/summary.json; each row's ``path`` is its level folder relative to OUT (``"level_05"``)."""
    doc = {"fingerprint": config.fingerprint(), "config": config.to_dict(), "levels": rows}
    atomic_write_text(out / SUMMARY_FILE, json.dumps(doc, indent=2, default=str) + "\n")
