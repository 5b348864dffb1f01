"""The :class:`StateDB` class: opening the database and one method per operation.

Every method is one transaction; every database failure becomes one
:class:`StateDBError` line (:mod:`.errors`). Tables are in :mod:`.schema`,
backups in :mod:`.backups`, locks in :mod:`.locks`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from keystead.clock import Clock, epoch, utcnow
from keystead.rotation.state import backups as bk
from keystead.rotation.state import locks, schema
from keystead.rotation.state.errors import translated
from keystead.rotation.state.records import (
    DELETED,
    DISABLED,
    PLANNED,
    RETIREMENT_STATES,
    ROTATION_FIELDS,
    Batch,
    FailedSlot,
    Holder,
    Lane,
    LaneBatch,
    LeaseLost,
    Retirement,
    Rotation,
    State,
    StateDBError,
    UnreadableSlot,
)
from keystead.rotation.state.schema import lane_log, lanes, retirements, rotations, unreadable
from keystead.stores.base import SlotRow, redact_url

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

BUSY_TIMEOUT = float(os.environ.get("KEYSTEAD_STATE_BUSY_TIMEOUT", "10"))
"""Seconds a SQLite statement waits for another writer before 'locked'."""


def _describe(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


class StateDB:
    """The state database. Open with :meth:`open`; every method is one transaction."""

    def __init__(self, engine: sa.Engine, url: sa.URL) -> None:
        self.engine = engine
        self.url = url
        self.is_sqlite = url.get_backend_name() == "sqlite"
        self.where = _describe(url)
        self._path = Path(url.database) if self.is_sqlite and url.database else None

    # -- opening ---------------------------------------------------------------
    @classmethod
    def open(cls, url: str, *, create: bool = True) -> StateDB | None:
        """Open the state database at ``url`` and bring its schema to the current version.

        With ``create`` an empty database gets the tables (a new SQLite file is
        made 0600 first). With ``create=False`` a SQLite file that does not exist
        yet gives ``None``: read-only callers (status, ``rotate --dry-run``) then
        see "no rotation yet" and create nothing. A version 1 database is
        migrated either way; a newer one is refused.
        """
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise StateDBError(f"state database URL {redact_url(url)!r} is not a valid SQLAlchemy URL "
                               "(postgresql://USER@HOST:PORT/DB or sqlite:///PATH)") from None
        backend = parsed.get_backend_name()
        where = _describe(parsed)
        if backend == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise StateDBError(f"state database {where}: give a file path (sqlite:////abs/path/state.db)")
            path = Path(parsed.database)
            if not path.parent.is_dir():
                raise StateDBError(
                    f"state database {where}: folder {path.parent} does not exist "
                    "(check state_url in keystead.toml)"
                )
            if not path.exists():
                if not create:
                    return None
                _create_private(path, where)
            engine = sa.create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT}, poolclass=sa.pool.NullPool)
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        elif backend == "postgresql":
            engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 5})
        else:
            raise StateDBError(f"state database {where}: only sqlite:/// and postgresql+psycopg:// are supported")
        db = cls(engine, parsed)
        try:
            with db._translate("opening"):
                schema.ensure(engine, where, create=create)
        except BaseException:
            engine.dispose()
            raise
        return db

    def close(self) -> None:
        self.engine.dispose()

    def _translate(self, doing: str) -> AbstractContextManager[None]:
        return translated(self.where, doing, busy_timeout=BUSY_TIMEOUT)

    def schema_version(self) -> int:
        with self._translate("reading"), self.engine.connect() as conn:
            return schema.version(conn)

    # -- rotations -------------------------------------------------------------
    def latest(self, key: str) -> Rotation | None:
        """The key's most recent rotation (active or finished), or None."""
        q = sa.select(rotations).where(rotations.c.key == key).order_by(rotations.c.id.desc()).limit(1)
        with self._translate("reading"), self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return _rotation(row) if row else None

    def get(self, rotation_id: int) -> Rotation:
        q = sa.select(rotations).where(rotations.c.id == rotation_id)
        with self._translate("reading"), self.engine.connect() as conn:
            return _rotation(conn.execute(q).mappings().one())

    def history(self, key: str, limit: int = 20) -> list[Rotation]:
        q = sa.select(rotations).where(rotations.c.key == key).order_by(rotations.c.id.desc()).limit(limit)
        with self._translate("reading"), self.engine.connect() as conn:
            return [_rotation(r) for r in conn.execute(q).mappings()]

    def create(self, key: str, ref: str, *, reason: str, from_version: str | None,
               to_version: str | None = None, state: str = PLANNED, total: int = 0,
               now: datetime) -> Rotation:
        ts = epoch(now)
        values = dict(key=key, ref=ref, state=state, reason=reason, from_version=from_version,
                      to_version=to_version, cursor="", total=total, rewrapped=0, unreadable=0,
                      verified=0, passes=0, held=0, planned_at=ts, updated_at=ts,
                      rotated_at=ts if state != PLANNED else None)
        with self._translate("recording a rotation"), self.engine.begin() as conn:
            pk = conn.execute(sa.insert(rotations).values(**values)).inserted_primary_key
            assert pk is not None  # an INSERT of one row into a table with an id column has one
            rid = pk[0]
        return self.get(rid)

    def update(self, rotation_id: int, *, now: datetime, **values: object) -> Rotation:
        values["updated_at"] = epoch(now)
        with self._translate("updating a rotation"), self.engine.begin() as conn:
            conn.execute(sa.update(rotations).where(rotations.c.id == rotation_id).values(**values))
        return self.get(rotation_id)

    # -- the rewrap batch --------------------------------------------------------
    def save_backups(self, rotation_id: int, rows: Sequence[tuple[str, str, bytes]], *, store: str = "") -> None:
        """Keep (secret, old_version, wrapped) of each slot about to be overwritten (committed)."""
        self.record_batch(rotation_id, backups=rows, done=None, now=None, store=store)

    def record_batch(self, rotation_id: int, *, backups: Sequence[tuple[str, str, bytes]],
                     done: Batch | None, now: datetime | None, lane: int | None = None,
                     store: str = "", owner: str | None = None, lease_until: float | None = None,
                     at: float | None = None) -> None:
        """One transaction per rewrap batch of ``store``: the backups of the batch about to
        be written (``backups``: (secret, old_version, wrapped) in name order) and the
        bookkeeping of the batch already written (``done``: its cursor, count and
        unreadable slots, on ``lane``'s cursor, or the rotation's when ``lane`` is None).
        Committed before returning, so the backups are durable before the store
        overwrites anything.

        With ``owner`` the commit is *fenced*: it renews the lane's lease to
        ``lease_until`` only where ``owner`` still holds it, and logs the batch
        (``keystead_lane_log``, time ``at``); if the lane has another owner now
        nothing is written and :class:`LeaseLost` is raised."""
        with self._translate("recording a batch"), self.engine.begin() as conn:
            if lane is not None and owner is not None:
                lane_values: dict[str, object] = {"lease_until": lease_until}
                if done is not None:
                    lane_values.update(cursor=done.cursor, rewrapped=lanes.c.rewrapped + done.rewrapped)
                fenced = conn.execute(sa.update(lanes).where(
                    lanes.c.rotation_id == rotation_id, lanes.c.lane == lane, lanes.c.owner == owner,
                ).values(**lane_values)).rowcount
                if not fenced:
                    raise LeaseLost(f"rotation {rotation_id}: lane {lane} is no longer leased to {owner}")
                if backups:
                    conn.execute(sa.insert(lane_log).values(
                        rotation_id=rotation_id, lane=lane, owner=owner, first=backups[0][0], last=backups[-1][0],
                        count=len(backups), at=at if at is not None else epoch(utcnow())))
            if backups:
                bk.insert(conn, rotation_id, backups, store=store)
            if done is None:
                return
            assert now is not None
            values: dict[str, object] = {"rewrapped": rotations.c.rewrapped + done.rewrapped,
                                         "updated_at": epoch(now)}
            if done.failed:
                mark = "?" if self.is_sqlite else "%s"
                sql = (f"INSERT INTO keystead_unreadable (rotation_id, store, secret, version, reason) "
                       f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark}) ON CONFLICT DO NOTHING")
                conn.exec_driver_sql(sql, [(rotation_id, store, s, v, r) for s, v, r in done.failed])
                values["unreadable"] = conn.execute(
                    sa.select(sa.func.count()).select_from(unreadable)
                    .where(unreadable.c.rotation_id == rotation_id)
                ).scalar_one()
            if lane is None:
                values["cursor"] = done.cursor
            elif owner is None:
                conn.execute(sa.update(lanes).where(lanes.c.rotation_id == rotation_id, lanes.c.lane == lane)
                             .values(cursor=done.cursor, rewrapped=lanes.c.rewrapped + done.rewrapped))
            conn.execute(sa.update(rotations).where(rotations.c.id == rotation_id).values(**values))

    def unreadable_slots(self, rotation_id: int) -> list[FailedSlot]:
        """(secret, version, reason) of every slot recorded unreadable, of all stores.

        The shape today's engine unpacks; :meth:`unreadable` also names the store."""
        return [FailedSlot(u.secret, u.version, u.reason) for u in self.unreadable(rotation_id)]

    def unreadable(self, rotation_id: int, *, store: str | None = None) -> list[UnreadableSlot]:
        """The slots recorded unreadable for the rotation (of ``store``, or of all stores
        when None), by store then secret."""
        q = (sa.select(unreadable.c.store, unreadable.c.secret, unreadable.c.version, unreadable.c.reason)
             .where(unreadable.c.rotation_id == rotation_id)
             .order_by(unreadable.c.store, unreadable.c.secret))
        if store is not None:
            q = q.where(unreadable.c.store == store)
        with self._translate("reading"), self.engine.connect() as conn:
            return [UnreadableSlot(*r) for r in conn.execute(q)]

    # -- lanes: the rewrap's name ranges, per store -------------------------------
    def lanes(self, rotation_id: int, *, store: str | None = None) -> list[Lane]:
        """The rotation's lanes (of ``store``, or of all stores when None), by lane number."""
        q = sa.select(lanes).where(lanes.c.rotation_id == rotation_id).order_by(lanes.c.lane)
        if store is not None:
            q = q.where(lanes.c.store == store)
        with self._translate("reading lanes"), self.engine.connect() as conn:
            return [Lane(**row._mapping) for row in conn.execute(q)]

    def create_lanes(self, rotation_id: int, points: Sequence[str], *, store: str = "") -> list[Lane]:
        """Cut ``store``'s rewrap at ``points`` into ``len(points) + 1`` lanes, numbered after
        the rotation's other lanes (once per store: a resumed rotation keeps its lanes)."""
        bounds = ["", *points, None]
        of_store = (lanes.c.rotation_id == rotation_id, lanes.c.store == store)
        with self._translate("creating lanes"), self.engine.begin() as conn:
            # Serialise lane numbering between workers creating the lanes of several stores.
            if self.is_sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # pysqlite would begin only at the INSERT
            else:
                conn.execute(sa.select(rotations.c.id).where(rotations.c.id == rotation_id).with_for_update())
            if not conn.execute(sa.select(sa.func.count()).select_from(lanes).where(*of_store)).scalar_one():
                first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(lanes.c.lane) + 1, 0))
                                     .where(lanes.c.rotation_id == rotation_id)).scalar_one()
                conn.execute(sa.insert(lanes), [
                    dict(rotation_id=rotation_id, lane=first + i, store=store, start=bounds[i],
                         until=bounds[i + 1], cursor=bounds[i], done=False)
                    for i in range(len(bounds) - 1)])
        return self.lanes(rotation_id, store=store)

    def drop_lanes(self, rotation_id: int, *, store: str | None = None) -> None:
        q = sa.delete(lanes).where(lanes.c.rotation_id == rotation_id)
        if store is not None:
            q = q.where(lanes.c.store == store)
        with self._translate("dropping lanes"), self.engine.begin() as conn:
            conn.execute(q)

    def finish_lane(self, rotation_id: int, lane: int, *, owner: str | None = None) -> None:
        """Mark the lane done (and free its lease). With ``owner``, fenced: LeaseLost if another holds it."""
        where = [lanes.c.rotation_id == rotation_id, lanes.c.lane == lane]
        if owner is not None:
            where.append(lanes.c.owner == owner)
        with self._translate("finishing a lane"), self.engine.begin() as conn:
            n = conn.execute(sa.update(lanes).where(*where).values(done=True, owner=None, lease_until=None)).rowcount
        if owner is not None and not n:
            raise LeaseLost(f"rotation {rotation_id}: lane {lane} is no longer leased to {owner}")

    def claim_lane(self, rotation_id: int, *, owner: str, now: float, seconds: float,
                   stores: Sequence[str] | None = None) -> Lane | None:
        """Lease one unfinished lane of the rotation (of ``stores``, when given) to ``owner`` until
        ``now + seconds``: a lane nobody holds, whose lease expired, or that ``owner`` holds already
        (after a reconnect it gets its own back first). None when every such lane is held by others.

        One statement: ``UPDATE ... WHERE (rotation_id, lane) IN (SELECT ... LIMIT 1 FOR UPDATE
        SKIP LOCKED) RETURNING ...``. On PostgreSQL the row lock makes concurrent claimers take
        different lanes without waiting; SQLite has no FOR UPDATE (SQLAlchemy leaves it out), and
        its single writer lock makes the same statement safe."""
        c = lanes.c
        free = sa.or_(c.owner.is_(None), c.owner == owner, c.lease_until < now)
        where = [c.rotation_id == rotation_id, c.done.is_(False), free]
        if stores is not None:
            where.append(c.store.in_(list(stores)))
        pick = (sa.select(c.rotation_id, c.lane).where(*where)
                .order_by(sa.case((c.owner == owner, 0), else_=1), c.lane).limit(1)
                .with_for_update(skip_locked=True))
        stmt = (sa.update(lanes).where(sa.tuple_(c.rotation_id, c.lane).in_(pick))
                .values(owner=owner, lease_until=now + seconds).returning(*lanes.c))
        with self._translate("claiming a lane"), self.engine.begin() as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else Lane(**row)

    def release_lane(self, rotation_id: int, lane: int, *, owner: str) -> None:
        """Give the lane's lease back (stopped between batches): another worker may take it at once."""
        with self._translate("releasing a lane"), self.engine.begin() as conn:
            conn.execute(sa.update(lanes).where(lanes.c.rotation_id == rotation_id, lanes.c.lane == lane,
                                                lanes.c.owner == owner).values(owner=None, lease_until=None))

    def lanes_left(self, rotation_id: int, *, stores: Sequence[str] | None = None) -> int:
        """Unfinished lanes of the rotation (of ``stores``, when given)."""
        q = (sa.select(sa.func.count()).select_from(lanes)
             .where(lanes.c.rotation_id == rotation_id, lanes.c.done.is_(False)))
        if stores is not None:
            q = q.where(lanes.c.store.in_(list(stores)))
        with self._translate("reading lanes"), self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def lane_log(self, rotation_id: int) -> list[LaneBatch]:
        """Every fenced batch commit of the rotation, in commit order."""
        q = sa.select(lane_log).where(lane_log.c.rotation_id == rotation_id).order_by(lane_log.c.id)
        with self._translate("reading the lane log"), self.engine.connect() as conn:
            return [LaneBatch(**row._mapping) for row in conn.execute(q)]

    # -- backups (see .backups) --------------------------------------------------
    def backup_rows(self, rotation_id: int, *, store: str | None = None) -> Iterator[SlotRow]:
        """Every backed-up (secret, old_version, wrapped) of the rotation (of ``store``, or of
        all stores when None), oldest batch first. A secret appears more than once if its
        batch was redone after a crash."""
        last_id = 0
        while True:
            with self._translate("reading backups"), self.engine.connect() as conn:
                page = bk.page(conn, rotation_id, store=store, after_id=last_id)
            if not page:
                return
            for row_id, blob in page:
                yield from bk.unpack(blob)
                last_id = row_id

    def backup_batches(self, rotation_id: int) -> int:
        with self._translate("reading backups"), self.engine.connect() as conn:
            return bk.count(conn, rotation_id)

    def backup(self, rotation_id: int, secret: str, *, store: str = "") -> tuple[str, bytes] | None:
        """The original (version, wrapped) of ``secret``'s slot in ``store`` rewrapped by this rotation."""
        with self._translate("reading backups"), self.engine.connect() as conn:
            return bk.lookup(conn, rotation_id, secret, store=store)

    def delete_backups(self, rotation_id: int) -> int:
        with self._translate("deleting backups"), self.engine.begin() as conn:
            return bk.delete(conn, rotation_id)

    # -- the retirement ledger -----------------------------------------------------
    def retirements(self, ref: str) -> list[Retirement]:
        """What has been disabled or deleted of key ``ref``, by version."""
        q = sa.select(retirements).where(retirements.c.ref == ref).order_by(retirements.c.version)
        with self._translate("reading retirements"), self.engine.connect() as conn:
            return [Retirement(**row._mapping) for row in conn.execute(q)]

    def record_retirement(self, ref: str, version: str, *, state: str, rotation_id: int | None,
                          now: datetime) -> Retirement:
        """Record that ``version`` of ``ref`` is now ``state`` (``disabled`` or ``deleted``).

        An upsert: ``disabled_at`` is set when the state becomes disabled, ``deleted_at``
        when it becomes deleted; the other time is kept.
        """
        if state not in RETIREMENT_STATES:
            raise ValueError(f"retirement state must be one of {RETIREMENT_STATES}, not {state!r}")
        ts = epoch(now)
        key = (retirements.c.ref == ref, retirements.c.version == version)
        values: dict[str, object] = {"state": state, "rotation_id": rotation_id, "updated_at": ts}
        values[{DISABLED: "disabled_at", DELETED: "deleted_at"}[state]] = ts
        with self._translate("recording a retirement"), self.engine.begin() as conn:
            if not conn.execute(sa.update(retirements).where(*key).values(**values)).rowcount:
                conn.execute(sa.insert(retirements).values(ref=ref, version=version, **values))
            row = conn.execute(sa.select(retirements).where(*key)).mappings().one()
        return Retirement(**row)

    def forget_retirement(self, ref: str, version: str) -> bool:
        """Drop the ledger row of ``version`` (``keys restore``); True if there was one."""
        with self._translate("forgetting a retirement"), self.engine.begin() as conn:
            return bool(conn.execute(sa.delete(retirements).where(
                retirements.c.ref == ref, retirements.c.version == version)).rowcount)

    # -- leases (see .locks) ----------------------------------------------------------
    def lease(self, name: str, *, what: str, owner: str | None = None, seconds: float = locks.LEASE_SECONDS,
              clock: Clock = utcnow) -> locks.KeyLease:
        """The lease ``name`` (a key's transitions) for ``owner`` (this process by default)."""
        return locks.KeyLease(self.engine, self._translate, name, what=what, owner=owner or locks.owner_id(),
                              seconds=seconds, clock=clock)

    @contextmanager
    def lock(self, name: str, *, what: str, seconds: float = locks.LEASE_SECONDS) -> Iterator[None]:
        """Hold the lease ``name`` for the block (renewed meanwhile) or raise RotationBusy at once.

        ``what`` names it in the message ("rotation of key main").
        """
        lease = self.lease(name, what=what, seconds=seconds)
        if not lease.acquire():
            raise lease.busy()
        with lease.kept():
            yield

    def holder(self, name: str) -> Holder | None:
        """Who holds (or last held, if it has not expired or been released) the lease ``name``."""
        return locks.holder(self.engine, self._translate, name)

    def holders(self) -> list[Holder]:
        """Every lease held or left to expire: who holds which key's transitions."""
        return locks.holders(self.engine, self._translate)


def _rotation(row: sa.RowMapping) -> Rotation:
    values = {f: row[f] for f in ROTATION_FIELDS}
    values["state"] = State(values["state"])
    return Rotation(**values)


def _create_private(path: Path, where: str) -> None:
    """Create an empty SQLite file, mode 0600 whatever the umask (SQLite gives its -wal
    and -shm files the same mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return  # created meanwhile by another process
    except OSError as exc:
        raise StateDBError(f"state database {where}: cannot create {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
    finally:
        cur.close()
