"""Scale-out benchmarks: several workers on PostgreSQL, and the whole `keystead rotate` command.

    python -m benchmarks.run --only scale     (part of `make bench`)

1. *Workers on PostgreSQL.* A vault of N envelopes (local key) whose store
   (``postgresql://``) and rotation state are one throwaway database on the
   server at 127.0.0.1:5432 (``KEYSTEAD_PG_SERVER``). Rotations are forced
   back to back, each rewrapping all N slots, with 1, 2 and 3 worker
   processes (the first plans and rotates; the others wait for the rewrap
   and claim lanes, as `keystead worker` processes on other machines would).
   The rewrap rate is N over the wall time from the rotation entering
   ``rewrapping`` to its last lane done (the parent polls the state every
   5 ms). Beside it, the same run measures the SQLite default (vault and
   state in SQLite files, one worker) and the server's own ceiling: a plain
   batched ``UPDATE ... FROM unnest(...)`` of the same slot rows through
   psycopg, one transaction per batch, as many rows per batch as the rewrap.
2. *The whole command.* ``python -m keystead.cli rotate main --force`` on a
   50,000-envelope SQLite vault, as a process (start-up, plan, backups,
   rewrap, verification, retirement, audit), against a bare loop in one
   Python process over a copy of the same vault: select a batch of slots,
   rewrap them with the same key, update them, read each envelope back and
   open it. Interleaved, medians.

Every child runs in its own process. Nothing here asserts; the report says
which targets were met.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVER = os.environ.get("KEYSTEAD_PG_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
BATCH = 5000
POLL = 0.01
"""Seconds between the observer's (and a waiting helper's) reads of the rotation's state."""
LANE_SIZE = 10_000
"""Lanes of 10,000 slots: 100,000 envelopes are 10 lanes, work for every worker."""
CONFIG = """[vault]
name = "bench"
store = "{store}"
state = "{state}"
[keys.main]
ref = "local:main"
[rotation]
grace_days = 0
batch_size = {batch}
parallel = 1
lane_size = {lane_size}
lease_seconds = 30
verify_sample_above = {sample_above}
"""
SAMPLE_ABOVE = 20_000
"""The worker runs verify a sample (10,000) above this, to keep `make bench` short; the whole-command
run keeps the default (200,000: its 50,000 envelopes are all opened)."""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.scale", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)


def _done(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


# -- children ------------------------------------------------------------------------

def seed(folder: Path, n: int, store: str, state: str, lane_size: int = LANE_SIZE,
         sample_above: int = SAMPLE_ABOVE) -> None:
    """A workspace with N secrets under local:main, sealed 120 days ago, streamed into the store."""
    from keystead.config import load_config
    from keystead.crypto import seal
    from keystead.providers.local import LocalKeyFile
    from keystead.vault import Vault

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keystead.toml").write_text(CONFIG.format(store=store, state=state, batch=BATCH, lane_size=lane_size,
                                                               sample_above=sample_above))
    config = load_config(folder / "keystead.toml")
    then = datetime.now(UTC) - timedelta(days=120)
    LocalKeyFile(config.key_file).create("main", now=then)
    with Vault.open(config) as vault:
        key = vault.keys["main"]
        vault.store.put_many(seal("bench", f"S{i:08d}", b"v%08d" % i, [key], now=then) for i in range(n))


def _engine_run(folder: Path, *, force: bool) -> dict:
    from keystead.config import load_config
    from keystead.rotation.engine import Engine
    from keystead.rotation.state import StateDB
    from keystead.vault import Vault

    config = load_config(folder / "keystead.toml")
    state = StateDB.open(config.state_url)
    assert state is not None
    try:
        with Vault.open(config) as vault:
            t = time.perf_counter()
            engine = Engine(vault, state, now=datetime.now(UTC))
            try:
                result = engine.run_key("main", force=force)
            finally:
                engine.close()
            return {"outcome": str(result.outcome), "seconds": time.perf_counter() - t, "message": result.message}
    finally:
        state.close()


def lead(folder: Path) -> dict:
    """Force a rotation of main and drive it (plan, rotate, its share of the lanes, verify, retire)."""
    return _engine_run(folder, force=True)


def helper(folder: Path, after: int) -> dict:
    """Wait for a rotation newer than ``after`` to be rewrapping, then join it (claim lanes)."""
    from keystead.config import load_config
    from keystead.rotation.state import REWRAPPING, TERMINAL, StateDB

    config = load_config(folder / "keystead.toml")
    state = StateDB.open(config.state_url)
    assert state is not None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            rot = state.latest("main")
            if rot is not None and rot.id > after and rot.state == REWRAPPING:
                break
            if rot is not None and rot.id > after and rot.state in TERMINAL:
                return {"outcome": "missed"}
            time.sleep(POLL)
    finally:
        state.close()
    return _engine_run(folder, force=False)


def ceiling(store_url: str, n: int, repeat: int) -> list[float]:
    """Rows per second of a plain batched UPDATE of main's slot rows (to their own values), BATCH a
    transaction, through psycopg: what the server does with no keystead in the way."""
    import psycopg

    url = store_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT secret, version, wrapped FROM keystead_vault_slots WHERE key = 'local:main' "
                            "ORDER BY secret").fetchall()
        conn.commit()
        rates = []
        for _ in range(repeat):
            t = time.perf_counter()
            for i in range(0, len(rows), BATCH):
                part = rows[i:i + BATCH]
                conn.execute("UPDATE keystead_vault_slots AS l SET version = u.version, wrapped = u.wrapped "
                             "FROM unnest(%s::text[], %s::text[], %s::bytea[]) AS u(secret, version, wrapped) "
                             "WHERE l.key = 'local:main' AND l.secret = u.secret",
                             ([r[0] for r in part], [r[1] for r in part], [r[2] for r in part]))
                conn.commit()
            rates.append(len(rows) / (time.perf_counter() - t))
    return rates


def bare_loop(folder: Path) -> dict:
    """The floor for the whole command: select, rewrap, update, read back and open, nothing else."""
    from keystead.config import load_config
    from keystead.crypto import open_envelope
    from keystead.providers.local import LocalKeyFile
    from keystead.vault import Vault

    t = time.perf_counter()
    config = load_config(folder / "keystead.toml")
    LocalKeyFile(config.key_file).add_version("main", now=datetime.now(UTC))  # the version to rewrap to
    with Vault.open(config) as vault:
        key = vault.keys["main"]
        store = vault.store
        db = sqlite3.connect(store.path)  # type: ignore[attr-defined]
        to = key.describe().primary
        after, n = "", 0
        while True:
            rows = db.execute("SELECT secret, version, wrapped FROM slots WHERE key = ? AND secret > ? "
                              "AND version <> ? ORDER BY secret LIMIT ?", (key.ref, after, to, BATCH)).fetchall()
            if not rows:
                break
            new = key.rewrap_many("bench", rows)
            with db:
                db.executemany("UPDATE slots SET version = ?, wrapped = ? WHERE key = ? AND secret = ?",
                               [(w[0], w[1], key.ref, r[0]) for r, w in zip(rows, new, strict=True)])
            after = rows[-1][0]
            n += len(rows)
        db.close()
        opened = 0
        for env in store.iter_envelopes(batch=2000):
            open_envelope(env, key)
            opened += 1
    return {"n": n, "opened": opened, "seconds": time.perf_counter() - t}


# -- the parent ------------------------------------------------------------------------

def _admin():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(SERVER.replace("postgresql+psycopg://", "postgresql://") + "/postgres",
                           autocommit=True, connect_timeout=3)


def _rotation_with(folder: Path, state_url: str, workers: int, n: int) -> dict:
    """One forced rotation with ``workers`` processes; the rewrap rate from the state's own transitions."""
    from keystead.rotation.state import REWRAPPING, StateDB

    state = StateDB.open(state_url)
    assert state is not None
    try:
        before = state.latest("main")
        after = before.id if before else 0
        helpers = [_child("help", str(folder), str(after)) for _ in range(workers - 1)]
        time.sleep(0.5 if helpers else 0)  # helpers are up and polling before the rotation starts
        leader = _child("lead", str(folder))
        t0 = t1 = None
        rid = None
        while t1 is None and leader.poll() is None:
            rot = state.latest("main")
            if rot is not None and rot.id > after:
                rid = rot.id
                if t0 is None and rot.state == REWRAPPING:
                    t0 = time.perf_counter()
                if t0 is not None and (rot.state != REWRAPPING or rot.rewrapped >= n):
                    t1 = time.perf_counter()
            time.sleep(POLL)
        led = _done(leader)
        helped = [_done(h) for h in helpers]
        owners = len({b.owner for b in state.lane_log(rid)}) if rid else 0
    finally:
        state.close()
    if t0 is None or t1 is None:
        raise RuntimeError(f"rotation with {workers} worker(s) not observed: {led}")
    return {"workers": workers, "rate": n / (t1 - t0), "rewrap_s": t1 - t0, "total_s": led["seconds"],
            "owners": owners, "outcomes": [led["outcome"], *(h.get("outcome") for h in helped)]}


def measure_workers(n: int, counts: tuple[int, ...], repeat: int, log) -> dict | None:  # type: ignore[no-untyped-def]
    """Rates with 1..3 workers on PostgreSQL, the SQLite default, and the server's ceiling; None
    when no server answers."""
    try:
        admin = _admin()
    except Exception as exc:  # psycopg.OperationalError: no server here
        log(f"PostgreSQL unreachable at {SERVER}: {str(exc).strip().splitlines()[0]}; skipped")
        return None
    name = f"keystead_bench_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    folder = Path(tempfile.mkdtemp(prefix="keystead-bench-scale-"))
    url = f"{SERVER}/{name}"
    try:
        log(f"postgresql: seed {n:,} envelopes")
        _done(_child("seed", str(folder / "pg"), str(n), url, url))
        runs: dict[int, list[dict]] = {k: [] for k in counts}
        for _ in range(repeat):  # interleaved: 1, 2, 3 workers, then again
            for k in counts:
                runs[k].append(_rotation_with(folder / "pg", url, k, n))
                log(f"  {k} worker(s): {runs[k][-1]['rate']:,.0f}/s ({runs[k][-1]['owners']} lane owners)")
        log("postgresql: the server's ceiling (plain batched UPDATE through psycopg)")
        ceil = _ceiling(url, n, repeat)
        log(f"  {statistics.median(ceil):,.0f} rows/s")
        log(f"sqlite: seed {n:,} envelopes, one worker")
        sq = folder / "sqlite"
        _done(_child("seed", str(sq), str(n), "sqlite:///.keystead/vault.db", f"sqlite:///{sq}/.keystead/state.db"))
        sqlite_runs = [_rotation_with(sq, f"sqlite:///{sq}/.keystead/state.db", 1, n) for _ in range(repeat)]
        log(f"  {statistics.median(r['rate'] for r in sqlite_runs):,.0f}/s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()
    return {"n": n, "pg": {k: _median(v) for k, v in runs.items()}, "ceiling": statistics.median(ceil),
            "ceilings": ceil, "sqlite": _median(sqlite_runs)}


def _ceiling(url: str, n: int, repeat: int) -> list[float]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale", "ceiling", url, str(n), str(repeat)],
                          check=True, capture_output=True, text=True, env=_env(), cwd=REPO)
    return [float(x) for x in json.loads(proc.stdout)]


def _median(runs: list[dict]) -> dict:
    ranked = sorted(runs, key=lambda r: r["rate"])
    mid = dict(ranked[len(ranked) // 2])
    mid["rates"] = [r["rate"] for r in runs]
    return mid


def measure_command(n: int, repeat: int, log) -> dict:  # type: ignore[no-untyped-def]
    """`keystead rotate main --force` as a process against the bare loop, on copies of one vault."""
    folder = Path(tempfile.mkdtemp(prefix="keystead-bench-rotate-"))
    try:
        log(f"sqlite: seed {n:,} envelopes for the whole rotate command")
        seeded = folder / "seed"
        _done(_child("seed", str(seeded), str(n), "sqlite:///.keystead/vault.db",
                     f"sqlite:///{seeded}/.keystead/state.db", "50000", "200000"))
        command, bare = [], []
        for i in range(repeat):
            run = folder / f"cmd-{i}"
            shutil.copytree(seeded, run)
            _rewrite_state(run)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "keystead.cli", "--config", str(run / "keystead.toml"), "rotate",
                            "main", "--force"], check=True, capture_output=True, env=_env(), cwd=run)
            command.append(time.perf_counter() - t)
            shutil.rmtree(run)
            run = folder / f"bare-{i}"
            shutil.copytree(seeded, run)
            _rewrite_state(run)
            bare.append(_done(_child("bare", str(run)))["seconds"])
            shutil.rmtree(run)
            log(f"  rotate command {command[-1]:.2f} s, bare loop {bare[-1]:.2f} s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"n": n, "command_s": statistics.median(command), "bare_s": statistics.median(bare),
            "command_all": command, "bare_all": bare}


def _rewrite_state(folder: Path) -> None:
    """A copied workspace's state URL names its own folder (it was written absolute)."""
    path = folder / "keystead.toml"
    lines = [f'state = "sqlite:///{folder}/.keystead/state.db"' if line.startswith("state =") else line
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


SECTIONS = ("## Several workers on PostgreSQL", "## The whole `keystead rotate` command")


def splice(report: str, section: str, before: str) -> str:
    """``report`` with its scale-out sections replaced by ``section`` (placed before ``before``)."""
    lines = report.splitlines(keepends=True)
    kept, skipping = [], False
    for line in lines:
        if line.startswith("## "):
            skipping = line.rstrip("\n") in SECTIONS
        if not skipping:
            kept.append(line)
    text = "".join(kept)
    at = text.find(before)
    return text + "\n" + section if at < 0 else text[:at] + section + "\n" + text[at:]


def _yes(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render(workers: dict | None, command: dict) -> str:
    """docs/benchmarks.md's scale-out section."""
    lines = ["## Several workers on PostgreSQL", ""]
    if workers is None:
        lines += ["No PostgreSQL server answered at 127.0.0.1:5432: not measured.", ""]
    else:
        n, ceil, one = workers["n"], workers["ceiling"], workers["pg"][1]
        lines += [
            f"{n:,} envelopes (local key), vault store and rotation state in one PostgreSQL database on this",
            "machine's server; each rotation forced and every slot rewrapped, with 1, 2 and 3 worker processes",
            f"(lanes of {LANE_SIZE:,} slots: {n // LANE_SIZE} lanes; batches of {BATCH:,}). Rate = slots over the",
            "wall time from `rewrapping` to the last batch recorded. Runs interleaved; medians (all runs in brackets).",
            "",
            "The whole rotation (plan, rotate, rewrap, verification of a 10,000 sample, retirement) is the",
            "first worker's time. `lane owners`: distinct workers whose commits the lane log recorded.",
            "",
            "| | rewrap rate | x server ceiling | rewrap s | whole rotation s | lane owners |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for k, r in sorted(workers["pg"].items()):
            spread = " / ".join(f"{x / 1000:.0f}k" for x in r["rates"])
            lines.append(f"| PostgreSQL, {k} worker{'s' if k > 1 else ''} | {r['rate']:,.0f}/s ({spread}) | "
                         f"{r['rate'] / ceil:.2f} | {r['rewrap_s']:.2f} | {r['total_s']:.2f} | {r['owners']} |")
        sq = workers["sqlite"]
        lines += [
            f"| SQLite (vault and state files), 1 worker | {sq['rate']:,.0f}/s | - | {sq['rewrap_s']:.2f} | "
            f"{sq['total_s']:.2f} | {sq['owners']} |",
            f"| server ceiling: plain batched UPDATE of the same rows (psycopg, {BATCH:,} a transaction) | "
            f"{ceil:,.0f} rows/s | 1 | | | |",
            "",
            "| target | measured | |",
            "|---|---|---|",
            f"| 1 worker within 2x of the server's ceiling | {one['rate'] / ceil:.2f} x | "
            f"{_yes(one['rate'] >= 0.5 * ceil)} |",
        ]
        for k, r in sorted(workers["pg"].items()):
            if k > 1:
                lines.append(f"| {k} workers never slower than 1 | {r['rate'] / one['rate']:.2f} x of 1 worker | "
                             f"{_yes(r['rate'] >= 0.95 * one['rate'])} |")
        lines += [
            "",
            "The ceiling writes rows only; a worker also reads them, rewraps every data key, commits the",
            "batch's backups and its fenced lane commit to the state database, and appends an audit record.",
            "All workers share this machine's two cores with the server, so more workers add claimers, not",
            "cores; on separate machines each brings its own CPU.",
            "",
        ]
    ratio = command["bare_s"] / command["command_s"]
    lines += [
        "## The whole `keystead rotate` command",
        "",
        f"`python -m keystead.cli rotate main --force` on a {command['n']:,}-envelope SQLite vault, as a process",
        "(start-up, plan, backups, rewrap, full verification, retirement, audit), against a bare loop in one",
        "process over a copy of the same vault (select a batch, rewrap it, update it; then read every",
        "envelope back and open it). Interleaved, medians.",
        "",
        "| | median | runs (s) |",
        "|---|---:|---|",
        f"| keystead rotate | {command['command_s']:.2f} s | " + " ".join(f"{t:.2f}" for t in command["command_all"])
        + " |",
        f"| bare loop | {command['bare_s']:.2f} s | " + " ".join(f"{t:.2f}" for t in command["bare_all"]) + " |",
        "",
        f"keystead at **{ratio:.2f}x** the bare loop's speed (target: within 2x, i.e. >= 0.5: {_yes(ratio >= 0.5)};"
        " 0.42x on 2026-12-01 before lanes).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "seed":
        seed(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], *map(int, sys.argv[6:8]))
    elif cmd == "lead":
        print(json.dumps(lead(Path(sys.argv[2]))))
    elif cmd == "help":
        print(json.dumps(helper(Path(sys.argv[2]), int(sys.argv[3]))))
    elif cmd == "ceiling":
        print(json.dumps(ceiling(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    elif cmd == "bare":
        print(json.dumps(bare_loop(Path(sys.argv[2]))))
