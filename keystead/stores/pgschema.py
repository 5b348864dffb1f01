"""The PostgreSQL vault's tables, its schema version, and the migrations between versions.

Four tables, all named ``keystead_vault_*`` so that the vault can share a
database with the rotation state (whose tables are ``keystead_*`` and whose
version lives in ``keystead_schema``: each keeps its own version)::

    keystead_vault_schema(version PK, applied_at, keystead)   one row per applied version
    keystead_vault_meta(key PK, value)                        reserved for vault-wide facts
    keystead_vault_secrets(name PK, vault, created_at, nonce, ciphertext)
    keystead_vault_slots(key, secret, position, provider, version, wrapped_at, wrapped)
          PRIMARY KEY (key, secret); INDEX (secret, position)

Secret names are ``COLLATE "C"``: byte order, the Store contract's order,
whatever the database's locale.

:func:`ensure` (every open) creates the tables in an empty database and
refuses anything else it does not expect; :func:`upgrade` (``keystead db
upgrade``) applies the migrations from the version found up to
:data:`SCHEMA_VERSION`. Both run in one transaction that first takes
``pg_advisory_xact_lock(MIGRATION_LOCK)`` and then reads the version again,
so N processes starting at once on an empty database create it once (the
others wait for the lock, then find it made). PostgreSQL's DDL is
transactional: a failed creation or migration leaves nothing behind.

A migration is a function ``(connection) -> None`` in :data:`MIGRATIONS`,
keyed by the version it produces; version 1 is the creation itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from keystead import __version__
from keystead.errors import StoreError

SCHEMA_VERSION = 1
MIGRATION_LOCK = 0x6B7376_61756C74  # "ksv" + "ault": not the state database's lock, so neither waits on the other
PREFIX = "keystead_"
"""Tables of this prefix are keystead's (the vault's or the rotation state's); any other is another application's."""


def _name() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


metadata = sa.MetaData()
schema_table = sa.Table(
    "keystead_vault_schema", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.Float, nullable=False),
    sa.Column("keystead", sa.Text, nullable=False),
)
meta = sa.Table(
    "keystead_vault_meta", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
secrets = sa.Table(
    "keystead_vault_secrets", metadata,
    sa.Column("name", _name(), primary_key=True),
    sa.Column("vault", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("nonce", sa.LargeBinary, nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
)
slots = sa.Table(
    "keystead_vault_slots", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("secret", _name(), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("wrapped_at", sa.BigInteger, nullable=False),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Index("keystead_vault_slots_by_secret", "secret", "position"),
)
VAULT_TABLES = frozenset(metadata.tables)


def _create(conn: sa.Connection) -> None:
    metadata.create_all(conn, checkfirst=True)


MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {1: _create}
"""version -> the step that brings version - 1 to it (tests add a step to prove the machinery)."""


def version(conn: sa.Connection, where: str) -> int:
    """The vault schema version in the database: 0 when it holds no keystead vault.

    Refuses a database that holds another application's tables (and no vault),
    and vault tables without a version row (not made by keystead)."""
    names = set(sa.inspect(conn).get_table_names())
    if schema_table.name in names:
        found = conn.execute(sa.select(sa.func.max(schema_table.c.version))).scalar()
        if found is not None:
            return int(found)
    if names & VAULT_TABLES:
        raise StoreError(f"{where} has keystead vault tables but no schema version: "
                         "they were not made by keystead (or only in part); refusing to touch them")
    foreign = sorted(n for n in names if not n.startswith(PREFIX))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise StoreError(f"{where} holds tables of another application ({shown}), not a keystead vault; "
                         "give keystead its own database, or its own schema (?options=-csearch_path%3Dkeystead)")
    return 0


def check(found: int, where: str) -> None:
    if found > SCHEMA_VERSION:
        raise StoreError(f"{where} has vault schema version {found}; this keystead {__version__} knows up to "
                         f"{SCHEMA_VERSION}: upgrade keystead before opening it")


def ensure(engine: sa.Engine, where: str) -> int:
    """Open-time check: create the schema in an empty database, refuse an older or newer one.

    Returns the version found (0: just created, at the current version). An older schema is not
    migrated on open: that is ``keystead db upgrade``'s, run once by the
    operator (a migration may lock tables that ``secrets set`` needs)."""
    with engine.connect() as conn:  # the common case: one read, no lock
        found = version(conn, where)
    check(found, where)
    if found == 0:
        _locked(engine, where, only_if_empty=True)
    elif found < SCHEMA_VERSION:
        raise StoreError(f"{where} has vault schema version {found}, older than this keystead's "
                         f"{SCHEMA_VERSION}: run `keystead db upgrade`")
    return found


def upgrade(engine: sa.Engine, where: str) -> tuple[int, int]:
    """Apply every migration from the version found to :data:`SCHEMA_VERSION`; (before, after)."""
    return _locked(engine, where, only_if_empty=False)


def _locked(engine: sa.Engine, where: str, *, only_if_empty: bool) -> tuple[int, int]:
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        found = version(conn, where)  # again, under the lock: another process may have made it meanwhile
        check(found, where)
        if only_if_empty and found:
            conn.rollback()
            return found, found
        for step in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[step](conn)
            conn.execute(sa.insert(schema_table).values(version=step, applied_at=time.time(), keystead=__version__))
        conn.commit()
        return found, max(found, SCHEMA_VERSION)
