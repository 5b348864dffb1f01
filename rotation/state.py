"""The rotation state database: where each key's rotation is, durably.

One SQLAlchemy 2 Core schema, on SQLite (the local default, beside the vault)
or PostgreSQL (``postgresql+psycopg://...``):

- ``keystead_rotations``: one row per rotation of one key, with its state
  (``planned -> rotated -> rewrapping -> verified -> retired -> done``), the
  version it rotates from and to, the rewrap cursor (the last secret name
  handled) and the counts. The latest row of a key is its current rotation.
- ``keystead_backups``: the old wrapped data keys of one rewrap batch, packed
  in one row (see :func:`pack_backups`), written and committed *before* the
  store overwrites those slots, deleted only once the rotation is verified.
  One row per batch, not per slot, keeps the backup off the hot path. A
  batch redone after a crash adds a row; lookups take the oldest row that
  holds a secret, so the original blob always wins.
- ``keystead_lanes``: for a large backlog, the rewrap is cut into name ranges
  (lanes) rewrapped by processes side by side, each with its own cursor.
- ``keystead_unreadable``: slots the key could not open during a rewrap.
  They are reported and skipped, never deleted.
- ``keystead_lock_owners``: who holds a key's rotation lock, for the message a
  second worker prints. The lock itself is an exclusive ``flock`` on a file
  beside the SQLite database, or ``pg_try_advisory_lock`` on PostgreSQL: both
  vanish with the process that held them, so a worker killed with SIGKILL
  never leaves a stale lock behind.

Every failure of the database itself (folder missing, file corrupt, locked
too long, server unreachable) becomes one :class:`RotationError` line.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from keystead.errors import RotationBusy, RotationError

PLANNED, ROTATED, REWRAPPING, VERIFIED, RETIRED, DONE = (
    "planned", "rotated", "rewrapping", "verified", "retired", "done",
)
STATES = (PLANNED, ROTATED, REWRAPPING, VERIFIED, RETIRED, DONE)
BUSY_TIMEOUT = float(os.environ.get("KEYSTEAD_STATE_BUSY_TIMEOUT", "10"))
"""Seconds a SQLite statement waits for another writer before 'locked'."""

metadata = sa.MetaData()
rotations = sa.Table(
    "keystead_rotations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("ref", sa.String(2048), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("from_version", sa.String(128)),
    sa.Column("to_version", sa.String(128)),
    sa.Column("cursor", sa.String(255), nullable=False, default=""),
    sa.Column("total", sa.Integer, nullable=False, default=0),
    sa.Column("rewrapped", sa.Integer, nullable=False, default=0),
    sa.Column("unreadable", sa.Integer, nullable=False, default=0),
    sa.Column("verified", sa.Integer, nullable=False, default=0),
    sa.Column("passes", sa.Integer, nullable=False, default=0),
    sa.Column("planned_at", sa.Float, nullable=False),
    sa.Column("rotated_at", sa.Float),
    sa.Column("verified_at", sa.Float),
    sa.Column("retired_at", sa.Float),
    sa.Column("done_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("error", sa.Text),
    sa.Index("ix_keystead_rotations_key", "key", "id"),
)
backups_table = sa.Table(
    "keystead_backups", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rotation_id", sa.Integer, nullable=False),
    sa.Column("first", sa.String(255), nullable=False),
    sa.Column("last", sa.String(255), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("slots", sa.LargeBinary, nullable=False),
    sa.Index("ix_keystead_backups_rotation", "rotation_id", "first"),
)
unreadable = sa.Table(
    "keystead_unreadable", metadata,
    sa.Column("rotation_id", sa.Integer, primary_key=True),
    sa.Column("secret", sa.String(255), primary_key=True),
    sa.Column("version", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)
lanes = sa.Table(
    "keystead_lanes",
    metadata,
    sa.Column("rotation_id", sa.Integer, primary_key=True),
    sa.Column("lane", sa.Integer, primary_key=True),
    sa.Column("start", sa.String(255), nullable=False),
    sa.Column("until", sa.String(255)),
    sa.Column("cursor", sa.String(255), nullable=False),
    sa.Column("done", sa.Boolean, nullable=False),
)
lock_owners = sa.Table(
    "keystead_lock_owners", metadata,
    sa.Column("name", sa.String(2048), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("acquired_at", sa.Float, nullable=False),
)


class StateDBError(RotationError):
    """The state database itself failed (missing, corrupt, locked, unreachable).

    Unlike a failure of one key's rotation, this stops the whole sweep.
    """


@dataclass(frozen=True, slots=True)
class Rotation:
    """One row of ``keystead_rotations``; times are epoch seconds (UTC)."""

    id: int
    key: str
    ref: str
    state: str
    reason: str
    from_version: str | None
    to_version: str | None
    cursor: str
    total: int
    rewrapped: int
    unreadable: int
    verified: int
    passes: int
    planned_at: float
    rotated_at: float | None
    verified_at: float | None
    retired_at: float | None
    done_at: float | None
    updated_at: float
    error: str | None

    @property
    def active(self) -> bool:
        return self.state != DONE


_ROTATION_FIELDS = tuple(f.name for f in fields(Rotation))


@dataclass(frozen=True, slots=True)
class Batch:
    """A rewrap batch written to the store: where it ended, how many slots it
    swapped, and the slots the key could not open (secret, version, reason)."""

    cursor: str
    rewrapped: int
    failed: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Lane:
    """One range of a parallel rewrap: secrets after ``start`` up to and including
    ``until`` (None: to the end), done up to ``cursor``."""

    rotation_id: int
    lane: int
    start: str
    until: str | None
    cursor: str
    done: bool


def owner_id() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _ts(when: datetime) -> float:
    return when.astimezone(timezone.utc).timestamp()


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
        """Open (and with ``create``, create) the state database at ``url``.

        With ``create=False`` a SQLite file that does not exist yet gives
        ``None``: read-only callers (status, ``rotate --dry-run``) then see
        "no rotation yet" and create nothing.
        """
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StateDBError(f"state database URL {url!r} is not a valid SQLAlchemy URL") from None
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
            if not path.exists() and not create:
                return None
            engine = sa.create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT}, poolclass=sa.pool.NullPool)
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        elif backend == "postgresql":
            engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 5})
        else:
            raise StateDBError(f"state database {where}: only sqlite:/// and postgresql+psycopg:// are supported")
        db = cls(engine, parsed)
        with db._translate("opening"):
            with engine.connect() as conn:
                if backend == "sqlite":
                    conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
                if create:
                    metadata.create_all(conn)
                    conn.commit()
        return db

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        try:
            yield
        except DBAPIError as exc:
            text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
            if "locked" in text or "busy" in text:
                msg = f"state database {self.where} is locked by another process (gave up after {BUSY_TIMEOUT:g}s)"
            elif "not a database" in text or "malformed" in text or "file is encrypted" in text:
                msg = (f"state database {self.where} is corrupt ({exc.orig}); move it aside and run again: "
                       "keystead rebuilds the rotation state from the vault")
            elif "does not exist" in text and "database" in text:
                msg = f"state database {self.where} does not exist: create it (createdb) or fix state_url"
            elif "connection" in text or "connect" in text:
                msg = f"state database {self.where} is unreachable: {str(exc.orig).strip().splitlines()[0]}"
            else:
                msg = f"state database {self.where}: {doing} failed: {str(exc.orig).strip().splitlines()[0]}"
            raise StateDBError(msg) from exc
        except SQLAlchemyError as exc:
            raise StateDBError(f"state database {self.where}: {doing} failed: {exc}") from exc

    # -- rotations -------------------------------------------------------------
    def latest(self, key: str) -> Rotation | None:
        """The key's most recent rotation (active or done), or None."""
        q = sa.select(rotations).where(rotations.c.key == key).order_by(rotations.c.id.desc()).limit(1)
        with self._translate("reading"), self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return Rotation(**{f: row[f] for f in _ROTATION_FIELDS}) if row else None

    def get(self, rotation_id: int) -> Rotation:
        q = sa.select(rotations).where(rotations.c.id == rotation_id)
        with self._translate("reading"), self.engine.connect() as conn:
            row = conn.execute(q).mappings().one()
        return Rotation(**{f: row[f] for f in _ROTATION_FIELDS})

    def history(self, key: str, limit: int = 20) -> list[Rotation]:
        q = sa.select(rotations).where(rotations.c.key == key).order_by(rotations.c.id.desc()).limit(limit)
        with self._translate("reading"), self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [Rotation(**{f: r[f] for f in _ROTATION_FIELDS}) for r in rows]

    def create(self, key: str, ref: str, *, reason: str, from_version: str | None,
               to_version: str | None = None, state: str = PLANNED, total: int = 0,
               now: datetime) -> Rotation:
        ts = _ts(now)
        values = dict(key=key, ref=ref, state=state, reason=reason, from_version=from_version,
                      to_version=to_version, cursor="", total=total, rewrapped=0, unreadable=0,
                      verified=0, passes=0, planned_at=ts, updated_at=ts,
                      rotated_at=ts if state != PLANNED else None)
        with self._translate("recording a rotation"), self.engine.begin() as conn:
            rid = conn.execute(sa.insert(rotations).values(**values)).inserted_primary_key[0]
        return self.get(rid)

    def update(self, rotation_id: int, *, now: datetime, **values: object) -> Rotation:
        values["updated_at"] = _ts(now)
        with self._translate("updating a rotation"), self.engine.begin() as conn:
            conn.execute(sa.update(rotations).where(rotations.c.id == rotation_id).values(**values))
        return self.get(rotation_id)

    # -- the rewrap batch --------------------------------------------------------
    def save_backups(self, rotation_id: int, rows: Sequence[tuple[str, str, bytes]]) -> None:
        """Keep (secret, old_version, wrapped) of each slot about to be overwritten (committed)."""
        self.record_batch(rotation_id, backups=rows, done=None, now=None)

    def record_batch(self, rotation_id: int, *, backups: Sequence[tuple[str, str, bytes]],
                     done: Batch | None, now: datetime | None, lane: int | None = None) -> None:
        """One transaction per rewrap batch: the backups of the batch about to be written
        (``backups``: (secret, old_version, wrapped) in name order) and the bookkeeping of
        the batch already written (``done``: its cursor, count and unreadable slots, on the
        rotation's cursor or on ``lane``'s). Committed before returning, so the backups are
        durable before the store overwrites anything."""
        with self._translate("recording a batch"), self.engine.begin() as conn:
            if backups:
                conn.execute(sa.insert(backups_table).values(
                    rotation_id=rotation_id, first=backups[0][0], last=backups[-1][0], count=len(backups),
                    slots=pack_backups(backups)))
            if done is None:
                return
            values: dict[str, object] = {"rewrapped": rotations.c.rewrapped + done.rewrapped,
                                         "updated_at": _ts(now)}
            if done.failed:
                mark = "?" if self.is_sqlite else "%s"
                sql = (f"INSERT INTO keystead_unreadable (rotation_id, secret, version, reason) "
                       f"VALUES ({mark}, {mark}, {mark}, {mark}) ON CONFLICT DO NOTHING")
                conn.exec_driver_sql(sql, [(rotation_id, s, v, r) for s, v, r in done.failed])
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

    # -- lanes of a parallel rewrap ---------------------------------------------
    def lanes(self, rotation_id: int) -> list[Lane]:
        q = sa.select(lanes).where(lanes.c.rotation_id == rotation_id).order_by(lanes.c.lane)
        with self._translate("reading lanes"), self.engine.connect() as conn:
            return [Lane(**row._mapping) for row in conn.execute(q)]

    def create_lanes(self, rotation_id: int, points: Sequence[str]) -> list[Lane]:
        """Cut the rewrap at ``points`` into ``len(points) + 1`` lanes (once: a resumed
        rotation keeps the lanes it had)."""
        bounds = ["", *points, None]
        rows = [dict(rotation_id=rotation_id, lane=i, start=bounds[i], until=bounds[i + 1],
                     cursor=bounds[i], done=False) for i in range(len(bounds) - 1)]
        with self._translate("creating lanes"), self.engine.begin() as conn:
            if not conn.execute(sa.select(sa.func.count()).select_from(lanes)
                                .where(lanes.c.rotation_id == rotation_id)).scalar_one():
                conn.execute(sa.insert(lanes), rows)
        return self.lanes(rotation_id)

    def drop_lanes(self, rotation_id: int) -> None:
        with self._translate("dropping lanes"), self.engine.begin() as conn:
            conn.execute(sa.delete(lanes).where(lanes.c.rotation_id == rotation_id))

    def finish_lane(self, rotation_id: int, lane: int) -> None:
        with self._translate("finishing a lane"), self.engine.begin() as conn:
            conn.execute(sa.update(lanes).where(lanes.c.rotation_id == rotation_id, lanes.c.lane == lane)
                         .values(done=True))

    def backup_rows(self, rotation_id: int) -> Iterator[tuple[str, str, bytes]]:
        """Every backed-up (secret, old_version, wrapped) of the rotation, oldest batch first.

        A secret appears more than once if its batch was redone after a crash.
        """
        last_id = 0
        while True:
            q = (sa.select(backups_table.c.id, backups_table.c.slots)
                 .where(backups_table.c.rotation_id == rotation_id, backups_table.c.id > last_id)
                 .order_by(backups_table.c.id).limit(20))
            with self._translate("reading backups"), self.engine.connect() as conn:
                page = conn.execute(q).all()
            if not page:
                return
            for row_id, blob in page:
                yield from unpack_backups(bytes(blob))
                last_id = row_id

    def backup_batches(self, rotation_id: int) -> int:
        q = sa.select(sa.func.count()).select_from(backups_table).where(backups_table.c.rotation_id == rotation_id)
        with self._translate("reading backups"), self.engine.connect() as conn:
            return conn.execute(q).scalar_one()

    def backup(self, rotation_id: int, secret: str) -> tuple[str, bytes] | None:
        """The original (version, wrapped) of a slot rewrapped by this rotation."""
        q = (sa.select(backups_table.c.slots)
             .where(backups_table.c.rotation_id == rotation_id, backups_table.c.first <= secret, backups_table.c.last >= secret)
             .order_by(backups_table.c.id))
        with self._translate("reading backups"), self.engine.connect() as conn:
            for (blob,) in conn.execute(q):
                for name, version, wrapped in unpack_backups(bytes(blob)):
                    if name == secret:
                        return version, wrapped
        return None

    def delete_backups(self, rotation_id: int) -> int:
        with self._translate("deleting backups"), self.engine.begin() as conn:
            return conn.execute(sa.delete(backups_table).where(backups_table.c.rotation_id == rotation_id)).rowcount

    def unreadable_slots(self, rotation_id: int) -> list[tuple[str, str, str]]:
        q = (sa.select(unreadable.c.secret, unreadable.c.version, unreadable.c.reason)
             .where(unreadable.c.rotation_id == rotation_id).order_by(unreadable.c.secret))
        with self._translate("reading"), self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(q)]

    # -- locks -----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, *, what: str) -> Iterator[None]:
        """Hold the exclusive lock ``name`` or raise RotationBusy at once.

        ``what`` names the lock in the message ("rotation of key main").
        """
        digest = hashlib.sha256(name.encode()).digest()
        if self.is_sqlite:
            assert self._path is not None
            folder = self._path.with_name(self._path.name + ".locks")
            folder.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(folder / (digest.hex()[:24] + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise self._busy(name, what) from None
                self._claim(name)
                yield
            finally:
                os.close(fd)  # closing releases the flock
        else:
            key = int.from_bytes(digest[:8], "big", signed=True)
            with self._translate("taking a lock"):
                conn = self.engine.connect()
            try:
                with self._translate("taking a lock"):
                    got = conn.exec_driver_sql("SELECT pg_try_advisory_lock(%s)", (key,)).scalar()
                    conn.commit()
                if not got:
                    raise self._busy(name, what)
                try:
                    self._claim(name)
                    yield
                finally:
                    with contextlib.suppress(SQLAlchemyError):
                        conn.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (key,))
                        conn.commit()
            finally:
                conn.close()

    def _claim(self, name: str) -> None:
        with self._translate("recording the lock owner"), self.engine.begin() as conn:
            conn.execute(sa.delete(lock_owners).where(lock_owners.c.name == name))
            conn.execute(sa.insert(lock_owners).values(name=name, owner=owner_id(), acquired_at=time.time()))

    def _busy(self, name: str, what: str) -> RotationBusy:
        holder = ""
        with contextlib.suppress(RotationError, SQLAlchemyError):
            with self._translate("reading the lock owner"), self.engine.connect() as conn:
                row = conn.execute(sa.select(lock_owners).where(lock_owners.c.name == name)).mappings().first()
            if row:
                since = datetime.fromtimestamp(row["acquired_at"], timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
                holder = f" ({row['owner']}, since {since})"
        return RotationBusy(f"{what} is already running in another worker{holder}; "
                            "this one leaves it alone (try again when it has finished)")


def pack_backups(rows: Sequence[tuple[str, str, bytes]]) -> bytes:
    """Slots as bytes: per slot ``u16 len, secret (UTF-8), u8 len, version, u16 len, wrapped``."""
    parts: list[bytes] = []
    add = parts.append
    for secret, version, wrapped in rows:
        sb, vb = secret.encode(), version.encode()
        add(_HEAD.pack(len(sb), len(vb), len(wrapped)))
        add(sb)
        add(vb)
        add(wrapped)
    return b"".join(parts)


def unpack_backups(data: bytes) -> Iterator[tuple[str, str, bytes]]:
    pos, end = 0, len(data)
    while pos < end:
        ls, lv, lw = _HEAD.unpack_from(data, pos)
        pos += _HEAD.size
        secret = data[pos:pos + ls].decode()
        pos += ls
        version = data[pos:pos + lv].decode()
        pos += lv
        yield secret, version, data[pos:pos + lw]
        pos += lw


_HEAD = struct.Struct(">HBH")


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API connection
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
    finally:
        cur.close()
