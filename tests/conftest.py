"""Shared fixtures: a fresh keystead workspace per test, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
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
