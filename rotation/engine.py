"""The rotation engine: drive one key's rotation through its persisted states.

::

    planned --rotate--> rotated --> rewrapping(lanes) --verify--> verified
        --grace, no store holds an old version--> retired --> done

Each step reads the state row, does its work, and records the next state;
each is idempotent, so a worker killed at any instant and started again
resumes from the last recorded state:

- *planned -> rotated*: if the key's primary is still ``from_version``, ask
  the provider for a new version with this rotation's token (a second call
  with the same token adopts what the first made, so a crash between a
  cloud's two calls never makes two keys); while the provider says a version
  is pending, wait. If the primary already moved, take it as ``to_version``.
- *rewrapping*: every store the config names (the base store and each
  profile's) is cut into lanes (name ranges with durable cursors, about
  ``lane_size`` slots each; one lane for a small store). The key's lease is
  released: every worker that finds the key rewrapping claims lanes (an
  owner and a lease per lane) and works them until none is left; the one
  that then takes the lease back verifies. Per batch: read the slots behind;
  ``rewrap_many`` gives one result per slot, each with its own version (the
  payload is never read); commit the old wrapped keys as a backup; swap the
  new ones in with a compare-and-swap per slot; move the lane's cursor.
  Slots the key cannot open, and envelopes that cannot even be parsed, are
  recorded by name, skipped and never deleted. See :mod:`~keystead.rotation.rewrap`.
- *verified*: every rewrapped envelope (or a sample) opens with the key, and
  a count check per store finds nothing behind but what was recorded
  unreadable. A slot that fails is restored from its backup and the
  rotation does another pass (at most :data:`MAX_PASSES` per sweep); an
  envelope whose new and old slots give the same data key but whose payload
  fails is unreadable by payload: recorded by name, not retried.
- *retired*: after ``grace_days``, each old version that no store holds is
  disabled (reversible); a later sweep, a second grace period on, deletes
  it, proving again from every store that nothing needs it, and restores it
  instead if something does. A key that is not ``exclusive`` (any cloud key
  unless configured so) is never retired by keystead. See
  :mod:`~keystead.rotation.retire`.

Every step and every batch is one record in the audit log.

The key's *lease* (a row in the state database with an owner and an
expiry, renewed while held; :mod:`keystead.rotation.state.locks`) guards the
transitions only: plan, rotate, verify, retire. A worker killed in one
blocks the key for at most ``lease_seconds``.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from keystead.clock import Clock, epoch, iso, utcnow
from keystead.config import KeyConfig
from keystead.errors import (
    KeysteadError,
    NotFoundError,
    ProviderUnavailable,
    RotationBusy,
    RotationError,
    StoreUnavailable,
)
from keystead.providers import ManagedKey, RotationKind
from keystead.rotation import metrics, planner, retire, rewrap
from keystead.rotation.state import (
    DONE,
    PLANNED,
    RETIRED,
    REWRAPPING,
    ROTATED,
    VERIFIED,
    KeyLease,
    Rotation,
    StateDB,
    StateDBError,
    owner_id,
)
from keystead.rotation.stores import StoreSet, behind

if TYPE_CHECKING:
    from keystead.vault import Vault

MAX_PASSES = 3
MAX_AUDIT_NAMES = 20
"""An audit record names at most this many secrets, then gives the count."""
log = logging.getLogger("keystead.rotation")
LOG_FORMAT = "%(asctime)s level=%(levelname)s %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
_T = TypeVar("_T")


class Outcome(enum.StrEnum):
    """What happened to one key in one sweep."""

    DONE = "done"
    IDLE = "idle"
    WAITING = "waiting"  # grace period, or a version the provider is still making
    PAUSED = "paused"  # stopped by a signal, or the provider is unavailable: the next sweep resumes
    FAILED = "failed"
    BLOCKED = "blocked"  # verified, but an old version is still held: someone must look
    BUSY = "busy"
    HELPED = "helped"  # rewrapped lanes of a rotation whose next transition another worker holds
    UNREADABLE = "unreadable"  # finished, but some envelopes could not be rewrapped


OK_OUTCOMES = frozenset({Outcome.DONE, Outcome.IDLE, Outcome.WAITING, Outcome.PAUSED, Outcome.HELPED})
FAILED_OUTCOMES = frozenset({Outcome.FAILED, Outcome.BLOCKED, Outcome.BUSY, Outcome.UNREADABLE})


class Progress(Protocol):
    def start(self, key: str, total: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    def start(self, key: str, total: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


@dataclass(slots=True)
class KeyResult:
    key: str
    outcome: Outcome
    state: str | None = None
    message: str = ""
    rewrapped: int = 0
    unreadable: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED_OUTCOMES

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "outcome": str(self.outcome), "state": self.state, "message": self.message,
                "rewrapped": self.rewrapped, "unreadable": self.unreadable}


@dataclass(slots=True)
class SweepResult:
    keys: list[KeyResult]

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.keys)


def capped(names: list[str]) -> dict[str, object]:
    """Audit details naming at most MAX_AUDIT_NAMES secrets, and how many there were."""
    return {"secrets": names[:MAX_AUDIT_NAMES], "count": len(names)}


class _Handed(Exception):
    """The lanes are done and another worker took the key's lease first: it verifies."""


class Engine:
    """Rotates the keys of one open vault, across every store its config names, with its state database.

    ``now`` is the time of the sweep (due dates, grace, timestamps), so
    ``--as-of`` and tests move time without sleeping. Leases run on
    ``lease_clock`` (the wall clock unless injected): they expire in real
    time whatever ``now`` says. ``owner`` names this process in every lease. ``stop`` is checked
    between batches: set it (SIGTERM) and the engine finishes the current
    batch and returns with outcome ``paused``.
    """

    def __init__(self, vault: Vault, state: StateDB, *, now: datetime, progress: Progress | None = None,
                 stop: threading.Event | None = None, rng: random.Random | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None,
                 stores: StoreSet | None = None, owner: str | None = None,
                 lease_clock: Clock = utcnow) -> None:
        self.vault = vault
        self.state = state
        self.now = now
        self.settings = vault.config.rotation
        self.progress = progress or NoProgress()
        self.stop = stop or threading.Event()
        self.rng = rng or random.Random()
        self.on_event = on_event
        self.count = metrics.process_counter(vault.config)  # None unless the worker serves metrics
        self.stores = stores or StoreSet(vault)
        self.owner = owner or owner_id()
        self.lease_clock = lease_clock
        self.lease: KeyLease | None = None
        self._passes: dict[int, int] = {}
        self._waiting: str | None = None

    def lease_now(self) -> float:
        """Now on the lease clock, in epoch seconds."""
        return epoch(self.lease_clock())

    def key_lease(self, ref: str, name: str) -> KeyLease:
        return self.state.lease(f"rotation:{ref}", what=f"rotation of key {name}", owner=self.owner,
                                seconds=float(self.settings.lease_seconds), clock=self.lease_clock)

    def close(self) -> None:
        self.stores.close()

    @property
    def stamp(self) -> int:
        return int(epoch(self.now))

    def token(self, rot: Rotation) -> str:
        """The rotation token handed to ``rotate``: one new version per rotation, however often resumed."""
        return f"keystead-rotation-{rot.id}"

    # -- reporting -------------------------------------------------------------
    def event(self, action: str, rot: Rotation | None, *, key: str, result: str = "ok", **details: Any) -> None:
        if rot is not None:
            details = {"rotation": rot.id, **details}
        self.vault.audit.append(f"rotation.{action}", key=key, result=result, **details)
        fields = " ".join(f"{k}={v}" for k, v in details.items())
        log.log(logging.WARNING if result != "ok" else logging.INFO,
                "rotation.%s key=%s result=%s %s", action, key, result, fields,
                extra={"keystead": {"event": f"rotation.{action}", "key": key, "result": result, **details}})
        if self.count is not None:
            self.count(action, key, result, details)
        if self.on_event:
            self.on_event(action, {"key": key, "result": result, **details})

    # -- a sweep ---------------------------------------------------------------
    def sweep(self, *, only: str | None = None, force: bool = False) -> SweepResult:
        names = [only] if only else list(self.vault.config.keys)
        results = []
        for name in names:
            if self.stop.is_set():
                results.append(KeyResult(name, Outcome.PAUSED, message="stopped before this key"))
                continue
            results.append(self.run_key(name, force=force))
        return SweepResult(results)

    def _config(self, name: str) -> KeyConfig:
        kc = self.vault.config.keys.get(name)
        if kc is None:
            raise NotFoundError(f"no key {name!r} in {self.vault.config.path} "
                                f"(configured: {', '.join(self.vault.config.keys) or 'none'})")
        return kc

    def run_key(self, name: str, *, force: bool = False) -> KeyResult:
        """One key, isolated: whatever goes wrong with it, the other keys still rotate."""
        kc = self._config(name)
        key = self.vault.keys.get(name)
        if key is None:
            err = self.vault.key_errors.get(name)
            msg = f"key {name} ({kc.ref}) cannot be opened: {err}"
            self.event("fail", None, key=kc.ref, result="error", reason=msg)
            return KeyResult(name, Outcome.FAILED, message=msg)
        self._waiting = None
        try:
            return self._with_lease(name, key, force=force)
        except RotationBusy as exc:
            return KeyResult(name, Outcome.BUSY, message=str(exc))
        except StateDBError:
            raise  # the state database itself: no key can rotate, stop the sweep
        except ProviderUnavailable as exc:
            return self._paused(name, kc, exc, Outcome.PAUSED,
                                f"key {name}: paused, the provider is unavailable ({exc}); the next sweep retries")
        except StoreUnavailable as exc:  # the store's server: the batch was rolled back, the cursor is durable
            return self._paused(name, kc, exc, Outcome.PAUSED,
                                f"key {name}: paused, the vault store is unavailable ({exc}); the next sweep retries")
        except KeysteadError as exc:  # provider, store, audit, verification: this key only
            return self._paused(name, kc, exc, Outcome.FAILED, f"rotation of key {name} paused: {exc}")
        except Exception as exc:  # a bug: log its type only (its message may quote data), fail this key
            log.error("rotation of key %s: internal error (%s)", name, type(exc).__name__)
            return self._paused(name, kc, exc, Outcome.FAILED,
                                f"rotation of key {name} failed: internal error ({type(exc).__name__}); "
                                "run with --debug and report it")

    def _paused(self, name: str, kc: KeyConfig, exc: Exception, outcome: Outcome, message: str) -> KeyResult:
        reason = str(exc) if isinstance(exc, KeysteadError) else f"internal error ({type(exc).__name__})"
        latest = self._safe(lambda: self.state.latest(name))
        if latest is not None and latest.active:
            self._safe(lambda: self.state.update(latest.id, now=self.now, error=reason))
        try:
            self.event("pause", latest, key=kc.ref, result=type(exc).__name__, reason=reason)
        except KeysteadError as audit_exc:
            log.error("could not audit the pause of key %s: %s", name, audit_exc)
        return KeyResult(name, outcome, state=latest.state if latest else None, message=message)

    @staticmethod
    def _safe(call: Callable[[], _T]) -> _T | None:
        try:
            return call()
        except RotationError:
            return None

    # -- driving one key -------------------------------------------------------------
    def _with_lease(self, name: str, key: ManagedKey, *, force: bool) -> KeyResult:
        """Take the key's lease and drive it; if another worker holds it and the key is rewrapping,
        help with its lanes first (then drive on if the lease is free by then)."""
        lease = self.key_lease(key.ref, name)
        if not lease.acquire():
            rot = self.state.latest(name)
            if rot is None or rot.state != REWRAPPING or force:
                raise lease.busy()
            rewrap.work_lanes(self, key, rot)
            if not self._take_back(lease, rot):
                if self.stop.is_set():
                    return KeyResult(name, Outcome.PAUSED, state=rot.state,
                                     message="stopped; resumes on the next sweep")
                return self._helped(name, self.state.latest(name))
        self.lease = lease
        try:
            with lease.kept():
                return self._drive(name, key, force=force)
        except _Handed:
            if self.stop.is_set():
                return KeyResult(name, Outcome.PAUSED, state=REWRAPPING, message="stopped; resumes on the next sweep")
            return self._helped(name, self.state.latest(name))
        finally:
            self.lease = None

    def _take_back(self, lease: KeyLease, rot: Rotation) -> bool:
        """Once the lanes are done: take the key's lease to verify. While another worker holds it,
        wait (its lease is renewed while it lives, and expires if it died) unless it moves the
        rotation on meanwhile: then False, and that worker carries on."""
        while not lease.acquire():
            now = self.state.latest(rot.key)
            if self.stop.is_set() or now is None or now.id != rot.id or now.state != REWRAPPING:
                return False
            self.stop.wait(min(1.0, self.settings.lease_seconds / 4))
        return True

    def _helped(self, name: str, rot: Rotation | None) -> KeyResult:
        holder = self.key_lease(rot.ref if rot else "", name).holder() if rot else None
        who = f" ({holder.owner})" if holder else ""
        return KeyResult(name, Outcome.HELPED, state=rot.state if rot else None, rewrapped=rot.rewrapped if rot else 0,
                         message=f"key {name}: helped rewrap rotation {rot.id if rot else '?'}; "
                                 f"another worker{who} holds its next step")

    def _drive(self, name: str, key: ManagedKey, *, force: bool) -> KeyResult:
        ref = key.ref
        retire.purge(self, name, key)  # first: a disabled version something needs is restored before any rewrap
        rot = self.state.latest(name)
        if rot is not None and rot.active and force:
            rot = self._force_during(name, key, rot)
        if rot is None or not rot.active:
            p = planner.plan_key(self.vault, name, self.state, as_of=self.now, force=force, stores=self.stores)
            if p.action == planner.ROTATE:
                rot = self.state.create(name, ref, reason="forced" if force and not p.due else "due",
                                        from_version=p.primary, now=self.now)
                self.event("plan", rot, key=ref, reason=rot.reason, from_version=p.primary, slots=p.slots)
            elif p.action == planner.CATCH_UP:
                rot = self.state.create(name, ref, reason="catch-up", from_version=None, to_version=p.primary,
                                        state=ROTATED, total=p.behind, now=self.now)
                self.event("plan", rot, key=ref, reason="catch-up", to_version=p.primary, behind=p.behind)
            elif p.action == planner.MANUAL:
                return KeyResult(name, Outcome.FAILED,
                                 message=f"key {name} ({p.provider}) does not rotate: declare a new key in "
                                         "keystead.toml and re-seal the secrets with it; nothing was changed")
            elif p.action == planner.ERROR:
                return KeyResult(name, Outcome.FAILED, message=f"key {name}: {p.error}")
            else:
                if p.rotation_kind == RotationKind.NONE:
                    msg = f"key {name}: does not rotate ({p.provider}); nothing to do"
                elif p.next_due is None:
                    msg = f"key {name}: rotated by the provider on its schedule; nothing behind"
                else:
                    msg = f"key {name}: nothing due (next {iso(p.next_due)})"
                return KeyResult(name, Outcome.IDLE, message=msg)
        steps = {PLANNED: self._rotate, ROTATED: self._start_rewrap, REWRAPPING: self._rewrap,
                 VERIFIED: self._retire, RETIRED: self._finish}
        while rot.state != DONE:
            if self.stop.is_set():
                return KeyResult(name, Outcome.PAUSED, state=rot.state,
                                 message="stopped; resumes on the next sweep", rewrapped=rot.rewrapped)
            if self.lease is not None and self.lease.lost.is_set():
                raise RotationBusy(f"key {name}: this worker's lease on its transitions expired and another "
                                   "worker took it; that one carries on")
            before = rot
            rot = steps[rot.state](key, rot)
            if rot.state == before.state and rot.state != REWRAPPING:
                break  # waiting (grace, a pending version) or blocked: the step said why in rot.error
        if rot.state == DONE and not self.stop.is_set():
            retire.purge(self, name, key)
        return self._result(name, rot)

    def _force_during(self, name: str, key: ManagedKey, rot: Rotation) -> Rotation | None:
        """``rotate KEY --force`` while a rotation is unfinished: an emergency must be possible."""
        if rot.state == VERIFIED:
            # Waiting out its grace period (or blocked): end it and start a new version now. Its
            # old version is not forgotten: every non-primary version retires only when unused.
            rot = self.state.update(rot.id, now=self.now, state=DONE, done_at=epoch(self.now),
                                    error="superseded by a forced rotation")
            self.event("supersede", rot, key=key.ref)
            return None
        if rot.state == PLANNED:
            return rot
        raise RotationError(
            f"key {name}: rotation {rot.id} is {rot.state} ({rot.rewrapped} of {rot.total} rewrapped); "
            f"`keystead rotate {name}` finishes it and `keystead rotate {name} --abandon` ends it; "
            "--force starts a new version once it is verified"
        )

    def _result(self, name: str, rot: Rotation) -> KeyResult:
        unread_rows = self.state.unreadable_slots(rot.id)
        unread = [u.secret for u in unread_rows]
        if rot.state == DONE:
            if unread and not any(u.reason == "payload" for u in unread_rows) \
                    and not behind(self.stores.prove(rot.ref).counts, rot.to_version):
                unread = []  # skipped once, since removed or repaired
            outcome = Outcome.DONE
            msg = f"key {name}: rotated to version {rot.to_version}, {rot.rewrapped} slot(s) rewrapped"
        elif rot.state == VERIFIED and rot.held > 0:
            outcome, msg = Outcome.BLOCKED, f"key {name}: {rot.error}"
        elif rot.state == VERIFIED or self._waiting:
            outcome, msg = Outcome.WAITING, f"key {name}: {rot.error or 'verified; waiting for the grace period'}"
        else:
            outcome, msg = Outcome.FAILED, f"key {name}: {rot.error or 'stopped in state ' + rot.state}"
        if unread:
            why = {u.secret: u.reason for u in unread_rows}
            shown = ", ".join(f"{s} ({why.get(s, 'key')})" for s in unread[:5])
            more = f" and {len(unread) - 5} more" if len(unread) > 5 else ""
            msg += (f"; {len(unread)} envelope(s) could not be rewrapped and were skipped: {shown}{more} "
                    "(key: the key cannot open its slot; payload: its payload fails authentication; "
                    "damaged: it cannot be parsed). Fix: `keystead secrets rm NAME`, or restore NAME from a backup")
            if outcome in (Outcome.DONE, Outcome.WAITING):
                outcome = Outcome.UNREADABLE
        return KeyResult(name, outcome, state=rot.state, message=msg, rewrapped=rot.rewrapped, unreadable=unread)

    # -- the steps ---------------------------------------------------------------
    def _rotate(self, key: ManagedKey, rot: Rotation) -> Rotation:
        info = key.describe()
        if info.primary == rot.from_version and info.pending is None:
            info = key.rotate(now=self.now, token=self.token(rot))
        if info.pending is not None or info.primary == rot.from_version:
            self._waiting = f"waiting for version {info.pending or '(new)'} of {key.ref} to become primary"
            return self.state.update(rot.id, now=self.now, error=self._waiting)
        total = behind(self.stores.prove(key.ref).counts, info.primary)  # counts: every store, summed
        rot = self.state.update(rot.id, now=self.now, state=ROTATED, to_version=info.primary,
                                rotated_at=epoch(self.now), total=total, error=None)
        self.event("rotate", rot, key=key.ref, from_version=rot.from_version, to_version=info.primary)
        return rot

    def _start_rewrap(self, key: ManagedKey, rot: Rotation) -> Rotation:
        rot = self.state.update(rot.id, now=self.now, state=REWRAPPING, cursor="", passes=1)
        rewrap.make_lanes(self, key, rot, first_pass=True)
        self.event("rewrap_start", rot, key=key.ref, to_version=rot.to_version, behind=rot.total)
        return rot

    def _rewrap(self, key: ManagedKey, rot: Rotation) -> Rotation:
        """Prepare the lanes under the lease, release it while the lanes are worked (by this worker
        and any other), take it back to verify."""
        rot = rewrap.prepare(self, key, rot)
        lease = self.lease
        if lease is not None:
            lease.release()
        moved = rewrap.work_lanes(self, key, rot)  # on an error the lease stays released: run_key reports it
        if lease is not None and not self._take_back(lease, rot):
            raise _Handed()
        rot = self.state.get(rot.id)
        if self.stop.is_set() or rot.state != REWRAPPING:
            return rot
        if moved:
            return rewrap.retarget(self, key, rot, key.describe().primary)
        if self.state.lanes_left(rot.id, stores=rewrap.store_ids(self)):
            return rot  # a lane was left (released by a lane process whose slots moved): another round
        return rewrap.verify(self, key, rot)

    def another_pass(self, key: ManagedKey, rot: Rotation, why: str) -> Rotation:
        """Start the rewrap again from the first secret of every store; give up after MAX_PASSES in one sweep."""
        done = self._passes[rot.id] = self._passes.get(rot.id, 0) + 1
        self.state.drop_lanes(rot.id)
        rot = self.state.update(rot.id, now=self.now, state=REWRAPPING, cursor="", passes=rot.passes + 1, error=why)
        if done >= MAX_PASSES:
            raise RotationError(f"rotation of key {rot.key} did not verify after {done} passes: {why}")
        rewrap.make_lanes(self, key, rot, first_pass=False)
        return rot

    def _retire(self, key: ManagedKey, rot: Rotation) -> Rotation:
        return retire.retire(self, key, rot)

    def _finish(self, key: ManagedKey, rot: Rotation) -> Rotation:
        self.state.delete_backups(rot.id)  # left over if a crash came right after verification
        rot = self.state.update(rot.id, now=self.now, state=DONE, done_at=epoch(self.now), error=None)
        self.event("done", rot, key=key.ref, to_version=rot.to_version, rewrapped=rot.rewrapped,
                    unreadable=rot.unreadable)
        return rot

    # -- ending a rotation by hand ---------------------------------------------------
    def abandon(self, name: str) -> KeyResult:
        """``keystead rotate KEY --abandon``: end the key's unfinished rotation safely."""
        kc = self._config(name)
        key = self.vault.keys.get(name)
        if key is None:
            raise self.vault.key_errors.get(name) or NotFoundError(f"key {name} cannot be opened")
        with self.state.lock(f"rotation:{kc.ref}", what=f"rotation of key {name}"):
            rot = self.state.latest(name)
            if rot is None or not rot.active:
                raise NotFoundError(f"key {name} has no unfinished rotation to abandon")
            restored = retire.abandon(self, key, rot)
        return KeyResult(name, Outcome.DONE, state="abandoned",
                         message=f"key {name}: rotation {rot.id} abandoned in state {rot.state}"
                                 + (f"; {restored} slot(s) restored from backup" if restored else ""))
