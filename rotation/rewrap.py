"""The rewrap of one key across every store, in lanes, and its verification.

A *lane* is a range of secret names of one store with a durable cursor
(``keystead_lanes``). A store's backlog on the first pass is cut into lanes
of about ``lane_size`` slots (50,000), at least ``parallel`` of them when the
backlog is above ``parallel_above``; a small store is one lane. Workers
*claim* lanes (:meth:`StateDB.claim_lane`: an owner and a lease) and work
them until none is left (:func:`work_lanes`); every worker of every machine
that finds the key rewrapping does the same, and a local worker may run
``parallel`` lane processes (:mod:`keystead.rotation.lanes`). The batch loop
of a lane (:func:`rewrap_range`):

1. read the next slots behind the target version after the cursor;
2. ``rewrap_many``: one result per slot, a new wrapped key with its own
   version (a cloud key that moved mid-batch puts slots on a newer version:
   each is written with its own, and the rotation retargets), or a
   decryption failure (the slot is recorded unreadable and skipped);
3. one state commit, *fenced* by the lane's owner: this batch's old wrapped
   keys as a backup, the bookkeeping of the batch before, the lease renewed,
   the batch logged. Zero rows fenced means the lease was lost (it expired
   and another worker took the lane): the lane stops before touching the
   store;
4. ``replace_slots``: a compare-and-swap per slot on the version and the
   bytes read, so a secret re-set meanwhile keeps its new slot;
5. move the cursor.

A crash between any two steps leaves a state from which the batch is simply
done again. A transient provider failure (``ProviderUnavailable``) is raised
for the whole batch before anything is written: the key pauses. A transient
state database failure (a dropped connection, a timeout) is retried with
backoff; the lane resumes from its durable cursor.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from keystead.clock import epoch
from keystead.config import RotationConfig
from keystead.crypto import open_with_dek, unwrap_slot
from keystead.envelope import Envelope, Slot
from keystead.errors import DecryptError, KeysteadError, NotFoundError, ProviderError
from keystead.providers import ManagedKey, Wrapped
from keystead.rotation.state import REWRAPPING, VERIFIED, Batch, FailedSlot, Lane, LeaseLost, Rotation, StateDBError
from keystead.rotation.stores import behind
from keystead.stores import Store
from keystead.stores.base import DAMAGED, SlotUpdate

if TYPE_CHECKING:
    from keystead.rotation.engine import Engine

log = logging.getLogger("keystead.rotation")
MAX_LANES = 10_000
RETRIES = 8
"""Transient state database failures in a row before the rewrap gives up; backoff 0.1 s doubling to 5 s,
with jitter."""


def lane_count(settings: RotationConfig, backlog: int) -> int:
    """How many lanes a store's first-pass backlog is cut into."""
    parts = math.ceil(backlog / settings.lane_size) if backlog > settings.lane_size else 1
    if settings.parallel >= 2 and backlog >= max(settings.parallel_above, 2 * settings.batch_size):
        parts = max(parts, settings.parallel)
    return min(parts, MAX_LANES)


def make_lanes(engine: Engine, key: ManagedKey, rot: Rotation, *, first_pass: bool) -> None:
    """Lanes for every reachable store that has none yet (idempotent)."""
    settings = engine.settings
    have = {engine.stores.resolve(lane.store) for lane in engine.state.lanes(rot.id)}
    single = len(engine.stores.ids()) == 1
    for sid, store in engine.stores.reachable():
        if sid in have:
            continue
        points: list[str] = []
        if first_pass:
            # One store: the backlog counted when the rotation reached "rotated" (no second GROUP BY).
            backlog = rot.total if single else behind(store.version_counts(key.ref), rot.to_version)
            parts = lane_count(settings, backlog)
            if parts > 1:
                points = store.split_points(key.ref, parts)
        engine.state.create_lanes(rot.id, points, store=sid)


def prepare(engine: Engine, key: ManagedKey, rot: Rotation) -> Rotation:
    """Under the key's lease, before the lanes are worked: retarget if the key moved to a newer
    version, and make every reachable store's lanes."""
    primary = key.describe().primary
    if primary != rot.to_version:
        rot = retarget(engine, key, rot, primary)
    make_lanes(engine, key, rot, first_pass=rot.passes <= 1)
    return rot


def rewrap(engine: Engine, key: ManagedKey, rot: Rotation) -> Rotation:
    """One worker's whole rewrap (prepare, work every lane); retarget if the key moved."""
    rot = prepare(engine, key, rot)
    moved = work_lanes(engine, key, rot)
    rot = engine.state.get(rot.id)
    if moved and not engine.stop.is_set():
        rot = retarget(engine, key, rot, key.describe().primary)
    return rot


def store_ids(engine: Engine) -> list[str]:
    """The ids lanes of reachable stores carry ('' for the active store's pre-v2 lanes)."""
    ids = [sid for sid, _store in engine.stores.reachable()]
    return [*ids, ""] if engine.stores.active in ids else ids


def work_lanes(engine: Engine, key: ManagedKey, rot: Rotation) -> bool:
    """Claim and rewrap lanes of ``rot`` until every lane of every reachable store is done (waiting
    while other workers hold the last ones: if one dies, its lease expires and this worker takes the
    lane over). True if some slot landed on a version newer than the target (the caller retargets)."""
    if rot.passes <= 1:
        todo = max(0, rot.total - rot.rewrapped)  # counted at "rotated": no full count per resume
    else:
        todo = behind(engine.stores.prove(key.ref).counts, rot.to_version)  # counts: every store, summed
    stores = store_ids(engine)
    settings = engine.settings
    engine.progress.start(rot.key, todo)
    try:
        left = engine.state.lanes_left(rot.id, stores=stores)
        if settings.parallel > 1 and left > 1 and todo >= settings.parallel_above:
            from keystead.rotation.lanes import run_lanes

            run_lanes(engine, rot, min(settings.parallel, left))
            return False
        return claim_loop(engine, key, rot, stores)
    finally:
        engine.progress.finish()


def claim_loop(engine: Engine, key: ManagedKey, rot: Rotation, stores: list[str]) -> bool:
    """This process's part of the rewrap: claim a lane, rewrap it (fenced), mark it done; again.

    A lost lease stops that lane only; a transient state database failure is retried with backoff
    (up to :data:`RETRIES` in a row) and the claim gives this owner its own lane back, from its
    cursor. An unavailable store (``StoreUnavailable``: its transaction was rolled back) pauses the
    key instead; the next sweep resumes from the cursors."""
    state, owner, seconds = engine.state, engine.owner, float(engine.settings.lease_seconds)
    failures = 0
    while not engine.stop.is_set():
        lane: Lane | None = None
        try:
            lane = state.claim_lane(rot.id, owner=owner, now=engine.lease_now(), seconds=seconds, stores=stores)
            if lane is None:
                if not state.lanes_left(rot.id, stores=stores):
                    return False
                engine.stop.wait(min(1.0, seconds / 4))  # others hold the rest: wait for them or their expiry
                continue
            log.info("lane.claim rotation=%s lane=%s owner=%s cursor=%s", rot.id, lane.lane, owner,
                     lane.cursor or "(start)")
            sid = engine.stores.resolve(lane.store)
            moved = rewrap_range(engine, key, rot, store=engine.stores.get(sid), sid=sid, lane=lane, owner=owner)
            if moved or engine.stop.is_set():
                state.release_lane(rot.id, lane.lane, owner=owner)
                return moved
            state.finish_lane(rot.id, lane.lane, owner=owner)
            failures = 0
        except LeaseLost as exc:
            log.warning("lane.lost rotation=%s lane=%s owner=%s: %s; this lane stops here", rot.id,
                        lane.lane if lane else "?", owner, exc)
        except StateDBError as exc:  # an unavailable *store* pauses the key instead (the next sweep resumes)
            failures += 1
            if not exc.transient or failures > RETRIES:
                raise
            pause = min(5.0, 0.1 * 2 ** (failures - 1)) * (0.5 + engine.rng.random())
            log.warning("state.retry attempt=%d in=%.2fs: %s", failures, pause, exc)
            engine.stop.wait(pause)
    return False


def retarget(engine: Engine, key: ManagedKey, rot: Rotation, primary: str) -> Rotation:
    """The key got a newer version outside this rotation (by hand, an alias moved, the cloud's own
    schedule, a lost state database): rewrap to that one instead, from the start of every store."""
    if primary == rot.to_version:
        return rot
    engine.state.drop_lanes(rot.id)
    rot = engine.state.update(rot.id, now=engine.now, state=REWRAPPING, to_version=primary, cursor="",
                              error=f"the key moved to version {primary} during the rewrap; rewrapping to it")
    engine.event("retarget", rot, key=key.ref, to_version=primary)
    make_lanes(engine, key, rot, first_pass=False)
    return rot


_VERSION = itemgetter(1)  # a SlotRow's version
_TARGET = itemgetter(2)  # a SlotUpdate's new version


def rewrap_range(engine: Engine, key: ManagedKey, rot: Rotation, *, store: Store, sid: str, lane: Lane,
                 owner: str | None = None) -> bool:
    """The batch loop over one lane. True if some slot landed on a version newer than the target.

    With ``owner`` every batch commit is fenced by the lane's lease and renews it (LeaseLost when
    another worker holds the lane now)."""
    ref, to, rid = key.ref, rot.to_version, rot.id
    seconds = float(engine.settings.lease_seconds)
    assert to is not None
    state, vault_name, batch = engine.state, engine.vault.config.vault_name, engine.settings.batch_size
    cursor, until, written_batch, moved = lane.cursor, lane.until, None, False
    while not engine.stop.is_set() and not moved:
        rows = store.slots_behind(ref, to, after=cursor, until=until, limit=batch)
        if not rows:
            break
        # The hot loop: C-speed scans (map, set, comprehensions) instead of per-slot Python branches.
        if DAMAGED in set(map(_VERSION, rows)):
            live = [r for r in rows if r[1] != DAMAGED]
            failed = [FailedSlot(r[0], DAMAGED, "damaged") for r in rows if r[1] == DAMAGED]
        else:
            live, failed = rows, []
        results = key.rewrap_many(vault_name, live) if live else []
        if len(results) != len(live):
            raise ProviderError(f"{ref}: rewrap_many gave {len(results)} results for {len(live)} slots",
                                op="rewrap", key=ref)
        stamp = engine.stamp
        # Compare-and-swap on the version and the wrapped bytes read: a secret re-set meanwhile
        # (by a process still wrapping under the old version) keeps its new slot. Each slot gets
        # the version its own result names.
        updates = [SlotUpdate(r[0], r[1], w[0], stamp, w[1], r[2])
                   for r, w in zip(live, results, strict=True) if type(w) is Wrapped]
        if len(updates) != len(live):
            failed += [FailedSlot(r[0], r[1], "key") for r, w in zip(live, results, strict=True)
                       if type(w) is not Wrapped]
        moved = bool(set(map(_TARGET, updates)) - {to})
        saved = live
        if failed:
            bad = {f.secret for f in failed}
            saved = [r for r in live if r.secret not in bad]
        # One commit: this batch's backups (durable before the store is touched) and the
        # bookkeeping of the batch before it.
        at = engine.lease_now()
        state.record_batch(rid, backups=saved, done=written_batch, now=engine.now, lane=lane.lane, store=sid,
                           owner=owner, lease_until=at + seconds, at=at)
        written = store.replace_slots(ref, updates) if updates else 0
        cursor = rows[-1].secret
        written_batch = Batch(cursor, written, tuple(failed))
        extra: dict[str, Any] = {"lane": lane.lane, **({"owner": owner} if owner else {})}
        if failed:
            from keystead.rotation.engine import capped

            extra["unreadable_secrets"] = capped([f.secret for f in failed])
        engine.event("rewrap", rot, key=ref, first=rows[0].secret, last=cursor, rewrapped=written,
                     unreadable=len(failed), **extra)
        engine.progress.advance(len(rows))
    if written_batch is not None:
        at = engine.lease_now()
        state.record_batch(rid, backups=(), done=written_batch, now=engine.now, lane=lane.lane, store=sid,
                           owner=owner, lease_until=at + seconds, at=at)
    return moved


# -- verification ------------------------------------------------------------------

def verify(engine: Engine, key: ManagedKey, rot: Rotation) -> Rotation:
    """Open rewrapped envelopes with the key; count check per store; then drop the backups."""
    ref, to, rid = key.ref, rot.to_version, rot.id
    assert to is not None
    rows = engine.state.unreadable(rid)
    unread = {(engine.stores.resolve(u.store), u.secret) for u in rows}
    # Slots known to stay behind: those the key cannot open and damaged envelopes. A payload
    # failure's slot was rewrapped (it is not behind), so it never excuses a slot that is.
    stuck = [engine.stores.resolve(u.store) for u in rows if u.reason != "payload"]
    slots, lag, per_store = 0, 0, []
    for sid, store in engine.stores.reachable():
        counts = store.version_counts(ref)
        here = behind(counts, to)
        known = stuck.count(sid)
        if here > known:
            return engine.another_pass(key, rot, f"{here - known} slot(s) in {engine.stores.label(sid)} "
                                                 "still behind after the pass")
        slots += sum(counts.values())
        lag += here
        per_store.append((sid, store))
    sample = slots > engine.settings.verify_sample_above
    checked, bad, payload = 0, [], []
    for sid, store in per_store:
        if sample:
            share = store_share(store, ref, slots)
            names = _sample(engine, rid, sid, max(1, engine.settings.verify_sample_size * share))
            envelopes: Iterable[Envelope] = _get_each(store, names)
        else:
            envelopes = store.iter_envelopes(batch=2000, on_damaged=lambda _n, _e: None)
        for env in envelopes:
            slot = env.slot(ref)
            if slot is None or (unread and (sid, env.name) in unread):
                continue
            checked += 1
            if slot.version == to:  # the common case, inline: the slot opens and so does the payload
                try:
                    open_with_dek(env, unwrap_slot(env, key))
                    continue
                except (DecryptError, ProviderError):
                    pass
            verdict = _check(engine, key, rot, sid, env, slot)
            if verdict == "bad":
                bad.append((sid, env.name, slot))
            elif verdict == "payload":
                payload.append(FailedSlot(env.name, slot.version, "payload"))
        if payload:
            engine.state.record_batch(rid, backups=(), done=Batch(rot.cursor, 0, tuple(payload)), now=engine.now,
                                      store=sid)
            engine.event("unreadable", rot, key=ref, result="error", reason="payload",
                         **{"unreadable_secrets": _capped([p.secret for p in payload])})
            payload = []
    if bad:
        restored = restore(engine, key, rot, bad)
        return engine.another_pass(key, rot, f"{len(bad)} rewrapped envelope(s) failed verification; "
                                             f"{restored} old slot(s) were restored from backup")
    # Verified first, then drop the backups: a crash in between leaves backups
    # that the next step removes, never a re-verification over an empty backup set.
    rot = engine.state.update(rid, now=engine.now, state=VERIFIED, verified=checked,
                              verified_at=epoch(engine.now), error=None)
    deleted = engine.state.delete_backups(rid)
    unreachable: dict[str, Any] = {"stores_unreachable": len(engine.stores.errors)} if engine.stores.errors else {}
    engine.event("verify", rot, key=ref, mode=f"sample of {checked}" if sample else "all", checked=checked,
                 slots=slots, behind=lag, unreadable=len(unread), backup_batches_deleted=deleted, **unreachable)
    return rot


def store_share(store: Store, ref: str, total: int) -> float:
    return 1.0 if total <= 0 else min(1.0, sum(store.version_counts(ref).values()) / total)


def _capped(names: list[str]) -> dict[str, object]:
    from keystead.rotation.engine import capped

    return capped(names)


def _check(engine: Engine, key: ManagedKey, rot: Rotation, sid: str, env: Envelope, slot: Slot) -> str:
    """"ok", "bad" (the rewrapped slot is wrong: restore it) or "payload" (the slot is right,
    the payload is not: nothing a rewrap can fix)."""
    try:
        dek = unwrap_slot(env, key)
    except DecryptError:
        dek = None
    # A ProviderError here (not DecryptError: AccessDenied on Decrypt, a key that cannot be used) says
    # nothing about the slot: it is raised, the rotation stops with it and resumes once fixed; judging
    # the slot "bad" would restore every rewrapped slot from backup and never finish.
    if dek is not None:
        try:
            open_with_dek(env, dek)
            return "ok" if slot.version == rot.to_version else "bad"
        except DecryptError:
            pass
    backup = engine.state.backup(rot.id, env.name, store=sid)
    if backup is None:
        return "payload" if dek is not None else "bad"
    old_version, old_wrapped = backup[-2], backup[-1]
    try:
        old = key.unwrap(Wrapped(old_version, old_wrapped), env.context)
    except (DecryptError, ProviderError):
        return "bad"
    if dek is not None and hmac.compare_digest(dek, old):
        return "payload"  # both slots give the same data key: the payload itself fails
    return "bad"


def _get_each(store: Store, names: list[str]) -> Iterator[Envelope]:
    for name in names:
        try:
            yield store.get(name)
        except NotFoundError:
            continue  # deleted since it was rewrapped: nothing to verify
        except KeysteadError:
            continue  # damaged since: the count check and the next sweep see it


def _sample(engine: Engine, rid: int, sid: str, k: float) -> list[str]:
    """About k secrets drawn uniformly from those this rotation rewrapped in one store (reservoir
    sampling, streamed: memory is O(k), not O(vault)). A secret in a batch redone after a crash may
    be drawn twice and is checked once."""
    k = int(k)
    out: list[str] = []
    rows = engine.state.backup_rows(rid, store=sid)
    for i, row in enumerate(rows):
        name = row[0]
        if i < k:
            out.append(name)
        else:
            j = engine.rng.randrange(i + 1)
            if j < k:
                out[j] = name
    return sorted(set(out))


def restore(engine: Engine, key: ManagedKey, rot: Rotation, bad: list[tuple[str, str, Slot]]) -> int:
    """Put the backed-up old slot back on each ``(store id, secret, current slot)``."""
    by_store: dict[str, list[SlotUpdate]] = {}
    for sid, name, slot in bad:
        b = engine.state.backup(rot.id, name, store=sid)
        if b is not None:
            by_store.setdefault(sid, []).append(SlotUpdate(name, slot.version, b[-2], engine.stamp, b[-1],
                                                           slot.wrapped))
    restored = 0
    for sid, updates in by_store.items():
        restored += engine.stores.get(sid).replace_slots(key.ref, updates)
    engine.event("restore", rot, key=key.ref, result="error", restored=restored,
                 **{"unreadable_secrets": _capped([n for _s, n, _slot in bad])})
    return restored
