"""What the rotation worker measures, for Prometheus (``keystead worker --metrics-port``).

Two sources, so that several workers on several machines never disagree:

- **Counters of this process** (and of the rewrap lane processes it spawns):
  slots rewrapped, unreadable slots, engine events, errors by kind, batch
  durations, sweeps. Each worker reports its own; Prometheus sums them
  (``sum by (key) (rate(keystead_rewrapped_slots_total[5m]))`` is the rewrap
  rate of the whole fleet). The engine calls :class:`EventCounter` from
  :meth:`Engine.event <keystead.rotation.engine.Engine.event>`, the one place
  every step and batch is audited, so lanes count exactly like the
  single-process path.
- **Gauges of the state database** (:class:`StateCollector`): each key's
  rotation state, re-encryption debt per old version, keys overdue, the
  current rotation's progress. They are read at scrape time (cached a few
  seconds) from the rows every worker writes, so each replica serves the
  same values: aggregate them with ``max``, never ``sum``.

Lane processes are ``spawn``-ed children with no channel to the parent, so
the counters use prometheus-client's multiprocess mode: :func:`enable` gives
the worker a private, empty directory (``KEYSTEAD_METRICS_DIR``, which also
sets ``PROMETHEUS_MULTIPROC_DIR`` for prometheus-client) before
prometheus-client is first imported; children inherit it, each process
writes its own memory-mapped file there, and the exporter merges them
(``MultiProcessCollector``). A lane killed mid-batch keeps what it counted.
The directory is removed when the worker exits. Without ``--metrics-port``
the variable is unset, :func:`process_counter` returns None and
prometheus-client is never imported.

The debt is what the engine already records (``total`` counted when the
key reached *rotated*, ``rewrapped``, ``held``); nothing scans the vault per
scrape. Secret names and values are never labels: labels are key names (from
keystead.toml), old version labels, states and error kinds.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keystead.clock import epoch, utcnow
from keystead.errors import KeysteadError

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

    from keystead.config import Config
    from keystead.rotation.engine import SweepResult
    from keystead.rotation.state import Rotation, StateDB

METRICS_DIR_ENV = "KEYSTEAD_METRICS_DIR"
PREFIX = "keystead_"
NO_ROTATION = "none"
"""The ``state`` label of a key that has no rotation in the state database."""
DEBT_STATES = ("rotated", "rewrapping", "verified")
"""States in which a rotation still has slots on its old version."""


def enable(directory: Path) -> None:
    """Count in this process and its children, in ``directory`` (empty, private): call before
    anything imports prometheus-client."""
    os.environ[METRICS_DIR_ENV] = str(directory)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def disable() -> None:
    """Stop counting in processes started from now on (the worker is exiting)."""
    os.environ.pop(METRICS_DIR_ENV, None)
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def enabled() -> bool:
    return bool(os.environ.get(METRICS_DIR_ENV))


# -- counters of this process ----------------------------------------------------

@dataclass(frozen=True, slots=True)
class ProcessMetrics:
    rewrapped: Counter
    unreadable: Counter
    events: Counter
    errors: Counter
    batch_seconds: Histogram
    sweeps: Counter
    last_sweep: Gauge
    sweep_seconds: Gauge


@cache
def process_metrics() -> ProcessMetrics:
    """This process's metric objects (created once; file-backed in multiprocess mode)."""
    directory = os.environ[METRICS_DIR_ENV]
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", directory)
    from prometheus_client import Counter, Gauge, Histogram

    return ProcessMetrics(
        rewrapped=Counter(f"{PREFIX}rewrapped_slots", "Slots rewrapped to the key's new version by this worker "
                          "(its rewrap lanes included).", ["key"], registry=None),
        unreadable=Counter(f"{PREFIX}unreadable_slots", "Slots a rewrap batch could not rewrap (recorded, "
                           "skipped, never deleted).", ["key"], registry=None),
        events=Counter(f"{PREFIX}rotation_events", "Rotation steps and batches audited by this worker, by "
                       "action (plan, rotate, rewrap, verify, retire, done...) and result.",
                       ["key", "action", "result"], registry=None),
        errors=Counter(f"{PREFIX}rotation_errors", "Failures by kind: the error class of a paused key, "
                       "fail (a key that cannot be opened), retire_blocked, restore (verification failed), "
                       "unreadable, or the class of a failed sweep.", ["kind"], registry=None),
        batch_seconds=Histogram(f"{PREFIX}rewrap_batch_duration_seconds", "Time between two rewrap batches "
                                "of one lane in one process (rewrap, backup and compare-and-swap).",
                                ["key"], registry=None,
                                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)),
        sweeps=Counter(f"{PREFIX}sweeps", "Sweeps run by this worker, by result (ok, failed: a key failed, "
                       "error: the sweep itself failed).", ["result"], registry=None),
        last_sweep=Gauge(f"{PREFIX}last_sweep_timestamp_seconds", "When this worker's last sweep ended "
                         "(Unix time).", registry=None, multiprocess_mode="max"),
        sweep_seconds=Gauge(f"{PREFIX}last_sweep_duration_seconds", "How long this worker's last sweep took.",
                            registry=None, multiprocess_mode="mostrecent"),
    )


class EventCounter:
    """Counts the engine's events (``Engine.event``): installed in every engine of a process that
    serves metrics, lanes included. ``names`` maps key references to their keystead.toml names."""

    def __init__(self, names: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.names = dict(names)
        self.metrics = process_metrics()
        self.clock = clock
        self._last_batch: dict[tuple[object, object], float] = {}

    def __call__(self, action: str, ref: str, result: str, details: Mapping[str, Any]) -> None:
        key = self.names.get(ref, ref)
        m = self.metrics
        m.events.labels(key, action, result).inc()
        if action == "rewrap":
            m.rewrapped.labels(key).inc(int(details.get("rewrapped", 0)))
            if bad := int(details.get("unreadable", 0)):
                m.unreadable.labels(key).inc(bad)
                m.errors.labels("unreadable").inc()
            now = self.clock()
            lane = (details.get("rotation"), details.get("lane"))
            before = self._last_batch.get(lane)
            self._last_batch[lane] = now
            if before is not None:  # the first batch of a lane has no start to measure from
                m.batch_seconds.labels(key).observe(now - before)
        elif result != "ok":
            m.errors.labels(result if action == "pause" else action).inc()


def process_counter(config: Config) -> EventCounter | None:
    """The engine's counter when this process serves metrics (or is a lane of one that does), else None."""
    if not enabled():
        return None
    return EventCounter({kc.ref: name for name, kc in config.keys.items()})


_last_sweep: list[float] = []


def record_sweep(result: SweepResult | None, *, seconds: float, error: str | None = None) -> None:
    """The worker's sweep ended: ``result``, or ``error`` (the failure's class) when the sweep failed."""
    _last_sweep[:] = [time.time()]
    if not enabled():
        return
    m = process_metrics()
    if error is not None:
        m.errors.labels(error).inc()
        m.sweeps.labels("error").inc()
    else:
        m.sweeps.labels("failed" if result is not None and result.failed else "ok").inc()
    m.last_sweep.set(_last_sweep[0])
    m.sweep_seconds.set(seconds)


def last_sweep() -> float | None:
    """When this process's last sweep ended (Unix time), or None."""
    return _last_sweep[0] if _last_sweep else None


# -- gauges of the state database -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class KeyState:
    """What the state database says about one configured key, at one scrape."""

    name: str
    period_days: int
    latest: Rotation | None
    last_rotated: float | None
    """When keystead last gave the key a new version (``rotated_at``), or None if it never did."""

    def next_due(self) -> float | None:
        return None if self.last_rotated is None else self.last_rotated + self.period_days * 86400.0

    def overdue(self, now: float) -> bool:
        """Due and still without its new version: past ``last_rotated + period``, or a due rotation
        still waiting in *planned* (its new version not made yet)."""
        due = self.next_due()
        if due is not None and now >= due:
            return True
        rot = self.latest
        return rot is not None and rot.state == "planned" and rot.reason == "due"

    def debt(self) -> int:
        """Slots still on the rotation's old version, from what the engine recorded."""
        rot = self.latest
        if rot is None or rot.state not in DEBT_STATES:
            return 0
        if rot.state == "verified":
            return rot.held
        return max(0, rot.total - rot.rewrapped - rot.unreadable)


def read_keys(state: StateDB, config: Config) -> list[KeyState]:
    """Every configured key's latest rotation and last new version, from the state database."""
    out = []
    for name, kc in config.keys.items():
        history = state.history(name, limit=50)
        rotated = [r.rotated_at for r in history if r.from_version is not None and r.rotated_at is not None]
        out.append(KeyState(name, kc.rotation_period_days, history[0] if history else None,
                            max(rotated) if rotated else None))
    return out


class StateCollector:
    """Gauges read from the state database at scrape time, cached ``ttl`` seconds (one query per key
    per scrape at most; several scrapers or replicas do not multiply the load beyond that).

    A state database that does not answer gives ``keystead_state_db_up 0`` and no other gauge
    (never stale values as if they were current); ``/healthz`` says why.
    """

    def __init__(self, state: StateDB, config: Config, *, as_of: datetime | None = None, ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state, self.config, self.as_of, self.ttl, self.clock = state, config, as_of, ttl, clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def describe(self) -> list[Metric]:
        return []  # no query at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self.clock()
            if self._cached is None or now - self._cached[0] >= self.ttl:
                self._cached = (now, self._families())
            families = self._cached[1]
        yield from families

    def _families(self) -> list[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(f"{PREFIX}state_db_up", "1 if the state database answered the last scrape.")
        started = time.perf_counter()
        try:
            keys = read_keys(self.state, self.config)
        except KeysteadError:
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        now = epoch(self.as_of or utcnow())
        states = GaugeMetricFamily(f"{PREFIX}rotation_state", "1 for the state of each key's latest rotation "
                                   f"({NO_ROTATION}: no rotation recorded).", labels=["key", "state"])
        debt = GaugeMetricFamily(f"{PREFIX}reencryption_debt_slots", "Slots still wrapped under the old "
                                 "version of the key's current rotation (re-encryption debt).",
                                 labels=["key", "version"])
        overdue = GaugeMetricFamily(f"{PREFIX}keys_overdue", "Keys past their rotation period without "
                                    "their new version.")
        key_overdue = GaugeMetricFamily(f"{PREFIX}key_overdue", "1 if the key is past its rotation period "
                                        "without its new version.", labels=["key"])
        due = GaugeMetricFamily(f"{PREFIX}key_next_rotation_timestamp_seconds", "When the key is next due "
                                "(last new version + period; absent until keystead has rotated it).",
                                labels=["key"])
        total = GaugeMetricFamily(f"{PREFIX}rotation_slots", "Slots behind when the current rotation "
                                  "reached rotated.", labels=["key"])
        done = GaugeMetricFamily(f"{PREFIX}rotation_rewrapped_slots", "Slots the current rotation has "
                                 "rewrapped, all workers together.", labels=["key"])
        updated = GaugeMetricFamily(f"{PREFIX}rotation_updated_timestamp_seconds", "When any worker last "
                                    "recorded progress on the key's latest rotation.", labels=["key"])
        from keystead.rotation.state import STATES

        n_overdue = 0
        for k in keys:
            current = str(k.latest.state) if k.latest else NO_ROTATION
            for s in (NO_ROTATION, *STATES):
                states.add_metric([k.name, str(s)], 1 if str(s) == current else 0)
            is_overdue = k.overdue(now)
            n_overdue += is_overdue
            key_overdue.add_metric([k.name], 1 if is_overdue else 0)
            if (when := k.next_due()) is not None:
                due.add_metric([k.name], when)
            if k.latest is not None:
                debt.add_metric([k.name, k.latest.from_version or ""], k.debt())
                total.add_metric([k.name], k.latest.total)
                done.add_metric([k.name], k.latest.rewrapped)
                updated.add_metric([k.name], k.latest.updated_at)
        overdue.add_metric([], n_overdue)
        took = GaugeMetricFamily(f"{PREFIX}state_db_scrape_duration_seconds",
                                 "How long reading the state database took at the last scrape.")
        took.add_metric([], time.perf_counter() - started)
        return [up, states, debt, overdue, key_overdue, due, total, done, updated, took]
