"""Two builds of keystead rotating the same vault, interleaved: is one slower than the other?

    python -m benchmarks.compare OTHER_CHECKOUT [--sizes 100000] [--rounds 3]

Seeds each size once (with this checkout), then rotates fresh copies of it
alternately with OTHER_CHECKOUT's engine (run by that checkout's own .venv)
and with this one's, ``rounds`` times each, so both meet the same machine
load. Prints one JSON line per size: the median rewrap rate and total time of
each, and their ratio. Both builds must read the same vault format (true for
every keystead that writes envelope format 1 and SQLite store schema 1).
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rotate(checkout: Path, folder: Path) -> dict:
    python = checkout / ".venv" / "bin" / "python"
    out = subprocess.run([str(python), "-m", "benchmarks.rewrap", "rotate", str(folder)], check=True,
                         capture_output=True, text=True, cwd=checkout,
                         env={**os.environ, "PYTHONPATH": str(checkout)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("other", type=Path)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for n in args.sizes:
        work = Path(tempfile.mkdtemp(prefix=f"keystead-compare-{n}-"))
        try:
            subprocess.run([sys.executable, "-m", "benchmarks.rewrap", "seed", str(work / "seed"), str(n),
                            "sqlite:///.keystead/vault.db"], check=True, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
            runs: dict[str, list[dict]] = {"other": [], "this": []}
            for i in range(args.rounds):
                for who, checkout in (("other", args.other.resolve()), ("this", REPO)):
                    copy = work / f"{who}-{i}"
                    shutil.copytree(work / "seed", copy)
                    runs[who].append(_rotate(checkout, copy))
                    shutil.rmtree(copy)
            med = {w: {"rate": statistics.median(r["rate"] for r in rs),
                       "total_s": statistics.median(r["total_s"] for r in rs),
                       "rates": [round(r["rate"]) for r in rs]} for w, rs in runs.items()}
            print(json.dumps({"n": n, **med, "rate_ratio": med["this"]["rate"] / med["other"]["rate"],
                              "total_ratio": med["this"]["total_s"] / med["other"]["total_s"]}), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
