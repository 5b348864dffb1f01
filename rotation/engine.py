"""The rotation engine: drive one key's rotation through its persisted states.

::

    planned --rotate--> rotated --> rewrapping(cursor) --verify--> verified
        --grace, nothing left on old versions--> retired --> done

Each step reads the state row, does its work, and records the next state;
each is idempotent, so a worker killed at any instant and started again
resumes from the last recorded state:

- *planned -> rotated*: if the key's primary is still ``from_version``, add a
  version; if it already moved (the crash came after ``rotate`` but before
  the state was written), take the new primary as ``to_version``.
- *rewrapping*: batches of ``slots_behind(ref, to_version, after=cursor)``;
  ``rewrap_many`` re-wraps the data keys (the payload is never read); the
  old wrapped keys are committed to the backups table; then
  ``replace_slots`` swaps them in one store transaction, each slot only if
  it is still at the version read (compare-and-swap); then the cursor moves.
  A crash between any two of these leaves a state from which the same batch
  is simply done again. Slots the key cannot open are recorded, skipped and
  never deleted.
- *verified*: every rewrapped envelope (or, above ``verify_sample_above``,
  a random sample of ``verify_sample_size``) is opened with the key: its
  data key unwrapped under the new version and its payload decrypted with
  it; and a full count check (``version_counts``) finds no slot behind but
  the reported unreadable ones. A slot that fails is restored from its
  backup and the rotation does another rewrap pass (at most
  :data:`MAX_PASSES`). Backups are deleted only once verified.
- *retired*: after ``grace_days``, every live version other than the
  primary that ``version_counts`` shows unused is retired; a version still
  held (by an unreadable envelope) blocks it, and the sweep reports it.

Every step and every batch is one record in the audit log.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol

from keystead.errors import (
    DecryptError,
    KeysteadError,
    NotFoundError,
    ProviderError,
    RotationBusy,
    RotationError,
)
from keystead.rotation import planner
from keystead.rotation.state import (
    Batch,
    DONE,
    PLANNED,
    RETIRED,
    REWRAPPING,
    ROTATED,
    VERIFIED,
    Rotation,
    StateDB,
    StateDBError,
)
from keystead.stores.base import SlotUpdate

MAX_PASSES = 3
log = logging.getLogger("keystead.rotation")
LOG_FORMAT = "%(asctime)s level=%(levelname)s %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"

# Outcomes of one key in one sweep.
OK_OUTCOMES = ("done", "idle", "waiting", "paused")
FAILED_OUTCOMES = ("failed", "blocked", "busy", "unreadable")


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
    outcome: str
    state: str | None = None
    message: str = ""
    rewrapped: int = 0
    unreadable: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED_OUTCOMES

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "outcome": self.outcome, "state": self.state, "message": self.message,
                "rewrapped": self.rewrapped, "unreadable": self.unreadable}


@dataclass(slots=True)
class SweepResult:
    keys: list[KeyResult]

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.keys)


def _ts(when: datetime) -> float:
    return when.astimezone(timezone.utc).timestamp()


class Engine:
    """Rotates the keys of one open vault, with its state database.

    ``now`` is the clock for everything (due dates, grace, timestamps), so
    ``--as-of`` and tests move time without sleeping. ``stop`` is checked
    between batches: set it (SIGTERM) and the engine finishes the current
    batch and returns with outcome ``paused``.
    """

    def __init__(self, vault, state: StateDB, *, now: datetime, progress: Progress | None = None,
                 stop: threading.Event | None = None, rng: random.Random | None = None,
                 on_event: Callable[[str, dict], None] | None = None) -> None:
        self.vault = vault
        self.state = state
        self.now = now
        self.settings = vault.config.rotation
        self.progress = progress or NoProgress()
        self.stop = stop or threading.Event()
        self.rng = rng or random.Random()
        self.on_event = on_event
        self._passes: dict[int, int] = {}

    # -- reporting -------------------------------------------------------------
    def _event(self, action: str, rot: Rotation | None, *, key: str, result: str = "ok", **details) -> None:
        if rot is not None:
            details = {"rotation": rot.id, **details}
        self.vault.audit.append(f"rotation.{action}", key=key, result=result, **details)
        fields = " ".join(f"{k}={v}" for k, v in details.items())
        log.log(logging.WARNING if result != "ok" else logging.INFO,
                "rotation.%s key=%s result=%s %s", action, key, result, fields)
        if self.on_event:
            self.on_event(action, {"key": key, "result": result, **details})

    # -- a sweep ---------------------------------------------------------------
    def sweep(self, *, only: str | None = None, force: bool = False) -> SweepResult:
        names = [only] if only else list(self.vault.config.keys)
        results = []
        for name in names:
            if self.stop.is_set():
                results.append(KeyResult(name, "paused", message="stopped before this key"))
                continue
            results.append(self.run_key(name, force=force))
        return SweepResult(results)

    def run_key(self, name: str, *, force: bool = False) -> KeyResult:
        kc = self.vault.config.keys.get(name)
        if kc is None:
            raise NotFoundError(f"no key {name!r} in {self.vault.config.path} "
                                f"(configured: {', '.join(self.vault.config.keys) or 'none'})")
        key = self.vault.keys.get(name)
        if key is None:
            err = self.vault.key_errors.get(name)
            msg = f"key {name} ({kc.ref}) cannot be opened: {err}"
            self._event("fail", None, key=kc.ref, result="error", reason=msg)
            return KeyResult(name, "failed", message=msg)
        try:
            with self.state.lock(f"rotation:{kc.ref}", what=f"rotation of key {name}"):
                return self._drive(name, key, force=force)
        except RotationBusy as exc:
            return KeyResult(name, "busy", message=str(exc))
        except StateDBError:
            raise  # the state database itself: no key can rotate, stop the sweep
        except KeysteadError as exc:  # provider, store, audit, verification: this key only
            latest = self._safe_latest(name)
            if latest is not None and latest.active:
                self._safe_update(latest.id, error=str(exc))
            with contextlib.suppress(KeysteadError):
                self._event("pause", latest, key=kc.ref, result="error", reason=str(exc))
            return KeyResult(name, "failed", state=latest.state if latest else None,
                             message=f"rotation of key {name} paused: {exc}")

    def _safe_latest(self, name: str) -> Rotation | None:
        try:
            return self.state.latest(name)
        except RotationError:
            return None

    def _safe_update(self, rid: int, **values) -> None:
        try:
            self.state.update(rid, now=self.now, **values)
        except RotationError:
            pass

    def _drive(self, name: str, key, *, force: bool) -> KeyResult:
        ref = key.ref
        rot = self.state.latest(name)
        if rot is None or rot.state == DONE:
            p = planner.plan_key(self.vault, name, self.state, as_of=self.now, force=force)
            if p.action == planner.ROTATE:
                rot = self.state.create(name, ref, reason="forced" if force and not p.due else "due",
                                        from_version=p.primary, now=self.now)
                self._event("plan", rot, key=ref, reason=rot.reason, from_version=p.primary, slots=p.slots)
            elif p.action == planner.CATCH_UP:
                rot = self.state.create(name, ref, reason="catch-up", from_version=None, to_version=p.primary,
                                        state=ROTATED, total=p.behind, now=self.now)
                self._event("plan", rot, key=ref, reason="catch-up", to_version=p.primary, behind=p.behind)
            elif p.action == planner.MANUAL:
                return KeyResult(name, "idle", message=f"key {name} is due but cannot rotate in place; "
                                 f"rotate it by hand (keystead rotate {name} --force)")
            elif p.action == planner.ERROR:
                return KeyResult(name, "failed", message=f"key {name}: {p.error}")
            else:
                return KeyResult(name, "idle", message=f"key {name}: nothing due (next {planner._iso(p.next_due)})")
        steps = {PLANNED: self._rotate, ROTATED: self._start_rewrap, REWRAPPING: self._rewrap,
                 VERIFIED: self._retire, RETIRED: self._finish}
        while rot.state != DONE:
            if self.stop.is_set():
                return KeyResult(name, "paused", state=rot.state, message="stopped; resumes on the next sweep",
                                 rewrapped=rot.rewrapped)
            before = rot
            rot = steps[rot.state](key, rot)
            if rot.state == before.state and rot.state != REWRAPPING:
                break  # waiting (grace) or blocked: the step said why in rot.error
        return self._result(name, rot)

    def _result(self, name: str, rot: Rotation) -> KeyResult:
        unread = [s for s, _v, _r in self.state.unreadable_slots(rot.id)]
        if rot.state == DONE:
            counts = self.vault.store.version_counts(rot.ref)
            if not any(c for v, c in counts.items() if v != rot.to_version):
                unread = []  # skipped once, since removed or repaired
            outcome = "done"
            msg = f"key {name}: rotated to version {rot.to_version}, {rot.rewrapped} slot(s) rewrapped"
        elif rot.state == VERIFIED and rot.error and "held" in rot.error:
            outcome, msg = "blocked", f"key {name}: {rot.error}"
        elif rot.state == VERIFIED:
            outcome, msg = "waiting", f"key {name}: {rot.error or 'verified; waiting for the grace period'}"
        else:
            outcome, msg = "failed", f"key {name}: {rot.error or 'stopped in state ' + rot.state}"
        if unread:
            msg += f"; {len(unread)} envelope(s) the key cannot open were skipped: {', '.join(unread[:5])}"
            if outcome in ("done", "waiting"):
                outcome = "unreadable"
        return KeyResult(name, outcome, state=rot.state, message=msg, rewrapped=rot.rewrapped, unreadable=unread)

    # -- the steps ---------------------------------------------------------------
    def _rotate(self, key, rot: Rotation) -> Rotation:
        info = key.describe()
        if info.primary == rot.from_version:
            info = key.rotate(now=self.now)
        counts = self.vault.store.version_counts(key.ref)
        total = sum(c for v, c in counts.items() if v != info.primary)
        rot = self.state.update(rot.id, now=self.now, state=ROTATED, to_version=info.primary,
                                rotated_at=_ts(self.now), total=total, error=None)
        self._event("rotate", rot, key=key.ref, from_version=rot.from_version, to_version=info.primary)
        return rot

    def _start_rewrap(self, key, rot: Rotation) -> Rotation:
        # rot.total was counted when the rotation reached "rotated" (by _rotate, or by
        # the planner for a catch-up): no second GROUP BY over every slot of the key.
        rot = self.state.update(rot.id, now=self.now, state=REWRAPPING, cursor="", passes=1)
        self._event("rewrap_start", rot, key=key.ref, to_version=rot.to_version, behind=rot.total)
        return rot

    def _rewrap(self, key, rot: Rotation) -> Rotation:
        """Rewrap until nothing is behind after the cursor (or stop), then verify.

        A large first pass is cut into lanes rewrapped by processes side by
        side (:mod:`keystead.rotation.lanes`). Whatever the lanes did not see
        (slots written meanwhile) the verification's count check finds, and
        it sends the rotation round another pass, in this process.
        """
        primary = key.describe().primary
        if primary != rot.to_version:
            # The key got a newer version outside this rotation (by hand, or a lost
            # state database): rewrap to that one instead, from the start.
            rot = self.state.update(rot.id, now=self.now, to_version=primary, cursor="",
                                    error=f"the key moved to version {primary} during the rewrap; "
                                          "rewrapping to it from the start")
            self.state.drop_lanes(rot.id)
            self._event("retarget", rot, key=key.ref, to_version=primary)
        counts = self.vault.store.version_counts(key.ref)
        self.progress.start(rot.key, sum(c for v, c in counts.items() if v != rot.to_version))
        try:
            pending = [lane for lane in self._lanes(key, rot) if not lane.done]
            if pending:
                from keystead.rotation.lanes import run_lanes

                run_lanes(self, rot, pending)
                rot = self.state.get(rot.id)
            else:
                rot = self.rewrap_range(key, rot, after=rot.cursor)
        finally:
            self.progress.finish()
        if self.stop.is_set():
            return rot
        return self._verify(key, rot)

    def _lanes(self, key, rot: Rotation) -> list:
        lanes = self.state.lanes(rot.id)
        lanes_wanted = self.settings.parallel
        if lanes or lanes_wanted < 2 or rot.passes > 1 or rot.cursor:
            return lanes
        if rot.total < max(self.settings.parallel_above, 2 * self.settings.batch_size):
            return lanes
        points = self.vault.store.split_points(key.ref, lanes_wanted)
        return self.state.create_lanes(rot.id, points) if points else []

    def rewrap_range(self, key, rot: Rotation, *, after: str, until: str | None = None,
                     lane: int | None = None) -> Rotation:
        """The rewrap loop over one range of secret names, batch by batch.

        Per batch: read the slots behind; rewrap their data keys (the payload
        is never read); commit the old wrapped keys as a backup; swap the new
        ones in (compare-and-swap per slot); move the cursor. A crash between
        any two of these leaves a state from which the batch is simply redone.
        """
        ref, to, rid = key.ref, rot.to_version, rot.id
        store, state, vault_name = self.vault.store, self.state, self.vault.config.vault_name
        batch, cursor, written_batch = self.settings.batch_size, after, None
        while not self.stop.is_set():
            rows = store.slots_behind(ref, to, after=cursor, until=until, limit=batch)
            if not rows:
                break
            version, results = key.rewrap_many(vault_name, rows)
            if version != to:
                raise RotationError(f"key {rot.key} moved to version {version} during the rewrap to {to}; "
                                    "the next sweep rewraps to the new version")
            stamp = int(_ts(self.now))
            # Compare-and-swap on the version and the wrapped bytes read: a secret re-set
            # meanwhile (by a process still wrapping under the old version) keeps its new slot.
            updates = [SlotUpdate(r[0], r[1], to, stamp, w, r[2])
                       for r, w in zip(rows, results) if type(w) is bytes]
            saved, failed = rows, ()
            if len(updates) != len(rows):
                failed = tuple((r.secret, r.version, type(w).__name__)
                               for r, w in zip(rows, results, strict=True) if type(w) is not bytes)
                bad = {s for s, _v, _r in failed}
                saved = [r for r in rows if r.secret not in bad]
            # One commit: this batch's backups (durable before the store is touched)
            # and the bookkeeping of the batch before it.
            state.record_batch(rid, backups=saved, done=written_batch, now=self.now, lane=lane)
            written = store.replace_slots(ref, updates) if updates else 0
            cursor = rows[-1].secret
            written_batch = Batch(cursor, written, failed)
            self._event("rewrap", rot, key=ref, first=rows[0].secret, last=cursor, rewrapped=written,
                        unreadable=len(failed), **({"lane": lane} if lane is not None else {}),
                        **({"unreadable_secrets": [s for s, _v, _r in failed]} if failed else {}))
            self.progress.advance(len(rows))
        if written_batch is not None:
            state.record_batch(rid, backups=(), done=written_batch, now=self.now, lane=lane)
        return state.get(rid)

    def _verify(self, key, rot: Rotation) -> Rotation:
        """Open rewrapped envelopes with the key; count check; then drop the backups."""
        ref, to, rid = key.ref, rot.to_version, rot.id
        unread = {s for s, _v, _r in self.state.unreadable_slots(rid)}
        counts = self.vault.store.version_counts(ref)
        behind = sum(c for v, c in counts.items() if v != to)
        if behind > len(unread):
            return self._another_pass(rot, f"{behind - len(unread)} slot(s) still behind after the pass")
        slots = sum(counts.values())
        if slots > self.settings.verify_sample_above:
            names = self._sample(rid, self.settings.verify_sample_size)
            mode = f"sample of {len(names)}"
            envelopes = self._get_each(names)
        else:
            mode = "all"
            envelopes = self.vault.store.iter_envelopes(batch=2000)
        checked, bad = self._open_all(key, to, envelopes, unread)
        if bad:
            self._restore(key, rot, bad)
            return self._another_pass(rot, f"{len(bad)} rewrapped envelope(s) failed verification; "
                                      "their old slots were restored from backup")
        # Verified first, then drop the backups: a crash in between leaves backups
        # that _finish removes, never a re-verification over an empty backup set.
        rot = self.state.update(rid, now=self.now, state=VERIFIED, verified=checked,
                                verified_at=_ts(self.now), error=None)
        deleted = self.state.delete_backups(rid)
        self._event("verify", rot, key=ref, mode=mode, checked=checked, slots=slots, behind=behind,
                    unreadable=len(unread), backup_batches_deleted=deleted)
        return rot

    @staticmethod
    def _open_all(key, to: str, envelopes, unread: set[str]) -> tuple[int, list[tuple[str, str, bytes]]]:
        """Open each envelope's slot of ``key`` (data key, then payload); collect failures."""
        from keystead.crypto import open_envelope

        checked, bad = 0, []
        for env in envelopes:
            slot = env.slot(key.ref)
            if slot is None or env.name in unread:
                continue
            try:
                if slot.version != to:
                    raise DecryptError()
                open_envelope(env, key)
            except (DecryptError, ProviderError):
                bad.append((env.name, slot.version, slot.wrapped))
            checked += 1
        return checked, bad

    def _get_each(self, names: list[str]):
        for name in names:
            try:
                yield self.vault.store.get(name)
            except NotFoundError:
                continue  # deleted since it was rewrapped: nothing to verify

    def _sample(self, rid: int, k: int) -> list[str]:
        """About k secrets drawn uniformly from those this rotation rewrapped (reservoir sampling,
        streamed: memory is O(k), not O(vault)). A secret in a batch redone after a crash may be
        drawn twice and is checked once."""
        out: list[str] = []
        for i, (name, _v, _w) in enumerate(self.state.backup_rows(rid)):
            if i < k:
                out.append(name)
            else:
                j = self.rng.randrange(i + 1)
                if j < k:
                    out[j] = name
        return sorted(set(out))

    def _restore(self, key, rot: Rotation, bad: list[tuple[str, str, bytes]]) -> None:
        updates = []
        for name, version, wrapped in bad:
            b = self.state.backup(rot.id, name)
            if b is not None:
                updates.append(SlotUpdate(name, version, b[0], int(_ts(self.now)), b[1], wrapped))
        if updates:
            self.vault.store.replace_slots(key.ref, updates)
        self._event("restore", rot, key=key.ref, result="error", restored=len(updates),
                    secrets=[n for n, _v, _w in bad[:20]])

    def _another_pass(self, rot: Rotation, why: str) -> Rotation:
        """Start the rewrap again from the first secret; give up after MAX_PASSES in one sweep."""
        done = self._passes[rot.id] = self._passes.get(rot.id, 0) + 1
        rot = self.state.update(rot.id, now=self.now, cursor="", passes=rot.passes + 1, error=why)
        if done >= MAX_PASSES:
            raise RotationError(f"rotation of key {rot.key} did not verify after {done} passes: {why}")
        return rot

    def _retire(self, key, rot: Rotation) -> Rotation:
        grace = timedelta(days=self.settings.grace_days)
        verified_at = datetime.fromtimestamp(rot.verified_at or 0, timezone.utc)
        if self.now < verified_at + grace:
            when = (verified_at + grace).strftime("%Y-%m-%dT%H:%M:%SZ")
            return self.state.update(rot.id, now=self.now, error=f"verified; old versions retire after {when}")
        info = key.describe()
        counts = self.vault.store.version_counts(key.ref)
        old = [v for v in info.live_versions if v != info.primary]
        held = {v: counts[v] for v in old if counts.get(v, 0)}
        for v in old:
            if v not in held:
                key.retire(v)
                self._event("retire", rot, key=key.ref, version=v)
        if held:
            desc = ", ".join(f"version {v} still held by {c} envelope(s)" for v, c in sorted(held.items()))
            rot = self.state.update(rot.id, now=self.now, error=desc)
            self._event("retire_blocked", rot, key=key.ref, result="error", held=held)
            return rot
        rot = self.state.update(rot.id, now=self.now, state=RETIRED, retired_at=_ts(self.now), error=None)
        return rot

    def _finish(self, key, rot: Rotation) -> Rotation:
        self.state.delete_backups(rot.id)  # left over if a crash came right after verification
        rot = self.state.update(rot.id, now=self.now, state=DONE, done_at=_ts(self.now), error=None)
        self._event("done", rot, key=key.ref, to_version=rot.to_version, rewrapped=rot.rewrapped,
                    unreadable=rot.unreadable)
        return rot
