"""Rotation fixtures: a real workspace (keystead.toml, key file, vault, state db) whose key is past due.

Time is explicit: the key's first version is created at ``T0``, so a sweep
``as_of`` ``T0 + 120 days`` finds it due; nothing sleeps or patches a clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keystead.config import Config, load_config
from keystead.crypto import open_envelope
from keystead.providers.local import LocalKeyFile

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DUE = T0 + timedelta(days=120)
REPO = Path(__file__).resolve().parents[2]


def value(i: int) -> bytes:
    return f"value-{i:06d}-{'x' * (i % 7)}".encode()


def name(i: int) -> str:
    return f"S{i:06d}"


@dataclass
class Env:
    root: Path
    config_path: Path
    n: int

    def config(self) -> Config:
        return load_config(self.config_path)

    def vault(self, **kw):
        from keystead.vault import Vault

        return Vault.open(self.config(), **kw)

    def state(self):
        from keystead.rotation.state import StateDB

        return StateDB.open(self.config().state_url)

    def run(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """The real CLI in a real process."""
        return subprocess.run(
            [sys.executable, "-m", "keystead.cli", "--config", str(self.config_path), *args],
            capture_output=True, text=True, cwd=self.root, timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )

    def popen(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "keystead.cli", "--config", str(self.config_path), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.root,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )

    def snapshot(self) -> dict[str, bytes]:
        """The key file and every envelope, as bytes: to prove a failed command changed nothing."""
        from keystead.envelope import encode
        from keystead.stores import open_store

        config = self.config()
        out = {"<key file>": config.key_file.read_bytes()}
        store = open_store(config.store_url, base=config.root)
        try:
            for env in store.iter_envelopes():
                out[env.name] = encode(env)
        finally:
            store.close()
        return out

    def check_all_open(self, *, expect_n: int | None = None) -> dict[str, int]:
        """Every envelope opens through some live version of its key to its original value.

        Returns the count of slots per version; fails on a missing, extra or
        duplicated secret, or on any envelope that does not open.
        """
        from keystead.vault import Vault

        config = self.config()
        with Vault.open(config) as vault:
            key = vault.keys["main"]
            seen, versions = [], {}
            for env in vault.store.iter_envelopes(batch=2000):
                slot = env.slot(key.ref)
                assert slot is not None, env.name
                versions[slot.version] = versions.get(slot.version, 0) + 1
                i = int(env.name[1:])
                assert open_envelope(env, key) == value(i), env.name
                seen.append(env.name)
            assert len(seen) == len(set(seen))
            assert seen == sorted(name(i) for i in range(expect_n if expect_n is not None else self.n))
        return versions


def write_config(root: Path, *, store: str = "sqlite:///.keystead/vault.db", batch_size: int = 7,
                 grace_days: int = 0, extra: str = "", state: str | None = None,
                 period: int = 90, sample_above: int = 200_000, sample_size: int = 10_000,
                 parallel: int = 1, parallel_above: int = 50_000, lane_size: int = 50_000,
                 lease_seconds: int = 60) -> Path:
    path = root / "keystead.toml"
    state_line = f'state = "{state}"\n' if state else ""
    path.write_text(
        f'[vault]\nname = "default"\nstore = "{store}"\n{state_line}'
        f'[keys.main]\nref = "local:main"\nrotation_period_days = {period}\n{extra}'
        f"[rotation]\ngrace_days = {grace_days}\nbatch_size = {batch_size}\n"
        f"verify_sample_above = {sample_above}\nverify_sample_size = {sample_size}\n"
        f"parallel = {parallel}\nparallel_above = {parallel_above}\n"
        f"lane_size = {lane_size}\nlease_seconds = {lease_seconds}\n",
        encoding="utf-8",
    )
    return path


def make_env(root: Path, n: int = 40, *, extra: str = "", **kw) -> Env:
    """A workspace with ``n`` secrets sealed at T0 under local:main version 1.

    ``extra`` (more [keys.*] tables) is added to keystead.toml after seeding,
    so the secrets have the one slot of local:main.
    """
    from keystead.vault import Vault

    root.mkdir(parents=True, exist_ok=True)
    path = write_config(root, **kw)
    config = load_config(path)
    config.key_file.parent.mkdir(parents=True, exist_ok=True)
    LocalKeyFile(config.key_file).create("main", now=T0)
    with Vault.open(config, clock=lambda: T0) as vault:
        if n:
            vault.import_many({name(i): value(i) for i in range(n)})
    if extra:
        write_config(root, extra=extra, **kw)
    return Env(root, path, n)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path / "ws")


@pytest.fixture(params=["sqlite", "dir", pytest.param("postgres", marks=pytest.mark.pg)])
def any_env(request: pytest.FixtureRequest, tmp_path: Path) -> Env:
    """The workspace on each vault store; postgres: a schema of its own on 127.0.0.1:5432 (tests/conftest.py)."""
    if request.param == "postgres":
        return make_env(tmp_path / "ws", store=request.getfixturevalue("pg_schema_url"))
    store = {"sqlite": "sqlite:///.keystead/vault.db", "dir": "dir:secrets"}[request.param]
    return make_env(tmp_path / "ws", store=store)
