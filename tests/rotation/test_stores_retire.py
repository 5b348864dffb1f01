"""Retirement never loses data across stores: every store the config names is rewrapped and counted,
an unreachable store refuses retirement, shared keys are never retired, and retirement is two-phase
(disable, then delete after a second grace period) with a way back."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from keystead.config import load_config
from keystead.providers import VersionState
from keystead.providers.local import LocalKeyFile
from keystead.rotation import state as st
from keystead.rotation.engine import Engine
from keystead.vault import Vault
from tests.rotation.conftest import DUE, T0, name, value

CONFIG = """\
[vault]
name = "default"
store = "sqlite:///.keystead/vault.db"

[keys.main]
ref = "local:main"
{main_extra}
[profiles.a]
store = "sqlite:///.keystead/a.db"

[profiles.b]
store = "dir:b-secrets"

[rotation]
grace_days = {grace}
batch_size = 7
parallel = 1
"""
PROFILES = (None, "a", "b")


class Multi:
    """A workspace whose base store and two profiles' stores all hold slots of local:main."""

    def __init__(self, root: Path, *, grace: int = 0, main_extra: str = "", n: int = 12) -> None:
        self.root = root
        self.path = root / "keystead.toml"
        root.mkdir(parents=True, exist_ok=True)
        self.path.write_text(CONFIG.format(grace=grace, main_extra=main_extra))
        config = load_config(self.path)
        LocalKeyFile(config.key_file).create("main", now=T0)
        self.n = n
        for profile in PROFILES:
            with Vault.open(load_config(self.path, profile=profile), clock=lambda: T0) as vault:
                vault.import_many({self.secret(profile, i): value(i) for i in range(n)})

    @staticmethod
    def secret(profile: str | None, i: int) -> str:
        return f"{(profile or 'base').upper()}_{name(i)}"

    def sweep(self, profile: str | None, now=DUE, **kw):
        with Vault.open(load_config(self.path, profile=profile)) as vault:
            state = st.StateDB.open(vault.config.state_url)
            engine = Engine(vault, state, now=now)
            try:
                return engine.run_key("main", **kw)
            finally:
                engine.close()
                state.close()

    def all_open(self) -> dict[str | None, dict[str, int]]:
        """Every secret of every store opens to its value; the versions per store."""
        out = {}
        for profile in PROFILES:
            with Vault.open(load_config(self.path, profile=profile)) as vault:
                for i in range(self.n):
                    assert vault.get(self.secret(profile, i)) == value(i), (profile, i)
                out[profile] = vault.store.version_counts("local:main")
        return out

    def versions(self) -> dict[str, VersionState]:
        with Vault.open(load_config(self.path)) as vault:
            return {v.id: v.state for v in vault.keys["main"].describe().versions}


@pytest.mark.parametrize("profile", [None, "a", "b"])
def test_a_worker_of_any_profile_rewraps_every_store_before_retiring(tmp_path: Path, profile) -> None:
    # Reproduced on main before: the worker rewrapped its own store only and retired version 1,
    # and every secret of the other stores was lost for good.
    ws = Multi(tmp_path / "ws")
    r = ws.sweep(profile)
    assert r.outcome == "done", r.message
    assert r.rewrapped == 3 * ws.n
    assert ws.all_open() == {None: {"2": ws.n}, "a": {"2": ws.n}, "b": {"2": ws.n}}
    assert ws.versions() == {"1": VersionState.RETIRED, "2": VersionState.ENABLED}


def test_an_unreachable_store_refuses_retirement_and_names_it(tmp_path: Path) -> None:
    ws = Multi(tmp_path / "ws")
    db = ws.root / ".keystead" / "a.db"
    aside = db.with_name("a.db.aside")
    db.rename(aside)
    db.mkdir()  # the store's path now cannot be opened as a vault
    try:
        r = ws.sweep(None)
        assert r.failed and "retirement of key main refused" in r.message and "a.db" in r.message
        assert ws.versions() == {"1": VersionState.ENABLED, "2": VersionState.ENABLED}  # nothing retired
    finally:
        db.rmdir()
        aside.rename(db)
    assert ws.all_open()["a"] == {"1": ws.n}  # untouched meanwhile, still opens
    r = ws.sweep(None, DUE + timedelta(hours=1))  # back: it is rewrapped, then the old version retires
    assert r.outcome == "done", r.message
    assert ws.all_open() == {None: {"2": ws.n}, "a": {"2": ws.n}, "b": {"2": ws.n}}
    assert ws.versions()["1"] is VersionState.RETIRED


def test_a_key_that_is_not_exclusive_is_never_retired(tmp_path: Path) -> None:
    ws = Multi(tmp_path / "ws", main_extra="exclusive = false\n")
    r = ws.sweep("b")
    assert r.outcome == "done", r.message
    assert ws.versions() == {"1": VersionState.ENABLED, "2": VersionState.ENABLED}
    assert ws.sweep("b", DUE + timedelta(days=60)).outcome == "idle"
    assert ws.versions()["1"] is VersionState.ENABLED


def test_retirement_is_two_phase_and_restorable(tmp_path: Path) -> None:
    ws = Multi(tmp_path / "ws", grace=7)
    assert ws.sweep(None).outcome == "waiting"
    assert ws.versions()["1"] is VersionState.ENABLED  # grace: nothing yet
    r = ws.sweep(None, DUE + timedelta(days=7))
    assert r.outcome == "done"
    assert ws.versions()["1"] is VersionState.DISABLED  # first phase: reversible
    from keystead.rotation.worker import restore_version

    assert "restored version 1" in restore_version(load_config(ws.path), "main", "1")
    assert ws.versions()["1"] is VersionState.ENABLED
    # the restored version is not disabled again behind the operator's back by the purge
    ws.sweep(None, DUE + timedelta(days=30))
    assert ws.versions()["1"] is VersionState.ENABLED


def test_the_second_phase_proves_again_and_restores_a_version_something_needs(tmp_path: Path) -> None:
    ws = Multi(tmp_path / "ws", grace=7)
    from_git = ws.root / "b-secrets" / "B_S000003.json"
    before_rotation = from_git.read_bytes()  # its slot is on version 1, as a git checkout would hold it
    ws.sweep(None)
    ws.sweep(None, DUE + timedelta(days=7))
    assert ws.versions()["1"] is VersionState.DISABLED
    ws.sweep(None, DUE + timedelta(days=13))
    assert ws.versions()["1"] is VersionState.DISABLED  # the second grace is not over: not deleted
    from_git.write_bytes(before_rotation)  # someone restores the file from git
    r = ws.sweep(None, DUE + timedelta(days=14))  # second grace over: the fresh proof finds it
    assert ws.versions()["1"] is VersionState.ENABLED, r.message  # restored, not deleted
    with Vault.open(load_config(ws.path, profile="b")) as vault:
        assert vault.get("B_S000003") == value(3)
    # the next sweeps catch it up and retire version 1 properly, two phases again
    assert ws.sweep(None, DUE + timedelta(days=15)).outcome == "waiting"
    ws.sweep(None, DUE + timedelta(days=22))
    ws.sweep(None, DUE + timedelta(days=29))
    assert ws.versions()["1"] is VersionState.RETIRED
    assert ws.all_open() == {None: {"2": ws.n}, "a": {"2": ws.n}, "b": {"2": ws.n}}
