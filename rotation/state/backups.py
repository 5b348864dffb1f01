"""Backups of the old wrapped data keys of a rewrap, packed one row per batch.

A batch's backups are written and committed *before* the store overwrites
those slots, and deleted only once the rotation is verified. One row per
batch, not per slot, keeps the backup off the hot path. A batch redone after
a crash adds a row; lookups take the oldest row that holds a secret, so the
original blob always wins. Each row names the store (the engine's opaque id)
whose slots it holds, and the byte-order range ``first..last`` of its names.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

import sqlalchemy as sa

from keystead.rotation.state.schema import backups
from keystead.stores.base import SlotRow

_HEAD = struct.Struct(">HBH")
PAGE = 20
"""Backup rows (batches) read per query when streaming them."""


def pack(rows: Sequence[tuple[str, str, bytes]]) -> bytes:
    """Slots as bytes: per slot ``u16 len, u8 len, u16 len``, then secret (UTF-8), version, wrapped."""
    parts: list[bytes] = []
    add = parts.append
    for secret, version, wrapped in rows:
        sb, vb = secret.encode(), version.encode()
        add(_HEAD.pack(len(sb), len(vb), len(wrapped)))
        add(sb)
        add(vb)
        add(wrapped)
    return b"".join(parts)


def unpack(data: bytes) -> Iterator[SlotRow]:
    pos, end = 0, len(data)
    while pos < end:
        ls, lv, lw = _HEAD.unpack_from(data, pos)
        pos += _HEAD.size
        secret = data[pos:pos + ls].decode()
        pos += ls
        version = data[pos:pos + lv].decode()
        pos += lv
        yield SlotRow(secret, version, data[pos:pos + lw])
        pos += lw


def insert(conn: sa.Connection, rotation_id: int, rows: Sequence[tuple[str, str, bytes]], *, store: str) -> None:
    """One backup row for ``rows`` (in name order), inside the caller's transaction."""
    conn.execute(sa.insert(backups).values(rotation_id=rotation_id, store=store, first=rows[0][0],
                                           last=rows[-1][0], count=len(rows), slots=pack(rows)))


def _of(rotation_id: int, store: str | None) -> list[sa.ColumnElement[bool]]:
    where = [backups.c.rotation_id == rotation_id]
    if store is not None:
        where.append(backups.c.store == store)
    return where


def page(conn: sa.Connection, rotation_id: int, *, store: str | None, after_id: int) -> list[tuple[int, bytes]]:
    """The next :data:`PAGE` backup rows (id, packed slots) after ``after_id``, oldest first."""
    q = (sa.select(backups.c.id, backups.c.slots).where(*_of(rotation_id, store), backups.c.id > after_id)
         .order_by(backups.c.id).limit(PAGE))
    return [(row_id, bytes(blob)) for row_id, blob in conn.execute(q)]


def lookup(conn: sa.Connection, rotation_id: int, secret: str, *, store: str) -> tuple[str, bytes] | None:
    """The original (version, wrapped) of ``secret``'s slot in ``store``, or None."""
    q = (sa.select(backups.c.slots)
         .where(*_of(rotation_id, store), backups.c.first <= secret, backups.c.last >= secret)
         .order_by(backups.c.id))
    for (blob,) in conn.execute(q):
        for name, version, wrapped in unpack(bytes(blob)):
            if name == secret:
                return version, wrapped
    return None


def count(conn: sa.Connection, rotation_id: int) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(backups).where(*_of(rotation_id, None))).scalar_one()


def delete(conn: sa.Connection, rotation_id: int) -> int:
    return conn.execute(sa.delete(backups).where(*_of(rotation_id, None))).rowcount
