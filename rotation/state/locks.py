"""Leases: a key's transitions (plan, rotate, verify, retire) are held by one worker at a time.

A lease is a row of ``keystead_lock_owners`` (name, owner, since, ``lease_until``
in epoch seconds), not a session lock: it survives a dropped connection and a
transaction-pooling proxy, and it vanishes by *expiring*, so a worker killed
with SIGKILL blocks the key for at most one lease period. Taking it is one
statement under the row's lock: an UPDATE where the row is free (no lease, an
expired one, or already this owner's), else an INSERT that does nothing on a
conflict. While held, a heartbeat thread renews it every third of the period;
a renewal that finds another owner sets :attr:`KeyLease.lost`.

Times come from the lease's clock (``keystead.clock.utcnow`` unless injected),
so tests move past an expiry without sleeping. Hosts sharing a state database
need synchronised clocks (NTP); the lease period is the margin.

Lanes have leases of their own, in their rows (:meth:`StateDB.claim_lane`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from keystead.clock import Clock, epoch, from_epoch, iso, utcnow
from keystead.errors import RotationBusy, RotationError
from keystead.rotation.state.records import Holder
from keystead.rotation.state.schema import lock_owners

Translate = Callable[[str], AbstractContextManager[None]]
LEASE_SECONDS = 60.0
"""A lease's default period ([rotation] lease_seconds)."""
log = logging.getLogger("keystead.rotation")
_owner: tuple[int, str] | None = None


def owner_id() -> str:
    """This process, as a lease owner: ``pid N on HOST #tag`` (the tag tells a restarted
    process that got the same pid from the one before it)."""
    global _owner
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:
        _owner = (pid, f"pid {pid} on {socket.gethostname()} #{secrets.token_hex(3)}")
    return _owner[1]


class KeyLease:
    """The lease named ``name`` for ``owner``: :meth:`acquire`, :meth:`renew`, :meth:`release`."""

    def __init__(self, engine: sa.Engine, translate: Translate, name: str, *, what: str, owner: str,
                 seconds: float = LEASE_SECONDS, clock: Clock = utcnow) -> None:
        self.engine, self.translate, self.name, self.what = engine, translate, name, what
        self.owner, self.seconds, self.clock = owner, seconds, clock
        self.lost = threading.Event()
        self._held = False
        self._mutex = threading.Lock()  # the heartbeat never renews across a release

    def _now(self) -> float:
        return epoch(self.clock())

    def acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours; True if we hold it now."""
        now = self._now()
        row = lock_owners.c
        free = sa.or_(row.owner == self.owner, row.lease_until.is_(None), row.lease_until < now)
        insert = (postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert)(lock_owners)
        with self.translate("taking a lease"), self.engine.begin() as conn:
            got = conn.execute(sa.update(lock_owners).where(row.name == self.name, free).values(
                owner=self.owner, lease_until=now + self.seconds,
                acquired_at=sa.case((row.owner == self.owner, row.acquired_at), else_=now))).rowcount
            if not got:
                got = conn.execute(insert.values(name=self.name, owner=self.owner, acquired_at=now,
                                                 lease_until=now + self.seconds).on_conflict_do_nothing()
                                   .returning(lock_owners.c.name)).first() is not None
        if got:
            with self._mutex:
                self._held = True
            self.lost.clear()
        return bool(got)

    def renew(self) -> bool:
        """Push the lease on by one period; False if it is no longer ours."""
        now = self._now()
        with self.translate("renewing a lease"), self.engine.begin() as conn:
            return bool(conn.execute(sa.update(lock_owners).where(
                lock_owners.c.name == self.name, lock_owners.c.owner == self.owner,
            ).values(lease_until=now + self.seconds)).rowcount)

    def release(self) -> None:
        with self._mutex:
            self._held = False
        with self.translate("releasing a lease"), self.engine.begin() as conn:
            conn.execute(sa.delete(lock_owners).where(lock_owners.c.name == self.name,
                                                      lock_owners.c.owner == self.owner))

    def holder(self) -> Holder | None:
        return holder(self.engine, self.translate, self.name)

    def busy(self) -> RotationBusy:
        """The message for a lease held elsewhere, naming its holder when known."""
        found = None
        with contextlib.suppress(RotationError, SQLAlchemyError):
            found = self.holder()
        held = ""
        if found is not None:
            held = f" ({found.owner}, since {iso(from_epoch(found.acquired_at))})"
        return RotationBusy(f"{self.what} is already running in another worker{held}; "
                            "this one leaves it alone (try again when it has finished)")

    @contextlib.contextmanager
    def kept(self) -> Iterator[None]:
        """Renew the (held) lease in the background until the block ends; then release it."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.seconds / 3):
                try:
                    with self._mutex:
                        renewed = self.renew() if self._held else True
                    if not renewed:
                        log.error("lease %s lost to another worker; stopping its transition", self.name)
                        self.lost.set()
                        return
                except RotationError as exc:  # the database is away: try again on the next beat
                    log.warning("lease %s: renewal failed (%s); retrying", self.name, exc)

        thread = threading.Thread(target=beat, name=f"keystead-lease-{self.name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            with contextlib.suppress(RotationError):
                self.release()  # if this fails the lease simply expires


def holder(engine: sa.Engine, translate: Translate, name: str) -> Holder | None:
    with translate("reading a lease"), engine.connect() as conn:
        row = conn.execute(sa.select(lock_owners).where(lock_owners.c.name == name)).mappings().first()
    return None if row is None else Holder(row["name"], row["owner"], row["acquired_at"], row["lease_until"])


def holders(engine: sa.Engine, translate: Translate) -> list[Holder]:
    with translate("reading leases"), engine.connect() as conn:
        rows = conn.execute(sa.select(lock_owners).order_by(lock_owners.c.name)).mappings().all()
    return [Holder(r["name"], r["owner"], r["acquired_at"], r["lease_until"]) for r in rows]
