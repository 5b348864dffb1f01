"""Retirement, the step where a key tool loses data, and the ways back.

Nothing old goes while anything may need it:

- Only an ``exclusive`` key is ever retired (local keys by default; a cloud
  key only when keystead.toml says ``exclusive = true``: other systems may
  use it).
- The proof comes from every store the config names (the base store and
  each profile's): a version is retired only when no store holds a slot on
  it, no store holds an envelope that cannot be parsed, and every store
  could be opened. Otherwise retirement waits and says why.
- Two phases. After the grace period a version nobody holds is *disabled*
  (the provider keeps it; ``keystead keys restore`` undoes it). A second
  grace period later it is *deleted*, after proving again from every store;
  if something now needs it (an envelope restored from git, a late writer)
  the version is restored instead of deleted.

The ledger of what keystead disabled and when is ``keystead_retirements``
in the state database.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from keystead.clock import epoch, from_epoch, iso
from keystead.errors import KeysteadError, NotFoundError, RotationError
from keystead.providers import ManagedKey, RotationKind, VersionState
from keystead.rotation.state import ABANDONED, RETIRED, Rotation
from keystead.rotation.stores import Proof
from keystead.stores.base import SlotUpdate

if TYPE_CHECKING:
    from keystead.rotation.engine import Engine

DISABLED, DELETED = "disabled", "deleted"


def _grace(engine: Engine) -> timedelta:
    return timedelta(days=engine.settings.grace_days)


def _unreachable(engine: Engine, proof_unreachable: dict[str, str]) -> str:
    return "; ".join(f"{engine.stores.label(sid)}: {why}" for sid, why in proof_unreachable.items())


def retire(engine: Engine, key: ManagedKey, rot: Rotation) -> Rotation:
    """verified -> retired: after the grace period, disable every old version no store holds."""
    verified_at = from_epoch(rot.verified_at or 0)
    if engine.now < verified_at + _grace(engine):
        return engine.state.update(rot.id, now=engine.now,
                                   error=f"verified; old versions retire after {iso(verified_at + _grace(engine))}")
    kc = engine.vault.config.keys[rot.key]
    if not kc.exclusive:
        engine.event("retire_skipped", rot, key=key.ref,
                     reason="the key is not exclusive: other systems may use its old versions")
        return engine.state.update(rot.id, now=engine.now, state=RETIRED, retired_at=epoch(engine.now),
                                   held=0, error=None)
    info = key.describe()
    proof = engine.stores.prove(key.ref)
    if proof.unreachable:
        raise RotationError(f"retirement of key {rot.key} refused: a store that may hold its slots cannot be "
                            f"opened ({_unreachable(engine, proof.unreachable)}); rewrap of the others goes on")
    old = [v.id for v in info.versions if v.id != info.primary and v.state is VersionState.ENABLED]
    held = {v: proof.holding(v) for v in old if proof.holding(v)}
    known = sum(1 for u in engine.state.unreadable_slots(rot.id) if u.reason == "key")
    if sum(held.values()) > known:
        # Slots on an old version that the rewrap did not see: written meanwhile by a process
        # that loaded the key before the rotation, or in a store that was unreachable then.
        return engine.another_pass(key, rot, f"{sum(held.values()) - known} slot(s) on old versions appeared "
                                             "after verification; rewrapping them")
    if proof.damaged:
        held = {v: held.get(v, 0) for v in old}  # an envelope that cannot be parsed may need any of them
    for v in old:
        if v not in held:
            # The ledger first: a crash before the disable leaves a ledger row that the next
            # sweep's delete phase (purge) sees is not disabled at the provider, and forgets;
            # never a disabled version that no ledger row will ever delete or report.
            engine.state.record_retirement(key.ref, v, state=DISABLED, rotation_id=rot.id, now=engine.now)
            key.disable(v)
            engine.event("disable", rot, key=key.ref, version=v)
    if held:
        parts = [f"version {v} still held by {c} envelope(s)" for v, c in sorted(held.items()) if c]
        names = _holders(engine, key.ref, info.primary, proof)
        if names:
            parts.append("they include " + ", ".join(names))
        if proof.damaged:
            parts.append(f"{proof.damaged} envelope(s) cannot be parsed, so no old version can be proven "
                         "unused (repair or remove them: `keystead secrets rm NAME`)")
        rot = engine.state.update(rot.id, now=engine.now, held=max(1, sum(held.values()) + proof.damaged),
                                  error="; ".join(parts))
        engine.event("retire_blocked", rot, key=key.ref, result="error", held=held, damaged=proof.damaged)
        return rot
    return engine.state.update(rot.id, now=engine.now, state=RETIRED, retired_at=epoch(engine.now), held=0,
                               error=None)


def _holders(engine: Engine, ref: str, primary: str, proof: Proof, limit: int = 5) -> list[str]:
    """Up to ``limit`` secrets (with their store, where there are several) still behind ``primary``."""
    out: list[str] = []
    several = len(proof.per_store) > 1
    for sid, counts in proof.per_store.items():
        if len(out) >= limit or not any(v != primary for v in counts):
            continue
        rows = engine.stores.get(sid).slots_behind(ref, primary, limit=limit - len(out))
        out += [f"{r.secret} ({engine.stores.label(sid)})" if several else r.secret for r in rows]
    return out


def purge(engine: Engine, name: str, key: ManagedKey) -> None:
    """Second phase, on every sweep: delete versions disabled a grace period ago, proving again
    from every store that nothing holds them; restore any that something does."""
    kc = engine.vault.config.keys[name]
    if not kc.exclusive:
        return
    ledger = [r for r in engine.state.retirements(key.ref) if r.state == DISABLED]
    due = [r for r in ledger if from_epoch(r.disabled_at or 0) + _grace(engine) <= engine.now]
    if not due:
        return
    info = key.describe()
    if info.rotation is RotationKind.NONE:
        return
    proof = engine.stores.prove(key.ref)
    if proof.unreachable:
        engine.event("delete_waits", None, key=key.ref, result="error",
                     reason=f"a store cannot be opened: {_unreachable(engine, proof.unreachable)}")
        return
    for r in due:
        version = info.version(r.version)
        if version is None or version.state is not VersionState.DISABLED:
            engine.state.forget_retirement(key.ref, r.version)  # restored or removed by hand meanwhile
            continue
        if proof.holding(r.version):
            key.restore(r.version)  # something still needs it: undo the reversible step
            engine.state.forget_retirement(key.ref, r.version)
            engine.event("restore_version", None, key=key.ref, result="error", version=r.version,
                         reason=f"still held by {proof.holding(r.version)} envelope(s)")
            continue
        if proof.damaged:
            continue  # cannot prove it unused: keep it disabled (restorable) until they are repaired
        key.retire(r.version)
        engine.state.record_retirement(key.ref, r.version, state=DELETED, rotation_id=r.rotation_id, now=engine.now)
        engine.event("retire", None, key=key.ref, version=r.version)


def abandon(engine: Engine, key: ManagedKey, rot: Rotation) -> int:
    """End ``rot`` safely: every rewrapped slot that does not open goes back to its backup, the
    backups and lanes are dropped, the rotation is recorded abandoned. Returns slots restored.

    Nothing is retired: both versions stay live, and a later sweep catches up any slot behind.
    """
    from keystead.crypto import open_envelope

    restored = 0
    for sid in engine.stores.ids():
        try:
            store = engine.stores.get(sid)
        except KeysteadError as exc:
            raise RotationError(f"cannot abandon rotation {rot.id} of key {rot.key} safely: "
                                f"{engine.stores.label(sid)} cannot be opened ({exc})") from exc
        updates = []
        for secret, old_version, old_wrapped in engine.state.backup_rows(rot.id, store=sid):
            try:
                env = store.get(secret)
            except NotFoundError:
                continue
            except KeysteadError:
                continue  # damaged: the slot cannot be read, let alone restored
            slot = env.slot(key.ref)
            if slot is None or (slot.version == old_version and slot.wrapped == old_wrapped):
                continue
            try:
                open_envelope(env, key)
                continue
            except KeysteadError:
                updates.append(SlotUpdate(secret, slot.version, old_version, engine.stamp, old_wrapped, slot.wrapped))
        restored += store.replace_slots(key.ref, updates) if updates else 0
    engine.state.drop_lanes(rot.id)
    engine.state.delete_backups(rot.id)
    was = rot.state
    rot = engine.state.update(rot.id, now=engine.now, state=ABANDONED, done_at=epoch(engine.now),
                              error=f"abandoned in state {was}")
    engine.event("abandon", rot, key=key.ref, state=was, restored=restored)
    return restored


def restore_version(engine: Engine, name: str, version: str) -> str:
    """``keystead keys restore KEY VERSION``: undo a disable (or a pending deletion) while the provider can."""
    kc = engine._config(name)
    key = engine.vault.keys.get(name)
    if key is None:
        raise engine.vault.key_errors.get(name) or NotFoundError(f"key {name} cannot be opened")
    info = key.describe()
    found = info.version(version)
    if found is None:
        raise NotFoundError(f"key {name} ({kc.ref}) has no version {version} "
                            f"(versions: {', '.join(v.id for v in info.versions)})")
    if found.state in (VersionState.ENABLED, VersionState.SUPERSEDED):
        engine.state.forget_retirement(kc.ref, version)
        return f"version {version} of key {name} is {found.state}: nothing to restore"
    key.restore(version)
    engine.state.forget_retirement(kc.ref, version)
    engine.event("restore_version", None, key=kc.ref, version=version, reason="keys restore")
    return f"restored version {version} of key {name} ({found.state} -> enabled)"
