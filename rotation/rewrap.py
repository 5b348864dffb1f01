"""The rewrap of one key across every store, in lanes, and its verification.

A *lane* is a range of secret names of one store with a durable cursor
(``keystead_lanes``). Every store gets one lane; a store with a large
backlog on the first pass is cut into ``parallel`` lanes that processes
rewrap side by side (:mod:`keystead.rotation.lanes`). The batch loop of a
lane (:func:`rewrap_range`):

1. read the next slots behind the target version after the cursor;
2. ``rewrap_many``: one result per slot, a new wrapped key with its own
   version (a cloud key that moved mid-batch puts slots on a newer version:
   each is written with its own, and the rotation retargets), or a
   decryption failure (the slot is recorded unreadable and skipped);
3. one state commit: this batch's old wrapped keys as a backup, and the
   bookkeeping of the batch before;
4. ``replace_slots``: a compare-and-swap per slot on the version and the
   bytes read, so a secret re-set meanwhile keeps its new slot;
5. move the cursor.

A crash between any two steps leaves a state from which the batch is simply
done again. A transient provider failure (``ProviderUnavailable``) is raised
for the whole batch before anything is written: the key pauses.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from keystead.clock import epoch
from keystead.crypto import open_with_dek, unwrap_slot
from keystead.envelope import Envelope, Slot
from keystead.errors import DecryptError, KeysteadError, NotFoundError, ProviderError
from keystead.providers import ManagedKey, Wrapped
from keystead.rotation.state import REWRAPPING, VERIFIED, Batch, FailedSlot, Lane, Rotation
from keystead.rotation.stores import behind
from keystead.stores import Store
from keystead.stores.base import DAMAGED, SlotUpdate

if TYPE_CHECKING:
    from keystead.rotation.engine import Engine


def make_lanes(engine: Engine, key: ManagedKey, rot: Rotation, *, first_pass: bool) -> None:
    """Lanes for every reachable store that has none yet (idempotent)."""
    settings = engine.settings
    have = {engine.stores.resolve(lane.store) for lane in engine.state.lanes(rot.id)}
    single = len(engine.stores.ids()) == 1
    for sid, store in engine.stores.reachable():
        if sid in have:
            continue
        points: list[str] = []
        if first_pass and settings.parallel >= 2:
            # One store: the backlog counted when the rotation reached "rotated" (no second GROUP BY).
            backlog = rot.total if single else behind(store.version_counts(key.ref), rot.to_version)
            if backlog >= max(settings.parallel_above, 2 * settings.batch_size):
                points = store.split_points(key.ref, settings.parallel)
        engine.state.create_lanes(rot.id, points, store=sid)


def rewrap(engine: Engine, key: ManagedKey, rot: Rotation) -> Rotation:
    """Rewrap every store's unfinished lanes; retarget if the key moved to a newer version."""
    primary = key.describe().primary
    if primary != rot.to_version:
        rot = _retarget(engine, key, rot, primary)
    make_lanes(engine, key, rot, first_pass=rot.passes <= 1)
    if rot.passes <= 1:
        todo = max(0, rot.total - rot.rewrapped)  # counted at "rotated": no full count per resume
    else:
        todo = behind(engine.stores.prove(key.ref).counts, rot.to_version)  # counts: every store, summed
    engine.progress.start(rot.key, todo)
    moved = False
    try:
        for sid, store in engine.stores.reachable():
            lanes = [lane for lane in engine.state.lanes(rot.id)
                     if engine.stores.resolve(lane.store) == sid and not lane.done]
            if len(lanes) > 1 and engine.settings.parallel > 1:
                from keystead.rotation.lanes import run_lanes

                run_lanes(engine, rot, lanes, sid)
            else:
                for lane in lanes:
                    if engine.stop.is_set():
                        break
                    moved = rewrap_range(engine, key, rot, store=store, sid=sid, lane=lane) or moved
                    if not engine.stop.is_set() and not moved:
                        engine.state.finish_lane(rot.id, lane.lane)
            if engine.stop.is_set() or moved:
                break
    finally:
        engine.progress.finish()
    rot = engine.state.get(rot.id)
    if moved and not engine.stop.is_set():
        rot = _retarget(engine, key, rot, key.describe().primary)
    return rot


def _retarget(engine: Engine, key: ManagedKey, rot: Rotation, primary: str) -> Rotation:
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


def rewrap_range(engine: Engine, key: ManagedKey, rot: Rotation, *, store: Store, sid: str, lane: Lane) -> bool:
    """The batch loop over one lane. True if some slot landed on a version newer than the target."""
    ref, to, rid = key.ref, rot.to_version, rot.id
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
        state.record_batch(rid, backups=saved, done=written_batch, now=engine.now, lane=lane.lane, store=sid)
        written = store.replace_slots(ref, updates) if updates else 0
        cursor = rows[-1].secret
        written_batch = Batch(cursor, written, tuple(failed))
        extra: dict[str, Any] = {"lane": lane.lane}
        if failed:
            from keystead.rotation.engine import capped

            extra["unreadable_secrets"] = capped([f.secret for f in failed])
        engine.event("rewrap", rot, key=ref, first=rows[0].secret, last=cursor, rewrapped=written,
                     unreadable=len(failed), **extra)
        engine.progress.advance(len(rows))
    if written_batch is not None:
        state.record_batch(rid, backups=(), done=written_batch, now=engine.now, lane=lane.lane, store=sid)
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
    except (DecryptError, ProviderError):
        dek = None
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
