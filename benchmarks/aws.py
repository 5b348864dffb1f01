"""AWS rewrap throughput: ``AwsKey.rewrap_many`` (ReEncrypt over a thread pool, boto3, behind the
rotation's rate limit) against the loopback KMS stand-in (benchmarks/kms_standin.py, 40 ms per call).

    python -m benchmarks.aws [--quick]        # JSON results on stdout (benchmarks/run.py renders them)

Each configuration runs ``lanes`` processes side by side (spawned, as rotation lanes are), each with
its own ``AwsKey`` and boto3 client (adaptive retries, a pool of one connection per thread) behind
``RateLimit(rate / lanes)``, rewrapping its share of the items in batches of the engine's size
(5,000). Every process warms up first (client built, DescribeKey, connections open), then all start
together. Reported per configuration: ReEncrypt/s over the wall time of the slowest process; client
CPU per call (the processes' CPU time / their HTTP requests, threads included, the stand-in's own
CPU not included); the most requests the stand-in saw in any one-second window (the rate the
limiter must never exceed). ``bare`` is the floor under boto3: the same requests signed by
botocore's SigV4Auth and sent with http.client, no client machinery.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DELAY = 0.04
BATCH = 5_000
CONFIGURED = 5_000.0
"""The default rate: ``requests_per_second`` 10,000 x ``quota_share`` 0.5."""


def _env() -> None:
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
                       "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    os.environ.pop("AWS_PROFILE", None)


def _items(n: int, offset: int) -> list[tuple[str, str, bytes]]:
    from benchmarks.kms_standin import KEY_ID

    blob = os.urandom(184)
    return [(f"S{offset + i:07d}", f"{KEY_ID}:m1", blob) for i in range(n)]


def worker(url: str, mode: str, rate: float, threads: int, n: int, offset: int, barrier: Any, out: Any) -> None:
    """One process: warm up, wait for the others, rewrap ``n`` items; put its figures on ``out``."""
    _env()
    if mode == "bare":
        run = _bare(url, threads)
        run(threads * 2)
    else:
        from keystead.providers.aws import AwsKey
        from keystead.providers.limits import RateLimit

        from benchmarks.kms_standin import KEY_ARN

        limit = RateLimit(rate)
        key = limit(AwsKey(KEY_ARN, options={"endpoint": url, "max_concurrency": threads}))

        def run(count: int) -> None:
            for start in range(0, count, BATCH):
                results = key.rewrap_many("bench", _items(min(BATCH, count - start), offset + start))
                assert all(not isinstance(r, Exception) for r in results)

        run(threads * 2)  # warm-up: the client, DescribeKey, one connection per thread
    barrier.wait()
    cpu0, t0 = time.process_time(), time.monotonic()
    run(n)
    t1, cpu1 = time.monotonic(), time.process_time()
    calls = limit.counters().calls - threads * 2 if mode != "bare" else n
    out.put({"start": t0, "end": t1, "cpu_s": cpu1 - cpu0, "calls": calls, "items": n})


def _bare(url: str, threads: int) -> Any:
    """ReEncrypt as signed HTTP requests without boto3's client: botocore's SigV4Auth, http.client."""
    import base64
    import http.client
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlsplit

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from benchmarks.kms_standin import KEY_ARN, KEY_ID

    target = urlsplit(url)
    creds = Credentials("bench", "bench")
    local = threading.local()
    blob = base64.b64encode(os.urandom(184)).decode()

    def one(i: int) -> None:
        body = json.dumps({"CiphertextBlob": blob, "SourceKeyId": KEY_ID, "DestinationKeyId": KEY_ARN,
                           "SourceEncryptionContext": {"keystead:vault": "bench", "keystead:secret": f"S{i}"},
                           "DestinationEncryptionContext": {"keystead:vault": "bench", "keystead:secret": f"S{i}"}})
        req = AWSRequest("POST", url + "/", data=body, headers={
            "X-Amz-Target": "TrentService.ReEncrypt", "Content-Type": "application/x-amz-json-1.1"})
        SigV4Auth(creds, "kms", "us-east-1").add_auth(req)
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        conn.request("POST", "/", body=body.encode(), headers=dict(req.headers.items()))
        answer = json.loads(conn.getresponse().read())
        base64.b64decode(answer["CiphertextBlob"])

    pool = ThreadPoolExecutor(max_workers=threads)

    def run(count: int) -> None:
        list(pool.map(one, range(count)))

    return run


def measure(url: str, *, lanes: int, threads: int, n: int, rate: float = CONFIGURED, mode: str = "boto3") -> dict:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(lanes), ctx.Queue()
    share = n // lanes
    procs = [ctx.Process(target=worker, args=(url, mode, rate / lanes, threads, share, i * share, barrier, out))
             for i in range(lanes)]
    for p in procs:
        p.start()
    parts = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    start, end = min(p["start"] for p in parts), max(p["end"] for p in parts)
    with urllib.request.urlopen(f"{url}/stats?start={start}&end={end}&window=1.0", timeout=30) as reply:
        seen = json.loads(reply.read())
    items = sum(p["items"] for p in parts)
    calls = sum(p["calls"] for p in parts)
    return {"mode": mode, "lanes": lanes, "threads": threads, "rate_limit": rate if mode != "bare" else None,
            "items": items, "seconds": end - start, "rate": items / (end - start),
            "cpu_ms_per_call": 1000 * sum(p["cpu_s"] for p in parts) / max(1, calls),
            "max_per_second": seen["most_in_window"], "server_requests": seen["requests"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    scale = 0.25 if args.quick else 1.0

    def n(x: int) -> int:
        return max(200, int(x * scale))

    def log(msg: str) -> None:
        print(f"[bench-aws {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    server = subprocess.Popen([sys.executable, "-m", "benchmarks.kms_standin", "--delay", str(DELAY)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().split()[1]}"
        plan: list[dict[str, Any]] = [
            {"lanes": 1, "threads": 16, "n": n(2_000)},
            {"lanes": 1, "threads": 32, "n": n(4_000)},
            {"lanes": 1, "threads": 64, "n": n(4_000)},
            {"lanes": 2, "threads": 32, "n": n(8_000)},
            {"lanes": 4, "threads": 32, "n": n(8_000)},
            {"lanes": 2, "threads": 32, "n": n(3_000), "rate": 1_000.0},
            {"lanes": 1, "threads": 64, "n": n(4_000), "mode": "bare"},
        ]
        results = []
        for step in plan:
            result = measure(url, **step)
            log(f"{result['mode']} lanes={result['lanes']} threads={result['threads']} "
                f"limit={result['rate_limit']}: {result['rate']:,.0f} ReEncrypt/s, "
                f"{result['cpu_ms_per_call']:.2f} ms CPU/call, max {result['max_per_second']}/s at the server")
            results.append(result)
    finally:
        server.terminate()
        server.wait()
    print(json.dumps({"delay_s": DELAY, "configured": CONFIGURED, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
