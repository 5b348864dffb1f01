"""Shared fixtures: a fresh keystead workspace per test, a CLI runner, a throwaway PostgreSQL database."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KEYSTEAD_CONFIG", "KEYSTEAD_PROFILE", "KEYSTEAD_AGE_IDENTITY_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KEYSTEAD_ACTOR", "tester@keystead")


class Workspace:
    """A folder with keystead.toml, driven through the real CLI."""

    def __init__(self, root: Path, store: str) -> None:
        self.root = root
        self.store = store
        self.config = root / "keystead.toml"

    def cli(self, *args: str, input: bytes | str | None = None, ok: bool = True):
        from keystead.cli import cli

        runner = CliRunner()
        result = runner.invoke(cli, ["--config", str(self.config), *args], input=input, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, (result.exit_code, result.output, result.stderr)
        return result

    def run(self, *args: str, input: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """The installed console entry point in a real process."""
        full_env = {**os.environ, "KEYSTEAD_CONFIG": str(self.config), **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "keystead.cli", *args],
            input=input, capture_output=True, env=full_env, cwd=self.root, timeout=60,
        )

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the workspace except the audit log: to prove nothing changed."""
        out = {}
        for p in sorted(self.root.rglob("*")):
            if p.is_file() and "audit.log" not in p.name and not p.name.endswith((".lock", "-wal", "-shm")):
                out[str(p.relative_to(self.root))] = p.read_bytes()
        return out


STORES = {"sqlite": "sqlite:///.keystead/vault.db", "dir": "dir:secrets"}


@pytest.fixture(params=sorted(STORES))
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    w = Workspace(tmp_path, STORES[request.param])
    w.cli("init", "--dir", str(tmp_path), "--store", w.store)
    return w


@pytest.fixture
def sqlite_ws(tmp_path: Path) -> Workspace:
    w = Workspace(tmp_path, STORES["sqlite"])
    w.cli("init", "--dir", str(tmp_path), "--store", w.store)
    return w


# -- PostgreSQL ------------------------------------------------------------------

PG_SERVER = os.environ.get("KEYSTEAD_PG_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
"""The server PostgreSQL tests use (trust auth, user postgres); each test gets its own database."""


def pg_admin():
    """An autocommit psycopg connection to the server's ``postgres`` database.

    Skips the test with the reason when the server is unreachable, unless
    KEYSTEAD_REQUIRE_PG=1 (which .ci/run sets): then the test fails."""
    import psycopg

    admin = PG_SERVER.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    try:
        return psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("KEYSTEAD_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL required (KEYSTEAD_REQUIRE_PG=1) but unreachable at {PG_SERVER}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_SERVER} ({str(exc).strip().splitlines()[0]})")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """``postgresql+psycopg://postgres@127.0.0.1:5432/keystead_test_XXXXXXXX``: a database created
    for this test and dropped after it (``WITH (FORCE)``: connections left open do not stop it)."""
    conn = pg_admin()
    name = f"keystead_test_{secrets.token_hex(4)}"
    conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="session")
def _pg_shared_database() -> Iterator[str]:
    conn = pg_admin()
    name = f"keystead_test_{secrets.token_hex(4)}"
    conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture
def pg_schema_url(_pg_shared_database: str) -> Iterator[str]:
    """A PostgreSQL URL whose ``search_path`` is a schema made for this test, in one database
    shared by the session: as empty as :func:`pg_url`, far cheaper than a database per test."""
    import psycopg

    schema = f"t_{secrets.token_hex(6)}"
    plain = _pg_shared_database.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{_pg_shared_database}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
