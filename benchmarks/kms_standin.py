"""A loopback stand-in for AWS KMS that answers ReEncrypt (and DescribeKey) after an injected delay.

    python -m benchmarks.kms_standin [--delay 0.04]      # prints "port N" once listening

moto caps near 350 requests/s on this machine, far below what a rewrap must reach, so the AWS
rewrap benchmark talks to this instead: a threaded HTTP/1.1 server (keep-alive, one thread per
connection) speaking the KMS JSON protocol (``X-Amz-Target: TrentService.<Op>``) for the two
operations a rewrap sends. It parses each request's JSON and answers the response shape botocore
expects, after sleeping ``--delay`` seconds (the round trip to a KMS region). It checks no
signature and keeps no keys: it stands in for the network and the service's latency only.

``GET /stats?start=S&end=E&window=W`` reports the ReEncrypt requests that arrived between the
monotonic times S and E (this machine's CLOCK_MONOTONIC, shared by all processes), the most
that arrived within any W-second window, and this process's CPU seconds.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:us-east-1:111122223333:key/{KEY_ID}"
_BLOB = base64.b64encode(os.urandom(184)).decode()


class StandIn:
    def __init__(self, delay: float, port: int = 0) -> None:
        self.delay = delay
        self.arrivals: list[float] = []
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                op = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                if op == "ReEncrypt":
                    with standin._lock:
                        standin.arrivals.append(time.monotonic())
                    base64.b64decode(body["CiphertextBlob"])
                    answer = {"CiphertextBlob": _BLOB, "SourceKeyId": KEY_ARN, "KeyId": KEY_ARN,
                              "SourceKeyMaterialId": "m1", "DestinationKeyMaterialId": "m2",
                              "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                              "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
                elif op == "DescribeKey":
                    answer = {"KeyMetadata": {"KeyId": KEY_ID, "Arn": KEY_ARN, "CreationDate": 1.7e9,
                                              "Enabled": True, "KeyState": "Enabled", "KeyUsage": "ENCRYPT_DECRYPT",
                                              "KeySpec": "SYMMETRIC_DEFAULT", "Origin": "AWS_KMS",
                                              "KeyManager": "CUSTOMER", "CurrentKeyMaterialId": "m2"}}
                else:
                    self._send(400, {"__type": "UnsupportedOperationException", "message": f"stand-in: {op}"})
                    return
                time.sleep(standin.delay)
                self._send(200, answer)

            def do_GET(self) -> None:
                q = {k: float(v[0]) for k, v in parse_qs(urlsplit(self.path).query).items()}
                self._send(200, standin.stats(q.get("start", 0.0), q.get("end", float("inf")), q.get("window", 1.0)))

            def _send(self, status: int, answer: object) -> None:
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        ThreadingHTTPServer.request_queue_size = 512
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def stats(self, start: float, end: float, window: float) -> dict[str, float]:
        with self._lock:
            times = sorted(t for t in self.arrivals if start <= t <= end)
        most, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] > window:
                lo += 1
            most = max(most, hi - lo + 1)
        return {"requests": len(times), "most_in_window": most, "window": window, "cpu_s": time.process_time()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=0.04)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    standin = StandIn(args.delay, args.port)
    print(f"port {standin.port}", flush=True)
    standin.server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
