"""A vault in one SQLite file: the fast store, and the hot path of rotation.

Two tables (plus ``meta``, which holds the schema version and the audit
log's anchor: its latest ``audit_seq`` and ``audit_hash``)::

    secrets(name PK, vault, created_at, nonce, ciphertext)      one row per envelope
    slots(key, secret, position, provider, version, wrapped_at, wrapped)
          PRIMARY KEY (key, secret)                             one row per slot

Slots are keyed by (key, secret), so rotation's two queries — the slots of a
key not at a version, after a cursor; and a compare-and-swap of a batch of
them — are range scans and point updates on the primary key. An index on
(secret, position) serves reading, writing and deleting whole envelopes, in
slot order. Payloads are never touched by rotation.

The connection is opened once per store, in WAL mode with
``synchronous=NORMAL`` (a committed transaction survives a process crash; a
power loss may lose the last ones, never corrupt the file) and a busy timeout,
and every write is one explicit ``BEGIN IMMEDIATE`` … ``COMMIT``: a batch is
all or nothing. sqlite3 errors become :class:`StoreError` naming the file.
A store object belongs to the thread that opened it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from keystead.envelope import Envelope, Slot, check_name
from keystead.errors import FormatError, NotFoundError, StoreError
from keystead.stores.base import DAMAGED, OnDamaged, SlotRow, SlotUpdate, envelopes_of, redact_url

SCHEMA_VERSION = 1
CHUNK = 1000
"""Envelopes per executemany round inside one put_many transaction."""

_SCHEMA = (
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE secrets(name TEXT PRIMARY KEY, vault TEXT NOT NULL, created_at INT NOT NULL,"
    " nonce BLOB NOT NULL, ciphertext BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE slots(key TEXT NOT NULL, secret TEXT NOT NULL, position INT NOT NULL,"
    " provider TEXT NOT NULL, version TEXT NOT NULL, wrapped_at INT NOT NULL, wrapped BLOB NOT NULL,"
    " PRIMARY KEY (key, secret)) WITHOUT ROWID",
    "CREATE INDEX slots_by_secret ON slots(secret, position)",
    f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}')",
)

_DAMAGED_SQL = ("SELECT name FROM secrets WHERE name > ? "
                "AND NOT EXISTS (SELECT 1 FROM slots WHERE slots.secret = secrets.name)")
"""Secret rows without any slot: envelopes nothing can open (damaged)."""

# Primary result codes (https://sqlite.org/rescode.html).
_BUSY, _LOCKED, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 11, 13, 14, 26


class SqliteStore:
    """Envelopes and their slots in one SQLite database file. See the module docstring."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path).expanduser().absolute()
        self.url = f"sqlite:///{self.path}"
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._slotless: bool | None = None  # see _any_slotless
        _create_private(self.path)
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-16384")
            self._conn = conn
            self._migrate()
        except BaseException as exc:
            self._conn = None
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from exc
            raise

    # -- whole envelopes -------------------------------------------------

    def get(self, name: str) -> Envelope:
        check_name(name)
        with self._transaction(write=False) as c:
            row = c.execute(
                "SELECT vault, created_at, nonce, ciphertext FROM secrets WHERE name = ?", (name,)
            ).fetchone()
            slots = c.execute(
                "SELECT key, provider, version, wrapped_at, wrapped FROM slots"
                " WHERE secret = ? ORDER BY position",
                (name,),
            ).fetchall()
        if row is None:
            raise NotFoundError(f"no secret {name} in vault at {self.path}")
        return self._envelope(name, row, slots)

    def put(self, envelope: Envelope) -> None:
        self.put_many((envelope,))

    def put_many(self, envelopes: Iterable[Envelope]) -> int:
        """Write all envelopes in one transaction: all of them, or none."""
        written = 0
        items = iter(envelopes)
        with self._transaction() as c:
            while chunk := list(islice(items, CHUNK)):
                by_name = {check_name(env.name): env for env in chunk}
                c.executemany("DELETE FROM slots WHERE secret = ?", ((n,) for n in by_name))
                c.executemany(
                    "INSERT OR REPLACE INTO secrets VALUES (?, ?, ?, ?, ?)",
                    ((e.name, e.vault, e.created_at, e.nonce, e.ciphertext) for e in by_name.values()),
                )
                c.executemany(
                    "INSERT INTO slots VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        (s.key, e.name, i, s.provider, s.version, s.wrapped_at, s.wrapped)
                        for e in by_name.values()
                        for i, s in enumerate(e.slots)
                    ),
                )
                written += len(chunk)
        return written

    def delete(self, name: str) -> None:
        check_name(name)
        with self._transaction() as c:
            if c.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount == 0:
                raise NotFoundError(f"no secret {name} in vault at {self.path}")
            c.execute("DELETE FROM slots WHERE secret = ?", (name,))

    def names(self) -> list[str]:
        with self._transaction(write=False) as c:
            return [n for (n,) in c.execute("SELECT name FROM secrets ORDER BY name")]

    def count(self) -> int:
        with self._transaction(write=False) as c:
            n: int = c.execute("SELECT COUNT(*) FROM secrets").fetchone()[0]
            return n

    def iter_envelopes(
        self, *, after: str = "", batch: int = 1000, on_damaged: OnDamaged | None = None
    ) -> Iterator[Envelope]:
        """Envelopes in name order after ``after``, ``batch`` at a time (keyset pagination).

        A secret row without slots goes to ``on_damaged`` and is skipped; without
        ``on_damaged`` its FormatError propagates.
        """
        batch = max(1, batch)
        cursor = after
        while True:
            with self._transaction(write=False) as c:
                rows = c.execute(
                    "SELECT name, vault, created_at, nonce, ciphertext FROM secrets"
                    " WHERE name > ? ORDER BY name LIMIT ?",
                    (cursor, batch),
                ).fetchall()
                if not rows:
                    return
                slots: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
                for secret, *slot in c.execute(
                    "SELECT secret, key, provider, version, wrapped_at, wrapped FROM slots"
                    " WHERE secret > ? AND secret <= ? ORDER BY secret, position",
                    (cursor, rows[-1][0]),
                ):
                    slots[secret].append(slot)
            yield from envelopes_of(rows, slots, self._envelope, on_damaged)
            if len(rows) < batch:
                return
            cursor = rows[-1][0]

    # -- slots, for rotation ---------------------------------------------

    def slots_behind(
        self, key: str, version: str, *, after: str = "", until: str | None = None, limit: int = 1000
    ) -> list[SlotRow]:
        """See the Store protocol. A secret row without slots (damaged) in the range
        scanned is one ``SlotRow(name, DAMAGED, b"")`` in its place."""
        if limit <= 0:
            return []
        sql = "SELECT secret, version, wrapped FROM slots WHERE key = ? AND secret > ? AND version <> ?"
        args: tuple[object, ...] = (key, after, version)
        if until is not None:
            sql += " AND secret <= ?"
            args += (until,)
        with self._transaction(write=False) as c:
            rows = c.execute(sql + " ORDER BY secret LIMIT ?", args + (limit,)).fetchall()
            # Damaged rows in the range this page covers: up to its last row when the
            # page is full (what lies beyond is the next page's), else up to ``until``.
            last = rows[-1][0] if len(rows) == limit else until
            damaged = c.execute(
                _DAMAGED_SQL + (" AND name <= ?" if last is not None else "") + " ORDER BY name LIMIT ?",
                (after, *((last,) if last is not None else ()), limit),
            ).fetchall() if self._any_slotless(c, fresh=False) else []
        if not damaged:
            return list(map(SlotRow._make, rows))
        merged = sorted([*map(SlotRow._make, rows), *(SlotRow(n, DAMAGED, b"") for (n,) in damaged)])
        return merged[:limit]

    def replace_slots(self, key: str, updates: Sequence[SlotUpdate]) -> int:
        """Swap each slot still at its ``old_version``, all in one transaction; return how many."""
        if not updates:
            return 0
        with self._transaction() as c:
            before = c.total_changes
            # Numbered parameters take each SlotUpdate as it is, plus the key.
            c.executemany(
                "UPDATE slots SET version = ?3, wrapped_at = ?4, wrapped = ?5"
                " WHERE key = ?7 AND secret = ?1 AND version = ?2 AND (?6 IS NULL OR wrapped = ?6)",
                [(*u, key) for u in updates],
            )
            return c.total_changes - before

    def swap(self, pairs: Sequence[tuple[Envelope, Envelope]]) -> set[str]:
        """Replace each envelope still exactly as read (compare-and-swap), all in one transaction."""
        swapped: set[str] = set()
        if not pairs:
            return swapped
        with self._transaction() as c:
            for old, new in pairs:
                if old.name != new.name:
                    raise StoreError(f"swap of {old.name!r} with an envelope named {new.name!r}")
                row = c.execute("SELECT vault, created_at, nonce, ciphertext FROM secrets WHERE name = ?",
                                (old.name,)).fetchone()
                if row is None:
                    continue  # deleted meanwhile
                slots = c.execute("SELECT key, provider, version, wrapped_at, wrapped FROM slots"
                                  " WHERE secret = ? ORDER BY position", (old.name,)).fetchall()
                try:
                    current = self._envelope(old.name, row, slots)
                except FormatError:
                    continue  # damaged: not replaced
                if current != old:
                    continue  # changed meanwhile
                c.execute("DELETE FROM slots WHERE secret = ?", (new.name,))
                c.execute("INSERT OR REPLACE INTO secrets VALUES (?, ?, ?, ?, ?)",
                          (new.name, new.vault, new.created_at, new.nonce, new.ciphertext))
                c.executemany("INSERT INTO slots VALUES (?, ?, ?, ?, ?, ?, ?)",
                              [(s.key, new.name, i, s.provider, s.version, s.wrapped_at, s.wrapped)
                               for i, s in enumerate(new.slots)])
                swapped.add(old.name)
        return swapped

    def split_points(self, key: str, parts: int) -> list[str]:
        """Up to ``parts - 1`` secret names that cut the key's slots into ranges of about equal size."""
        with self._transaction(write=False) as c:
            (n,) = c.execute("SELECT COUNT(*) FROM slots WHERE key = ?", (key,)).fetchone()
            points: list[str] = []
            for i in range(1, parts):
                row = c.execute(
                    "SELECT secret FROM slots WHERE key = ? ORDER BY secret LIMIT 1 OFFSET ?", (key, n * i // parts)
                ).fetchone()
                if row and (not points or row[0] > points[-1]):
                    points.append(row[0])
        return points

    def version_counts(self, key: str) -> dict[str, int]:
        with self._transaction(write=False) as c:
            counts = dict(c.execute("SELECT version, COUNT(*) FROM slots WHERE key = ? GROUP BY version", (key,)))
            damaged = 0
            if self._any_slotless(c, fresh=True, holding=sum(counts.values())):
                (damaged,) = c.execute("SELECT COUNT(*) FROM (" + _DAMAGED_SQL + ")", ("",)).fetchone()
        if damaged:
            counts[DAMAGED] = counts.get(DAMAGED, 0) + damaged
        return counts

    def _any_slotless(self, c: sqlite3.Connection, *, fresh: bool, holding: int | None = None) -> bool:
        """Whether some secret row has no slot (a damaged envelope: keystead never writes one,
        so only something outside it can).

        Two index counts, far cheaper than the per-row check they guard (one, when ``holding``
        slots of one key already cover every secret). ``fresh=False`` (the rewrap's pages)
        reuses the answer of this store's last check, which ``version_counts`` (every count of
        a rotation, and retirement's proof) renews.
        """
        if fresh or self._slotless is None:
            (secrets,) = c.execute("SELECT COUNT(*) FROM secrets").fetchone()
            if holding is None or holding < secrets:  # a key on every secret: none can be slotless
                (holding,) = c.execute("SELECT COUNT(DISTINCT secret) FROM slots").fetchone()
            self._slotless = holding < secrets
        return self._slotless

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({redact_url(self.url)!r})"

    # -- internals -------------------------------------------------------

    def _migrate(self) -> None:
        """Create the schema in a new file; refuse a schema this code does not know."""
        with self._transaction(write=False) as c:
            has_meta = c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
            found = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if has_meta else None
        if found is None:
            with self._transaction() as c:
                if not c.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                    if c.execute("SELECT 1 FROM sqlite_master").fetchone():
                        raise StoreError(f"{self.path} is an SQLite database but not a keystead vault")
                    for statement in _SCHEMA:
                        c.execute(statement)
        elif found[0] != str(SCHEMA_VERSION):
            raise StoreError(
                f"vault database {self.path} has schema version {found[0]}; "
                f"this keystead reads version {SCHEMA_VERSION} (upgrade keystead)"
            )

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One explicit transaction; rolled back on any error, sqlite3 errors become StoreError."""
        c = self._conn
        if c is None:
            raise StoreError(f"vault store {redact_url(self.url)} is closed")
        try:
            c.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield c
            c.execute("COMMIT")
        except BaseException as exc:
            if c.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    c.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from exc
            raise

    def _envelope(self, name: str, row: Sequence[Any], slots: Iterable[Sequence[Any]]) -> Envelope:
        vault, created_at, nonce, ciphertext = row
        found = tuple(Slot(k, p, v, at, w) for k, p, v, at, w in slots)
        if not found:
            raise FormatError(f"envelope {name} in {self.path}: has no slots")
        return Envelope(vault, name, created_at, nonce, ciphertext, found)

    def _error(self, exc: sqlite3.Error) -> StoreError:
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code in (_BUSY, _LOCKED):
            return StoreError(
                f"vault database {self.path} is locked by another process "
                f"(gave up after {self.busy_timeout:g} s): {exc}"
            )
        if code == _FULL:
            return StoreError(f"disk full writing {self.path}")
        if code == _NOTADB:
            return StoreError(f"{self.path} is not a keystead vault: file is not a database")
        if code == _CORRUPT:
            return StoreError(f"vault database {self.path} is corrupted: {exc}")
        if code == _CANTOPEN:
            return StoreError(f"cannot open vault database {self.path}: {exc}")
        return StoreError(f"vault database {self.path}: {exc}")

    # -- the audit chain's anchor (keystead.audit.AuditAnchor) -----------

    def read_audit_anchor(self) -> tuple[int, str] | None:
        """The audit log's latest (seq, hash) as last written here, or None."""
        with self._transaction(write=False) as c:
            rows = dict(c.execute("SELECT key, value FROM meta WHERE key IN ('audit_seq', 'audit_hash')").fetchall())
        if "audit_seq" not in rows or "audit_hash" not in rows:
            return None
        return int(rows["audit_seq"]), rows["audit_hash"]

    def write_audit_anchor(self, seq: int, digest: str) -> None:
        """Record the audit log's latest (seq, hash) in ``meta``, in one transaction."""
        with self._transaction() as c:
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                          (("audit_seq", str(seq)), ("audit_hash", digest)))


def _create_private(path: Path) -> None:
    """Create an empty database file with mode 0600 (and its folder 0700) if missing."""
    if path.exists():
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        if path.parent.is_dir():
            return  # created meanwhile by another process
        raise StoreError(f"cannot create vault database {path}: {path.parent} is not a folder") from None
    except OSError as exc:
        raise StoreError(f"cannot create vault database {path}: {exc.strerror or exc}") from exc
    os.close(fd)
