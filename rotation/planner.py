"""The planner: for each configured key, is a rotation due, and how much work is it?

A key is *due* when ``as_of - last_rotated >= rotation_period_days`` (the
period comes from keystead.toml, 1..2560 days, default 90). A slot is
*behind* when it is wrapped under a version other than the key's primary.
The planner only reads: the provider's ``describe()``, the store's
``version_counts`` and the state database. ``as_of`` replaces "now", so a
plan for any date is computed without waiting or patching the clock.

What a sweep would do with each key (``KeyPlan.action``):

=============  ================================================================
``rotate``     due (or forced): add a version, then rewrap every slot of the key
``resume``     a rotation of the key is under way; carry on from its state
``catch-up``   not due, but slots are behind the primary (a rotation done by
               hand, or a lost state database): rewrap them, no new version
``manual``     due, but the key cannot rotate in place; rotate it by hand
``error``      the key cannot be opened (missing from its provider, bad ref)
``none``       nothing to do
=============  ================================================================

Estimated time is the number of slots to rewrap divided by a documented rate
per provider (:data:`REWRAP_RATES`, from docs/benchmarks.md and the
performance anchors): it is an estimate for planning, not a promise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from keystead.errors import KeysteadError
from keystead.rotation.state import DONE, Rotation, StateDB

REWRAP_RATES = {"local": 100_000.0, "age": 4_000.0, "aws": 800.0, "gcp": 800.0}
"""Slots rewrapped per second, by provider, used for the estimate."""

ROTATE, RESUME, CATCH_UP, MANUAL, ERROR, NONE = "rotate", "resume", "catch-up", "manual", "error", "none"


@dataclass(frozen=True, slots=True)
class KeyPlan:
    name: str
    ref: str
    provider: str
    period_days: int
    action: str
    primary: str | None = None
    last_rotated: datetime | None = None
    next_due: datetime | None = None
    due: bool = False
    behind: int = 0
    slots: int = 0
    version_counts: dict[str, int] = field(default_factory=dict)
    live_versions: tuple[str, ...] = ()
    rotation: Rotation | None = None
    to_rewrap: int = 0
    estimated_seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        rot = self.rotation
        return {
            "key": self.name,
            "ref": self.ref,
            "provider": self.provider,
            "period_days": self.period_days,
            "primary": self.primary,
            "last_rotated": _iso(self.last_rotated),
            "next_due": _iso(self.next_due),
            "due": self.due,
            "action": self.action,
            "slots": self.slots,
            "behind": self.behind,
            "version_counts": dict(sorted(self.version_counts.items())),
            "to_rewrap": self.to_rewrap,
            "estimated_seconds": round(self.estimated_seconds, 3),
            "rotation": None if rot is None else {
                "id": rot.id,
                "state": rot.state,
                "reason": rot.reason,
                "from_version": rot.from_version,
                "to_version": rot.to_version,
                "rewrapped": rot.rewrapped,
                "unreadable": rot.unreadable,
                "error": rot.error,
            },
            "error": self.error,
        }


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def provider_name(ref: str) -> str:
    try:
        from keystead.providers import provider_of

        return provider_of(ref)
    except KeysteadError:
        return "?"


def plan_key(vault, name: str, state: StateDB | None, *, as_of: datetime, force: bool = False) -> KeyPlan:
    """The plan for one configured key as of ``as_of``. Reads only."""
    kc = vault.config.keys[name]
    base = dict(name=name, ref=kc.ref, provider=provider_name(kc.ref), period_days=kc.rotation_period_days)
    latest = state.latest(name) if state is not None else None
    key = vault.keys.get(name)
    if key is None:
        err = vault.key_errors.get(name)
        return KeyPlan(**base, action=ERROR, rotation=latest, error=str(err) if err else "key not opened")
    try:
        info = key.describe()
        counts = dict(vault.store.version_counts(kc.ref))
    except KeysteadError as exc:
        return KeyPlan(**base, action=ERROR, rotation=latest, error=str(exc))
    slots = sum(counts.values())
    behind = slots - counts.get(info.primary, 0)
    next_due = info.last_rotated + timedelta(days=kc.rotation_period_days)
    due = as_of >= next_due
    if latest is not None and latest.state != DONE:
        action = RESUME
        to_rewrap = behind if latest.to_version == info.primary else slots
    elif due or force:
        action = ROTATE if (info.rotates_in_place or force) else MANUAL
        to_rewrap = slots if action == ROTATE else 0
    elif behind:
        action, to_rewrap = CATCH_UP, behind
    else:
        action, to_rewrap = NONE, 0
    rate = REWRAP_RATES.get(base["provider"], 800.0)
    return KeyPlan(
        **base, action=action, primary=info.primary, last_rotated=info.last_rotated, next_due=next_due,
        due=due, behind=behind, slots=slots, version_counts=counts, live_versions=info.live_versions,
        rotation=latest, to_rewrap=to_rewrap, estimated_seconds=to_rewrap / rate,
    )


def plan(vault, state: StateDB | None, *, as_of: datetime, only: str | None = None,
         force: bool = False) -> list[KeyPlan]:
    """Plans for every configured key (or ``only`` one), in config order."""
    names = [only] if only else list(vault.config.keys)
    return [plan_key(vault, n, state, as_of=as_of, force=force) for n in names]
