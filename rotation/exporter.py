"""The worker's HTTP endpoint: ``/metrics`` (Prometheus) and ``/healthz``, on one port.

``/metrics`` is prometheus-client's own WSGI app (``make_wsgi_app``) over a
registry holding the merged counters of this worker's processes
(``MultiProcessCollector``, see :mod:`keystead.rotation.metrics`) and the
state database's gauges (:class:`~keystead.rotation.metrics.StateCollector`).
``/healthz`` answers 200 with a small JSON body when the scheduler runs and
the state database answers with a schema this keystead knows, 503 with the
reason otherwise; anything else is 404. The server is wsgiref's, one thread
per request (prometheus-client's ``ThreadingWSGIServer``), in a daemon thread
beside the scheduler; it logs no requests.

Nothing here is authenticated: bind it to 127.0.0.1 (the default) or to a
pod network that only the scraper and the kubelet reach.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from keystead.clock import from_epoch, iso
from keystead.errors import ConfigError, KeysteadError

if TYPE_CHECKING:
    from datetime import datetime
    from wsgiref.types import StartResponse, WSGIEnvironment

    from keystead.config import Config
    from keystead.rotation.state import StateDB

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: a scrape every few seconds is not news."""


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    body: dict[str, object]


def check_health(state: StateDB, scheduler_running: Callable[[], bool]) -> Health:
    """Healthy when the scheduler runs and the state database answers with a known schema."""
    from keystead.rotation import metrics
    from keystead.rotation.state.schema import SCHEMA_VERSION

    last = metrics.last_sweep()
    base: dict[str, object] = {"last_sweep": iso(from_epoch(last)) if last is not None else None}
    if not scheduler_running():
        return Health(False, {"status": "unavailable", "reason": "the scheduler is not running", **base})
    try:
        found = state.schema_version()
    except KeysteadError as exc:
        return Health(False, {"status": "unavailable", "reason": str(exc), **base})
    if found != SCHEMA_VERSION:
        return Health(False, {"status": "unavailable", **base,
                              "reason": f"state database {state.where} has schema version {found}, "
                                        f"this keystead needs {SCHEMA_VERSION}"})
    return Health(True, {"status": "ok", "scheduler": "running", "state_db": "ok", "schema": found, **base})


class Exporter:
    """``/metrics`` and ``/healthz`` served from a daemon thread until :meth:`close`."""

    def __init__(self, host: str, port: int, *, registry: Any, health: Callable[[], Health]) -> None:
        from prometheus_client import make_wsgi_app
        from prometheus_client.exposition import ThreadingWSGIServer

        self._metrics = make_wsgi_app(registry)
        self._health = health
        try:
            self._server = make_server(host, port, self._app, server_class=ThreadingWSGIServer,
                                       handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(f"--metrics-port {port}: cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc}") from exc
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="keystead-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == HEALTH_PATH:
            health = self._health()
            body = json.dumps(health.body).encode()
            start_response("200 OK" if health.ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path in (METRICS_PATH, "/"):
            result: Iterable[bytes] = self._metrics(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(state: StateDB, config: Config, *, host: str, port: int, scheduler_running: Callable[[], bool],
          as_of: datetime | None = None) -> Exporter:
    """Start the endpoint for a worker: this process's (and its lanes') counters, the state db's gauges."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from keystead.rotation import metrics

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # the directory metrics.enable() set
    registry.register(metrics.StateCollector(state, config, as_of=as_of))
    metrics.process_metrics()  # create this process's metrics now, so a scrape before the first sweep shows them
    return Exporter(host, port, registry=registry, health=lambda: check_health(state, scheduler_running))
