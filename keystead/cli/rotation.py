"""`keystead rotate`, `keystead worker`, `keystead status`: the rotation commands.

On a terminal they draw a rich table and a progress bar on rewrap; piped or
under a service manager they print structured ``key=value`` log lines on
stderr instead. Exit codes: 0 all well (or nothing due), 2 bad option
(``--as-of``), 3 config, 4 unknown key, 8 a rotation failed, was blocked
or another worker holds the lock (docs/rotation.md).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TextIO

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from keystead.cli.app import App, Table, err_console, json_option, pass_app, print_json
from keystead.errors import InputError, NotFoundError, RotationBusy, RotationError
from keystead.logs import FORMAT_ENV, FORMATS, formatter

if TYPE_CHECKING:  # the rotation package loads only when a command needs it
    from rich.progress import TaskID

    from keystead.rotation import KeyPlan, SweepResult

as_of_option = click.option("--as-of", "as_of", metavar="DATE",
                            help="Evaluate as if it were DATE (YYYY-MM-DD or ISO 8601, UTC if no zone).")


def parse_as_of(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--as-of {text!r} is not a date: use YYYY-MM-DD or an ISO 8601 time") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _now(as_of: datetime | None) -> datetime:
    return as_of or datetime.now(UTC)


def _interactive() -> bool:
    return sys.stderr.isatty()


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time of the record (CliRunner swaps it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


log_format_option = click.option(
    "--log-format", type=click.Choice(FORMATS), default="text", show_default=True,
    help="Log lines as text (key=value) or JSON (one object a line: time, level, logger, message, key, "
         "outcome...). Never secret values.")


def _setup_logging(log_format: str = "text", *, debug: bool = False) -> None:
    """Rotation log lines on stderr in ``log_format``: keystead.rotation at INFO (DEBUG with --debug;
    WARNING on a terminal), APScheduler's warnings in the same format; other libraries stay quiet.

    A JSON format is also put in the environment, so rewrap lanes (child processes) log alike."""
    if log_format == "json":
        os.environ[FORMAT_ENV] = log_format
    else:
        os.environ.pop(FORMAT_ENV, None)
    from keystead.rotation import LOG_DATE_FORMAT, LOG_FORMAT

    quiet = _interactive() and log_format == "text"
    levels = {"keystead.rotation": logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO,
              "apscheduler": logging.WARNING}
    for name, level in levels.items():
        logger = logging.getLogger(name)
        handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
        if handler is None:
            handler = _StderrHandler()
            logger.addHandler(handler)
        handler.setFormatter(formatter(LOG_FORMAT, LOG_DATE_FORMAT))
        logger.setLevel(level)
        logger.propagate = False


class BarProgress:
    """A rich progress bar per key, on stderr."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def start(self, key: str, total: int) -> None:
        self._bar = Progress(TextColumn("rewrap [bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), console=err_console(), transient=False)
        self._bar.start()
        self._task = self._bar.add_task(key, total=total or None)

    def advance(self, n: int) -> None:
        if self._bar is not None and self._task is not None:  # both set by start()
            self._bar.advance(self._task, n)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class LogProgress:
    """Structured progress lines, at most one every few seconds."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.log = logging.getLogger("keystead.rotation")

    def start(self, key: str, total: int) -> None:
        self.key, self.total, self.done = key, total, 0
        self.t0 = self.last = time.monotonic()
        self.log.info("rewrap.start key=%s behind=%d", key, total,
                      extra={"keystead": {"event": "rewrap.start", "key": key, "behind": total}})

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            self.log.info("rewrap.progress key=%s done=%d total=%d rate=%.0f/s", self.key, self.done, self.total, rate,
                          extra={"keystead": {"event": "rewrap.progress", "key": self.key, "done": self.done,
                                              "total": self.total, "rate": round(rate, 1)}})

    def finish(self) -> None:
        elapsed = time.monotonic() - self.t0
        self.log.info("rewrap.end key=%s done=%d seconds=%.2f", self.key, self.done, elapsed,
                      extra={"keystead": {"event": "rewrap.end", "key": self.key, "done": self.done,
                                          "seconds": round(elapsed, 3)}})


def _progress(log_format: str = "text") -> BarProgress | LogProgress:
    return BarProgress() if _interactive() and log_format == "text" else LogProgress()


def _check_key(app: App, key: str | None) -> None:
    if key is not None and key not in app.config.keys:
        raise NotFoundError(f"no key {key!r} in {app.config.path} (configured: {', '.join(app.config.keys) or 'none'})")


def _plans(app: App, as_of: datetime, *, only: str | None = None, force: bool = False) -> list[KeyPlan]:
    from keystead.rotation import StateDB, plan

    state = StateDB.open(app.config.state_url, create=False)  # read-only: a missing state db stays missing
    try:
        return plan(app.vault, state, as_of=as_of, only=only, force=force)
    finally:
        if state is not None:
            state.close()


def _fmt_time(when: datetime | None) -> str:
    return "-" if when is None else when.strftime("%Y-%m-%d")


def _fmt_seconds(s: float) -> str:
    if s < 1:
        return "<1s"
    return str(timedelta(seconds=round(s)))


def _report(result: SweepResult, as_json: bool, log_format: str = "text") -> None:
    if as_json:
        print_json({"failed": result.failed, "keys": [r.as_dict() for r in result.keys]})
    elif log_format == "json":  # stderr stays one JSON object a line (but for a final error line)
        logger = logging.getLogger("keystead.rotation")
        for r in result.keys:
            logger.log(logging.WARNING if r.failed else logging.INFO, "%s %s", r.outcome, r.message,
                       extra={"keystead": {"key": r.key, "outcome": str(r.outcome), "state": r.state,
                                           "rewrapped": r.rewrapped}})
    else:
        out = err_console()
        for r in result.keys:  # failures are said once, in the error line below
            if not r.failed:
                colour = "green" if r.outcome == "done" else "yellow"
                out.print(f"[{colour}]{r.outcome:>10}[/] {r.message}", soft_wrap=True)
    if result.failed:
        busy = [r for r in result.keys if r.outcome == "busy"]
        bad = [r for r in result.keys if r.failed]
        if busy and len(busy) == len(bad):
            raise RotationBusy(busy[0].message)
        raise RotationError("; ".join(r.message for r in bad))


@click.command()
@click.argument("key", required=False)
@click.option("--dry-run", is_flag=True,
              help="Print the plan (keys due, envelopes behind, estimated time); change nothing.")
@click.option("--force", is_flag=True,
              help="Rotate KEY now even if it is not due (also while its last rotation waits out its grace period).")
@click.option("--abandon", is_flag=True,
              help="End KEY's unfinished rotation safely: restore from backup any rewrapped slot that does not open.")
@as_of_option
@log_format_option
@json_option
@pass_app
def rotate(app: App, key: str | None, dry_run: bool, force: bool, abandon: bool, as_of: str | None,
           log_format: str, as_json: bool) -> None:
    """Rotate keys that are due (or KEY), rewrap every envelope, verify, retire old versions."""
    when = parse_as_of(as_of)
    if (force or abandon) and key is None:
        flag = "force" if force else "abandon"
        raise InputError(f"--{flag} needs a KEY: keystead rotate KEY --{flag}")
    if force and abandon:
        raise InputError("--force and --abandon do not go together")
    _check_key(app, key)
    if abandon:
        from keystead.rotation import abandon as abandon_rotation

        assert key is not None
        abandoned = abandon_rotation(app.config, key, as_of=when)
        if as_json:
            print_json(abandoned.as_dict())
        else:
            err_console().print(abandoned.message, soft_wrap=True)
        return
    if dry_run:
        plans = _plans(app, _now(when), only=key, force=force)
        if as_json:
            print_json({"as_of": _now(when).isoformat(), "keys": [p.as_dict() for p in plans]})
            return
        table = Table("key", "ref", "action", "due", "next due", "behind", "to rewrap", "estimated",
                      title=f"rotation plan as of {_now(when):%Y-%m-%d %H:%M} UTC (dry run: nothing changed)")
        for p in plans:
            table.add_row(p.name, p.ref, p.action if not p.error else f"[red]error: {p.error}[/]",
                          "yes" if p.due else "no", _fmt_time(p.next_due), str(p.behind), str(p.to_rewrap),
                          _fmt_seconds(p.estimated_seconds))
        table.print()
        return
    from keystead.rotation import run_once, stop_on_signals

    _setup_logging(log_format, debug=app.debug)
    stop = threading.Event()
    with stop_on_signals(stop):
        result = run_once(app.config, as_of=when, only=key, force=force, progress=_progress(log_format), stop=stop)
    _report(result, as_json, log_format)


@click.command()
@click.option("--once", is_flag=True, help="Run one sweep and exit (non-zero if anything failed).")
@as_of_option
@click.option("--interval", type=click.IntRange(1, 10080), metavar="MINUTES",
              help="Minutes between sweeps (default: [rotation].interval_minutes, 60).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve Prometheus /metrics and /healthz on PORT (0: any free port, logged) while the worker runs.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address for --metrics-port (0.0.0.0 in a pod, so the kubelet and the scraper reach it).")
@log_format_option
@json_option
@pass_app
def worker(app: App, once: bool, as_of: str | None, interval: int | None, metrics_port: int | None,
           metrics_host: str, log_format: str, as_json: bool) -> None:
    """Run the rotation worker: a sweep every interval (APScheduler), or --once."""
    when = parse_as_of(as_of)
    if once and metrics_port is not None:
        raise InputError("--metrics-port serves while the scheduler runs: leave out --once")
    config = app.config
    _setup_logging(log_format, debug=app.debug)
    from keystead.rotation import run_once, run_scheduler, stop_on_signals

    if not once:
        run_scheduler(config, interval_minutes=interval, as_of=when, metrics_host=metrics_host,
                      metrics_port=metrics_port)
        return
    stop = threading.Event()
    with stop_on_signals(stop):
        result = run_once(config, as_of=when, progress=_progress(log_format), stop=stop)
    _report(result, as_json, log_format)


@click.command()
@as_of_option
@json_option
@pass_app
def status(app: App, as_of: str | None, as_json: bool) -> None:
    """Every key: provider, primary version, last rotation, next due, rotation state, envelopes behind;
    for a key rewrapping, which worker holds which lane and until when."""
    when = _now(parse_as_of(as_of))
    plans = _plans(app, when)
    if as_json:
        print_json({"as_of": when.isoformat(), "keys": [p.as_dict() for p in plans]})
        return
    table = Table("key", "provider", "primary", "last rotation", "next due", "state", "behind",
                  title=f"keystead rotation status as of {when:%Y-%m-%d %H:%M} UTC")
    for p in plans:
        if p.error:
            table.add_row(p.name, p.provider, "-", "-", "-", f"[red]error: {p.error}[/]", "-")
            continue
        table.add_row(p.name, p.provider, p.primary or "-", _fmt_time(p.last_rotated),
                      _fmt_time(p.next_due) if p.next_due else _NEVER.get(p.rotation_kind or "", "-"),
                      _state(p), str(p.behind))
    table.print()
    _lanes_table(plans)


def _lease(until: float | None, owner: str | None) -> str:
    """How long a lease has left, on the wall clock (leases expire in real time, whatever --as-of says)."""
    if owner is None or until is None:
        return "-"
    left = until - time.time()
    return f"{left:.0f}s left" if left >= 0 else f"[red]expired {-left:.0f}s ago[/]"


def _lanes_table(plans: list[KeyPlan]) -> None:
    """Who holds what: the key's lease and each lane's owner, lease and progress."""
    if not any(p.lanes or p.lease for p in plans):
        return
    table = Table("key", "lane", "names", "cursor", "rewrapped", "owner", "lease",
                  title="leases: the key's transitions (plan, rotate, verify, retire) and each rewrap lane")
    for p in plans:
        if p.lease is not None:
            lease = p.lease
            table.add_row(p.name, "transitions", "-", "-", "-", lease.owner, _lease(lease.lease_until, lease.owner))
    for p, lane in [(plan, lane) for plan in plans for lane in plan.lanes]:
        span = f"{lane.start or '(first)'} .. {lane.until or '(last)'}"
        state = "[green]done[/]" if lane.done else (lane.owner or "[yellow]free[/]")
        table.add_row(p.name, str(lane.lane), span, lane.cursor or "-", str(lane.rewrapped), state,
                      "-" if lane.done else _lease(lane.lease_until, lane.owner))
    table.print()


_NEVER = {"none": "never", "scheduled": "by provider"}


def _state(p: KeyPlan) -> str:
    rot = p.rotation
    if rot is not None and rot.active:
        state = f"[yellow]{rot.state}[/]" + (f" ({rot.error})" if rot.error else "")
    elif p.due:
        state = "[yellow]due[/]"
    elif p.behind:
        state = "[yellow]behind[/]"
    elif p.rotation_kind == "none":
        state = "[green]does not rotate[/]"
    else:
        state = "[green]up to date[/]"
        if rot is not None and rot.to_version:
            state += f" (rotated to {rot.to_version})"
    if p.unreadable:
        names = ", ".join(f"{s} ({r})" for s, r in p.unreadable[:5])
        state += f"; [red]unreadable: {names}[/] (fix: keystead secrets rm NAME, or restore it from a backup)"
    if p.store_errors:
        state += "; [red]store unreachable: " + "; ".join(p.store_errors) + "[/]"
    return state
