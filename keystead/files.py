"""Durable file replacement: the one way keystead rewrites a file.

A crash at any instant leaves the old content or the new, never half: the new
bytes go to a hidden temp file beside the target (``.NAME.tmp-XXXXXXXX``),
are fsynced, renamed over the target, and the folder is fsynced so the
rename itself survives a power cut. OSError propagates (callers translate it
into their error family); the temp file is removed on any failure.
"""

from __future__ import annotations

import os
import secrets
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
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    if sync_folder:
        fsync_folder(target.parent)
