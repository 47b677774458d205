"""Files and output folders: atomic writes (a reader never sees a half-written file), ``--out`` checks
and the sha256 digests that catalogue cards, ``done.json`` and Hub downloads are checked against.

The lowest layer of the storage modules (``_io`` → ``format`` → ``zoo`` → ``hub`` → ``api``): it imports
nothing of ticket_zoo but :mod:`ticket_zoo.errors`, and never changes process-wide state such as the
umask.

Example:
    >>> import shutil, tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> out = prepare_out_dir(tmp / "runs" / "digits")  # created, and checked to take files
    >>> atomic_write_bytes(out / "ticket.safetensors", b"data").read_bytes()
    b'data'
    >>> append_line(out / "results.jsonl", '{"cell": 1}'); append_line(out / "results.jsonl", '{"cell": 2}')
    >>> (out / "results.jsonl").read_text().splitlines()
    ['{"cell": 1}', '{"cell": 2}']
    >>> shutil.rmtree(tmp)
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from pathlib import Path

from .errors import OutputDirError

# Temporary files of atomic writes are named ".<target>.<random>.tmp" next to the target.
TMP_SUFFIX = ".tmp"


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data`` (the digest catalogue cards pin for ``ticket.safetensors``).

    Example:
        >>> sha256_hex(b"")[:12]
        'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (a large ticket is never held twice).

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     sha256_file(f.name) == sha256_hex(b"")
        True
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tmp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    # O_EXCL: never follow or reuse an existing name; mode 0o666 lets the process umask apply, as for
    # any ordinary file (no global umask is read or changed).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line and fsync, so a killed writer loses at most that (possibly partial) line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def remove_stale_temps(directory: str | os.PathLike, *, recursive: bool = True) -> int:
    """Delete temporaries of our own atomic writes (``.NAME.<hex>.tmp``) left by a killed process.

    Only call this on a folder this process owns (a run's ``--out`` it has claimed). Returns how many
    files were removed.

    Example:
        >>> import shutil, tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> _ = (run / "ticket.safetensors").write_bytes(b"whole")
        >>> _ = (run / ".ticket.safetensors.0123456789ab.tmp").write_bytes(b"half")  # left by a kill
        >>> remove_stale_temps(run), sorted(p.name for p in run.iterdir())
        (1, ['ticket.safetensors'])
        >>> remove_stale_temps(run / "no-such-folder")
        0
        >>> shutil.rmtree(run)
    """
    root = Path(directory)
    if not root.is_dir():
        return 0
    pattern = f".*.*{TMP_SUFFIX}"
    removed = 0
    for tmp in root.rglob(pattern) if recursive else root.glob(pattern):
        if tmp.is_file() and not tmp.is_symlink():
            try:
                tmp.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


_OS_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ENOSPC: "no space left on the device",
    errno.ENOENT: "a part of the path does not exist and cannot be created",
    errno.EEXIST: "it exists and is not a directory",
}


def os_reason(exc: OSError) -> str:
    """A short human reason for an ``OSError`` (``"permission denied"``) for one-line error messages.

    Example:
        >>> os_reason(PermissionError(13, "Permission denied"))
        'permission denied'
    """
    return _OS_REASONS.get(exc.errno or -1) or (exc.strerror or type(exc).__name__).lower()


def prepare_out_dir(path: str | os.PathLike, *, what: str = "--out") -> Path:
    """Create ``path`` (and parents) and check that files can be written in it; return it.

    Any problem (a file in the way, no permission, a read-only or virtual file system such as
    /proc, a name that is too long) is one :class:`~ticket_zoo.errors.OutputDirError` that names the
    folder and what to do, never an ``OSError`` traceback.

    Example:
        >>> prepare_out_dir("/proc/x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ticket_zoo.errors.OutputDirError: --out /proc/x: cannot create a folder there (...); choose a writable folder
    """
    out = Path(path)
    shown = str(out) if len(str(out)) <= 200 else str(out)[:200] + "..."
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{what} {shown} exists and is not a directory; choose a folder path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(
            f"{what} {shown}: cannot create a folder there ({os_reason(exc)}); choose a writable folder"
        ) from None
    probe = _tmp_path(out / "write-check")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        # ENOENT for a folder that exists: a virtual file system such as /proc takes no new files.
        reason = "this file system takes no new files" if exc.errno == errno.ENOENT else os_reason(exc)
        raise OutputDirError(f"{what} {shown}: cannot write files there ({reason}); choose a writable folder") from None
    return out
