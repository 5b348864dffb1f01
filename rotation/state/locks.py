"""Named exclusive locks (a key's rotation, the worker) and who holds them.

The lock itself vanishes with the process that held it, so a worker killed
with SIGKILL never leaves a stale lock: on SQLite an exclusive ``flock`` on a
file in ``<state.db>.locks/`` (:func:`keystead.files.locked`), on PostgreSQL
``pg_try_advisory_lock`` on one dedicated connection. If unlocking fails,
that connection is invalidated (closed for good, never returned to the pool
still holding the lock). Session advisory locks need a real session: no
transaction-pooling proxy (pgbouncer in transaction mode) in front.

``keystead_lock_owners`` records who took each lock, for the message a
second worker prints.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from keystead.clock import epoch, from_epoch, iso, utcnow
from keystead.errors import RotationBusy, RotationError
from keystead.files import locked
from keystead.rotation.state.records import StateDBError
from keystead.rotation.state.schema import lock_owners

Translate = Callable[[str], AbstractContextManager[None]]


def owner_id() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


@contextlib.contextmanager
def hold(engine: sa.Engine, translate: Translate, name: str, *, what: str,
         sqlite_path: Path | None) -> Iterator[None]:
    """Hold the exclusive lock ``name`` or raise RotationBusy at once.

    ``what`` names the lock in the message ("rotation of key main");
    ``sqlite_path`` is the state database file (None on PostgreSQL).
    """
    digest = hashlib.sha256(name.encode()).digest()
    if sqlite_path is not None:
        folder = sqlite_path.with_name(sqlite_path.name + ".locks")
        with contextlib.ExitStack() as held:
            try:
                folder.mkdir(mode=0o700, exist_ok=True)
                held.enter_context(locked(folder / (digest.hex()[:24] + ".lock"), blocking=False))
            except BlockingIOError:
                raise busy(engine, translate, name, what) from None
            except OSError as exc:
                raise StateDBError(f"state database {sqlite_path}: cannot take the lock {name}: "
                                   f"{exc.strerror or exc}") from exc
            _claim(engine, translate, name)
            yield  # the descriptor closes on leaving: that releases the flock
        return
    key = int.from_bytes(digest[:8], "big", signed=True)
    with translate("taking a lock"):
        conn = engine.connect()
    try:
        with translate("taking a lock"):
            got = conn.exec_driver_sql("SELECT pg_try_advisory_lock(%s)", (key,)).scalar()
            conn.commit()
        if not got:
            raise busy(engine, translate, name, what)
        try:
            _claim(engine, translate, name)
            yield
        finally:
            try:
                conn.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (key,))
                conn.commit()
            except SQLAlchemyError:
                conn.invalidate()  # may still hold the lock: never back to the pool
    finally:
        conn.close()


def _claim(engine: sa.Engine, translate: Translate, name: str) -> None:
    with translate("recording the lock owner"), engine.begin() as conn:
        conn.execute(sa.delete(lock_owners).where(lock_owners.c.name == name))
        conn.execute(sa.insert(lock_owners).values(name=name, owner=owner_id(), acquired_at=epoch(utcnow())))


def busy(engine: sa.Engine, translate: Translate, name: str, what: str) -> RotationBusy:
    """The message for a lock held elsewhere, naming its holder when known."""
    holder = ""
    with contextlib.suppress(RotationError, SQLAlchemyError):
        with translate("reading the lock owner"), engine.connect() as conn:
            row = conn.execute(sa.select(lock_owners).where(lock_owners.c.name == name)).mappings().first()
        if row:
            holder = f" ({row['owner']}, since {iso(from_epoch(row['acquired_at']))})"
    return RotationBusy(f"{what} is already running in another worker{holder}; "
                        "this one leaves it alone (try again when it has finished)")
