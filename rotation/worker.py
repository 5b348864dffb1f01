"""The worker: a sweep of every key, once or on a schedule.

``run_once`` opens the vault and the state database, runs one sweep of the
engine and closes them: ``keystead worker --once``.

``run_scheduler`` is ``keystead worker``: an APScheduler 3
``BlockingScheduler`` of its own, with an in-memory job store and one
interval job (``keystead-sweep``, default every 60 minutes,
``max_instances=1``, ``coalesce=True``, a misfire grace time). APScheduler
job stores are never shared between schedulers, so nothing about the
schedule is in the database: any number of workers, on any number of
machines, run side by side on one state database, and the database decides
who does what (a key's lease for its transitions, a lease per lane for the
rewrap; :mod:`keystead.rotation.engine`). A restarted worker sweeps at once.

SIGTERM and SIGINT set a stop flag that the engine checks between batches:
the current batch is finished and recorded, the scheduler shuts down, and the
process exits 0. The rotation resumes from its cursor on the next start.

With ``metrics_port`` the worker also serves ``/metrics`` and ``/healthz``
(:mod:`keystead.rotation.exporter`) while the scheduler runs; each sweep is
recorded (:func:`keystead.rotation.metrics.record_sweep`) and every engine of
the process and of its lanes counts its events (:mod:`keystead.rotation.metrics`).
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from keystead.clock import parse_iso, utcnow
from keystead.errors import KeysteadError
from keystead.rotation import metrics
from keystead.rotation.engine import Engine, Progress, SweepResult
from keystead.rotation.state import StateDB

if TYPE_CHECKING:
    from keystead.config import Config
    from keystead.rotation.engine import KeyResult
    from keystead.vault import Vault

JOB_ID = "keystead-sweep"
JOB_FUNC = "keystead.rotation.worker:scheduled_sweep"
log = logging.getLogger("keystead.rotation")

_stop = threading.Event()
_sweeping = threading.Lock()


@contextmanager
def opened(config: Config) -> Iterator[tuple[Vault, StateDB]]:
    """The vault and its state database (created if missing), closed after. Cloud keys are behind
    the rotation's rate limit (``[providers.aws] requests_per_second`` x ``quota_share``, divided
    among lanes: :mod:`keystead.providers.limits`)."""
    from keystead.providers.limits import RateLimit
    from keystead.vault import Vault

    state = StateDB.open(config.state_url, create=True)
    assert state is not None
    try:
        with Vault.open(config, wrap_key=RateLimit.from_settings(config.providers)) as vault:
            yield vault, state
    finally:
        state.close()


def run_once(config: Config, *, as_of: datetime | None = None, only: str | None = None, force: bool = False,
             progress: Progress | None = None, stop: threading.Event | None = None,
             on_event: Callable[[str, dict[str, Any]], None] | None = None) -> SweepResult:
    """One sweep over every key (or ``only`` one); the result says what happened to each."""
    with opened(config) as (vault, state):
        engine = Engine(vault, state, now=as_of or utcnow(), progress=progress,
                        stop=stop if stop is not None else _stop, on_event=on_event)
        try:
            if only:
                return SweepResult([engine.run_key(only, force=force)])
            return engine.sweep(force=force)
        finally:
            engine.close()


def abandon(config: Config, key: str, *, as_of: datetime | None = None) -> KeyResult:
    """``keystead rotate KEY --abandon``."""
    with opened(config) as (vault, state):
        engine = Engine(vault, state, now=as_of or utcnow())
        try:
            return engine.abandon(key)
        finally:
            engine.close()


def restore_version(config: Config, key: str, version: str) -> str:
    """``keystead keys restore KEY VERSION``."""
    from keystead.rotation.retire import restore_version as restore

    with opened(config) as (vault, state):
        engine = Engine(vault, state, now=utcnow())
        try:
            return restore(engine, key, version)
        finally:
            engine.close()


def scheduled_sweep(config_path: str, profile: str | None = None, as_of: str | None = None) -> None:
    """The scheduler's job: load the config afresh, sweep, log the outcome of each key."""
    from keystead.config import load_config

    if _stop.is_set():
        return
    with _sweeping:
        started = time.monotonic()
        try:
            config = load_config(Path(config_path), profile=profile)
            when = parse_iso(as_of) if as_of else None
            result = run_once(config, as_of=when)
        except KeysteadError as exc:
            log.error("sweep failed: %s", exc, extra={"keystead": {"error": type(exc).__name__}})
            metrics.record_sweep(None, seconds=time.monotonic() - started, error=type(exc).__name__)
            return
        except Exception as exc:  # never kill the scheduler's thread; the type only (a message may quote data)
            log.error("sweep failed: internal error (%s)", type(exc).__name__,
                      extra={"keystead": {"error": type(exc).__name__}})
            metrics.record_sweep(None, seconds=time.monotonic() - started, error=type(exc).__name__)
            return
        metrics.record_sweep(result, seconds=time.monotonic() - started)
        for r in result.keys:
            level = logging.WARNING if r.failed else logging.INFO
            log.log(level, "sweep key=%s outcome=%s state=%s %s", r.key, r.outcome, r.state, r.message,
                    extra={"keystead": {"key": r.key, "outcome": str(r.outcome), "state": r.state,
                                        "rewrapped": r.rewrapped}})


@contextmanager
def stop_on_signals(stop: threading.Event, then: Callable[[], None] | None = None) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop`` (and call ``then``) instead of killing the process."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: finishing the current batch, then exiting", signal.Signals(signum).name)
        stop.set()
        if then is not None:
            then()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def serving_metrics(config: Config, scheduler: Any, *, host: str, port: int | None,
                    as_of: datetime | None) -> Iterator[None]:
    """``/metrics`` and ``/healthz`` on ``host:port`` while the block runs (nothing if ``port`` is None),
    with a state database connection of their own."""
    if port is None:
        yield
        return
    from keystead.rotation.exporter import serve

    folder = Path(tempfile.mkdtemp(prefix="keystead-metrics-"))  # private (0700), empty
    metrics.enable(folder)
    state = None
    try:
        state = StateDB.open(config.state_url, create=True)
        assert state is not None
        exporter = serve(state, config, host=host, port=port, as_of=as_of,
                         scheduler_running=lambda: bool(scheduler.running) and not _stop.is_set())
        log.info("metrics on %s/metrics, health on %s/healthz", exporter.url, exporter.url,
                 extra={"keystead": {"metrics_url": f"{exporter.url}/metrics"}})
        try:
            yield
        finally:
            exporter.close()
    finally:
        if state is not None:
            state.close()
        metrics.disable()
        shutil.rmtree(folder, ignore_errors=True)


def run_scheduler(config: Config, *, interval_minutes: int | None = None, as_of: datetime | None = None,
                  metrics_host: str = "127.0.0.1", metrics_port: int | None = None) -> None:
    """``keystead worker``: sweep now and then every interval, until SIGTERM/SIGINT; with
    ``metrics_port``, serve ``/metrics`` and ``/healthz`` meanwhile."""
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.blocking import BlockingScheduler

    settings = config.rotation
    minutes = interval_minutes or settings.interval_minutes
    state = StateDB.open(config.state_url, create=True)  # created (or migrated) before the first sweep
    assert state is not None
    where = state.where
    state.close()
    scheduler = BlockingScheduler(  # one scheduler per worker: its jobs live in this process only
        jobstores={"default": MemoryJobStore()},
        executors={"default": {"type": "threadpool", "max_workers": 1}},
        timezone=UTC,
    )
    scheduler.add_job(
        JOB_FUNC, "interval", minutes=minutes, id=JOB_ID, name="keystead rotation sweep",
        replace_existing=True, max_instances=1, coalesce=True,
        misfire_grace_time=settings.misfire_grace_seconds, next_run_time=utcnow(),
        kwargs={"config_path": str(config.path), "profile": config.profile,
                "as_of": as_of.isoformat() if as_of else None},
    )
    log.info("worker started: sweep every %d min, state %s", minutes, where)
    _stop.clear()
    with stop_on_signals(_stop, then=lambda: scheduler.shutdown(wait=False)), \
            serving_metrics(config, scheduler, host=metrics_host, port=metrics_port, as_of=as_of):
        try:
            scheduler.start()
        except (KeyboardInterrupt, SystemExit):
            _stop.set()
    with _sweeping:  # the job thread finishes its batch first
        pass
    log.info("worker stopped cleanly")
