"""Bad input and faults: state db missing/locked/corrupt, a vanished key, an unreadable envelope,
disk full, a rewrap that does not verify, two workers on one state."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import threading

import pytest

from keystead.crypto import open_envelope
from keystead.envelope import Slot
from keystead.errors import EXIT_CODES, RotationError
from keystead.rotation import state as st
from keystead.rotation.engine import Engine
from tests.rotation.conftest import DUE, Env, make_env
from tests.rotation.fakes import CorruptingKey, DiskFullStore
from tests.rotation.test_engine import _stop_on, key_info, latest, sweep

ROT = EXIT_CODES["RotationError"]


def one_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_corrupt_state_db_is_one_line_and_changes_nothing(env: Env) -> None:
    db = env.root / ".keystead" / "state.db"
    db.write_bytes(b"this is not sqlite " * 100)
    before = env.snapshot()
    r = env.run("worker", "--once", "--as-of", DUE.date().isoformat())
    assert r.returncode == ROT
    assert "corrupt" in one_line(r.stderr) and "state.db" in r.stderr
    assert env.snapshot() == before
    r = env.run("status")
    assert r.returncode == ROT and "corrupt" in one_line(r.stderr)


def test_locked_state_db_is_one_line_and_changes_nothing(env: Env) -> None:
    env.state().close()  # create it
    holder = sqlite3.connect(env.root / ".keystead" / "state.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        before = env.snapshot()
        r = env.run("worker", "--once", "--as-of", DUE.date().isoformat(),
                    env={"KEYSTEAD_STATE_BUSY_TIMEOUT": "0.2"})
        assert r.returncode == ROT
        assert "locked" in one_line(r.stderr)
        assert env.snapshot() == before
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert env.run("worker", "--once", "--as-of", DUE.date().isoformat()).returncode == 0


def test_state_db_folder_missing_is_one_line(tmp_path) -> None:
    env = make_env(tmp_path / "ws", state="sqlite:///nowhere/state.db")
    before = env.snapshot()
    r = env.run("worker", "--once", "--as-of", DUE.date().isoformat())
    assert r.returncode == ROT and "does not exist" in one_line(r.stderr)
    assert env.snapshot() == before


def test_state_db_lost_mid_rotation_is_rebuilt_from_the_vault(env: Env) -> None:
    stop = threading.Event()
    sweep(env, stop=stop, on_event=_stop_on("rewrap", stop, after=2))
    for p in (env.root / ".keystead").glob("state.db*"):
        if p.is_file():
            p.unlink()
    env.check_all_open()
    r = sweep(env).keys[0]
    assert r.outcome == "done", r.message
    assert latest(env).reason == "catch-up"
    assert [v.id for v in key_info(env).versions] == ["1", "2"]  # not rotated a second time
    assert key_info(env).live_versions == ("2",)
    assert env.check_all_open() == {"2": env.n}


def test_dry_run_and_status_create_no_state_db(env: Env) -> None:
    assert env.run("rotate", "--dry-run").returncode == 0
    assert env.run("status").returncode == 0
    assert not (env.root / ".keystead" / "state.db").exists()


def test_key_missing_from_its_provider_is_reported_and_others_rotate(tmp_path) -> None:
    env = make_env(tmp_path / "ws", extra='[keys.gone]\nref = "local:gone"\n')
    before = env.snapshot()
    result = sweep(env)
    by_key = {r.key: r for r in result.keys}
    assert by_key["main"].outcome == "done"
    assert by_key["gone"].outcome == "failed" and "gone" in by_key["gone"].message
    assert result.failed
    assert env.check_all_open() == {"2": env.n}
    r = env.run("worker", "--once", "--as-of", DUE.date().isoformat())
    assert r.returncode == ROT and "gone" in r.stderr
    del before


def test_envelope_no_key_can_open_is_skipped_reported_and_never_deleted(env: Env) -> None:
    with env.vault() as vault:
        good = vault.store.get("S000003")
        s = good.slots[0]
        bad = good.with_slot(Slot(s.key, s.provider, s.version, s.wrapped_at, bytes(len(s.wrapped))))
        vault.store.put(bad)
    result = sweep(env)
    r = result.keys[0]
    assert r.failed and r.unreadable == ["S000003"]
    assert "S000003" in r.message
    with env.vault() as vault:
        assert vault.store.get("S000003") == bad  # untouched, not deleted
        key = vault.keys["main"]
        for i in range(env.n):
            if i != 3:
                env_i = vault.store.get(f"S{i:06d}")
                assert env_i.slots[0].version == "2"
                open_envelope(env_i, key)
    # the version it still holds is not retired
    assert "1" in key_info(env).live_versions
    assert latest(env).state == st.VERIFIED and "held by 1" in latest(env).error
    assert "they include S000003" in latest(env).error  # named, so the operator knows what to fix
    cli = env.run("worker", "--once", "--as-of", DUE.date().isoformat())
    assert cli.returncode == ROT and ("S000003" in cli.stderr or "held" in cli.stderr)
    # once the operator removes it, the next sweep retires version 1
    with env.vault() as vault:
        vault.store.delete("S000003")
    assert sweep(env).keys[0].outcome == "done"
    assert key_info(env).live_versions == ("2",)


def test_disk_full_pauses_the_rotation_with_nothing_half_written(any_env: Env) -> None:
    env = any_env
    with env.vault() as vault:
        vault.store = DiskFullStore(vault.store, fail_from=3)
        state = env.state()
        r = Engine(vault, state, now=DUE).run_key("main")
        state.close()
    assert r.outcome == "failed" and "disk full" in r.message
    rot = latest(env)
    assert rot.state == st.REWRAPPING and "disk full" in rot.error
    versions = env.check_all_open()
    assert versions == {"2": 14, "1": env.n - 14}  # two whole batches, not a slot more
    assert key_info(env).live_versions == ("1", "2")
    assert sweep(env).keys[0].outcome == "done"
    assert env.check_all_open() == {"2": env.n}


def test_rewrap_that_does_not_verify_is_restored_from_backup(env: Env) -> None:
    with env.vault() as vault:
        vault.keys["main"] = CorruptingKey(vault.keys["main"], {"S000005"})
        state = env.state()
        r = Engine(vault, state, now=DUE).run_key("main")
        state.close()
    assert r.failed and "did not verify" in r.message
    with env.vault() as vault:
        restored = vault.store.get("S000005")
        assert restored.slots[0].version == "1"  # the original slot is back
        open_envelope(restored, vault.keys["main"])
    assert "1" in key_info(env).live_versions  # nothing retired
    env.check_all_open()
    assert sweep(env).keys[0].outcome == "done"  # with an honest key it finishes
    assert env.check_all_open() == {"2": env.n}


def test_second_worker_on_the_same_state_leaves_the_key_alone(env: Env) -> None:
    state = env.state()
    before = env.snapshot()
    with state.lock("rotation:local:main", what="rotation of key main"):
        r = env.run("worker", "--once", "--as-of", DUE.date().isoformat())
        assert r.returncode == ROT
        assert "already running in another worker" in one_line(r.stderr)
        assert env.snapshot() == before
        r = env.run("rotate", "main", "--force")
        assert r.returncode == ROT and "already running" in r.stderr
    state.close()
    assert env.run("worker", "--once", "--as-of", DUE.date().isoformat()).returncode == 0


def test_engine_errors_are_rotation_errors(env: Env) -> None:
    with pytest.raises(RotationError):
        st.StateDB.open("mysql://nowhere/x")
    with pytest.raises(RotationError):
        st.StateDB.open("not a url")


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB tmpfs to fill up; skipped where this process may not mount."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_real_disk_full_pauses_then_resumes(tmp_path, small_disk) -> None:
    """The dir store on a filesystem that is really full: ENOSPC from the kernel, not a fake."""
    env = make_env(tmp_path / "ws", n=30, store=f"dir:{small_disk / 'secrets'}", batch_size=7)
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as fh:  # take every byte that is left
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    before = sorted(p.name for p in (small_disk / "secrets").iterdir())
    r = env.run("worker", "--once", "--as-of", DUE.date().isoformat())
    assert r.returncode == ROT, r.stderr
    assert "disk full" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in (small_disk / "secrets").iterdir()) == before  # no temp file left behind
    assert env.check_all_open() == {"1": env.n}  # nothing half-written; everything opens
    assert latest(env).state == st.REWRAPPING and "disk full" in latest(env).error
    filler.unlink()  # space again: the next sweep finishes the same rotation
    r = env.run("worker", "--once", "--as-of", DUE.date().isoformat())
    assert r.returncode == 0, r.stderr
    assert env.check_all_open() == {"2": env.n}
    assert latest(env).state == st.DONE


def test_a_secret_reset_during_its_rewrap_batch_keeps_the_new_value(any_env: Env) -> None:
    # A process that loaded the key before the rotation still wraps under version 1; it
    # re-sets S000003 between the engine's read of the batch and its swap. A compare-and-swap
    # on the version alone would put the old data key's slot on the new payload.
    from tests.rotation.fakes import RacingKey

    env = any_env
    stale = env.vault()
    with env.vault() as vault:
        vault.keys["main"] = RacingKey(vault.keys["main"], lambda: stale.set("S000003", b"new value"))
        state = env.state()
        Engine(vault, state, now=DUE).run_key("main")
        state.close()
    stale.close()
    with env.vault() as vault:
        assert vault.get("S000003") == b"new value"
    sweep(env)
    with env.vault() as vault:
        assert vault.get("S000003") == b"new value"
        assert vault.store.version_counts("local:main") == {"2": env.n}
