"""The rotation state database: where each key's rotation is, durably.

One SQLAlchemy 2 Core schema (:mod:`.schema`, versioned, migrated on open),
on SQLite (the local default, beside the vault) or PostgreSQL
(``postgresql+psycopg://...``):

- ``keystead_rotations``: one row per rotation of one key, with its state
  (``planned -> rotated -> rewrapping -> verified -> retired -> done``, or
  ``abandoned``), the version it rotates from and to, the counts, and
  ``held`` (slots on old versions that block retirement). The latest row of
  a key is its current rotation.
- ``keystead_lanes``: the rewrap of each store cut into name ranges with
  durable cursors; ``store`` is the engine's opaque store id (a hash of the
  URL, never the URL); ``owner`` and ``lease_until``: the worker that holds
  the lane and until when (:meth:`StateDB.claim_lane`).
- ``keystead_lane_log``: every fenced batch commit (lane, owner, names).
- ``keystead_backups``: the old wrapped data keys of each rewrap batch
  (:mod:`.backups`), durable before the store is overwritten.
- ``keystead_unreadable``: slots the key could not open, per store. They are
  reported and skipped, never deleted.
- ``keystead_retirements``: which old versions are disabled or deleted.
- ``keystead_lock_owners``: the lease rows of keys' transitions (:mod:`.locks`).
- ``keystead_schema``: the schema version.

Names compare in byte order everywhere (the Store contract's order).
Every failure of the database itself (folder missing, file corrupt, locked
too long, server unreachable) becomes one :class:`StateDBError` line
(:mod:`.errors`).
"""

from __future__ import annotations

from keystead.rotation.state.backups import pack as pack_backups
from keystead.rotation.state.backups import unpack as unpack_backups
from keystead.rotation.state.db import BUSY_TIMEOUT, StateDB
from keystead.rotation.state.locks import LEASE_SECONDS, KeyLease, owner_id
from keystead.rotation.state.records import (
    ABANDONED,
    DELETED,
    DISABLED,
    DONE,
    PLANNED,
    RETIRED,
    RETIREMENT_STATES,
    REWRAPPING,
    ROTATED,
    STATES,
    TERMINAL,
    VERIFIED,
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
from keystead.rotation.state.schema import (
    SCHEMA_VERSION,
    lane_log,
    lanes,
    lock_owners,
    metadata,
    retirements,
    rotations,
    unreadable,
)
from keystead.rotation.state.schema import (
    backups as backups_table,
)

__all__ = [
    "ABANDONED", "BUSY_TIMEOUT", "DELETED", "DISABLED", "DONE", "LEASE_SECONDS", "PLANNED", "RETIRED",
    "RETIREMENT_STATES", "REWRAPPING", "ROTATED", "SCHEMA_VERSION", "STATES", "TERMINAL", "VERIFIED",
    "Batch", "FailedSlot", "Holder", "KeyLease", "Lane", "LaneBatch", "LeaseLost", "Retirement", "Rotation", "State",
    "StateDB", "StateDBError", "UnreadableSlot",
    "backups_table", "lane_log", "lanes", "lock_owners", "metadata", "owner_id", "pack_backups", "retirements",
    "rotations", "unpack_backups", "unreadable",
]
