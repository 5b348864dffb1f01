"""Several workers, one rotation, for real: worker processes on one PostgreSQL state database.

- Three `keystead worker --once` processes share the rotation of a 50,000-envelope vault
  (local key) whose store and state database are both on PostgreSQL. Workers holding a
  lane are SIGKILLed at several points of the rewrap and started again. Afterwards every
  envelope opens to its original plaintext, the lane log (every fenced batch commit: lane,
  owner, names, time) shows no lane worked by two owners at once, and the audit chain
  verifies (`keystead audit verify`).
- A worker whose state database connections are killed under it (pg_terminate_backend)
  mid-rewrap retries with backoff and finishes. (A killed *store* connection pauses the
  key instead, and the next sweep resumes: tests/stores/test_postgres_vault.py.)

A throwaway database per test on 127.0.0.1:5432 (see test_postgres.py: skipped with the
reason when unreachable, a failure under KEYSTEAD_REQUIRE_PG=1).
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import threading
import time

import pytest
import sqlalchemy as sa

from keystead.rotation import state as st
from tests.rotation.conftest import DUE, Env, make_env

pytestmark = [pytest.mark.pg, pytest.mark.slow]
AS_OF = DUE.date().isoformat()
N = 50_000
LEASE = 3
WORKERS = 3
KILL_AT = (0.15, 0.35, 0.55, 0.75)
"""Fractions of the rewrap done at which a worker holding a lane is SIGKILLed (then restarted)."""


class Pool:
    """Worker processes, each reading its stderr in a thread (so no pipe fills up)."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: dict[int, list[str]] = {}
        self.readers: list[threading.Thread] = []

    def start(self) -> subprocess.Popen[str]:
        proc = self.env.popen("worker", "--once", "--as-of", AS_OF)
        self.procs.append(proc)
        lines = self.logs[proc.pid] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        self.readers.append(reader)
        return proc

    def alive(self) -> list[subprocess.Popen[str]]:
        return [p for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()
        for reader in self.readers:
            reader.join(timeout=10)
        for p in self.procs:
            p.stderr.close()


def _pid(owner: str | None) -> int | None:
    m = re.match(r"pid (\d+) on ", owner or "")
    return int(m.group(1)) if m else None


def _overlaps(log: list[st.LaneBatch]) -> list[str]:
    """Per lane, the owners' runs in commit order: an owner that comes back after another took
    the lane, or two owners whose commit times interleave, worked the lane at the same time."""
    bad = []
    for lane in sorted({b.lane for b in log}):
        runs: list[tuple[str, float, float]] = []
        for b in (b for b in log if b.lane == lane):
            if runs and runs[-1][0] == b.owner:
                runs[-1] = (b.owner, runs[-1][1], b.at)
            else:
                runs.append((b.owner, b.at, b.at))
        owners = [r[0] for r in runs]
        if len(owners) != len(set(owners)):
            bad.append(f"lane {lane}: owners {owners}")
        bad += [f"lane {lane}: {a[0]} until {a[2]} and {b[0]} from {b[1]}"
                for a, b in itertools.pairwise(runs) if b[1] < a[2]]
    return bad


def test_three_workers_one_killed_and_restarted_share_one_rotation(tmp_path, pg_url: str) -> None:
    env = make_env(tmp_path / "ws", n=N, store=pg_url, state=pg_url, batch_size=250, lane_size=4_000,
                   lease_seconds=LEASE)
    state = env.state()
    pool = Pool(env)
    killed: set[str] = set()
    try:
        pool.start()
        deadline = time.monotonic() + 240
        while (rot := state.latest("main")) is None or rot.state != st.REWRAPPING:
            assert time.monotonic() < deadline and pool.alive(), "the first worker never started the rewrap"
            time.sleep(0.02)
        for _ in range(WORKERS - 1):
            pool.start()
        kills = list(KILL_AT)
        while time.monotonic() < deadline:
            rot = state.get(rot.id)
            if rot.state == st.DONE and not pool.alive():
                break
            if kills and rot.rewrapped >= kills[0] * N:
                lanes = state.lanes(rot.id)
                pids = {p.pid: p for p in pool.alive()}
                holders = [x.owner for x in lanes if not x.done and _pid(x.owner) in pids]
                if holders:
                    victim = pids[_pid(holders[0])]  # type: ignore[index]
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    killed.add(holders[0])  # type: ignore[arg-type]
                    kills.pop(0)
            if rot.state != st.DONE and len(pool.alive()) < WORKERS:
                pool.start()  # a killed worker comes back; so does one that found the key busy
            time.sleep(0.02)
        else:
            pytest.fail(f"the rotation did not finish: {state.get(rot.id)}")
        log = state.lane_log(rot.id)
        lanes = state.lanes(rot.id)
    finally:
        pool.stop()
        state.close()
    assert not kills, f"only {len(KILL_AT) - len(kills)} of {len(KILL_AT)} kills happened (rewrap too fast?)"
    assert len(lanes) == N // 4_000 + 1 and all(x.done and x.owner is None for x in lanes)
    assert env.check_all_open() == {"2": N}
    assert _overlaps(log) == []
    owners = {b.owner for b in log}
    assert killed <= owners and len(owners) >= WORKERS + 1  # the killed ones worked, and their successors
    taken_over = [lane for lane in {b.lane for b in log} if len({b.owner for b in log if b.lane == lane}) > 1]
    assert taken_over, "no lane changed hands: the kills never landed mid-lane"
    exits = [p.returncode for p in pool.procs if p.returncode != -signal.SIGKILL]
    assert set(exits) <= {0, 8}, exits  # done, helped; or busy (started while another held a transition)
    assert 0 in exits
    verify = env.run("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_state_connections_killed_under_a_worker_mid_rewrap(tmp_path, pg_url: str, pg_schema_url: str) -> None:
    """pg_terminate_backend on every busy connection of the worker's state database, repeatedly, while it
    rewraps (the vault store is on PostgreSQL too, in another database): the worker retries with backoff
    (it says so in its log), resumes from its lane's cursor and finishes."""
    env = make_env(tmp_path / "ws", n=6_000, store=pg_schema_url, state=pg_url, batch_size=20,
                   lease_seconds=LEASE)
    admin = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    pool = Pool(env)
    proc = pool.start()
    lines = pool.logs[proc.pid]
    try:
        deadline = time.monotonic() + 120
        while not any("lane.claim" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            time.sleep(0.01)
        terminated = 0
        while sum("state.retry" in line for line in lines) < 3 and proc.poll() is None:
            assert time.monotonic() < deadline, "".join(lines[-20:])
            with admin.connect() as conn:
                terminated += len(conn.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'").all())
            time.sleep(0.005)
        assert proc.wait(timeout=120) == 0, "".join(lines[-20:])
    finally:
        pool.stop()
        admin.dispose()
    retries = [line for line in lines if "state.retry" in line]
    assert len(retries) >= 3 and terminated >= 3, "".join(lines[-20:])
    state = env.state()
    rot = state.latest("main")
    state.close()
    assert rot.state == st.DONE
    assert env.check_all_open() == {"2": env.n}
