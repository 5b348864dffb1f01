"""Time in one place: the UTC clock, epoch seconds, and the one text form.

Every timestamp keystead writes (key file, audit log, state database, JSON
output) is UTC. Text is ISO 8601 with a ``Z`` (``2026-12-01T08:00:00Z``);
the state database keeps epoch seconds. Code that needs "now" takes a
:data:`Clock` (or an ``as_of``) so tests move time without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def utc(when: datetime) -> datetime:
    """``when`` in UTC; a naive time is taken to be UTC already."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def epoch(when: datetime) -> float:
    """Seconds since 1970 (what the state database stores)."""
    return utc(when).timestamp()


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def iso(when: datetime, *, millis: bool = False) -> str:
    """``2026-12-01T08:00:00Z`` (``millis``: ``2026-12-01T08:00:00.123Z``)."""
    return utc(when).isoformat(timespec="milliseconds" if millis else "seconds").replace("+00:00", "Z")


def iso_or_none(when: datetime | None) -> str | None:
    return None if when is None else iso(when)


def parse_iso(text: str) -> datetime:
    """A date or ISO 8601 time (``Z`` or an offset; none means UTC) -> aware UTC datetime.

    ValueError if ``text`` is neither.
    """
    return utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
