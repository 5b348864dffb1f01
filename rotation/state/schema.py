"""The state database's tables, its schema version, and the migrations between versions.

``keystead_schema`` holds one row, the version of the tables. Version 1 had no
such table: a database with ``keystead_rotations`` and no ``keystead_schema``
is version 1. :func:`ensure` brings a database to :data:`SCHEMA_VERSION` in
one transaction, serialised between processes (SQLite: ``BEGIN IMMEDIATE``
around the check and the migration; PostgreSQL: ``pg_advisory_xact_lock``
inside the migration's transaction), so N workers starting at once on an
empty database create it once. A database newer than this code is refused.

Version 2 (over 1): ``keystead_rotations.held``; a ``store`` id on lanes,
backups and unreadable slots (unreadable: part of the primary key); the
``keystead_retirements`` ledger; name columns compared by byte order on
PostgreSQL (``COLLATE "C"``; SQLite's default is already byte order).

Version 3 (over 2): several workers share one rotation. Lanes get an
``owner`` and a ``lease_until`` (epoch seconds) and a ``rewrapped`` count;
``keystead_lock_owners`` becomes the key's *lease row* (``lease_until``), no
longer a session lock's label; ``keystead_lane_log`` records every fenced
batch commit (rotation, lane, owner, name range, time).
"""

from __future__ import annotations

import sqlalchemy as sa

from keystead.rotation.state.records import StateDBError

SCHEMA_VERSION = 3
STORE_ID_LEN = 64
_MIGRATION_LOCK = 0x6B65797374656164  # "keystead": the advisory lock that serialises migrations


def _name(length: int = 255) -> sa.types.TypeEngine[str]:
    """A secret-name column: byte order on PostgreSQL too (the Store contract's order)."""
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _store() -> sa.Column[str]:
    return sa.Column("store", sa.String(STORE_ID_LEN), nullable=False, server_default="", default="")


metadata = sa.MetaData()
schema_table = sa.Table(
    "keystead_schema", metadata,
    sa.Column("version", sa.Integer, nullable=False),
)
rotations = sa.Table(
    "keystead_rotations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("ref", sa.String(2048), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("from_version", sa.String(128)),
    sa.Column("to_version", sa.String(128)),
    sa.Column("cursor", _name(), nullable=False, default=""),
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
    sa.Column("held", sa.Integer, nullable=False, server_default="0", default=0),
    sa.Index("ix_keystead_rotations_key", "key", "id"),
)
backups = sa.Table(
    "keystead_backups", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rotation_id", sa.Integer, nullable=False),
    sa.Column("first", _name(), nullable=False),
    sa.Column("last", _name(), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("slots", sa.LargeBinary, nullable=False),
    _store(),
    sa.Index("ix_keystead_backups_rotation", "rotation_id", "first"),
)
unreadable = sa.Table(
    "keystead_unreadable", metadata,
    sa.Column("rotation_id", sa.Integer, primary_key=True),
    sa.Column("store", sa.String(STORE_ID_LEN), primary_key=True, server_default="", default=""),
    sa.Column("secret", _name(), primary_key=True),
    sa.Column("version", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)
lanes = sa.Table(
    "keystead_lanes", metadata,
    sa.Column("rotation_id", sa.Integer, primary_key=True),
    sa.Column("lane", sa.Integer, primary_key=True),
    sa.Column("start", _name(), nullable=False),
    sa.Column("until", _name()),
    sa.Column("cursor", _name(), nullable=False),
    sa.Column("done", sa.Boolean, nullable=False),
    _store(),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("rewrapped", sa.Integer, nullable=False, server_default="0", default=0),
)
lock_owners = sa.Table(
    "keystead_lock_owners", metadata,
    sa.Column("name", sa.String(2048), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("acquired_at", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=True),
)
lane_log = sa.Table(
    "keystead_lane_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rotation_id", sa.Integer, nullable=False),
    sa.Column("lane", sa.Integer, nullable=False),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("first", _name(), nullable=False),
    sa.Column("last", _name(), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_keystead_lane_log_rotation", "rotation_id", "lane", "id"),
)
retirements = sa.Table(
    "keystead_retirements", metadata,
    sa.Column("ref", sa.String(2048), primary_key=True),
    sa.Column("version", sa.String(128), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("rotation_id", sa.Integer, nullable=True),
    sa.Column("disabled_at", sa.Float, nullable=True),
    sa.Column("deleted_at", sa.Float, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)


def version(conn: sa.Connection) -> int:
    """The schema version of the database behind ``conn``: 0 when it has no keystead table."""
    names = set(sa.inspect(conn).get_table_names())
    if schema_table.name in names:
        found = conn.execute(sa.select(sa.func.max(schema_table.c.version))).scalar()
        if found is not None:
            return int(found)
    return 1 if rotations.name in names else 0


def check(found: int, where: str) -> None:
    if found > SCHEMA_VERSION:
        raise StateDBError(f"state database {where} has schema version {found}; "
                           f"this keystead knows up to {SCHEMA_VERSION} (upgrade keystead)")


def ensure(engine: sa.Engine, where: str, *, create: bool = True) -> int:
    """Bring the database to :data:`SCHEMA_VERSION` (one transaction, one process at a time).

    An empty database is created only with ``create``; a version 1 database
    is migrated either way (read-only callers must be able to read it); a
    newer one raises StateDBError. Returns the version found before.
    """
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:  # the common case: nothing to do, no write lock taken
        found = version(conn)
    check(found, where)
    if found == SCHEMA_VERSION or (found == 0 and not create):
        return found
    with engine.connect() as conn:
        if sqlite:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, before the version is read
        else:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        found = version(conn)
        check(found, where)
        if found == 0 and create:
            metadata.create_all(conn)
            conn.execute(sa.insert(schema_table).values(version=SCHEMA_VERSION))
        else:
            if found == 1:
                (_v1_to_v2_sqlite if sqlite else _v1_to_v2_postgresql)(conn)
                metadata.create_all(conn, tables=[schema_table, retirements])
                conn.execute(sa.insert(schema_table).values(version=2))
            if found in (1, 2):
                _v2_to_v3(conn)
                conn.execute(sa.update(schema_table).values(version=SCHEMA_VERSION))
        conn.commit()
    return found


_V1_TO_V2_COMMON = (
    "ALTER TABLE keystead_rotations ADD COLUMN held INTEGER NOT NULL DEFAULT 0",
    f"ALTER TABLE keystead_lanes ADD COLUMN store VARCHAR({STORE_ID_LEN}) NOT NULL DEFAULT ''",
    f"ALTER TABLE keystead_backups ADD COLUMN store VARCHAR({STORE_ID_LEN}) NOT NULL DEFAULT ''",
)


def _v1_to_v2_sqlite(conn: sa.Connection) -> None:
    for statement in _V1_TO_V2_COMMON:
        conn.exec_driver_sql(statement)
    # SQLite cannot change a primary key in place: rebuild keystead_unreadable.
    conn.exec_driver_sql("ALTER TABLE keystead_unreadable RENAME TO keystead_unreadable_v1")
    unreadable.create(conn)
    conn.exec_driver_sql("INSERT INTO keystead_unreadable (rotation_id, store, secret, version, reason) "
                         "SELECT rotation_id, '', secret, version, reason FROM keystead_unreadable_v1")
    conn.exec_driver_sql("DROP TABLE keystead_unreadable_v1")


def _v1_to_v2_postgresql(conn: sa.Connection) -> None:
    for statement in _V1_TO_V2_COMMON:
        conn.exec_driver_sql(statement)
    conn.exec_driver_sql(f"ALTER TABLE keystead_unreadable ADD COLUMN store VARCHAR({STORE_ID_LEN}) "
                         "NOT NULL DEFAULT ''")
    pkey = conn.exec_driver_sql("SELECT conname FROM pg_constraint "
                                "WHERE conrelid = 'keystead_unreadable'::regclass AND contype = 'p'").scalar_one()
    conn.exec_driver_sql(f'ALTER TABLE keystead_unreadable DROP CONSTRAINT "{pkey}"')
    conn.exec_driver_sql("ALTER TABLE keystead_unreadable ADD PRIMARY KEY (rotation_id, store, secret)")
    for table, column in (("keystead_rotations", "cursor"), ("keystead_backups", "first"),
                          ("keystead_backups", "last"), ("keystead_unreadable", "secret"),
                          ("keystead_lanes", "start"), ("keystead_lanes", "until"), ("keystead_lanes", "cursor")):
        conn.exec_driver_sql(f'ALTER TABLE {table} ALTER COLUMN "{column}" TYPE VARCHAR(255) COLLATE "C"')


_V2_TO_V3 = (
    "ALTER TABLE keystead_lanes ADD COLUMN owner VARCHAR(255)",
    "ALTER TABLE keystead_lanes ADD COLUMN lease_until FLOAT",
    "ALTER TABLE keystead_lanes ADD COLUMN rewrapped INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE keystead_lock_owners ADD COLUMN lease_until FLOAT",
)


def _v2_to_v3(conn: sa.Connection) -> None:
    """Lane leases, the key's lease row and the lane log. A v2 lock owner row named a session
    lock that died with its process: it has no lease (NULL), so it is free."""
    for statement in _V2_TO_V3:
        conn.exec_driver_sql(statement)
    metadata.create_all(conn, tables=[lane_log])
