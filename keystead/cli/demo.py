"""`make run`: the rotation worker on the embedded default, end to end.

``python -m keystead.cli.demo [FOLDER]`` (default ``demo/``):

1. seeds, once, a demo vault in FOLDER: keystead.toml (SQLite store, grace 0
   days), a local key whose first version was created 120 days ago (so it is
   past its 90-day period) and 5,000 secrets sealed under it;
2. runs the real CLI, ``keystead worker --once``, in a child process (with its
   progress bar when attached to a terminal): rotate, rewrap every envelope,
   verify, retire the old version;
3. prints ``keystead status``, ``keystead audit verify``, and a decrypt spot
   check of a few secrets against their known values (values are never
   printed).

Run it again and nothing is due: the worker says so and changes nothing.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

SECRETS = 5_000
AGE_DAYS = 120
SPOT = ("DEMO_00000", "DEMO_01234", "DEMO_02500", "DEMO_04999")
CONFIG = """\
# The `make run` demo vault: a local key past its rotation period, thousands of secrets.
[vault]
name = "demo"
store = "sqlite:///.keystead/vault.db"

[keys.main]
ref = "local:main"
rotation_period_days = 90

[rotation]
grace_days = 0          # retire the old version as soon as the rewrap is verified
batch_size = 2000
"""


def demo_value(name: str) -> bytes:
    """The known value of a demo secret (derived, so the spot check needs no copy of it)."""
    return b"demo:" + hashlib.sha256(b"keystead-demo/" + name.encode()).hexdigest().encode()


def seed(folder: Path) -> bool:
    """Create the demo vault unless it exists; True if it was created now."""
    from keystead.config import load_config
    from keystead.providers.local import LocalKeyFile
    from keystead.vault import Vault

    config_path = folder / "keystead.toml"
    if config_path.exists():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    config_path.write_text(CONFIG, encoding="utf-8")
    try:
        config = load_config(config_path)
        then = datetime.now(UTC) - timedelta(days=AGE_DAYS)
        LocalKeyFile(config.key_file).create("main", now=then)
        with Vault.open(config, clock=lambda: then) as vault:
            vault.import_many({f"DEMO_{i:05d}": demo_value(f"DEMO_{i:05d}") for i in range(SECRETS)})
            vault.audit.append("demo.seed", count=SECRETS)
    except BaseException:
        config_path.unlink(missing_ok=True)  # seed again next time rather than half a demo
        raise
    return True


def keystead(folder: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "keystead.cli", "--config", str(folder / "keystead.toml"), *args],
                          capture_output=capture, cwd=folder)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "demo").resolve()

    def say(text: str) -> None:
        print(f"\n== {text}", flush=True)

    t0 = time.monotonic()
    if seed(folder):
        say(f"seeded {folder}: {SECRETS} secrets under local:main, version 1 created {AGE_DAYS} days ago")
    else:
        say(f"demo vault already seeded in {folder}")
    say("keystead worker --once")
    worker = keystead(folder, "worker", "--once")
    say("keystead status")
    status = keystead(folder, "status")
    say("keystead audit verify")
    audit = keystead(folder, "audit", "verify")
    say("spot check: decrypt a few secrets, compare with their known values")
    good = 0
    for name in SPOT:
        got = keystead(folder, "secrets", "get", name, capture=True)
        ok = got.returncode == 0 and got.stdout.rstrip(b"\n") == demo_value(name)
        good += ok
        print(f"  {name}: {'ok' if ok else 'MISMATCH'}")
    print(f"  {good}/{len(SPOT)} decrypt to their original values")
    failed = [n for n, r in (("worker", worker), ("status", status), ("audit verify", audit)) if r.returncode]
    if good != len(SPOT):
        failed.append("spot check")
    say(f"{'FAILED: ' + ', '.join(failed) if failed else 'demo finished'} in {time.monotonic() - t0:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
