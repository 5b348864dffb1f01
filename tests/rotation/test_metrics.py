"""Worker metrics and health: a real ``keystead worker --metrics-port`` process scraped over HTTP, the
state-database collector on SQLite and on PostgreSQL, and JSON logs that hold no secret.

/metrics is parsed with prometheus-client's own parser; /healthz is read as JSON.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keystead.rotation.metrics import StateCollector
from tests.conftest import pg_admin
from tests.rotation.conftest import DUE, T0, Env, make_env, value
from tests.rotation.test_engine import _stop_on, sweep

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape(base: str, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Worker:
    """A real worker process with --metrics-port 0 and JSON logs; its URL is read from its log."""

    def __init__(self, env: Env, *args: str) -> None:
        self.proc = env.popen("worker", "--metrics-port", "0", "--log-format", "json", *args)
        self.lines: list[dict[str, object]] = []
        self.base = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 60
        while not self.base and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        assert self.base, f"no metrics URL logged: {self.lines} {self.proc.poll()}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            doc = json.loads(line)  # every line is one JSON object
            self.lines.append(doc)
            url = doc.get("metrics_url")
            if isinstance(url, str):
                self.base = url.removesuffix("/metrics")

    def metrics(self) -> Samples:
        code, text = scrape(self.base)
        assert code == 200
        return parse(text)

    def wait_for(self, name: str, at_least: float, limit: float = 90, **labels: str) -> list[Samples]:
        """Scrape until ``name{labels} >= at_least``; every scrape seen, in order."""
        seen = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            seen.append(self.metrics())
            if (get(seen[-1], name, **labels) or 0) >= at_least:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"{name}{labels} never reached {at_least}: {seen[-1] if seen else None}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code


@pytest.fixture
def worker_env(tmp_path: Path) -> Iterator[Env]:
    # 120 secrets, batches of 7, two lanes in child processes (parallel_above=20): the lanes' counts
    # must reach the parent's /metrics.
    yield make_env(tmp_path / "ws", n=120, parallel=2, parallel_above=20)


def test_worker_serves_metrics_that_follow_the_rotation(worker_env: Env) -> None:
    env = worker_env
    w = Worker(env, "--as-of", DUE.isoformat())
    try:
        scrapes = w.wait_for("keystead_sweeps_total", 1, result="ok")
        last = scrapes[-1]
        # Counters of this process and of its two lane processes, all slots counted once.
        assert get(last, "keystead_rewrapped_slots_total", key="main") == env.n
        rewrapped = [get(s, "keystead_rewrapped_slots_total", key="main") or 0 for s in scrapes]
        assert rewrapped == sorted(rewrapped)  # a counter never goes back
        batches = get(last, "keystead_rotation_events_total", key="main", action="rewrap", result="ok")
        assert batches is not None and batches >= env.n / 7
        assert get(last, "keystead_rotation_events_total", key="main", action="done", result="ok") == 1
        assert (get(last, "keystead_rewrap_batch_duration_seconds_count", key="main") or 0) > 0
        assert (get(last, "keystead_last_sweep_timestamp_seconds") or 0) > time.time() - 300
        # Gauges of the state database (cached 5 s: the sweep may have ended within the cache).
        last = w.wait_for("keystead_rotation_state", 1, key="main", state="done")[-1]
        assert get(last, "keystead_state_db_up") == 1
        assert get(last, "keystead_rotation_state", key="main", state="done") == 1
        assert get(last, "keystead_rotation_state", key="main", state="rewrapping") == 0
        assert get(last, "keystead_reencryption_debt_slots", key="main", version="1") == 0
        assert get(last, "keystead_rotation_rewrapped_slots", key="main") == env.n
        assert get(last, "keystead_keys_overdue") == 0
        due = get(last, "keystead_key_next_rotation_timestamp_seconds", key="main")
        assert due == pytest.approx((DUE + timedelta(days=90)).timestamp())
        assert env.check_all_open() == {"2": env.n}

        code, body = scrape(w.base, "/healthz")
        assert code == 200 and json.loads(body)["status"] == "ok"
        assert scrape(w.base, "/nothing")[0] == 404
    finally:
        assert w.stop() == 0
    events = [line.get("event") for line in w.lines]
    assert "rotation.rewrap" in events and "rotation.done" in events
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in w.lines)


def test_healthz_is_503_while_the_state_database_does_not_answer(tmp_path: Path) -> None:
    env = make_env(tmp_path / "ws", n=10)
    w = Worker(env, "--as-of", (T0 + timedelta(days=1)).isoformat())  # nothing due
    state_file = env.config().state_url.removeprefix("sqlite:///")
    try:
        w.wait_for("keystead_sweeps_total", 1, result="ok")
        assert json.loads(scrape(w.base, "/healthz")[1])["status"] == "ok"
        assert get(w.metrics(), "keystead_rotation_state", key="main", state="none") == 1
        original = Path(state_file).read_bytes()
        Path(state_file).write_bytes(b"this is not a database" * 512)
        code, body = scrape(w.base, "/healthz")
        assert code == 503
        doc = json.loads(body)
        assert doc["status"] == "unavailable" and "state database" in doc["reason"]
        time.sleep(5.1)  # past the collector's cache
        down = w.metrics()
        assert get(down, "keystead_state_db_up") == 0
        assert get(down, "keystead_rotation_state", key="main", state="none") is None  # no stale gauges
        Path(state_file).write_bytes(original)
        assert scrape(w.base, "/healthz")[0] == 200
    finally:
        assert w.stop() == 0


def test_metrics_port_with_once_is_refused(env: Env) -> None:
    r = env.run("worker", "--once", "--metrics-port", "0")
    assert r.returncode == 2 and "leave out --once" in r.stderr


def test_a_busy_metrics_port_is_one_line_error(env: Env) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = env.run("worker", "--metrics-port", str(port), "--as-of", DUE.isoformat())
    assert r.returncode == 3, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("keystead: error:")]
    assert len(errors) == 1 and f"cannot listen on 127.0.0.1:{port}" in errors[0]
    assert "Traceback" not in r.stderr


# -- the collector of state-database gauges -----------------------------------------------

def collect(collector: StateCollector) -> Samples:
    out: Samples = {}
    for family in collector.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _collector_lifecycle(env: Env) -> None:
    config = env.config()
    state = env.state()
    clock = [0.0]
    try:
        fresh = collect(StateCollector(state, config, as_of=DUE, clock=lambda: clock[0]))
        assert get(fresh, "keystead_state_db_up") == 1
        assert get(fresh, "keystead_rotation_state", key="main", state="none") == 1
        assert get(fresh, "keystead_keys_overdue") == 0  # never rotated by keystead: unknown, not overdue
        assert get(fresh, "keystead_key_next_rotation_timestamp_seconds", key="main") is None

        cached = StateCollector(state, config, as_of=DUE, ttl=5.0, clock=lambda: clock[0])
        assert get(collect(cached), "keystead_rotation_state", key="main", state="none") == 1

        stop = threading.Event()  # a rotation stopped after two batches: half-way
        r = sweep(env, stop=stop, on_event=_stop_on("rewrap", stop, after=2)).keys[0]
        assert r.outcome == "paused"
        mid = collect(StateCollector(state, config, as_of=DUE))
        assert get(mid, "keystead_rotation_state", key="main", state="rewrapping") == 1
        done_so_far = get(mid, "keystead_rotation_rewrapped_slots", key="main")
        assert done_so_far is not None and 0 < done_so_far < env.n
        assert get(mid, "keystead_reencryption_debt_slots", key="main", version="1") == env.n - done_so_far
        assert get(mid, "keystead_rotation_slots", key="main") == env.n
        assert get(mid, "keystead_keys_overdue") == 0  # its new version exists: the debt says the rest

        # The cached collector still says what it read, until its time is up.
        assert get(collect(cached), "keystead_rotation_state", key="main", state="none") == 1
        clock[0] = 5.0
        assert get(collect(cached), "keystead_rotation_state", key="main", state="rewrapping") == 1

        assert sweep(env).keys[0].outcome == "done"
        after = collect(StateCollector(state, config, as_of=DUE))
        assert get(after, "keystead_rotation_state", key="main", state="done") == 1
        assert get(after, "keystead_reencryption_debt_slots", key="main", version="1") == 0
        assert get(after, "keystead_key_next_rotation_timestamp_seconds", key="main") == \
            pytest.approx((DUE + timedelta(days=90)).timestamp())
        later = collect(StateCollector(state, config, as_of=DUE + timedelta(days=91)))
        assert get(later, "keystead_keys_overdue") == 1
        assert get(later, "keystead_key_overdue", key="main") == 1
    finally:
        state.close()


def test_collector_on_sqlite(tmp_path: Path) -> None:
    _collector_lifecycle(make_env(tmp_path / "ws"))


@pytest.mark.pg
def test_collector_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    _collector_lifecycle(make_env(tmp_path / "ws", state=pg_url))


@pytest.mark.pg
def test_collector_says_down_when_postgresql_goes_away(tmp_path: Path, pg_url: str) -> None:
    env = make_env(tmp_path / "ws", state=pg_url)
    state = env.state()
    try:
        assert get(collect(StateCollector(state, env.config())), "keystead_state_db_up") == 1
        with pg_admin() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                         (pg_url.rsplit("/", 1)[1],))
            conn.execute(f'ALTER DATABASE "{pg_url.rsplit("/", 1)[1]}" WITH ALLOW_CONNECTIONS false')
        try:
            down = collect(StateCollector(state, env.config()))
            assert get(down, "keystead_state_db_up") == 0
            assert get(down, "keystead_rotation_state", key="main", state="none") is None
            from keystead.rotation.exporter import check_health

            health = check_health(state, lambda: True)
            assert not health.ok and "state database" in str(health.body["reason"])
        finally:
            with pg_admin() as conn:
                conn.execute(f'ALTER DATABASE "{pg_url.rsplit("/", 1)[1]}" WITH ALLOW_CONNECTIONS true')
        assert check_health_ok(state)
    finally:
        state.close()


def check_health_ok(state: object) -> bool:
    from keystead.rotation.exporter import check_health

    return check_health(state, lambda: True).ok  # type: ignore[arg-type]


# -- JSON logs hold no secret ------------------------------------------------------------------

def _key_material(env: Env) -> list[str]:
    """Every form of the local key file's key material a log line could show."""
    doc = json.loads(env.config().key_file.read_text())
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "material" and isinstance(v, str) and v:
                    raw = base64.b64decode(v)
                    found.extend([v, raw.hex(), base64.urlsafe_b64encode(raw).decode(), repr(raw)[2:-1]])
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return found


def test_json_logs_at_debug_hold_no_secret_value_or_key_material(env: Env) -> None:
    before = _key_material(env)  # version 1, which the rotation retires (grace 0)
    r = env.run("--debug", "rotate", "main", "--force", "--log-format", "json", "--as-of", DUE.isoformat())
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stderr.splitlines()]  # every line is one JSON object
    assert any(line.get("event") == "rotation.rewrap" and line.get("key") == "local:main" for line in lines)
    assert any(line.get("outcome") == "done" and line.get("key") == "main" for line in lines)
    assert any(line.get("event") == "rotation.done" for line in lines)
    assert {line["level"] for line in lines} <= {"debug", "info", "warning", "error", "critical"}
    material = set(before + _key_material(env))
    assert len(material) >= 6 and all(len(m) >= 32 for m in material)  # two versions, 3-4 distinct forms each
    for i in range(env.n):
        assert value(i).decode() not in r.stderr and value(i).decode() not in r.stdout
    for m in material:
        assert m not in r.stderr and m not in r.stdout


def test_prometheus_client_is_imported_only_with_metrics_port(env: Env) -> None:
    import subprocess
    import sys

    from tests.rotation.conftest import REPO

    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: sys.stderr.write('PROM=%s\\n' % ('prometheus_client' in sys.modules)))\n"
            f"sys.argv = ['keystead', '--config', {str(env.config_path)!r}, 'worker', '--once', "
            f"'--as-of', {DUE.isoformat()!r}]\n"
            "runpy.run_module('keystead.cli', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=env.root, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert "PROM=False" in r.stderr and "rotation.done" in r.stderr


_COUNTING = '''
import multiprocessing, sys
from pathlib import Path

def child(folder):
    from keystead.rotation import metrics
    counter = metrics.EventCounter({"local:main": "main"})
    for lane_batch in range(3):
        counter("rewrap", "local:main", "ok", {"rotation": 1, "lane": 1, "rewrapped": 7, "unreadable": 0})

if __name__ == "__main__":
    from keystead.rotation import metrics
    folder = Path(sys.argv[1])
    metrics.enable(folder)
    counter = metrics.EventCounter({"local:main": "main"})
    counter("rewrap", "local:main", "ok", {"rotation": 1, "lane": 0, "rewrapped": 5, "unreadable": 2})
    counter("rewrap", "local:main", "ok", {"rotation": 1, "lane": 0, "rewrapped": 6, "unreadable": 0})
    counter("pause", "local:main", "ProviderUnavailable", {"reason": "throttled"})
    counter("retire_blocked", "local:main", "error", {})
    counter("plan", "local:other", "ok", {})
    p = multiprocessing.get_context("spawn").Process(target=child, args=(folder,))
    p.start(); p.join()
    assert p.exitcode == 0
    metrics.record_sweep(None, seconds=1.5, error="StateDBError")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    sys.stdout.write(generate_latest(registry).decode())
'''


def test_counts_of_spawned_processes_add_up(tmp_path: Path) -> None:
    """What lanes rely on: a spawned child's counts reach the parent's registry (multiprocess mode)."""
    import subprocess
    import sys

    from tests.rotation.conftest import REPO

    script = tmp_path / "counting.py"
    script.write_text(_COUNTING)
    folder = tmp_path / "metrics"
    folder.mkdir()
    r = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    got = parse(r.stdout)
    assert get(got, "keystead_rewrapped_slots_total", key="main") == 5 + 6 + 3 * 7  # parent and child
    assert get(got, "keystead_unreadable_slots_total", key="main") == 2
    assert get(got, "keystead_rotation_events_total", key="main", action="rewrap", result="ok") == 5
    assert get(got, "keystead_rotation_events_total", key="local:other", action="plan", result="ok") == 1
    assert get(got, "keystead_rotation_errors_total", kind="ProviderUnavailable") == 1
    assert get(got, "keystead_rotation_errors_total", kind="retire_blocked") == 1
    assert get(got, "keystead_rotation_errors_total", kind="unreadable") == 1
    assert get(got, "keystead_rotation_errors_total", kind="StateDBError") == 1
    assert get(got, "keystead_sweeps_total", result="error") == 1
    assert get(got, "keystead_last_sweep_duration_seconds") == 1.5
    # One batch measured per lane after its first: lane 0 once (parent), lane 1 twice (child).
    assert get(got, "keystead_rewrap_batch_duration_seconds_count", key="main") == 3
    assert len(list(folder.iterdir())) >= 2  # one file set per process


def test_health_is_503_when_the_scheduler_is_not_running(env: Env) -> None:
    from keystead.rotation.exporter import check_health

    state = env.state()
    try:
        assert check_health(state, lambda: True).ok
        down = check_health(state, lambda: False)
        assert not down.ok and down.body["reason"] == "the scheduler is not running"
    finally:
        state.close()


@pytest.mark.pg
def test_worker_on_postgresql_is_unhealthy_while_the_database_refuses(tmp_path: Path, pg_url: str) -> None:
    env = make_env(tmp_path / "ws", n=30, state=pg_url)
    w = Worker(env, "--as-of", DUE.isoformat())
    database = pg_url.rsplit("/", 1)[1]
    try:
        done = w.wait_for("keystead_rotation_state", 1, key="main", state="done")[-1]
        assert get(done, "keystead_rewrapped_slots_total", key="main") == env.n
        assert get(done, "keystead_rotation_rewrapped_slots", key="main") == env.n
        assert scrape(w.base, "/healthz")[0] == 200
        with pg_admin() as conn:
            conn.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
        try:
            code, body = scrape(w.base, "/healthz")
            assert code == 503, body
            assert database in json.loads(body)["reason"]
        finally:
            with pg_admin() as conn:
                conn.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
        assert scrape(w.base, "/healthz")[0] == 200  # a new connection once the server lets it in
    finally:
        code = w.stop()
    # The killed connection held the worker's session lock; the worker still stops cleanly.
    assert code == 0, w.lines[-3:]
