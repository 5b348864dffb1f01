"""A large rewrap on every core of one machine: lane processes that claim lanes side by side.

One lane is one range of secret names with its own durable cursor and lease
(``keystead_lanes``). With ``parallel = N`` a worker starts N processes
(``spawn``: no SQLite handle or thread is inherited), each opening the vault
and the state database itself and running the same claim loop as a
single-process rewrap (:func:`keystead.rotation.rewrap.claim_loop`): claim a
lane, rewrap it batch by batch (each commit fenced by its lease), claim the
next. Each process is a lease owner of its own, exactly like a worker on
another machine. The store serialises their writes; the CPU work
(rewrapping, encoding, bookkeeping) runs on every core.

Crash safety is the single-process argument, per lane: each batch is backed
up, then swapped in with a compare-and-swap per slot, then the lane's cursor
moves. A lane process whose parent dies (SIGKILL) stops after the batch in
hand; its lanes' leases expire and any worker takes them over from their
cursors, and a slot rewrapped twice meanwhile is refused by the
compare-and-swap.

The wrapper the parent's vault was opened with (``Vault.open(...,
wrap_key=...)``: caching, rate limiting, metrics) is handed to every lane
(it must be picklable: a module-level function or class), so a lane's key
calls go through it too; a wrapper with a ``divided(n)`` method (the rate limit,
:class:`keystead.providers.limits.RateLimit`) hands each of the ``n`` lanes ``divided(n)``, so
the lanes together keep the configured rate. Stop (SIGTERM/SIGINT) is passed on to the lanes,
which finish their batch and exit; the parent then reports the rotation
paused.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from keystead.errors import KeysteadError, RotationError

if TYPE_CHECKING:
    from keystead.providers import KeyWrapper
    from keystead.rotation.engine import Engine
    from keystead.rotation.state import Rotation

POLL_SECONDS = 0.25


def run_lanes(engine: Engine, rot: Rotation, count: int) -> None:
    """Work the lanes of ``rot`` in ``count`` processes; return when all have ended."""
    ctx = multiprocessing.get_context("spawn")
    config = engine.vault.config
    wrap_key = engine.vault.wrap_key
    divided = getattr(wrap_key, "divided", None)  # a rate limit: each lane gets its share of the rate
    if callable(divided):
        wrap_key = divided(count)
    procs = [
        ctx.Process(
            target=lane_main,
            args=(str(config.path), config.profile, rot.id, engine.now.timestamp(), os.getpid(),
                  _log_level(), wrap_key),
            name=f"keystead-lane-process-{i}",
        )
        for i in range(count)
    ]
    for p in procs:
        p.start()
    seen = rot.rewrapped
    try:
        while any(p.is_alive() for p in procs):
            if engine.stop.wait(POLL_SECONDS):
                for p in procs:
                    if p.is_alive() and p.pid is not None:  # alive: started, so it has a pid
                        os.kill(p.pid, signal.SIGTERM)
                for p in procs:
                    p.join()
                break
            now = engine.state.get(rot.id).rewrapped
            engine.progress.advance(max(0, now - seen))
            seen = max(seen, now)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    failed = [p for p in procs if p.exitcode not in (0, None)]
    if failed and not engine.stop.is_set():
        error = engine.state.get(rot.id).error or f"exit code {failed[0].exitcode}"
        raise RotationError(f"rewrap lane {failed[0].name} failed: {error}")
    engine.progress.advance(max(0, engine.state.get(rot.id).rewrapped - seen))


def _log_level() -> int:
    """The parent's level for rotation log lines (a lane logs like its parent)."""
    logger = logging.getLogger("keystead.rotation")
    return logger.getEffectiveLevel() if logger.handlers else logging.CRITICAL + 1


def lane_main(config_path: str, profile: str | None, rotation_id: int, now: float, parent_pid: int,
              log_level: int = logging.CRITICAL + 1, wrap_key: KeyWrapper | None = None) -> None:
    """Entry point of one lane process: the same vault (opened through ``Vault.open``, so the same
    key wrappers) and the same claim loop as in-process."""
    from keystead.config import load_config
    from keystead.logs import formatter
    from keystead.providers import identity
    from keystead.rotation.engine import LOG_DATE_FORMAT, LOG_FORMAT, Engine
    from keystead.rotation.rewrap import claim_loop, store_ids
    from keystead.rotation.state import StateDB
    from keystead.vault import Vault

    if log_level <= logging.CRITICAL:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter(LOG_FORMAT, LOG_DATE_FORMAT))  # --log-format json: JSON here too
        logger = logging.getLogger("keystead.rotation")
        logger.addHandler(handler)
        logger.setLevel(log_level)
    stop = _ParentWatch(parent_pid)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    config = load_config(config_path, profile=profile)
    state = StateDB.open(config.state_url)
    assert state is not None
    try:
        with Vault.open(config, wrap_key=wrap_key if wrap_key is not None else identity) as vault:
            rot = state.get(rotation_id)
            key = vault.keys[rot.key]
            engine = Engine(vault, state, now=datetime.fromtimestamp(now, UTC), stop=stop)
            try:
                claim_loop(engine, key, rot, store_ids(engine))
            finally:
                engine.close()
    except KeysteadError as exc:
        state.update(rotation_id, now=datetime.now(UTC), error=f"lane process {os.getpid()}: {exc}")
        raise SystemExit(1) from None
    except Exception as exc:  # a bug: say its type (never its message, which may quote data)
        state.update(rotation_id, now=datetime.now(UTC),
                     error=f"lane process {os.getpid()}: internal error ({type(exc).__name__})")
        raise SystemExit(1) from None
    finally:
        state.close()


class _ParentWatch(threading.Event):
    """A stop flag that also turns true once the parent process is gone (SIGKILL)."""

    def __init__(self, parent_pid: int) -> None:
        super().__init__()
        self._parent = parent_pid

    def is_set(self) -> bool:
        if not super().is_set() and os.getppid() != self._parent:
            self.set()
        return super().is_set()
