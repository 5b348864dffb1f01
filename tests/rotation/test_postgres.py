"""The state database on PostgreSQL: a throwaway database per test (the ``pg_url`` fixture, tests/conftest.py).

Skips with the reason when the server at 127.0.0.1:5432 is unreachable, unless
KEYSTEAD_REQUIRE_PG=1 (then it fails).
"""

from __future__ import annotations

import threading

import pytest

from keystead.errors import RotationError
from keystead.rotation import state as st
from tests.rotation.conftest import DUE, make_env
from tests.rotation.test_engine import _stop_on, key_info, latest, sweep

pytestmark = pytest.mark.pg


def test_rotation_with_state_on_postgresql_resumes(tmp_path, pg_url: str) -> None:
    env = make_env(tmp_path / "ws", state=pg_url)
    stop = threading.Event()
    r = sweep(env, stop=stop, on_event=_stop_on("rewrap", stop, after=2)).keys[0]
    assert r.outcome == "paused" and r.state == st.REWRAPPING
    assert sweep(env).keys[0].outcome == "done"
    assert latest(env).to_version == "2"
    assert key_info(env).live_versions == ("2",)
    assert env.check_all_open() == {"2": env.n}


def test_a_held_key_lease_keeps_a_second_worker_out_of_transitions(tmp_path, pg_url: str) -> None:
    env = make_env(tmp_path / "ws", state=pg_url)
    state = env.state()
    before = env.snapshot()
    with state.lock("rotation:local:main", what="rotation of key main"):
        r = env.run("worker", "--once", "--as-of", DUE.date().isoformat())
        assert r.returncode == 8 and "already running in another worker" in r.stderr
        assert env.snapshot() == before
    state.close()
    assert env.run("worker", "--once", "--as-of", DUE.date().isoformat()).returncode == 0


def test_missing_postgresql_database_is_one_clear_error(pg_url: str) -> None:
    with pytest.raises(RotationError, match="does not exist"):
        st.StateDB.open(pg_url + "_missing")
