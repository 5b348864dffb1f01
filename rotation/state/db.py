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

from keystead.clock import epoch
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
    Lane,
    Retirement,
    Rotation,
    State,
    StateDBError,
    UnreadableSlot,
)
from keystead.rotation.state.schema import lanes, retirements, rotations, unreadable
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
                     store: str = "") -> None:
        """One transaction per rewrap batch of ``store``: the backups of the batch about to
        be written (``backups``: (secret, old_version, wrapped) in name order) and the
        bookkeeping of the batch already written (``done``: its cursor, count and
        unreadable slots, on ``lane``'s cursor, or the rotation's when ``lane`` is None).
        Committed before returning, so the backups are durable before the store
        overwrites anything."""
        with self._translate("recording a batch"), self.engine.begin() as conn:
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
            else:
                conn.execute(sa.update(lanes).where(lanes.c.rotation_id == rotation_id, lanes.c.lane == lane)
                             .values(cursor=done.cursor))
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

    def finish_lane(self, rotation_id: int, lane: int) -> None:
        with self._translate("finishing a lane"), self.engine.begin() as conn:
            conn.execute(sa.update(lanes).where(lanes.c.rotation_id == rotation_id, lanes.c.lane == lane)
                         .values(done=True))

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

    # -- locks (see .locks) ----------------------------------------------------------
    @contextmanager
    def lock(self, name: str, *, what: str) -> Iterator[None]:
        """Hold the exclusive lock ``name`` or raise RotationBusy at once.

        ``what`` names the lock in the message ("rotation of key main").
        """
        with locks.hold(self.engine, self._translate, name, what=what, sqlite_path=self._path):
            yield


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
