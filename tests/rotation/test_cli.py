"""`keystead rotate`, `worker`, `status` through the real CLI (CliRunner and real processes)."""

from __future__ import annotations

import json
import re
import select
import signal
import sqlite3
import time
from datetime import timedelta

import pytest
from click.testing import CliRunner

from keystead.errors import EXIT_CODES
from tests.rotation.conftest import DUE, T0, Env, make_env

AS_OF = DUE.date().isoformat()


def cli(env: Env, *args: str):
    from keystead.cli import cli as group

    return CliRunner().invoke(group, ["--config", str(env.config_path), *args], catch_exceptions=False)


def test_status_json_shows_every_key(env: Env) -> None:
    r = cli(env, "status", "--json", "--as-of", AS_OF)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    [k] = doc["keys"]
    assert k["key"] == "main" and k["provider"] == "local" and k["primary"] == "1"
    assert k["due"] is True and k["behind"] == 0 and k["slots"] == env.n
    assert k["last_rotated"] == "2026-01-01T00:00:00Z" and k["next_due"] == "2026-04-01T00:00:00Z"
    assert k["rotation"] is None


def test_status_table(env: Env) -> None:
    r = cli(env, "status", "--as-of", AS_OF)
    assert r.exit_code == 0
    for word in ("main", "local", "2026-01-01", "2026-04-01", "due"):
        assert word in r.stdout


def test_status_shows_who_holds_which_lane_and_lease(tmp_path) -> None:
    """A rotation paused mid-rewrap over three lanes; another worker holds one lane, one is done."""
    import threading
    import time as clock

    from tests.rotation.test_engine import _stop_on, sweep

    env = make_env(tmp_path / "ws", n=60, batch_size=5, lane_size=20)
    stop = threading.Event()
    assert sweep(env, stop=stop, on_event=_stop_on("rewrap", stop, after=2)).keys[0].outcome == "paused"
    state = env.state()
    rot = state.latest("main")
    held = state.claim_lane(rot.id, owner="pid 4242 on host-b #beef", now=clock.time(), seconds=300)
    assert held is not None and held.lane == 0  # the lane the paused worker released, from its cursor
    state.close()
    r = cli(env, "status", "--json", "--as-of", AS_OF)
    assert r.exit_code == 0, r.output
    [k] = json.loads(r.stdout)["keys"]
    assert k["behind"] == 50 and k["rotation"]["rewrapped"] == 10
    lanes = k["lanes"]
    assert [(x["lane"], x["owner"], x["done"], x["rewrapped"]) for x in lanes] == [
        (0, "pid 4242 on host-b #beef", False, 10), (1, None, False, 0), (2, None, False, 0)]
    assert lanes[0]["cursor"] == "S000009" and lanes[0]["lease_until"].endswith("Z") and k["lease"] is None
    table = cli(env, "status", "--as-of", AS_OF).stdout
    row = next(line for line in table.splitlines() if "pid 4242 on host-b" in line)
    assert "S000009" in row and re.search(r"\b(29\d|300)s left", row), table
    assert "free" in table and "50" in table  # the free lanes, the slots left


def test_dry_run_prints_the_plan_and_changes_nothing(env: Env) -> None:
    before = env.snapshot()
    r = cli(env, "rotate", "--dry-run", "--json", "--as-of", AS_OF)
    assert r.exit_code == 0
    [k] = json.loads(r.stdout)["keys"]
    assert k["action"] == "rotate" and k["to_rewrap"] == env.n and k["estimated_seconds"] >= 0
    early = cli(env, "rotate", "--dry-run", "--json", "--as-of", (T0 + timedelta(days=89)).date().isoformat())
    assert json.loads(early.stdout)["keys"][0]["action"] == "none"
    table = cli(env, "rotate", "--dry-run", "--as-of", AS_OF)
    assert "rotate" in table.stdout and "dry run" in table.stdout
    assert env.snapshot() == before
    assert not (env.root / ".keystead" / "state.db").exists()


def test_rotate_force_rotates_now(env: Env) -> None:
    r = cli(env, "rotate", "main", "--force", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["keys"][0]["outcome"] == "done" and not doc["failed"]
    assert env.check_all_open() == {"2": env.n}
    status = json.loads(cli(env, "status", "--json").stdout)["keys"][0]
    assert status["primary"] == "2" and status["rotation"]["state"] == "done"


def test_worker_once_in_a_real_process(env: Env) -> None:
    r = env.run("worker", "--once", "--as-of", AS_OF)
    assert r.returncode == 0, r.stderr
    assert "rotation.rewrap" in r.stderr  # structured log lines when not on a terminal
    assert "done" in r.stderr
    assert env.check_all_open() == {"2": env.n}
    again = env.run("worker", "--once", "--as-of", AS_OF)
    assert again.returncode == 0 and "nothing due" in again.stderr
    st = json.loads(env.run("status", "--json", "--as-of", AS_OF).stdout)["keys"][0]
    assert st["behind"] == 0 and st["rotation"]["state"] == "done"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("status", "--as-of", "yesterday"), "InputError", "not a date"),
        (("worker", "--once", "--as-of", "2026-13-45"), "InputError", "not a date"),
        (("rotate", "--dry-run", "--as-of", "x"), "InputError", "not a date"),
        (("rotate", "nosuchkey", "--force"), "NotFoundError", "no key 'nosuchkey'"),
        (("rotate", "--force"), "InputError", "needs a KEY"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(env: Env, args, code: str, words: str) -> None:
    before = env.snapshot()
    r = env.run(*args)
    assert r.returncode == EXIT_CODES[code]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert env.snapshot() == before


def _wait_for(proc, text: str, limit: float = 60.0) -> list[str]:
    """Read the process's stderr until a line contains ``text`` (or it exits)."""
    seen: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if text in line:
                return seen
    raise AssertionError(f"never saw {text!r}: {''.join(seen)}")


def _reap(proc) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def test_scheduled_workers_side_by_side_sweep_then_stop_cleanly_on_sigterm(env: Env) -> None:
    """Two schedulers on one state database: each its own (memory) job store, both sweep."""
    proc = env.popen("worker", "--interval", "60", "--as-of", AS_OF)
    second = None
    try:
        _wait_for(proc, "sweep key=main outcome=done")
        second = env.popen("worker", "--interval", "60", "--as-of", AS_OF)
        _wait_for(second, "sweep key=main outcome=idle")  # rotated by the first: nothing due
        tails = []
        for p in (proc, second):
            p.send_signal(signal.SIGTERM)
            assert p.wait(timeout=60) == 0
            tails.append(p.stderr.read())
    finally:
        _reap(proc)
        if second is not None:
            _reap(second)
    assert all("stopped cleanly" in t for t in tails)
    assert env.check_all_open() == {"2": env.n}
    db = sqlite3.connect(env.root / ".keystead" / "state.db")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert "keystead_scheduler_jobs" not in tables  # nothing about the schedule is shared


def test_sigterm_during_rewrap_finishes_the_batch_and_exits_zero(tmp_path) -> None:
    env = make_env(tmp_path / "ws", n=3000, batch_size=50)
    proc = env.popen("worker", "--once", "--as-of", AS_OF)
    try:
        _wait_for(proc, "rotation.rewrap ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        _reap(proc)
    env.check_all_open()
    r = env.run("worker", "--once", "--as-of", AS_OF)
    assert r.returncode == 0, r.stderr
    assert env.check_all_open() == {"2": env.n}
