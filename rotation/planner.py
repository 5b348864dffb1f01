"""The planner: for each configured key, is a rotation due, and how much work is it?

A key that keystead rotates (rotation kind *in-place* or *successor*) is
*due* when ``as_of - last_rotated >= rotation_period_days`` (the period comes
from keystead.toml, 1..2560 days, default 90). A key the cloud rotates on its
own schedule (*scheduled*) is never due: keystead only catches up; a key that
does not rotate (*none*: age recipients) is never due and never planned.
A slot is *behind* when its version label differs from the key's primary.
The planner only reads: the provider's ``describe()``, every store's
``version_counts`` (the base store and each profile's) and the state
database. ``as_of`` replaces "now", so a plan for any date is computed
without waiting or patching the clock.

What a sweep would do with each key (``KeyPlan.action``):

=============  ================================================================
``rotate``     due (or forced): add a version, then rewrap every slot of the key
``resume``     a rotation of the key is under way; carry on from its state
``catch-up``   not due, but slots are behind the primary (a rotation done by
               hand, or a lost state database): rewrap them, no new version
``manual``     forced, but the key does not rotate (age): declare a new key, re-seal
``error``      the key cannot be opened (missing from its provider, bad ref)
``none``       nothing to do
=============  ================================================================

Estimated time is the number of slots to rewrap divided by a documented rate
per provider (:data:`REWRAP_RATES`, from docs/benchmarks.md and the
performance anchors): it is an estimate for planning, not a promise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypedDict

from keystead.clock import from_epoch, iso_or_none
from keystead.errors import KeysteadError
from keystead.providers import RotationKind
from keystead.rotation.state import Holder, Lane, Rotation, StateDB
from keystead.rotation.stores import StoreSet, behind

if TYPE_CHECKING:
    from keystead.vault import Vault

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
    rotation_kind: str | None = None
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
    store_errors: tuple[str, ...] = ()
    """Stores that could not be counted (their slots are not in the figures)."""
    unreadable: tuple[tuple[str, str], ...] = ()
    """(secret, reason) the latest rotation could not rewrap."""
    lanes: tuple[Lane, ...] = ()
    """The active rotation's lanes: who holds each and until when."""
    lease: Holder | None = None
    """Who holds the key's lease (its transitions), if anyone."""

    def as_dict(self) -> dict[str, object]:
        rot = self.rotation
        return {
            "key": self.name,
            "ref": self.ref,
            "provider": self.provider,
            "rotation_kind": self.rotation_kind,
            "period_days": self.period_days,
            "primary": self.primary,
            "last_rotated": iso_or_none(self.last_rotated),
            "next_due": iso_or_none(self.next_due),
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
                "held": rot.held,
                "error": rot.error,
            },
            "unreadable": [{"secret": s, "reason": r} for s, r in self.unreadable],
            "lease": None if self.lease is None else {
                "owner": self.lease.owner, "since": iso_or_none(from_epoch(self.lease.acquired_at)),
                "until": iso_or_none(from_epoch(self.lease.lease_until) if self.lease.lease_until else None)},
            "lanes": [{"lane": x.lane, "store": x.store, "start": x.start, "until": x.until, "cursor": x.cursor,
                       "done": x.done, "rewrapped": x.rewrapped, "owner": x.owner,
                       "lease_until": iso_or_none(from_epoch(x.lease_until) if x.lease_until else None)}
                      for x in self.lanes],
            "store_errors": list(self.store_errors),
            "error": self.error,
        }


class _PlanBase(TypedDict):
    """The fields every KeyPlan of a key has, whatever its action."""

    name: str
    ref: str
    provider: str
    period_days: int


def provider_name(ref: str) -> str:
    try:
        from keystead.providers import provider_of

        return provider_of(ref)
    except KeysteadError:
        return "?"


def plan_key(vault: Vault, name: str, state: StateDB | None, *, as_of: datetime, force: bool = False,
             stores: StoreSet | None = None) -> KeyPlan:
    """The plan for one configured key as of ``as_of``. Reads only."""
    kc = vault.config.keys[name]
    base: _PlanBase = {"name": name, "ref": kc.ref, "provider": provider_name(kc.ref),
                       "period_days": kc.rotation_period_days}
    latest = state.latest(name) if state is not None else None
    unread = tuple((u.secret, u.reason) for u in state.unreadable_slots(latest.id)) if latest and state else ()
    lanes = tuple(state.lanes(latest.id)) if state is not None and latest is not None and latest.active else ()
    lease = state.holder(f"rotation:{kc.ref}") if state is not None else None
    key = vault.keys.get(name)
    if key is None:
        err = vault.key_errors.get(name)
        return KeyPlan(**base, action=ERROR, rotation=latest, error=str(err) if err else "key not opened",
                       lanes=lanes, lease=lease)
    owned = stores is None
    stores = stores or StoreSet(vault)
    try:
        info = key.describe()
        proof = stores.prove(kc.ref)
    except KeysteadError as exc:
        return KeyPlan(**base, action=ERROR, rotation=latest, error=str(exc))
    finally:
        if owned:
            stores.close()
    counts = proof.counts
    slots = sum(counts.values())
    lag = behind(counts, info.primary)
    kind = info.rotation
    next_due = None
    if kind in (RotationKind.IN_PLACE, RotationKind.SUCCESSOR) and info.last_rotated is not None:
        next_due = info.last_rotated + timedelta(days=kc.rotation_period_days)
    due = next_due is not None and as_of >= next_due
    if latest is not None and latest.active:
        action = RESUME
        to_rewrap = lag if latest.to_version == info.primary else slots
    elif force and kind is RotationKind.NONE:
        action, to_rewrap = MANUAL, 0
    elif due or force:
        action, to_rewrap = ROTATE, slots
    elif lag:
        action, to_rewrap = CATCH_UP, lag
    else:
        action, to_rewrap = NONE, 0
    rate = REWRAP_RATES.get(base["provider"], 800.0)
    return KeyPlan(
        **base, action=action, primary=info.primary, rotation_kind=str(kind), last_rotated=info.last_rotated,
        next_due=next_due, due=due, behind=lag, slots=slots, version_counts=counts,
        live_versions=info.live_versions, rotation=latest, to_rewrap=to_rewrap, estimated_seconds=to_rewrap / rate,
        store_errors=tuple(f"{stores.label(sid)}: {why}" for sid, why in proof.unreachable.items()),
        unreadable=unread, lanes=lanes, lease=lease,
    )


def plan(vault: Vault, state: StateDB | None, *, as_of: datetime, only: str | None = None,
         force: bool = False) -> list[KeyPlan]:
    """Plans for every configured key (or ``only`` one), in config order."""
    names = [only] if only else list(vault.config.keys)
    stores = StoreSet(vault)
    try:
        return [plan_key(vault, n, state, as_of=as_of, force=force, stores=stores) for n in names]
    finally:
        stores.close()
