"""One measured rotation in its own process, so its peak RSS is its own.

``python -m benchmarks.rewrap seed FOLDER N STORE`` creates a workspace with N
secrets under local:main (sealed 120 days ago), streamed into the store with
``put_many`` (the vault is never held in memory).
``python -m benchmarks.rewrap lanes FOLDER K`` sets ``parallel = K``.
``python -m benchmarks.rewrap rotate FOLDER`` runs the real engine on it
(rotate, rewrap, verify, retire) and prints one JSON line: rewrap rate, phase
times, the share of rewrap time spent in the store and in the state
database (meaningful with one lane: lanes run in their own processes), and the
peak RSS of the process or of its largest lane process.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

CONFIG = """[vault]
name = "bench"
store = "{store}"
[keys.main]
ref = "local:main"
[rotation]
grace_days = 0
batch_size = {batch}
parallel = {parallel}
"""


def seed(folder: Path, n: int, store: str, batch: int = 5000) -> None:
    """Seed N secrets; the config says ``parallel = 1`` (see :func:`set_parallel`)."""
    from keystead.config import load_config
    from keystead.crypto import seal
    from keystead.providers.local import LocalKeyFile
    from keystead.vault import Vault

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keystead.toml").write_text(CONFIG.format(store=store, batch=batch, parallel=1))
    config = load_config(folder / "keystead.toml")
    then = datetime.now(UTC) - timedelta(days=120)
    LocalKeyFile(config.key_file).create("main", now=then)
    with Vault.open(config) as vault:
        key = vault.keys["main"]
        vault.store.put_many(seal("bench", f"S{i:08d}", b"v%08d" % i, [key], now=then) for i in range(n))


def set_parallel(folder: Path, lanes: int) -> None:
    path = folder / "keystead.toml"
    text = path.read_text()
    path.write_text("\n".join(f"parallel = {lanes}" if line.startswith("parallel =") else line
                              for line in text.splitlines()) + "\n")


class _Clock:
    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, obj, names: tuple[str, ...], bucket: str) -> None:
        for name in names:
            fn = getattr(obj, name)

            def timed(*a, _fn=fn, **k):
                t = time.perf_counter()
                try:
                    return _fn(*a, **k)
                finally:
                    self.spent[bucket] = self.spent.get(bucket, 0.0) + time.perf_counter() - t

            setattr(obj, name, timed)


class _Phase:
    def start(self, key: str, total: int) -> None:
        self.t0, self.total = time.perf_counter(), total

    def advance(self, n: int) -> None: ...

    def finish(self) -> None:
        self.seconds = time.perf_counter() - self.t0


def rotate(folder: Path) -> dict:
    from keystead.config import load_config
    from keystead.rotation.engine import Engine
    from keystead.rotation.state import StateDB
    from keystead.vault import Vault

    config = load_config(folder / "keystead.toml")
    clock, phase = _Clock(), _Phase()
    state = StateDB.open(config.state_url)
    with Vault.open(config) as vault:
        n = vault.store.count()
        clock.wrap(vault.store, ("slots_behind", "replace_slots"), "store")
        clock.wrap(state, ("record_batch",), "state")
        clock.wrap(vault.keys["main"], ("rewrap_many",), "crypto")
        t = time.perf_counter()
        result = Engine(vault, state, now=datetime.now(UTC), progress=phase).run_key("main")
        total = time.perf_counter() - t
    state.close()
    rss_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                 resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # a lane process, if any
    return {
        "n": n, "lanes": config.rotation.parallel if n > config.rotation.parallel_above else 1,
        "outcome": result.outcome, "total_s": total, "rewrap_s": phase.seconds,
        "rate": n / phase.seconds, "store_share": clock.spent.get("store", 0) / phase.seconds,
        "state_share": clock.spent.get("state", 0) / phase.seconds,
        "crypto_share": clock.spent.get("crypto", 0) / phase.seconds, "peak_rss_mb": rss_kb / 1024,
    }


if __name__ == "__main__":
    cmd, folder = sys.argv[1], Path(sys.argv[2])
    if cmd == "seed":
        seed(folder, int(sys.argv[3]), sys.argv[4])
    elif cmd == "lanes":
        set_parallel(folder, int(sys.argv[3]))
    else:
        print(json.dumps(rotate(folder)))
