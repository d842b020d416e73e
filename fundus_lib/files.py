"""Writing files so that an interruption never leaves half of one."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from fundus_lib.errors import UserError

#: A write that fails with less free space than this failed because the disk is full.
FULL_DISK_BYTES = 1 << 20


class DiskFullError(UserError, OSError):
    """Too little free space for a write; the message names the folder and the bytes needed."""


def temporary_path(path: Path) -> Path:
    """``.<name>.<pid>.tmp`` beside ``path``: concurrent writers never share one."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def require_free_space(folder: str | Path, needed_bytes: int, what: str) -> None:
    """DiskFullError unless the disk holding ``folder`` has ``needed_bytes`` free."""
    folder = Path(folder)
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    free_bytes = shutil.disk_usage(existing).free
    if free_bytes < needed_bytes:
        raise DiskFullError(
            f"{what} needs {needed_bytes:,} bytes in {folder} but only {free_bytes:,} are free: free "
            "some space (or move the folder: FUNDUS_DATA_DIR, FUNDUS_RUNS_DIR) and rerun"
        )


def write_with(path: str | Path, write: Callable[[BinaryIO], None], durable: bool = False) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it over ``path``.

    durable: fsync the file before the rename and the folder after it, so that the new file
    survives a power cut (for completion markers, records and checkpoints). A failed write
    (e.g. a full disk) removes the temporary file and raises DiskFullError when the disk is full.
    """
    path = Path(path)
    temporary = temporary_path(path)
    try:
        with temporary.open("wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        full = getattr(exc, "errno", None) == errno.ENOSPC or (
            path.parent.is_dir() and shutil.disk_usage(path.parent).free < FULL_DISK_BYTES
        )
        temporary.unlink(missing_ok=True)
        if full and isinstance(exc, Exception):  # torch reports a full disk as a bare RuntimeError
            raise DiskFullError(
                f"cannot write {path}: the disk holding {path.parent} is full; free some space "
                "and rerun (finished work is kept)"
            ) from None
        raise
    if durable:
        fsync_file(path.parent)  # the rename itself


def fsync_file(path: str | Path) -> None:
    """Force a file written through a memory map or a stream onto the disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_atomic(path: str | Path, data: bytes | str, durable: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``
    (see :func:`write_with` for ``durable``)."""
    write_with(path, lambda handle: handle.write(data.encode() if isinstance(data, str) else data), durable)


def sweep_temporaries(folder: str | Path) -> None:
    """Remove the temporary files of :func:`write_with` that processes no longer running left in
    ``folder`` (a killed run, a full disk); those of running processes are kept."""
    for stale in Path(folder).glob(".*.*.tmp"):
        pid = stale.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _running(int(pid)):
            stale.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


@contextmanager
def exclusive(lock_file: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if missing): a second process waits here
    until the first leaves the block or dies."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:  # closing the file (or dying) releases the lock
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
