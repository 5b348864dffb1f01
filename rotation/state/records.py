"""What the state database hands out: rotation states and the rows as values.

Rows are frozen dataclasses (one per table row) or named tuples where the
engine makes one per slot in its hot loop. Times are epoch seconds (UTC,
see :mod:`keystead.clock`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import NamedTuple

from keystead.errors import RotationError


class State(enum.StrEnum):
    """Where a rotation is (stored as its text)."""

    PLANNED = "planned"
    ROTATED = "rotated"
    REWRAPPING = "rewrapping"
    VERIFIED = "verified"
    RETIRED = "retired"
    DONE = "done"
    ABANDONED = "abandoned"


PLANNED, ROTATED, REWRAPPING, VERIFIED, RETIRED, DONE, ABANDONED = State
STATES = tuple(State)
TERMINAL = (DONE, ABANDONED)
"""States a rotation never leaves: the key's next rotation is a new row."""

DISABLED, DELETED = "disabled", "deleted"
RETIREMENT_STATES = (DISABLED, DELETED)


class StateDBError(RotationError):
    """The state database itself failed (missing, corrupt, locked, unreachable).

    Unlike a failure of one key's rotation, this stops the whole sweep.
    ``transient``: the failure may pass (connection lost or refused, a timeout,
    a lock wait): the rewrap retries it with backoff before giving up.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class LeaseLost(RotationError):
    """This worker's lease on a lane (or a key's transitions) expired and another took it:
    the lane stops; nothing this worker still had in hand is written."""


@dataclass(frozen=True, slots=True)
class Rotation:
    """One row of ``keystead_rotations``; times are epoch seconds (UTC).

    ``held``: slots still on old versions that block retirement (the rotation
    is blocked when ``held > 0``).
    """

    id: int
    key: str
    ref: str
    state: State
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
    held: int = 0

    @property
    def active(self) -> bool:
        return self.state not in TERMINAL


ROTATION_FIELDS = tuple(f.name for f in fields(Rotation))


class FailedSlot(NamedTuple):
    """A slot the key could not open during a rewrap batch."""

    secret: str
    version: str
    reason: str


class UnreadableSlot(NamedTuple):
    """A slot recorded as unreadable for a rotation, in the store it was found in."""

    store: str
    secret: str
    version: str
    reason: str


@dataclass(frozen=True, slots=True)
class Batch:
    """A rewrap batch written to the store: where it ended, how many slots it
    swapped, and the slots the key could not open."""

    cursor: str
    rewrapped: int
    failed: tuple[FailedSlot, ...] = ()


@dataclass(frozen=True, slots=True)
class Lane:
    """One name range of a store's rewrap: secrets after ``start`` up to and
    including ``until`` (None: to the end), done up to ``cursor``.

    ``lane`` is unique within the rotation (across its stores); ``store`` is
    the engine's opaque id of the store ('' for the one store of a v1 rotation).
    ``owner`` is the worker holding its lease until ``lease_until`` (epoch
    seconds), None when nobody does; ``rewrapped`` counts its slots swapped.
    """

    rotation_id: int
    lane: int
    start: str
    until: str | None
    cursor: str
    done: bool
    store: str = ""
    owner: str | None = None
    lease_until: float | None = None
    rewrapped: int = 0


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a key's lease (its transitions), since when and until when (epoch seconds)."""

    name: str
    owner: str
    acquired_at: float
    lease_until: float | None


@dataclass(frozen=True, slots=True)
class LaneBatch:
    """One fenced batch commit of a lane (``keystead_lane_log``)."""

    id: int
    rotation_id: int
    lane: int
    owner: str
    first: str
    last: str
    count: int
    at: float


@dataclass(frozen=True, slots=True)
class Retirement:
    """How far one old version of a key has been retired (``keystead_retirements``).

    ``state`` is ``disabled`` (restorable) or ``deleted``; ``rotation_id`` is
    the rotation that retired it (None when unknown).
    """

    ref: str
    version: str
    state: str
    rotation_id: int | None
    disabled_at: float | None
    deleted_at: float | None
    updated_at: float
