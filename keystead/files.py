"""Files: durable replacement (the one way keystead rewrites a file) and advisory locks.

A crash at any instant leaves the old content or the new, never half: the new
bytes go to a hidden temp file beside the target (``.NAME.tmp-XXXXXXXX``),
are fsynced, renamed over the target, and the folder is fsynced so the
rename itself survives a power cut. OSError propagates (callers translate it
into their error family); the temp file is removed on any failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".tmp-"
MAX_FILE_NAME = 255


def temp_name(target: Path) -> Path:
    prefix = "." + target.name[: MAX_FILE_NAME - 1 - len(TEMP_MARK) - 8]
    return target.with_name(f"{prefix}{TEMP_MARK}{secrets.token_hex(4)}")


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(target: Path, data: bytes, *, mode: int = 0o600, sync_folder: bool = True) -> None:
    """Replace ``target`` with ``data`` (mode ``mode``), atomically and durably."""
    temp = temp_name(target)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if sync_folder:
        fsync_folder(target.parent)


@contextlib.contextmanager
def locked(path: Path, *, blocking: bool = True, flags: int | None = None) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600 if missing) and yield its descriptor.

    A folder is locked through a read-only descriptor of itself. ``flags``
    overrides how the file is opened (the audit log opens for appending).
    With ``blocking=False`` a lock held elsewhere raises BlockingIOError at
    once. The lock goes with the descriptor: closing it, or the death of the
    process, releases it, so a killed process never leaves a stale lock.
    OSError propagates (callers translate it into their error family).
    """
    if flags is None:
        flags = os.O_RDONLY | os.O_DIRECTORY if Path(path).is_dir() else os.O_RDWR | os.O_CREAT
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield fd
    finally:
        os.close(fd)
