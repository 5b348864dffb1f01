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
backups = sa.Table(
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
        """Keep (secret, old_version, wrapped) of each slot about to be overwritten.

        ``rows`` are in secret-name order. Committed before returning.
        """
        if not rows:
            return
        values = dict(rotation_id=rotation_id, first=rows[0][0], last=rows[-1][0], count=len(rows),
                      slots=pack_backups(rows))
        with self._translate("writing backups"), self.engine.begin() as conn:
            conn.execute(sa.insert(backups).values(**values))

    def advance(self, rotation_id: int, *, cursor: str, rewrapped: int,
                failed: Sequence[tuple[str, str, str]], now: datetime) -> Rotation:
        """Record one finished batch: new cursor, counts, unreadable slots (one transaction)."""
        mark = "?" if self.is_sqlite else "%s"
        with self._translate("recording a batch"), self.engine.begin() as conn:
            added = 0
            if failed:
                sql = (f"INSERT INTO keystead_unreadable (rotation_id, secret, version, reason) "
                       f"VALUES ({mark}, {mark}, {mark}, {mark}) ON CONFLICT DO NOTHING")
                conn.exec_driver_sql(sql, [(rotation_id, s, v, r) for s, v, r in failed])
                added = conn.execute(
                    sa.select(sa.func.count()).select_from(unreadable)
                    .where(unreadable.c.rotation_id == rotation_id)
                ).scalar_one()
            values: dict[str, object] = {
                "cursor": cursor,
                "rewrapped": rotations.c.rewrapped + rewrapped,
                "updated_at": _ts(now),
            }
            if failed:
                values["unreadable"] = added
            conn.execute(sa.update(rotations).where(rotations.c.id == rotation_id).values(**values))
        return self.get(rotation_id)

    def backup_rows(self, rotation_id: int) -> Iterator[tuple[str, str, bytes]]:
        """Every backed-up (secret, old_version, wrapped) of the rotation, oldest batch first.

        A secret appears more than once if its batch was redone after a crash.
        """
        last_id = 0
        while True:
            q = (sa.select(backups.c.id, backups.c.slots)
                 .where(backups.c.rotation_id == rotation_id, backups.c.id > last_id)
                 .order_by(backups.c.id).limit(20))
            with self._translate("reading backups"), self.engine.connect() as conn:
                page = conn.execute(q).all()
            if not page:
                return
            for row_id, blob in page:
                yield from unpack_backups(bytes(blob))
                last_id = row_id

    def backup_batches(self, rotation_id: int) -> int:
        q = sa.select(sa.func.count()).select_from(backups).where(backups.c.rotation_id == rotation_id)
        with self._translate("reading backups"), self.engine.connect() as conn:
            return conn.execute(q).scalar_one()

    def backup(self, rotation_id: int, secret: str) -> tuple[str, bytes] | None:
        """The original (version, wrapped) of a slot rewrapped by this rotation."""
        q = (sa.select(backups.c.slots)
             .where(backups.c.rotation_id == rotation_id, backups.c.first <= secret, backups.c.last >= secret)
             .order_by(backups.c.id))
        with self._translate("reading backups"), self.engine.connect() as conn:
            for (blob,) in conn.execute(q):
                for name, version, wrapped in unpack_backups(bytes(blob)):
                    if name == secret:
                        return version, wrapped
        return None

    def delete_backups(self, rotation_id: int) -> int:
        with self._translate("deleting backups"), self.engine.begin() as conn:
            return conn.execute(sa.delete(backups).where(backups.c.rotation_id == rotation_id)).rowcount

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
