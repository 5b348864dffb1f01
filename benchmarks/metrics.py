"""What metrics cost: the same rotation with and without counting, and the price of a scrape.

    python -m benchmarks.metrics [--n 20000] [--rounds 3]

1. ``keystead worker --once`` on fresh copies of one seeded SQLite vault (N
   secrets, batches of 500), alternately with counting on (``KEYSTEAD_METRICS_DIR``
   set: every engine event goes to prometheus-client's multiprocess files, as
   under ``--metrics-port``) and off, ``rounds`` times each: the median wall
   times and their ratio.
2. A ``keystead worker --metrics-port 0`` on the rotated vault: the median time of
   a ``/metrics`` scrape and of a ``/healthz`` over HTTP (scrapes in a row mostly
   hit the collector's 5 s cache), and the uncached state-database read as the
   worker reports it (``keystead_state_db_scrape_duration_seconds``).

Prints one JSON line. Not part of ``make bench`` (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.rewrap import seed


def _cli(folder: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    return [sys.executable, "-m", "keystead.cli", "--config", str(folder / "keystead.toml"), *args]


def _rotate(folder: Path, counting: bool) -> float:
    env = dict(os.environ)
    metrics_dir = None
    if counting:
        metrics_dir = tempfile.mkdtemp(prefix="keystead-bench-metrics-")
        env["KEYSTEAD_METRICS_DIR"] = env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    t = time.perf_counter()
    r = subprocess.run(_cli(folder, "worker", "--once"), capture_output=True, text=True, env=env, cwd=folder)
    took = time.perf_counter() - t
    if metrics_dir:
        files = os.listdir(metrics_dir)
        shutil.rmtree(metrics_dir)
        if not files:
            raise SystemExit("counting was on but no process wrote a metrics file")
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return took


def _scrapes(folder: Path, k: int = 50) -> dict[str, float]:
    proc = subprocess.Popen(_cli(folder, "worker", "--metrics-port", "0", "--log-format", "json"),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=folder)
    try:
        base = ""
        assert proc.stderr is not None
        for line in proc.stderr:
            url = json.loads(line).get("metrics_url")
            if url:
                base = url.removesuffix("/metrics")
                break
        times: dict[str, list[float]] = {"/metrics": [], "/healthz": []}
        for path in times:
            for _ in range(k):
                t = time.perf_counter()
                with urllib.request.urlopen(base + path, timeout=10) as resp:
                    resp.read()
                times[path].append(time.perf_counter() - t)
        out = {f"{p}_ms_median": round(statistics.median(v) * 1000, 2) for p, v in times.items()}
        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("keystead_state_db_scrape_duration_seconds "):
                    out["state_db_read_ms"] = round(float(line.split()[1]) * 1000, 2)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keystead-bench-") as tmp:
        seeded = Path(tmp) / "seed"
        seed(seeded, args.n, "sqlite:///.keystead/vault.db", batch=500)
        times: dict[bool, list[float]] = {True: [], False: []}
        for i in range(args.rounds):
            for counting in (i % 2 == 0, i % 2 != 0):  # alternate which goes first
                copy = Path(tmp) / f"run-{i}-{counting}"
                shutil.copytree(seeded, copy)
                times[counting].append(_rotate(copy, counting))
        on, off = statistics.median(times[True]), statistics.median(times[False])
        scrape = _scrapes(copy)
    print(json.dumps({"n": args.n, "batch_size": 500, "rounds": args.rounds,
                      "rotate_seconds_counting": round(on, 3), "rotate_seconds_plain": round(off, 3),
                      "ratio_counting_over_plain": round(on / off, 3), **scrape}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
