"""A vault in PostgreSQL: the store several workers on several machines share.

The tables are the SQLite store's, prefixed (:mod:`keystead.stores.pgschema`):
secrets by name, slots by (key, secret), secret names ``COLLATE "C"`` so
every comparison and ``ORDER BY`` is byte order. Opened with SQLAlchemy 2
(a pooled engine, ``pool_pre_ping``, ``connect_timeout``) over psycopg 3.

Every call is one transaction, committed before it returns; none stays open
while keystead talks to a KMS (``put_many`` seals every envelope before it
begins; ``iter_envelopes`` ends each page's transaction before yielding it).
Reads are ``REPEATABLE READ READ ONLY``, so the secret row and its slots come
from one snapshot. Batches are single statements over arrays (``unnest``):
``put_many`` writes a chunk with three statements, ``replace_slots`` is one
compare-and-swap ``UPDATE``. Writers lock a secret row before its slots
(``put_many``, ``swap``, ``delete``), so they queue instead of deadlocking.

Errors: a lost or refused connection, a server shutting down, a statement
timeout, a deadlock or serialization failure raise :class:`StoreUnavailable`
(transient: the transaction was rolled back, retry later); a read is retried
once on a fresh connection first, a deadlocked call up to three times. Wrong
password, missing database, missing privilege raise :class:`StoreError`. Messages name the host and the database,
never the password (nor SQL parameters).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from keystead.envelope import Envelope, Slot, check_name
from keystead.errors import ConfigError, FormatError, NotFoundError, StoreError, StoreUnavailable
from keystead.stores import pgschema
from keystead.stores.base import DAMAGED, OnDamaged, SlotRow, SlotUpdate, envelopes_of, redact_url

CHUNK = 1000
"""Envelopes per statement round inside one put_many transaction."""
CONNECT_TIMEOUT = int(os.environ.get("KEYSTEAD_PG_CONNECT_TIMEOUT", "10"))
"""Seconds to wait for a connection (unless the URL sets ``connect_timeout``)."""

ANALYZE_AFTER = 10_000
"""A put_many of this many envelopes ends with ANALYZE (see :meth:`PostgresStore._analyze`)."""

_T = TypeVar("_T")

_SECRETS, _SLOTS = pgschema.secrets.name, pgschema.slots.name
_GET = (f"SELECT s.vault, s.created_at, s.nonce, s.ciphertext, l.key, l.provider, l.version, l.wrapped_at,"
        f" l.wrapped FROM {_SECRETS} s LEFT JOIN {_SLOTS} l ON l.secret = s.name"
        f" WHERE s.name = %s ORDER BY l.position")
_UPSERT_SECRETS = (f"INSERT INTO {_SECRETS} (name, vault, created_at, nonce, ciphertext)"
                   f" SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bytea[], %s::bytea[])"
                   f" ON CONFLICT (name) DO UPDATE SET vault = EXCLUDED.vault, created_at = EXCLUDED.created_at,"
                   f" nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext")
_DELETE_SLOTS = f"DELETE FROM {_SLOTS} WHERE secret = ANY(%s::text[])"
_INSERT_SLOTS = (f"INSERT INTO {_SLOTS} (key, secret, position, provider, version, wrapped_at, wrapped)"
                 f" SELECT * FROM unnest(%s::text[], %s::text[], %s::int[], %s::text[], %s::text[],"
                 f" %s::bigint[], %s::bytea[])")
_REPLACE = (f"UPDATE {_SLOTS} AS l SET version = u.version, wrapped_at = u.wrapped_at, wrapped = u.wrapped"
            f" FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bytea[], %s::bytea[])"
            f" AS u(secret, old_version, version, wrapped_at, wrapped, old_wrapped)"
            f" WHERE l.key = %s AND l.secret = ANY(%s::text[]) AND l.secret = u.secret AND l.version = u.old_version"
            f" AND (u.old_wrapped IS NULL OR l.wrapped = u.old_wrapped)")
_DAMAGED_SQL = (f"SELECT name FROM {_SECRETS} WHERE name > %s"
                f" AND NOT EXISTS (SELECT 1 FROM {_SLOTS} WHERE {_SLOTS}.secret = {_SECRETS}.name)")
"""Secret rows without any slot: envelopes nothing can open (damaged)."""

# SQLSTATE classes and codes (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_TRANSIENT_CLASSES = ("08", "53", "57", "40", "58")  # connection, resources, operator intervention, rollback, system
_ROLLED_BACK = ("40001", "40P01")  # serialization failure, deadlock: the whole transaction was undone
RETRIES = 3
_AUTH = ("28000", "28P01")
_NO_DATABASE = "3D000"
_PRIVILEGE = "42501"
_CONNECT_REFUSALS = (  # the server's FATAL at login (libpq gives no SQLSTATE for it): not transient
    ("password authentication failed", "28P01"), ("authentication failed", "28P01"),
    ("no pg_hba.conf entry", "28000"), ("role \"", "28000"), ("does not exist", _NO_DATABASE),
    ("permission denied for database", _PRIVILEGE),
)


class PostgresStore:
    """Envelopes and their slots in a PostgreSQL database. See the module docstring.

    ``url`` is ``postgresql://`` or ``postgresql+psycopg://`` (libpq's
    ``PGPASSWORD`` and ``~/.pgpass`` work too, keeping the password out of the
    config). Thread-safe: the engine pools connections.
    """

    def __init__(self, url: str, *, engine_options: dict[str, Any] | None = None, check: bool = True) -> None:
        parsed = parse_url(url)
        self.url = redact_url(url)
        socket = parsed.query.get("host")  # postgresql:///vault?host=/var/run/postgresql: a Unix socket
        host = parsed.host or (socket if isinstance(socket, str) else None) or "localhost"
        self.host = f"{host}:{parsed.port or 5432}"
        self.database = str(parsed.database)
        self.where = f"vault database {self.database!r} on {self.host}"
        self._password = parsed.password or ""
        self._slotless: bool | None = None  # see _any_slotless
        connect_args: dict[str, Any] = {"application_name": "keystead"}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT
        self.engine = sa.create_engine(
            parsed, pool_pre_ping=True, pool_size=2, max_overflow=8, connect_args=connect_args,
            hide_parameters=True, **(engine_options or {}),
        )
        # One snapshot per read, begun as BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY (psycopg
        # sets both on the BEGIN it sends: no round trip of their own); the same pool of connections.
        self._reader = self.engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        if not check:  # keystead db upgrade / status: the schema is theirs to read and change
            return
        try:
            self._run(lambda: pgschema.ensure(self.engine, self.where), write=True, doing="opening")
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def upgrade(cls, url: str) -> tuple[int, int]:
        """``keystead db upgrade``: bring the vault schema at ``url`` to this keystead's version
        (creating it in an empty database); (version before, version after)."""
        with cls(url, check=False) as store:
            return store._run(lambda: pgschema.upgrade(store.engine, store.where), write=True, doing="upgrading")

    # -- whole envelopes -------------------------------------------------

    def get(self, name: str) -> Envelope:
        check_name(name)
        rows = self._read(lambda c: c.exec_driver_sql(_GET, (name,)).fetchall())
        if not rows:
            raise NotFoundError(f"no secret {name} in vault at {self.where}")
        return self._envelope(name, rows[0][:4], [r[4:] for r in rows if r[4] is not None])

    def put(self, envelope: Envelope) -> None:
        self.put_many((envelope,))

    def put_many(self, envelopes: Iterable[Envelope]) -> int:
        """Write all envelopes in one transaction: all of them, or none.

        The iterable is drained first (sealing may call a KMS), then written,
        so no transaction waits on a provider."""
        items = list(envelopes)
        for env in items:
            check_name(env.name)

        def write(c: sa.Connection) -> int:
            chunks = iter(items)
            while chunk := list(islice(chunks, CHUNK)):
                by_name = {env.name: env for env in chunk}
                es = sorted(by_name.values(), key=lambda e: e.name.encode())  # lock rows in one order
                c.exec_driver_sql(_UPSERT_SECRETS, ([e.name for e in es], [e.vault for e in es],
                                                    [e.created_at for e in es], [e.nonce for e in es],
                                                    [e.ciphertext for e in es]))
                c.exec_driver_sql(_DELETE_SLOTS, ([e.name for e in es],))
                flat = [(e.name, i, s) for e in es for i, s in enumerate(e.slots)]
                c.exec_driver_sql(_INSERT_SLOTS, ([s.key for _, _, s in flat], [n for n, _, _ in flat],
                                                  [i for _, i, _ in flat], [s.provider for _, _, s in flat],
                                                  [s.version for _, _, s in flat], [s.wrapped_at for _, _, s in flat],
                                                  [s.wrapped for _, _, s in flat]))
            return len(items)

        written = self._write(write) if items else 0
        if written >= ANALYZE_AFTER:
            self._analyze()
        return written

    def delete(self, name: str) -> None:
        check_name(name)

        def remove(c: sa.Connection) -> None:
            if c.exec_driver_sql(f"DELETE FROM {_SECRETS} WHERE name = %s", (name,)).rowcount == 0:
                raise NotFoundError(f"no secret {name} in vault at {self.where}")
            c.exec_driver_sql(f"DELETE FROM {_SLOTS} WHERE secret = %s", (name,))

        self._write(remove)

    def names(self) -> list[str]:
        return self._read(lambda c: [n for (n,) in c.exec_driver_sql(f"SELECT name FROM {_SECRETS} ORDER BY name")])

    def count(self) -> int:
        return int(self._read(lambda c: c.exec_driver_sql(f"SELECT count(*) FROM {_SECRETS}").scalar_one()))

    def iter_envelopes(
        self, *, after: str = "", batch: int = 1000, on_damaged: OnDamaged | None = None
    ) -> Iterator[Envelope]:
        """Envelopes in byte order after ``after``, ``batch`` at a time (keyset pagination, one
        snapshot per page, no transaction open while the caller works on a page)."""
        batch = max(1, batch)
        cursor = after

        def page(c: sa.Connection) -> tuple[Sequence[Any], dict[str, list[Any]]]:
            rows = c.exec_driver_sql(f"SELECT name, vault, created_at, nonce, ciphertext FROM {_SECRETS}"
                                     " WHERE name > %s ORDER BY name LIMIT %s", (cursor, batch)).fetchall()
            found: dict[str, list[Any]] = defaultdict(list)
            if rows:
                for secret, *slot in c.exec_driver_sql(
                        f"SELECT secret, key, provider, version, wrapped_at, wrapped FROM {_SLOTS}"
                        " WHERE secret > %s AND secret <= %s ORDER BY secret, position", (cursor, rows[-1][0])):
                    found[secret].append(slot)
            return rows, found

        while True:
            rows, found = self._read(page)
            yield from envelopes_of(rows, found, self._envelope, on_damaged)
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
        sql = f"SELECT secret, version, wrapped FROM {_SLOTS} WHERE key = %s AND secret > %s AND version <> %s"
        args: tuple[object, ...] = (key, after, version)
        if until is not None:
            sql += " AND secret <= %s"
            args += (until,)
        sql += " ORDER BY secret LIMIT %s"

        def read(c: sa.Connection) -> tuple[Sequence[Any], Sequence[Any]]:
            rows = c.exec_driver_sql(sql, (*args, limit)).fetchall()
            if not self._any_slotless(c, fresh=False):
                return rows, []
            # Damaged rows in the range this page covers: up to its last row when the
            # page is full (what lies beyond is the next page's), else up to ``until``.
            last = rows[-1][0] if len(rows) == limit else until
            damaged = c.exec_driver_sql(
                _DAMAGED_SQL + (" AND name <= %s" if last is not None else "") + " ORDER BY name LIMIT %s",
                (after, *((last,) if last is not None else ()), limit)).fetchall()
            return rows, damaged

        rows, damaged = self._read(read)
        if not damaged:
            return [SlotRow(s, v, bytes(w)) for s, v, w in rows]
        merged = [*(SlotRow(s, v, bytes(w)) for s, v, w in rows), *(SlotRow(n, DAMAGED, b"") for (n,) in damaged)]
        merged.sort(key=lambda r: r.secret.encode())
        return merged[:limit]

    def replace_slots(self, key: str, updates: Sequence[SlotUpdate]) -> int:
        """Swap each slot still at its ``old_version`` (and bytes), one statement in one transaction."""
        if not updates:
            return 0
        first: dict[str, SlotUpdate] = {}
        for u in updates:  # as if applied in turn: a second update of one slot finds it moved on
            first.setdefault(u.secret, u)
        us = sorted(first.values(), key=lambda u: u.secret.encode())
        params = ([u.secret for u in us], [u.old_version for u in us], [u.version for u in us],
                  [u.wrapped_at for u in us], [u.wrapped for u in us], [u.old_wrapped for u in us], key,
                  [u.secret for u in us])
        return self._write(lambda c: int(c.exec_driver_sql(_REPLACE, params).rowcount))

    def swap(self, pairs: Sequence[tuple[Envelope, Envelope]]) -> set[str]:
        """Replace each envelope still exactly as read (compare-and-swap), all in one transaction.

        The secret row and its slots are locked (``FOR UPDATE``) before they are compared."""
        for old, new in pairs:
            if old.name != new.name:
                raise StoreError(f"swap of {old.name!r} with an envelope named {new.name!r}")
        if not pairs:
            return set()

        def exchange(c: sa.Connection) -> set[str]:
            swapped: set[str] = set()
            for old, new in sorted(pairs, key=lambda p: p[0].name.encode()):
                row = c.exec_driver_sql(f"SELECT vault, created_at, nonce, ciphertext FROM {_SECRETS}"
                                        " WHERE name = %s FOR UPDATE", (old.name,)).fetchone()
                if row is None:
                    continue  # deleted meanwhile
                slots = c.exec_driver_sql(f"SELECT key, provider, version, wrapped_at, wrapped FROM {_SLOTS}"
                                          " WHERE secret = %s ORDER BY position FOR UPDATE", (old.name,)).fetchall()
                try:
                    current = self._envelope(old.name, row, slots)
                except FormatError:
                    continue  # damaged: not replaced
                if current != old:
                    continue  # changed meanwhile
                c.exec_driver_sql(f"UPDATE {_SECRETS} SET vault = %s, created_at = %s, nonce = %s, ciphertext = %s"
                                  " WHERE name = %s", (new.vault, new.created_at, new.nonce, new.ciphertext, new.name))
                c.exec_driver_sql(f"DELETE FROM {_SLOTS} WHERE secret = %s", (new.name,))
                c.exec_driver_sql(_INSERT_SLOTS, ([s.key for s in new.slots], [new.name] * len(new.slots),
                                                  list(range(len(new.slots))), [s.provider for s in new.slots],
                                                  [s.version for s in new.slots], [s.wrapped_at for s in new.slots],
                                                  [s.wrapped for s in new.slots]))
                swapped.add(old.name)
            return swapped

        return self._write(exchange)

    def split_points(self, key: str, parts: int) -> list[str]:
        """Up to ``parts - 1`` secret names that cut the key's slots into ranges of about equal size."""
        if parts < 2:
            return []

        def read(c: sa.Connection) -> list[str]:
            n = c.exec_driver_sql(f"SELECT count(*) FROM {_SLOTS} WHERE key = %s", (key,)).scalar_one()
            offsets = sorted({n * i // parts for i in range(1, parts)})
            return [s for (s,) in c.exec_driver_sql(
                f"SELECT secret FROM (SELECT secret, row_number() OVER (ORDER BY secret) - 1 AS i FROM {_SLOTS}"
                " WHERE key = %s) t WHERE i = ANY(%s::bigint[]) ORDER BY secret", (key, offsets))]

        points: list[str] = []
        for name in self._read(read):
            if not points or name.encode() > points[-1].encode():
                points.append(name)
        return points

    def version_counts(self, key: str) -> dict[str, int]:
        def read(c: sa.Connection) -> tuple[dict[str, int], int]:
            counts = {v: int(n) for v, n in c.exec_driver_sql(
                f"SELECT version, count(*) FROM {_SLOTS} WHERE key = %s GROUP BY version", (key,))}
            damaged = 0
            if self._any_slotless(c, fresh=True, holding=sum(counts.values())):
                damaged = int(c.exec_driver_sql(f"SELECT count(*) FROM ({_DAMAGED_SQL}) d", ("",)).scalar_one())
            return counts, damaged

        counts, damaged = self._read(read)
        if damaged:
            counts[DAMAGED] = counts.get(DAMAGED, 0) + damaged
        return counts

    def _any_slotless(self, c: sa.Connection, *, fresh: bool, holding: int | None = None) -> bool:
        """Whether some secret row has no slot (a damaged envelope: keystead never writes one).

        As the SQLite store's: two counts, far cheaper than the per-row check they guard (one,
        when ``holding`` slots of one key already cover every secret); ``fresh=False`` (the
        rewrap's pages) reuses this store's last answer, which ``version_counts`` renews."""
        if fresh or self._slotless is None:
            secrets = c.exec_driver_sql(f"SELECT count(*) FROM {_SECRETS}").scalar_one()
            if holding is None or holding < secrets:  # a key on every secret: none can be slotless
                holding = c.exec_driver_sql(f"SELECT count(DISTINCT secret) FROM {_SLOTS}").scalar_one()
            self._slotless = holding < secrets
        return self._slotless

    def _analyze(self) -> None:
        """Refresh the planner's statistics after a bulk write, best effort.

        Until autovacuum gets to a freshly filled table the planner takes a key's
        slots for a handful of rows and scans them all for every rewrap page (measured:
        3x slower at 50,000 slots). A user that does not own the tables is only
        warned by the server, and autovacuum still catches up later."""
        with contextlib.suppress(sa.exc.DBAPIError), self.engine.connect() as c:
            c.exec_driver_sql(f"ANALYZE {_SECRETS}, {_SLOTS}")
            c.commit()

    # -- schema ------------------------------------------------------------

    def schema_version(self) -> int:
        """The vault schema version in the database (0: none yet)."""
        return self._read(lambda c: pgschema.version(c, self.where))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # -- internals -------------------------------------------------------

    def _read(self, work: Callable[[sa.Connection], _T]) -> _T:
        def once() -> _T:
            with self._reader.connect() as c:
                return work(c)  # the connection's end rolls the read-only transaction back

        return self._run(once, write=False, doing="reading")

    def _write(self, work: Callable[[sa.Connection], _T]) -> _T:
        def once() -> _T:
            with self.engine.begin() as c:
                return work(c)

        return self._run(once, write=True, doing="writing")

    def _run(self, call: Callable[[], _T], *, write: bool, doing: str) -> _T:
        """``call()`` with database errors translated.

        Retried: a read whose connection was lost (once, on a fresh connection), and any
        call the server rolled back whole for a deadlock or a serialization failure (up to
        :data:`RETRIES` times: nothing of it was committed). A write that lost its
        connection is not retried: its commit may have happened."""
        for attempt in range(1, RETRIES + 1):
            try:
                return call()
            except sa.exc.DBAPIError as exc:
                error = self._error(exc, doing)
                rolled_back = str(getattr(exc.orig, "sqlstate", None) or "") in _ROLLED_BACK
                if attempt == RETRIES or not isinstance(error, StoreUnavailable) or not (
                        rolled_back or (not write and attempt == 1)):
                    raise error from exc
                time.sleep(0.05 * attempt)
            except sa.exc.SQLAlchemyError as exc:  # not from the driver: a bug or a misuse, still one line
                raise StoreError(f"{self.where}: {doing} failed ({type(exc).__name__})") from exc
        raise AssertionError("unreachable")

    def _error(self, exc: sa.exc.DBAPIError, doing: str) -> StoreError:
        orig = exc.orig
        sqlstate = str(getattr(orig, "sqlstate", None) or "")
        detail = self._scrub(str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__)
        if not sqlstate:  # libpq reports a refused connection as text only
            sqlstate = next((code for pattern, code in _CONNECT_REFUSALS if pattern in detail), "")
        if sqlstate in _AUTH:
            return StoreError(f"{self.where}: the server refused the login ({detail})")
        if sqlstate == _NO_DATABASE:
            return StoreError(f"{self.where} does not exist (create it, or fix the store URL)")
        if sqlstate == _PRIVILEGE:
            return StoreError(f"{self.where}: permission denied {doing} ({detail}); "
                              "see docs/postgresql.md for the privileges keystead needs")
        if exc.connection_invalidated or sqlstate[:2] in _TRANSIENT_CLASSES or (
                not sqlstate and isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))):
            return StoreUnavailable(f"{self.where} unavailable while {doing}: {detail}")
        return StoreError(f"{self.where}: {doing} failed: {detail}")

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _envelope(self, name: str, row: Sequence[Any], slots: Iterable[Sequence[Any]]) -> Envelope:
        vault, created_at, nonce, ciphertext = row
        found = tuple(Slot(k, p, v, at, bytes(w)) for k, p, v, at, w in slots)
        if not found:
            raise FormatError(f"envelope {name} in {self.where}: has no slots")
        return Envelope(vault, name, created_at, bytes(nonce), bytes(ciphertext), found)


def parse_url(url: str) -> sa.URL:
    """``postgresql://`` / ``postgresql+psycopg://`` / ``postgres://`` as a psycopg 3 URL; other drivers refused."""
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(f"vault store URL {redact_url(url)!r} is not a valid PostgreSQL URL "
                          "(postgresql://USER@HOST:PORT/DATABASE)") from None
    if parsed.drivername not in ("postgresql", "postgresql+psycopg"):
        raise ConfigError(f"vault store URL {redact_url(url)!r}: keystead talks to PostgreSQL through psycopg 3 "
                          "(postgresql:// or postgresql+psycopg://)")
    if not parsed.database:
        raise ConfigError(f"vault store URL {redact_url(url)!r} names no database (postgresql://USER@HOST/DATABASE)")
    return parsed.set(drivername="postgresql+psycopg")
