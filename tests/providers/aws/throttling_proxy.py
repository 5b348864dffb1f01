"""A loopback HTTP proxy in front of the moto server that throttles ReEncrypt like KMS does.

It forwards every request to moto unchanged (one upstream connection per proxy thread), except
that, while ``every`` is set, every ``every``-th ReEncrypt (by ``X-Amz-Target``) is answered with
KMS's throttling error instead: HTTP 400, ``{"__type":"ThrottlingException","message":"Rate
exceeded"}``, so botocore handles it exactly as a real throttle (its retries, its backoff).
``every = 1`` throttles them all (retries run out). It records the arrival time of each ReEncrypt
it forwards, so a test can count calls per time window at the server's side of the wire.
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

THROTTLED = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class ThrottlingProxy:
    def __init__(self, upstream: str, *, every: int | None = None) -> None:
        self.every = every
        self.reencrypts = 0
        self.throttled = 0
        self.forwarded: list[float] = []
        """Arrival times (time.monotonic) of the ReEncrypt calls forwarded to moto."""
        self._lock = threading.Lock()
        target = urlsplit(upstream)
        host, port = target.hostname or "127.0.0.1", target.port or 80
        local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:  # every KMS call is a POST of JSON
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("X-Amz-Target", "").endswith(".ReEncrypt") and proxy._throttle():
                    self._answer(400, {"Content-Type": "application/x-amz-json-1.1"}, THROTTLED)
                    return
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection(host, port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request("POST", self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                self._answer(reply.status, {k: v for k, v in reply.getheaders() if k.lower() not in _HOP}, data)

            do_GET = do_POST

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="throttling-proxy", daemon=True)
        self._thread.start()

    def _throttle(self) -> bool:
        """Count one ReEncrypt; True if it is to be throttled."""
        with self._lock:
            self.reencrypts += 1
            if self.every and self.reencrypts % self.every == 0:
                self.throttled += 1
                return True
            self.forwarded.append(time.monotonic())
            return False

    def most_in_window(self, seconds: float) -> int:
        """The most forwarded ReEncrypt calls that arrived within any ``seconds`` long window."""
        times = sorted(self.forwarded)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] > seconds:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
