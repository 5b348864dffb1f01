"""The state machine, step by step: a full rotation, grace, resumption from every state, idempotence."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from keystead.rotation import state as st
from keystead.rotation.engine import Engine
from tests.rotation.conftest import DUE, T0, Env, make_env


def sweep(env: Env, now=DUE, *, stop: threading.Event | None = None, on_event=None, force=False, only=None):
    with env.vault() as vault:
        state = env.state()
        try:
            engine = Engine(vault, state, now=now, stop=stop, on_event=on_event)
            return engine.run_key(only, force=force) if only else engine.sweep(force=force)
        finally:
            state.close()


def latest(env: Env) -> st.Rotation | None:
    state = env.state()
    try:
        return state.latest("main")
    finally:
        state.close()


def cursor(env: Env) -> str:
    """The rewrap cursor of the (one) lane of the (one) store."""
    state = env.state()
    try:
        [lane] = state.lanes(state.latest("main").id)
        return lane.cursor
    finally:
        state.close()


def store_id(env: Env) -> str:
    from keystead.rotation.stores import store_id as sid

    return sid(env.config().store_url)


def key_info(env: Env):
    with env.vault() as vault:
        return vault.keys["main"].describe()


def audit_actions(env: Env) -> list[str]:
    import json

    return [json.loads(line)["action"] for line in env.config().audit_path.read_text().splitlines() if line.strip()]


def test_full_rotation_rewraps_verifies_and_retires(any_env: Env) -> None:
    before = {n: e for n, e in any_env.snapshot().items() if n != "<key file>"}
    result = sweep(any_env)
    assert [r.outcome for r in result.keys] == ["done"] and not result.failed
    rot = latest(any_env)
    assert rot.state == st.DONE and rot.from_version == "1" and rot.to_version == "2"
    assert rot.rewrapped == any_env.n and rot.verified == any_env.n
    assert any_env.check_all_open() == {"2": any_env.n}
    info = key_info(any_env)
    assert info.primary == "2" and info.live_versions == ("2",)
    state = any_env.state()
    assert state.backup_batches(rot.id) == 0  # deleted once verified
    state.close()
    # the payloads were not touched: only the slots changed
    from keystead.envelope import decode

    after = any_env.snapshot()
    for n, raw in before.items():
        old, new = decode(raw), decode(after[n])
        assert (old.nonce, old.ciphertext, old.created_at) == (new.nonce, new.ciphertext, new.created_at)
        assert old.slots[0].wrapped != new.slots[0].wrapped
    actions = audit_actions(any_env)
    batches = -(-any_env.n // 7)
    assert actions.count("rotation.rewrap") == batches  # one record per batch, not per envelope
    for a in ("rotation.plan", "rotation.rotate", "rotation.rewrap_start", "rotation.verify",
              "rotation.retire", "rotation.done"):
        assert a in actions
    with any_env.vault() as vault:
        assert vault.audit.verify().ok


def test_second_sweep_is_idle_and_creates_nothing(env: Env) -> None:
    sweep(env)
    first = latest(env)
    result = sweep(env, DUE + timedelta(days=1))
    assert result.keys[0].outcome == "idle"
    assert latest(env).id == first.id


def test_next_rotation_after_a_period(env: Env) -> None:
    sweep(env)
    assert sweep(env, DUE + timedelta(days=89)).keys[0].outcome == "idle"
    assert sweep(env, DUE + timedelta(days=90)).keys[0].outcome == "done"
    assert key_info(env).primary == "3" and key_info(env).live_versions == ("3",)
    assert env.check_all_open() == {"3": env.n}


def test_grace_period_keeps_old_version_until_it_passes(tmp_path) -> None:
    env = make_env(tmp_path / "ws", grace_days=7)
    r = sweep(env).keys[0]
    assert r.outcome == "waiting" and r.state == st.VERIFIED and not r.failed
    assert "retire after" in r.message
    assert key_info(env).live_versions == ("1", "2")
    assert sweep(env, DUE + timedelta(days=6, hours=23)).keys[0].state == st.VERIFIED
    assert sweep(env, DUE + timedelta(days=7)).keys[0].outcome == "done"
    assert key_info(env).live_versions == ("2",)


def _stop_on(action: str, stop: threading.Event, after: int = 1):
    seen = {"n": 0}

    def on_event(a: str, _details: dict) -> None:
        if a == action:
            seen["n"] += 1
            if seen["n"] >= after:
                stop.set()

    return on_event


@pytest.mark.parametrize(
    ("action", "after", "expected_state"),
    [
        ("plan", 1, st.PLANNED),
        ("rotate", 1, st.ROTATED),
        ("rewrap_start", 1, st.REWRAPPING),
        ("rewrap", 1, st.REWRAPPING),
        ("rewrap", 3, st.REWRAPPING),
        ("verify", 1, st.VERIFIED),
        ("disable", 1, st.RETIRED),
    ],
)
def test_resumes_from_every_state(env: Env, action: str, after: int, expected_state: str) -> None:
    stop = threading.Event()
    r = sweep(env, stop=stop, on_event=_stop_on(action, stop, after)).keys[0]
    assert r.outcome == "paused" and r.state == expected_state and not r.failed
    # at every stop, every envelope still opens through a live version
    env.check_all_open()
    resumed = sweep(env, DUE + timedelta(minutes=5)).keys[0]
    assert resumed.outcome == "done", resumed.message
    assert latest(env).to_version == "2"
    assert key_info(env).live_versions == ("2",)
    assert env.check_all_open() == {"2": env.n}
    with env.vault() as vault:
        assert vault.audit.verify().ok


def test_crash_after_key_rotate_before_state_write_does_not_rotate_twice(env: Env) -> None:
    stop = threading.Event()
    sweep(env, stop=stop, on_event=_stop_on("plan", stop))
    assert latest(env).state == st.PLANNED
    with env.vault() as vault:  # the key was rotated, then the worker died before recording it
        vault.keys["main"].rotate(now=DUE, token="by-hand")
    assert sweep(env).keys[0].outcome == "done"
    rot = latest(env)
    assert (rot.from_version, rot.to_version) == ("1", "2")
    assert [v.id for v in key_info(env).versions] == ["1", "2"]


def test_replayed_batch_keeps_the_original_backup(env: Env) -> None:
    """A batch redone after a crash must not overwrite the backup with a rewrapped blob."""
    stop = threading.Event()
    sweep(env, stop=stop, on_event=_stop_on("rewrap", stop))
    rot = latest(env)
    state = env.state()
    first = cursor(env)
    sid = store_id(env)
    original = state.backup(rot.id, first, store=sid)
    assert original is not None and original[0] == "1"
    state.save_backups(rot.id, [(first, "2", b"rewrapped-blob")], store=sid)
    assert state.backup(rot.id, first, store=sid) == original
    state.close()


def test_manual_rotation_is_caught_up_without_a_new_version(env: Env) -> None:
    with env.vault() as vault:
        vault.keys["main"].rotate(now=T0 + timedelta(days=10), token="by-hand")
    r = sweep(env, T0 + timedelta(days=11)).keys[0]
    assert r.outcome == "done"
    rot = latest(env)
    assert rot.reason == "catch-up" and rot.to_version == "2"
    assert [v.id for v in key_info(env).versions] == ["1", "2"]
    assert env.check_all_open() == {"2": env.n}


def test_force_rotates_a_key_that_is_not_due(env: Env) -> None:
    early = T0 + timedelta(days=1)
    assert sweep(env, early).keys[0].outcome == "idle"
    r = sweep(env, early, force=True, only="main")
    assert r.outcome == "done" and latest(env).reason == "forced"
    assert key_info(env).primary == "2"


def test_slot_put_back_behind_the_cursor_is_found_by_the_count_check(env: Env) -> None:
    """A stale writer puts an envelope under version 1 at a name the cursor has passed:
    verification's full count check sees it and the engine makes another pass."""
    with env.vault() as vault:
        original = vault.store.get("S000000")
    stop = threading.Event()
    sweep(env, stop=stop, on_event=_stop_on("rewrap", stop, after=2))
    assert cursor(env) > "S000000"
    with env.vault() as vault:
        vault.store.put(original)
    assert sweep(env).keys[0].outcome == "done"
    rot = latest(env)
    assert rot.passes == 2
    assert env.check_all_open() == {"2": env.n}


def test_rotation_history_is_kept(env: Env) -> None:
    sweep(env)
    sweep(env, DUE + timedelta(days=90))
    state = env.state()
    assert [r.to_version for r in state.history("main")] == ["3", "2"]
    state.close()


def test_verification_samples_above_the_threshold(tmp_path) -> None:
    env = make_env(tmp_path / "ws", n=60, sample_above=20, sample_size=10)
    r = sweep(env).keys[0]
    assert r.outcome == "done"
    rot = latest(env)
    assert rot.verified == 10 and rot.rewrapped == 60
    import json

    verify = [json.loads(x) for x in env.config().audit_path.read_text().splitlines()
              if '"rotation.verify"' in x]
    assert "sample of 10" in json.dumps(verify)


def test_key_moved_on_during_the_rewrap_is_rewrapped_to_its_new_primary(env: Env) -> None:
    """A version made outside the rotation mid-rewrap (by hand, or after a lost state
    database): the next sweep rewraps to the newest version instead of failing forever."""
    stop = threading.Event()
    paused = sweep(env, stop=stop, on_event=_stop_on("rewrap", stop, after=1))
    assert paused.keys[0].outcome == "paused" and latest(env).to_version == "2"
    with env.vault() as vault:
        vault.keys["main"].rotate(now=DUE, token="by-hand")  # version 3, behind the engine's back
    result = sweep(env)
    assert result.keys[0].outcome == "done", result.keys[0].message
    rot = latest(env)
    assert rot.state == st.DONE and rot.to_version == "3"
    assert env.check_all_open() == {"3": env.n}
    assert key_info(env).live_versions == ("3",)


def test_backups_left_by_a_crash_after_verification_are_dropped(env: Env) -> None:
    stop = threading.Event()
    sweep(env, stop=stop, on_event=_stop_on("verify", stop))
    rot = latest(env)
    assert rot.state in (st.VERIFIED, st.DONE)
    state = env.state()
    try:
        state.save_backups(rot.id, [("S000001", "1", b"left-over")])  # as if the delete never ran
    finally:
        state.close()
    assert sweep(env).keys[0].outcome == "done"
    state = env.state()
    try:
        assert state.backup_batches(latest(env).id) == 0
    finally:
        state.close()


def test_a_dead_workers_lane_is_taken_over_once_its_lease_expires(tmp_path) -> None:
    """Lane 0 is held by a worker that died (its lease runs to t + 60 on the lease clock). Another
    worker rewraps the free lanes, waits, and takes lane 0 over from its cursor once the lease has
    expired on its (injected) clock, which moves 5 s each time it is read; nothing sleeps that long."""
    env = make_env(tmp_path / "ws", n=60, batch_size=5, lane_size=20, lease_seconds=60)
    stop = threading.Event()
    assert sweep(env, stop=stop, on_event=_stop_on("rewrap", stop, after=1)).keys[0].outcome == "paused"
    state = env.state()
    rot = state.latest("main")
    t = DUE + timedelta(days=1)
    dead = state.claim_lane(rot.id, owner="pid 1 on gone #dead", now=t.timestamp(), seconds=60)
    assert dead is not None and dead.lane == 0 and dead.cursor == "S000004"
    reads = {"n": 0}

    def clock():
        reads["n"] += 1
        return t + timedelta(seconds=5 * reads["n"])

    with env.vault() as vault:
        engine = Engine(vault, state, now=DUE, owner="pid 2 on here #live", lease_clock=clock)
        result = engine.run_key("main")
    log = state.lane_log(rot.id)
    state.close()
    assert result.outcome == "done", result.message
    assert [(b.lane, b.owner) for b in log if b.lane == 0][-1] == (0, "pid 2 on here #live")
    first_takeover = next(b for b in log if b.owner == "pid 2 on here #live" and b.lane == 0)
    assert first_takeover.first == "S000005" and first_takeover.at > t.timestamp() + 60
    assert env.check_all_open() == {"2": env.n}
