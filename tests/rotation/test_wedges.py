"""Rotations that used to wedge or crash on one bad thing: a throttled batch, a thousand failures in
one batch, a provider bug, a corrupt payload, a damaged file, an age key forced, a key that moves
mid-batch, an emergency rotation during the grace period; and the ways to end a rotation by hand."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from keystead.envelope import Slot
from keystead.errors import EXIT_CODES, ProviderError
from keystead.providers import VersionState, Wrapped
from keystead.rotation import state as st
from keystead.rotation.engine import Engine, Outcome
from tests.rotation.conftest import DUE, Env, make_env
from tests.rotation.fakes import CorruptingKey, ExplodingKey, FailingKey, FlakyKey, MovingKey
from tests.rotation.test_engine import _stop_on, key_info, latest, sweep

ROT = EXIT_CODES["RotationError"]


def run_with(env: Env, wrap, now=DUE, **kw):
    with env.vault() as vault:
        vault.keys["main"] = wrap(vault.keys["main"])
        state = env.state()
        engine = Engine(vault, state, now=now, **kw)
        try:
            return engine.run_key("main")
        finally:
            engine.close()
            state.close()


def test_a_throttled_batch_pauses_the_key_and_marks_nothing_unreadable(env: Env) -> None:
    # Reproduced before: one throttled item marked S000002 unreadable and blocked the rotation forever.
    r = run_with(env, lambda k: FlakyKey(k, {"S000002"}))
    assert r.outcome == Outcome.PAUSED and not r.failed
    assert "provider is unavailable" in r.message and "ThrottlingException" in r.message
    state = env.state()
    assert state.unreadable_slots(latest(env).id) == []
    state.close()
    r = sweep(env).keys[0]  # the next sweep retries and finishes
    assert r.outcome == "done", r.message
    assert env.check_all_open() == {"2": env.n}


def test_a_thousand_failures_in_one_batch_do_not_overflow_the_audit_record(tmp_path) -> None:
    # Reproduced before: the audit detail went over 16 KiB, a bare ValueError escaped, exit 70 every sweep.
    env = make_env(tmp_path / "ws", n=1200, batch_size=1200)
    r = run_with(env, FailingKey)
    assert r.failed and len(r.unreadable) == 1200
    with env.vault() as vault:
        records = [x for x in vault.audit.records() if x["action"] == "rotation.rewrap"]
        assert vault.audit.verify().ok
    details = records[-1]["details"]["unreadable_secrets"]
    assert details["count"] == 1200 and len(details["secrets"]) == 20


def test_a_provider_bug_fails_that_key_only_and_never_quotes_its_message(env: Env) -> None:
    r = run_with(env, ExplodingKey)
    assert r.outcome == Outcome.FAILED and "ZeroDivisionError" in r.message
    assert "value-000001" not in r.message and "value-000001" not in (latest(env).error or "")
    env.check_all_open()
    assert sweep(env).keys[0].outcome == "done"


def test_a_corrupt_payload_is_named_once_not_retried_forever(env: Env) -> None:
    # Reproduced before: rewrapped, failed verification, restored, three passes, every sweep, forever.
    with env.vault() as vault:
        vault.store._conn.execute("UPDATE secrets SET ciphertext = zeroblob(21) WHERE name = 'S000003'")
    r = sweep(env).keys[0]
    assert r.outcome == "unreadable" and r.unreadable == ["S000003"]
    assert "S000003 (payload)" in r.message and "keystead secrets rm" in r.message
    rot = latest(env)
    assert rot.state == st.DONE and rot.passes == 1
    assert key_info(env).version("1").state is not VersionState.ENABLED  # the rest retired the old version
    status = env.run("status", "--json")
    assert status.returncode == 0
    [plan] = json.loads(status.stdout)["keys"]
    assert plan["unreadable"] == [{"secret": "S000003", "reason": "payload"}]
    assert sweep(env, DUE + timedelta(days=1)).keys[0].outcome == "idle"  # not retried


def test_a_damaged_file_is_skipped_and_named_and_blocks_only_retirement(tmp_path) -> None:
    # Reproduced before: one 0-byte file stopped the whole key's rotation; status exited 0 with "error".
    env = make_env(tmp_path / "ws", store="dir:secrets")
    (env.root / "secrets" / "S000007.json").write_bytes(b"")
    r = sweep(env).keys[0]
    assert r.outcome == "blocked" and "S000007 (damaged)" in r.message and "cannot be parsed" in r.message
    with env.vault() as vault:
        assert vault.store.version_counts("local:main") == {"2": env.n - 1, "?": 1}
    assert key_info(env).version("1").state is VersionState.ENABLED  # cannot be proven unused
    (env.root / "secrets" / "S000007.json").unlink()  # the operator removes it
    assert sweep(env, DUE + timedelta(hours=1)).keys[0].outcome == "done"
    assert key_info(env).version("1").state is VersionState.RETIRED


def test_blocked_comes_from_the_held_count_not_the_message_text(env: Env) -> None:
    with env.vault() as vault:
        good = vault.store.get("S000003")
        s = good.slots[0]
        vault.store.put(good.with_slot(Slot(s.key, s.provider, s.version, s.wrapped_at, bytes(len(s.wrapped)))))
    assert sweep(env).keys[0].outcome == "blocked"
    rot = latest(env)
    assert rot.held == 1
    state = env.state()
    state.update(rot.id, now=DUE, error="something else entirely")
    state.close()
    assert sweep(env, DUE + timedelta(minutes=1)).keys[0].outcome == "blocked"


def test_an_age_key_is_never_due_and_forcing_it_leaves_nothing_behind(tmp_path) -> None:
    from pyrage import x25519

    recipient = str(x25519.Identity.generate().to_public())
    env = make_env(tmp_path / "ws", extra=f'[keys.team]\nref = "{recipient}"\n')
    status = json.loads(env.run("status", "--json", "--as-of", DUE.isoformat()).stdout)
    team = next(k for k in status["keys"] if k["key"] == "team")
    assert team["due"] is False and team["next_due"] is None and team["rotation_kind"] == "none"
    worker = env.run("worker", "--once", "--as-of", DUE.isoformat())
    assert worker.returncode == 0, worker.stderr
    assert "rotate team --force" not in worker.stderr  # the old hint named a command that failed
    forced = env.run("rotate", "team", "--force", "--as-of", DUE.isoformat())
    assert forced.returncode == ROT and "does not rotate" in forced.stderr and "re-seal" in forced.stderr
    state = env.state()
    assert state.latest("team") is None  # no planned rotation left to fail every sweep
    state.close()
    assert env.run("worker", "--once", "--as-of", (DUE + timedelta(days=1)).isoformat()).returncode == 0


def test_a_key_that_moves_mid_batch_keeps_each_items_own_version_and_retargets(env: Env) -> None:
    r = run_with(env, MovingKey)
    assert r.outcome == "done", r.message
    assert key_info(env).primary == "3"
    assert env.check_all_open() == {"3": env.n}
    assert latest(env).to_version == "3"


def test_an_empty_version_label_is_refused(env: Env) -> None:
    # Reproduced before: with an empty label the engine reported "done, 0 rewrapped" and rewrapped nothing.
    from keystead.envelope import decode, encode

    class Hidden(CorruptingKey):
        def _wrap(self, dek, context):
            return Wrapped("", self._key.wrap(dek, context).blob)

    from keystead.envelope import Context
    from keystead.providers.base import Key

    with env.vault() as vault:
        key = Hidden(vault.keys["main"], set())
        with pytest.raises(ProviderError, match="no version label"):
            Key.wrap(key, b"\0" * 32, Context("default", "X"))
        raw = json.loads(encode(vault.store.get("S000001")))
    raw["slots"][0]["version"] = ""
    with pytest.raises(Exception, match="malformed key version"):
        decode(json.dumps(raw).encode())


def test_force_during_the_grace_period_rotates_now(tmp_path) -> None:
    # Reproduced before: a second `rotate main --force` while waiting out the grace did nothing, exit 0.
    env = make_env(tmp_path / "ws", grace_days=7)
    assert sweep(env).keys[0].outcome == "waiting"
    r = sweep(env, DUE + timedelta(days=1), force=True, only="main")
    assert r.outcome == "waiting" and key_info(env).primary == "3"  # a new version now
    assert env.check_all_open() == {"3": env.n}
    assert {v.id: v.state for v in key_info(env).versions} == {"1": "enabled", "2": "enabled", "3": "enabled"}
    assert sweep(env, DUE + timedelta(days=8)).keys[0].outcome == "done"  # both old versions retire, unused
    assert key_info(env).live_versions == ("3",)


def test_force_during_a_rewrap_refuses_and_says_why(env: Env) -> None:
    stop = threading.Event()
    sweep(env, stop=stop, on_event=_stop_on("rewrap", stop))
    r = env.run("rotate", "main", "--force")
    assert r.returncode == ROT and "--abandon" in r.stderr and "rewrapping" in r.stderr
    assert key_info(env).primary == "2"


def test_abandon_restores_what_does_not_open_and_ends_the_rotation(env: Env) -> None:
    stop = threading.Event()
    run_with(env, lambda k: CorruptingKey(k, {"S000001"}), stop=stop, on_event=_stop_on("rewrap", stop))
    assert latest(env).state == st.REWRAPPING
    r = env.run("rotate", "main", "--abandon")
    assert r.returncode == 0, r.stderr
    assert "abandoned" in r.stderr and "1 slot(s) restored" in r.stderr
    assert latest(env).state == st.ABANDONED and not latest(env).active
    versions = env.check_all_open()  # everything opens, the corrupted slot is back on version 1
    assert set(versions) == {"1", "2"}
    again = env.run("rotate", "main", "--abandon")
    assert again.returncode == EXIT_CODES["NotFoundError"] and "no unfinished rotation" in again.stderr
    assert sweep(env, DUE + timedelta(hours=1)).keys[0].outcome == "done"  # a catch-up finishes the job
    assert env.check_all_open() == {"2": env.n}


def test_lanes_open_their_vault_through_the_same_key_wrapper(tmp_path) -> None:
    import os

    from keystead.vault import Vault
    from tests.rotation.fakes import RecordingWrapper

    env = make_env(tmp_path / "ws", n=60, batch_size=7, parallel=2, parallel_above=10)
    seen = tmp_path / "seen"
    seen.mkdir()
    with Vault.open(env.config(), wrap_key=RecordingWrapper(str(seen))) as vault:
        state = env.state()
        engine = Engine(vault, state, now=DUE)
        try:
            r = engine.run_key("main")
        finally:
            engine.close()
            state.close()
    assert r.outcome == "done", r.message
    pids = {int(p.name) for p in seen.iterdir()}
    # Every batch was rewrapped in a lane process, through the wrapper. Lanes are claimed, so one
    # lane process may take both lanes before the other has started: which of them worked is timing.
    assert pids and os.getpid() not in pids
    assert env.check_all_open() == {"2": env.n}


class _DecryptDenied(CorruptingKey):
    """A real key whose Decrypt is refused, as AWS refuses a worker whose policy lacks kms:Decrypt."""

    def unwrap(self, wrapped, context):
        raise ProviderError("aws key main: unwrap: AccessDeniedException: add kms:Decrypt",
                            op="unwrap", key=self.ref, code="AccessDeniedException")


def test_a_verification_refused_by_the_provider_stops_the_rotation_and_judges_no_slot(env: Env) -> None:
    # Seen with the generated rotator policy: Decrypt denied made every rewrapped slot "bad" and
    # restored it from backup, pass after pass.
    r = run_with(env, _DecryptDenied)
    assert r.failed and "AccessDeniedException" in r.message
    state = env.state()
    assert state.unreadable_slots(latest(env).id) == []
    state.close()
    assert env.check_all_open() == {"2": env.n}  # every slot stays rewrapped: none was restored
    r = sweep(env).keys[0]  # permission granted: the next sweep verifies and finishes
    assert r.outcome == "done", r.message
