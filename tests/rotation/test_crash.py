"""The core promise, for real: SIGKILL a worker at random points, restart it, and lose nothing.

A vault of 20,000 envelopes; a real `keystead worker --once` process is killed
with SIGKILL at least 20 times at points drawn from a seeded RNG (some at a
random instant after start, some just after a random rewrap batch was
recorded, plus a random few milliseconds, so kills land inside batches, in
the key rotation, in verification and in retirement). After every kill, every
envelope must still open through a live key version to its original value.
When a rotation completes, the next run is evaluated 100 days later, so a new
rotation starts and every kill hits real work. At the end: rotation done,
every envelope decrypts to its original plaintext, nothing duplicated,
nothing lost, no backups left, old versions retired, audit chain valid.

A killed worker leaves its leases (the key's, a lane's) to expire: the drill
runs with 2-second leases and starts the next run once they have run out (a
run started earlier would find the key busy, or wait for the lane).
"""

from __future__ import annotations

import os
import random
import select
import signal
import time
from datetime import timedelta

import pytest

from keystead.rotation import state as st
from tests.rotation.conftest import DUE, make_env

N = 20_000
KILLS = 22
SEED = int(os.environ.get("KEYSTEAD_CRASH_SEED", "20261122"))

pytestmark = pytest.mark.slow


LEASE = 2


def _wait_for_leases_to_expire(env) -> None:
    state = env.state()
    try:
        rot = state.latest("main")
        ends = [h.lease_until or 0 for h in state.holders()]
        ends += [x.lease_until or 0 for x in state.lanes(rot.id)] if rot is not None else []
    finally:
        state.close()
    time.sleep(max(0.0, max(ends, default=0) - time.time() + 0.05))


def _read_lines_until(proc, count: int, limit: float, keep: list[str]) -> int:
    """Read stderr until ``count`` rewrap-batch lines arrived (or the process ended / limit)."""
    seen = 0
    deadline = time.monotonic() + limit
    while seen < count and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.05)
        if ready:
            line = proc.stderr.readline()
            if not line:
                return seen
            keep.append(line)
            if "rotation.rewrap " in line:
                seen += 1
    return seen


@pytest.mark.parametrize("parallel", [1, 2], ids=["one-process", "two-lanes"])
def test_sigkill_at_random_points_loses_nothing(tmp_path, parallel: int) -> None:
    """With ``parallel=2`` every rewrap is cut into two lane processes, and the
    kills land on the parent while its lanes are mid-batch."""
    rng = random.Random(SEED + parallel)
    env = make_env(tmp_path / "ws", n=N, batch_size=500, parallel=parallel, parallel_above=2_000, lease_seconds=LEASE)
    as_of = DUE
    kills = completed = 0
    runs = 0
    killed_in: dict[str, int] = {}
    while kills < KILLS:
        runs += 1
        assert runs < KILLS * 4, "the worker keeps finishing before it can be killed"
        proc = env.popen("worker", "--once", "--as-of", as_of.isoformat())
        said: list[str] = []
        try:
            if rng.random() < 0.4:
                time.sleep(rng.uniform(0.05, 2.5))  # a random instant: start-up, rotate, verify, retire
            else:
                _read_lines_until(proc, rng.randint(1, 12), limit=30, keep=said)
                time.sleep(rng.uniform(0, 0.02))  # a few ms into the next batch
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
            else:
                assert proc.returncode == 0, "".join(said[-5:]) + proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
            proc.stdout.close()
        # the invariant at every instant we can observe: every envelope opens via a live version
        env.check_all_open()
        _wait_for_leases_to_expire(env)
        state = env.state()
        rot = state.latest("main")
        mid = rot is not None and (bool(rot.cursor) or any(x.cursor != x.start for x in state.lanes(rot.id)))
        state.close()
        if proc.returncode == -signal.SIGKILL:
            where = "none" if rot is None else rot.state + ("(mid)" if rot.state == st.REWRAPPING and mid else "")
            killed_in[where] = killed_in.get(where, 0) + 1
        if rot is not None and rot.state == st.DONE:
            completed += 1
            as_of = as_of + timedelta(days=100)  # make the key due again: the next kill hits a new rotation
    final = env.run("worker", "--once", "--as-of", as_of.isoformat())
    assert final.returncode == 0, final.stderr
    state = env.state()
    rot = state.latest("main")
    assert rot.state == st.DONE
    assert state.backup_batches(rot.id) == 0
    state.close()
    with env.vault() as vault:
        info = vault.keys["main"].describe()
        assert info.live_versions == (info.primary,)  # every older version retired
        assert vault.store.count() == N
        assert vault.audit.verify().ok
    versions = env.check_all_open()
    assert versions == {info.primary: N}
    assert kills >= 20
    assert killed_in.get("rewrapping(mid)", 0) >= 3, killed_in  # the drill really hit the rewrap loop
    print(f"kills={kills} runs={runs} rotations completed under fire={completed} "
          f"final version={info.primary} killed in states={killed_in}")
