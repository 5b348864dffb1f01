"""`make bench`: measure rotation side by side with its baselines, write docs/benchmarks.md.

    python -m benchmarks.run --out docs/benchmarks.md [--quick]
    python -m benchmarks.run --only aws [--out docs/benchmarks.md] [--quick]
    python -m benchmarks.run --only scale [--out docs/benchmarks.md] [--quick]

``--only aws`` measures the AWS rewrap section alone (benchmarks/aws.py, about a minute) and
prints it, or, with ``--out``, replaces that section of an existing report in place.
``--only scale`` measures the scale-out sections (benchmarks/scale.py: workers on PostgreSQL,
the whole rotate command; a few minutes) and replaces them in --out (docs/benchmarks.md).

Each measured rotation runs in its own process (seeded by another), so peak
RSS is that rotation's alone. Baselines are measured in the same run on the
same machine: raw single-core AES-GCM rewrap of 32-byte keys, a bare
write-temp+fsync+rename loop, and sops rotating age-encrypted files.
Benchmarks are not tests: nothing here asserts; the report says which targets
were met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import benchmarks.aws
from benchmarks import baselines, scale

REPO = Path(__file__).resolve().parents[1]


def _child(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "benchmarks.rewrap", *args], check=True, capture_output=True,
                         text=True, env=env, cwd=REPO)
    return out.stdout


REPEAT = 3
"""Every rate is the median of this many runs: this 2-core VM's rates move +-10% run to run."""


def median_run(runs: list[dict]) -> dict:
    ranked = sorted(runs, key=lambda r: r["rate"])
    mid = dict(ranked[len(ranked) // 2])
    mid["rates"] = [r["rate"] for r in runs]
    mid["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return mid


def median_rate(measure, *args) -> float:
    return sorted(measure(*args) for _ in range(REPEAT))[REPEAT // 2]


def measure_rotation(n: int, store: str, lanes: tuple[int, ...] = (1,)) -> list[dict]:
    """Seed once; per lane count, rotate a fresh copy of the seeded vault REPEAT times; the median run."""
    folder = Path(tempfile.mkdtemp(prefix=f"keystead-bench-{n}-"))
    try:
        t = time.perf_counter()
        _child("seed", str(folder / "seed"), str(n), store)
        seeded = time.perf_counter() - t
        results = []
        for k in lanes:
            runs = []
            for _ in range(REPEAT):
                run = folder / f"lanes-{k}"
                shutil.copytree(folder / "seed", run)
                _child("lanes", str(run), str(k))
                result = json.loads(_child("rotate", str(run)))
                result["seed_s"] = seeded
                if store.startswith("dir:"):
                    files = list((run / store[4:]).glob("*.json"))
                    result["file_bytes"] = sum(f.stat().st_size for f in files[:100]) // max(1, min(100, len(files)))
                runs.append(result)
                shutil.rmtree(run, ignore_errors=True)
            results.append(median_run(runs))
        return results
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.platform()}, {os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="the report (default docs/benchmarks.md; with --only: print)")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not the reported figures)")
    ap.add_argument("--only", choices=["aws", "scale"], help="measure one section only (see above)")
    args = ap.parse_args(argv)
    if args.only == "aws":
        new = aws_section(args.quick, alone=True)
        if args.out is None:
            print(new)
        else:
            out = Path(args.out)
            out.write_text(benchmarks.aws.splice(out.read_text() if out.exists() else "", new, READING))
        return 0
    args.out = args.out or "docs/benchmarks.md"
    sizes = [2_000, 10_000] if args.quick else [10_000, 100_000, 1_000_000]
    n_dir = 300 if args.quick else 2_000
    n_sops = 20 if args.quick else 200

    def log(msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    started = datetime.now(UTC)
    scale_section = _scale(args.quick, log)
    if args.only == "scale":
        out = Path(args.out)
        old = out.read_text() if out.exists() else "# keystead benchmarks\n\n" + READING + "\n"
        out.write_text(scale.splice(old, scale_section, READING))
        log(f"wrote the scale-out sections of {args.out}")
        return 0
    log("raw AES-GCM rewrap, one core")
    raw = median_rate(baselines.aes_gcm_rewrap_rate, 50_000 if args.quick else 300_000)
    sqlite, single = [], []
    for n in sizes:
        log(f"sqlite store: rotate {n:,} envelopes, two lanes and one process")
        two, one = measure_rotation(n, "sqlite:///.keystead/vault.db", lanes=(2, 1))
        sqlite.append(two)
        single.append(one)
        log(f"  {two['rate']:,.0f}/s with {two['lanes']} lane(s), {one['rate']:,.0f}/s in one process, "
            f"peak {two['peak_rss_mb']:.0f} MB")
    log(f"dir store: rotate {n_dir:,} envelope files")
    (dir_run,) = measure_rotation(n_dir, "dir:secrets")
    with tempfile.TemporaryDirectory(prefix="keystead-bench-fsync-") as tmp:
        log("bare write-temp+fsync+rename loop")
        bare = median_rate(baselines.fsync_loop_rate, Path(tmp), n_dir, dir_run.get("file_bytes", 600))
    log(f"keystead dir store at the sops count ({n_sops})")
    (dir_small,) = measure_rotation(n_sops, "dir:secrets")
    (sqlite_small,) = measure_rotation(n_sops, "sqlite:///.keystead/vault.db")
    log(f"sops rotate -i on {n_sops} age-encrypted files")
    sops = baselines.sops_rotate_rate(n_sops)
    log("start-up: keystead secrets get against sops decrypt, whole processes")
    startup = baselines.startup_vs_sops(5 if args.quick else 21)
    log("AWS rewrap: ReEncrypt against the 40 ms KMS stand-in (benchmarks/aws.py)")
    aws = aws_section(args.quick)
    report = render(started, raw, sqlite, single, dir_run, bare, dir_small, sqlite_small, sops, quick=args.quick)
    report = report.replace(READING, startup_section(startup) + aws + scale_section + "\n" + READING, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    log(f"wrote {args.out}")
    return 0


def _scale(quick: bool, log) -> str:
    """Several workers on PostgreSQL (100,000 envelopes) and the whole rotate command (50,000)."""
    n, repeat = (10_000, 1) if quick else (100_000, REPEAT)
    workers = scale.measure_workers(n, (1, 2, 3), repeat, log)
    command = scale.measure_command(5_000 if quick else 50_000, repeat, log)
    return scale.render(workers, command)


def aws_section(quick: bool, *, alone: bool = False) -> str:
    """The AWS rewrap section, measured in a child process (benchmarks/aws.py); boto3 is the aws extra's."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        return benchmarks.aws.section(None)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "benchmarks.aws", *(["--quick"] if quick else [])], check=True,
                         stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC (load average {os.getloadavg()[0]:.1f})" if alone else None
    return benchmarks.aws.section(json.loads(out.stdout), alone=when)


def _spread(r: dict) -> str:
    return " / ".join(f"{x / 1000:.0f}k" for x in r["rates"])


def _yes(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render(started, raw, sqlite, single, dir_run, bare, dir_small, sqlite_small, sops, *, quick: bool) -> str:
    big = sqlite[-1]
    rss_series = " -> ".join(f"{r['peak_rss_mb']:.0f}" for r in sqlite)
    lines = [
        "# keystead benchmarks",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `python -m benchmarks.run{' --quick' if quick else ''}` "
        "(`make bench`) on:",
        "",
        f"- {machine()}",
        "",
        "Every figure below comes from this one run; baselines were measured on the same machine in the",
        f"same run. Each rate, baselines included, is the median of {REPEAT} runs (the rotation table",
        "lists all of them). Rotation = the real engine (`keystead.rotation.engine`): rotate the local",
        "key, rewrap every slot in batches (read behind slots, `rewrap_many`, one state commit with the",
        "backups, compare-and-swap `replace_slots`), verify, retire. The *rewrap rate* is slots per",
        "second over the rewrap loop; *total* adds rotate, verify (full below 200,000 slots, a 10,000",
        "sample above it plus the full count check) and retire. Peak RSS is the largest of the runs,",
        "each in a fresh process (`ru_maxrss` of the rotating process and of its lane processes).",
        "",
        "## Local rewrap on the SQLite store",
        "",
        f"Raw single-core AES-256-GCM rewrap of 32-byte keys (unwrap + wrap, fresh nonce): **{raw:,.0f}/s**.",
        "",
        "Each size is seeded once and rotated from fresh copies of it: with the default",
        "`parallel = 2` (a backlog above `parallel_above` = 200,000 is cut into two lanes, one process",
        "each, side by side) and with `parallel = 1` (one process; its shares show where the time goes).",
        "",
        "| envelopes | lanes | rewrap rate | x raw AES-GCM | rewrap s | total s | peak RSS | one process | "
        "store share | state db share | crypto share |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r, o in zip(sqlite, single, strict=False):
        lines.append(
            f"| {r['n']:,} | {r['lanes']} | {r['rate']:,.0f}/s ({_spread(r)}) | {r['rate'] / raw:.2f} | "
            f"{r['rewrap_s']:.2f} | "
            f"{r['total_s']:.2f} | {r['peak_rss_mb']:.0f} MB | {o['rate']:,.0f}/s | "
            f"{o['store_share']:.0%} | {o['state_share']:.0%} | {o['crypto_share']:.0%} |"
        )
    lines += [
        "",
        "Shares are of the one-process rewrap loop's time: *store* = `slots_behind` + `replace_slots`",
        "(SQLite reads and the compare-and-swap update), *state db* = the one commit per batch (backups",
        "of this batch, cursor of the last), *crypto* = `rewrap_many` (AES-GCM unwrap + wrap and its",
        "Python loop); the rest is the engine's own per-slot work, audit records and progress. Peak RSS",
        "is the larger of the rotating process and its largest lane process.",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| >= 100,000 envelopes/s (2 cores) at {big['n']:,} | {big['rate']:,.0f}/s ({big['lanes']} lanes) | "
        f"{_yes(big['rate'] >= 100_000)} |",
        f"| >= 0.25 x raw AES-GCM rewrap ({0.25 * raw:,.0f}/s) | {big['rate'] / raw:.2f} x | "
        f"{_yes(big['rate'] >= 0.25 * raw)} |",
        f"| < 150 MB peak RSS at {big['n']:,} | {big['peak_rss_mb']:.0f} MB | {_yes(big['peak_rss_mb'] < 150)} |",
        f"| RSS flat as the vault grows | {rss_series} MB | "
        f"{_yes(big['peak_rss_mb'] < 1.5 * sqlite[0]['peak_rss_mb'] + 20)} |",
        "",
        "## Dir store (one file per envelope, fsync bound)",
        "",
        "| | files | rate |",
        "|---|---:|---:|",
        f"| keystead rotation, dir store | {dir_run['n']:,} | {dir_run['rate']:,.0f} files/s |",
        f"| bare write-temp + fsync + rename loop (~{dir_run.get('file_bytes', 0)} B files) | {dir_run['n']:,} | "
        f"{bare:,.0f} files/s |",
        "",
        f"keystead / bare loop = **{dir_run['rate'] / bare:.2f}** (target: within 2x, i.e. >= 0.5: "
        f"{_yes(dir_run['rate'] >= 0.5 * bare)}).",
        "",
        "## The same rotation with sops",
        "",
    ]
    if sops is None:
        lines.append("sops was not found (install the `bench` extra: `pip install -e '.[bench]'`); not measured.")
    else:
        lines += [
            f"{sops['version']}, `sops rotate -i FILE` per file (one process per file, which is how sops rotates),",
            f"age recipients, {sops['n']} files; keystead rotating the same number of envelopes:",
            "",
            "| | envelopes | rate | keystead / sops |",
            "|---|---:|---:|---:|",
            f"| sops rotate -i | {sops['n']} | {sops['rate']:,.1f} files/s | 1 |",
            f"| keystead, dir store (rewrap loop) | {dir_small['n']} | {dir_small['rate']:,.0f}/s | "
            f"**{dir_small['rate'] / sops['rate']:,.0f}x** |",
            f"| keystead, dir store (whole rotation incl. verify) | {dir_small['n']} | "
            f"{dir_small['n'] / dir_small['total_s']:,.0f}/s | "
            f"**{dir_small['n'] / dir_small['total_s'] / sops['rate']:,.0f}x** |",
            f"| keystead, SQLite store (rewrap loop) | {sqlite_small['n']} | {sqlite_small['rate']:,.0f}/s | "
            f"**{sqlite_small['rate'] / sops['rate']:,.0f}x** |",
            "",
            "Not the same work, and the table does not pretend it is: sops re-encrypts each file's data key",
            "to its age recipients (X25519) and rewrites the file; keystead rewraps each data key under a",
            "new local AES key version (the cheap operation rotation needs), keeps the payload, and adds",
            "backups, verification and an audit trail. The ratio is what a team rotating N secrets",
            "would see.",
        ]
    lines += [
        "",
        "## Reading these numbers",
        "",
        "- Below `parallel_above` (200,000 behind) a rewrap runs in one process: starting a lane",
        "  process costs about half a second, which a small backlog does not repay. The SQLite store",
        "  takes one writer at a time, so two lanes do not double the rate: the compare-and-swap",
        "  update is the serial part (see the store share).",
        "- Run to run, on this 2-core VM, rates move by about +-10% for the same code (the two-lane rate",
        "  at 1,000,000 ranged from about 80,000/s to 105,000/s in single runs on 2026-11-23): hence",
        "  medians, the runs in brackets, and ratios against baselines measured in the same run.",
        "- Nothing loads the vault whole (batches stream). What grows with the vault up to a cap is",
        "  SQLite's: the store's page cache fills up to its 16 MB cap, and `version_counts` (a",
        "  GROUP BY over every slot of the key) sorts with memory of about the same size before it",
        "  spills to disk. With a 32 MB cap the 1,000,000 run peaked at 114 MB instead.",
        "- Estimated times in `keystead rotate --dry-run` use `keystead.rotation.planner.REWRAP_RATES`",
        "  (local: 100,000/s), which is optimistic against the figures above on this machine.",
        "",
    ]
    return "\n".join(lines)


READING = "## Reading these numbers"


def startup_section(r: dict | None) -> str:
    """docs/benchmarks.md's start-up heading: the command scripts call most, as a whole process."""
    head = "## Start-up: `keystead secrets get` against `sops decrypt`\n\n"
    if r is None:
        return head + "sops was not found (install the `bench` extra); not measured.\n\n"
    verdict = "met" if r["ratio"] <= 3 else "**not met**"
    return head + "\n".join([
        f"Whole processes, {r['runs']} runs each, interleaved in the same run; medians. keystead: `python -m",
        "keystead.cli secrets get NAME` on a fresh SQLite vault of 17 secrets (local key, one audit append);",
        "sops: `sops decrypt` of one age-encrypted dotenv value. Both with a warm page cache and, for",
        "keystead, compiled bytecode (as a user's install has).",
        "",
        "| | median | runs (s) |",
        "|---|---:|---|",
        f"| keystead secrets get | {r['keystead_s'] * 1000:.0f} ms | "
        + " ".join(f"{t:.3f}" for t in sorted(r["keystead_all"])) + " |",
        f"| sops decrypt | {r['sops_s'] * 1000:.0f} ms | " + " ".join(f"{t:.3f}" for t in sorted(r["sops_all"])) + " |",
        "",
        f"keystead / sops: **{r['ratio']:.2f}x** (target: within 3x, {verdict}).",
        "",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
