"""The GCP provider through the real google-cloud-kms client (REST) against the loopback fake:
the CLI, the worker's rotation, rewrap and two-phase retirement, and every bad input as one line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keystead.config import load_config
from keystead.envelope import Context
from keystead.errors import EXIT_CODES, DecryptError, ProviderError, ProviderUnavailable
from keystead.providers import VersionState, Wrapped
from keystead.providers.gcp import AFTER_LABEL, TOKEN_LABEL, open_gcp
from keystead.rotation import state as st
from keystead.rotation.engine import Engine, Outcome
from keystead.vault import Vault
from tests.conftest import Workspace
from tests.providers.gcp_fake import DESTROYED, DISABLED, FakeCloudKMS, kms_client

REF = "projects/keystead-test/locations/europe-west1/keyRings/ring/cryptoKeys/app"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]
CONFIG = """\
[vault]
name = "default"
store = "sqlite:///.keystead/vault.db"

[providers.gcp]
endpoint = "{url}"
anonymous = true
retry_seconds = 0

[keys.app]
ref = "{ref}"
exclusive = {exclusive}

[profiles.other]
store = "dir:other-secrets"

[rotation]
grace_days = 1
parallel = 1
"""


@pytest.fixture
def fake():
    f = FakeCloudKMS(now=T0).start()
    f.add_key(REF)
    yield f
    f.stop()


class GcpWorkspace(Workspace):
    def __init__(self, root: Path, fake: FakeCloudKMS, *, exclusive: bool = True, ref: str = REF) -> None:
        super().__init__(root, "sqlite:///.keystead/vault.db")
        self.fake = fake
        self.config.write_text(CONFIG.format(url=fake.url, ref=ref, exclusive=str(exclusive).lower()))

    def vault(self, profile: str | None = None) -> Vault:
        return Vault.open(load_config(self.config, profile=profile))

    def sweep(self, now: datetime, profile: str | None = None):
        """One worker sweep of key ``app`` as of ``now`` (the fake's clock follows)."""
        self.fake.now = now
        with self.vault(profile) as vault:
            state = st.StateDB.open(vault.config.state_url)
            engine = Engine(vault, state, now=now)
            try:
                return engine.run_key("app")
            finally:
                engine.close()
                state.close()

    def versions(self) -> dict[str, int]:
        with self.vault() as v:
            counts = dict(v.store.version_counts(REF))
        with self.vault("other") as v:
            for label, n in v.store.version_counts(REF).items():
                counts[label] = counts.get(label, 0) + n
        return counts

    def snapshot(self) -> dict:  # type: ignore[override]
        """Every envelope of both stores (the raw vault.db also holds the audit chain's head)."""
        out = {}
        for profile in (None, "other"):
            with self.vault(profile) as v:
                out.update({(profile, n): v.store.get(n) for n in v.store.names()})
        return out

    def state(self, version: str) -> int:
        return self.fake.keys[REF].versions[version].state

    def one_line_error(self, *args: str, code: str = "ProviderError", input: str | None = None) -> str:
        result = self.cli(*args, ok=False, input=input)
        assert result.exit_code == EXIT_CODES[code], (result.exit_code, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        return lines[0]


@pytest.fixture
def gws(tmp_path: Path, fake: FakeCloudKMS) -> GcpWorkspace:
    return GcpWorkspace(tmp_path, fake)


def _seed(gws: GcpWorkspace, n: int = 4) -> None:
    for i in range(n):
        gws.cli("secrets", "set", f"S{i}", f"value-{i}")
        gws.cli("--profile", "other", "secrets", "set", f"P{i}", f"other-{i}")


def _all_open(gws: GcpWorkspace, n: int = 4) -> None:
    for i in range(n):
        assert gws.cli("secrets", "get", f"S{i}").stdout == f"value-{i}"
        assert gws.cli("--profile", "other", "secrets", "get", f"P{i}").stdout == f"other-{i}"


# -- the CLI ------------------------------------------------------------------------------
def test_cli_round_trip_records_the_short_version_id(gws: GcpWorkspace) -> None:
    gws.cli("secrets", "set", "DB_URL", "postgres://u:p@h/db")
    assert gws.cli("secrets", "get", "DB_URL").stdout == "postgres://u:p@h/db"
    with gws.vault() as vault:
        [slot] = vault.store.get("DB_URL").slots
    assert (slot.key, slot.provider, slot.version) == (REF, "gcp", "1")
    shown = json.loads(gws.cli("keys", "show", "app", "--json").stdout)
    assert shown["provider"] == "gcp" and shown["primary"] == "1" and shown["rotation"] == "in-place"
    assert ("POST", "encrypt") in gws.fake.calls and ("POST", "decrypt") in gws.fake.calls


def test_a_real_process_reaches_the_fake(gws: GcpWorkspace) -> None:
    gws.cli("secrets", "set", "TOKEN", "t0k3n")
    got = gws.run("secrets", "get", "TOKEN", env={"PYTHONPATH": str(REPO)})
    assert got.returncode == 0 and got.stdout == b"t0k3n", got.stderr


# -- rotation through the worker ------------------------------------------------------------
def test_worker_rotates_rewraps_every_store_then_disables_destroys_and_restores(gws: GcpWorkspace) -> None:
    _seed(gws)
    due = T0 + timedelta(days=91)
    first = gws.sweep(due)
    assert first.outcome is Outcome.WAITING, first.message  # rotated, rewrapped, verified; grace running
    assert gws.fake.keys[REF].primary == "2" and gws.versions() == {"2": 8}
    labels = gws.fake.keys[REF].labels
    assert labels[TOKEN_LABEL].startswith("keystead-rotation-") and labels[AFTER_LABEL] == "1"
    _all_open(gws)
    assert gws.sweep(due + timedelta(days=2)).outcome is Outcome.DONE
    assert gws.state("1") == DISABLED  # first phase: reversible
    gws.sweep(due + timedelta(days=4))
    v1 = gws.fake.keys[REF].versions["1"]
    assert v1.state == 4 and v1.destroy_time is not None  # DESTROY_SCHEDULED: restorable for 30 days
    shown = json.loads(gws.cli("keys", "show", "app", "--json").stdout)
    assert {v["id"]: v["state"] for v in shown["versions"]} == {"1": "pending-deletion", "2": "enabled"}
    out = gws.cli("keys", "restore", "app", "1")
    assert "restored version 1" in out.stderr and gws.state("1") == 1
    _all_open(gws)


def test_rotation_is_idempotent_per_token_across_a_crash_between_the_two_calls(fake: FakeCloudKMS) -> None:
    key = open_gcp(REF, name="app", options={"retry_seconds": 0}, clients=kms_client(fake))
    fake.denied = {"updatePrimaryVersion"}  # the process dies after CreateCryptoKeyVersion
    with pytest.raises(ProviderError, match="permission denied"):
        key.rotate(now=T0, token="keystead-rotation-7")
    assert sorted(fake.keys[REF].versions) == ["1", "2"] and fake.keys[REF].primary == "1"
    fake.denied = set()
    again = open_gcp(REF, name="app", options={"retry_seconds": 0}, clients=kms_client(fake))  # a new worker
    info = again.rotate(now=T0, token="keystead-rotation-7")
    assert info.primary == "2" and sorted(fake.keys[REF].versions) == ["1", "2"]  # adopted, not a third
    assert again.rotate(now=T0, token="keystead-rotation-8").primary == "3"


def test_catch_up_after_a_version_made_outside_keystead(gws: GcpWorkspace) -> None:
    _seed(gws, 3)
    gws.fake.now = T0 + timedelta(days=10)
    gws.fake.add_version(REF)  # the console: new primary, nothing rewrapped
    result = gws.sweep(T0 + timedelta(days=10))
    assert result.outcome in (Outcome.WAITING, Outcome.DONE), result.message
    assert gws.versions() == {"2": 6} and sorted(gws.fake.keys[REF].versions) == ["1", "2"]  # no new version
    _all_open(gws, 3)


def test_scheduled_key_is_only_caught_up(tmp_path: Path, fake: FakeCloudKMS) -> None:
    fake.keys[REF].rotation_period = timedelta(days=30)
    gws = GcpWorkspace(tmp_path, fake)
    gws.cli("secrets", "set", "S0", "v")
    assert json.loads(gws.cli("keys", "show", "app", "--json").stdout)["rotation"] == "scheduled"
    assert gws.sweep(T0 + timedelta(days=400)).outcome is Outcome.IDLE
    fake.add_version(REF)  # Google rotated it
    gws.sweep(T0 + timedelta(days=401))
    assert gws.versions() == {"2": 1} and sorted(fake.keys[REF].versions) == ["1", "2"]


def test_destroy_refused_while_a_profile_store_holds_the_old_version(gws: GcpWorkspace) -> None:
    _seed(gws, 2)
    with gws.vault("other") as vault:
        old = vault.store.get("P0")  # an envelope on version 1, as a backup holds it
    due = T0 + timedelta(days=91)
    gws.sweep(due)
    gws.sweep(due + timedelta(days=2))
    assert gws.state("1") == DISABLED
    with gws.vault("other") as vault:
        vault.store.put(old)  # restored from a backup while version 1 waits, disabled
    gws.sweep(due + timedelta(days=4))
    assert gws.state("1") == 1  # proven still needed by the profile's store: restored, not destroyed
    assert gws.cli("--profile", "other", "secrets", "get", "P0").stdout == "other-0"


def test_a_key_that_is_not_exclusive_is_never_retired(tmp_path: Path, fake: FakeCloudKMS) -> None:
    gws = GcpWorkspace(tmp_path, fake, exclusive=False)
    _seed(gws, 1)
    due = T0 + timedelta(days=91)
    for days in (0, 2, 4, 6):
        gws.sweep(due + timedelta(days=days))
    assert fake.keys[REF].primary == "2" and gws.state("1") == 1


def test_a_transient_503_pauses_the_rotation_and_the_next_sweep_finishes(gws: GcpWorkspace) -> None:
    _seed(gws, 3)
    gws.fake.unavailable, gws.fake.unavailable_ops = 1000, {"decrypt"}
    paused = gws.sweep(T0 + timedelta(days=91))
    assert paused.outcome is Outcome.PAUSED and "unavailable" in paused.message, paused.message
    gws.fake.unavailable = 0
    assert gws.sweep(T0 + timedelta(days=91)).outcome is Outcome.WAITING
    assert gws.versions() == {"2": 6}
    _all_open(gws, 3)


# -- one-line errors, vault unchanged ----------------------------------------------------------
def test_disabled_version_names_the_key_and_keys_restore(gws: GcpWorkspace) -> None:
    gws.cli("secrets", "set", "S0", "v0")
    gws.fake.add_version(REF)
    gws.fake.keys[REF].versions["1"].state = DISABLED  # by hand, outside keystead
    line = gws.one_line_error("secrets", "get", "S0")
    assert REF in line and "version 1 is disabled" in line and "keystead keys restore app 1" in line
    gws.cli("keys", "restore", "app", "1")
    assert gws.cli("secrets", "get", "S0").stdout == "v0"


def test_a_version_destroyed_outside_keystead(gws: GcpWorkspace) -> None:
    gws.cli("secrets", "set", "S0", "v0")
    gws.fake.add_version(REF)
    v1 = gws.fake.keys[REF].versions["1"]
    v1.state, v1.material = DESTROYED, None
    line = gws.one_line_error("secrets", "get", "S0")
    assert REF in line and "destroyed" in line and "restore" not in line.split("destroyed")[0]
    assert "cannot be restored" in gws.one_line_error("keys", "restore", "app", "1")


def test_crc32c_mismatch_is_retried_once_then_fails_clearly(gws: GcpWorkspace) -> None:
    gws.cli("secrets", "set", "S0", "v0")
    gws.fake.corrupt = 1
    assert gws.cli("secrets", "get", "S0").stdout == "v0"  # retried once
    gws.fake.corrupt = 2
    line = gws.one_line_error("secrets", "get", "S0")
    assert "CRC32C" in line and REF in line
    before = gws.snapshot()
    gws.fake.corrupt = 2
    assert "CRC32C" in gws.one_line_error("secrets", "set", "S1", input="v1")
    assert gws.snapshot() == before


def test_permission_denied_is_one_line_and_changes_nothing(gws: GcpWorkspace) -> None:
    gws.cli("secrets", "set", "S0", "v0")
    before = gws.snapshot()
    gws.fake.denied = {"*"}
    line = gws.one_line_error("secrets", "set", "S0", input="v1")
    assert "permission denied" in line and REF in line
    assert "permission denied" in gws.one_line_error("secrets", "get", "S0")
    assert gws.snapshot() == before


def test_a_moved_envelope_fails_the_aad(gws: GcpWorkspace) -> None:
    gws.cli("secrets", "set", "S0", "v0")
    with gws.vault() as vault:
        env = vault.store.get("S0")
        import dataclasses

        vault.store.put(dataclasses.replace(env, name="MOVED"))
    before = gws.snapshot()
    line = gws.one_line_error("secrets", "get", "MOVED")
    assert "cannot decrypt secret 'MOVED'" in line, line
    assert gws.snapshot() == before


@pytest.mark.parametrize(("ref", "endpoint", "needle"), [
    ("projects/keystead-test/locations/europe-west1/keyRings/ring/cryptoKeys/bad key", None, "malformed GCP key"),
    ("projects/keystead-test/locations/europe-west1/keyRings/ring/cryptoKeys/missing", None, "not found"),
    (REF, "https://cloudkms.us-east1.rep.googleapis.com", "does not match the regional endpoint"),
])
def test_bad_references_are_one_line(tmp_path: Path, fake: FakeCloudKMS, ref: str, endpoint: str | None,
                                     needle: str) -> None:
    gws = GcpWorkspace(tmp_path, fake, ref=ref)
    if endpoint:  # a key's own endpoint wins over [providers.gcp]
        text = gws.config.read_text()
        gws.config.write_text(text.replace("exclusive = true", f'exclusive = true\nendpoint = "{endpoint}"'))
    line = gws.one_line_error("secrets", "set", "S0", input="v0")
    assert needle in line, line
    assert not (tmp_path / "other-secrets").exists() or not any((tmp_path / "other-secrets").iterdir())


# -- the provider itself ---------------------------------------------------------------------------
def test_retire_window_end_is_final(fake: FakeCloudKMS) -> None:
    key = open_gcp(REF, name="app", options={"retry_seconds": 0}, clients=kms_client(fake))
    old = key.wrap(os.urandom(32), Context("v", "S"))
    key.rotate(now=T0, token="t1")
    key.disable("1")
    key.retire("1")
    fake.now = T0 + timedelta(days=31)  # the destroy_scheduled_duration has run out
    assert key.describe().version("1").state is VersionState.RETIRED
    with pytest.raises(ProviderError, match="destroyed"):
        key.unwrap(old, Context("v", "S"))
    with pytest.raises(ProviderError, match="cannot be restored"):
        key.restore("1")


def test_rewrap_many_is_concurrent_per_item_and_a_503_fails_the_batch(fake: FakeCloudKMS) -> None:
    key = open_gcp(REF, name="app", options={"retry_seconds": 0, "max_concurrency": 4}, clients=kms_client(fake))
    items = []
    for i in range(10):
        w = key.wrap(os.urandom(32), Context("v", f"S{i}"))
        items.append((f"S{i}", w.version, w.blob if i != 3 else b"garbage" * 10))
    key.rotate(now=T0, token="t1")
    out = key.rewrap_many("v", items)
    assert [type(r) for r in out] == [Wrapped] * 3 + [DecryptError] + [Wrapped] * 6
    assert {r.version for r in out if isinstance(r, Wrapped)} == {"2"}
    fake.unavailable = 1
    with pytest.raises(ProviderUnavailable):
        key.rewrap_many("v", items)


def test_a_short_retry_rides_out_one_503(fake: FakeCloudKMS) -> None:
    key = open_gcp(REF, name="app", options={"retry_seconds": 2}, clients=kms_client(fake))
    fake.unavailable = 1
    assert key.wrap(os.urandom(32), Context("v", "S")).version == "1"


def test_no_request_body_is_logged_even_at_debug(fake: FakeCloudKMS, caplog: pytest.LogCaptureFixture) -> None:
    import base64

    key = open_gcp(REF, name="app", options={"retry_seconds": 0}, clients=kms_client(fake))
    dek = os.urandom(32)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger().setLevel(logging.DEBUG)
        key.unwrap(key.wrap(dek, Context("v", "S")), Context("v", "S"))
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert base64.b64encode(dek).decode() not in text and dek.hex() not in text


def test_opening_a_gcp_key_imports_no_sdk(gws: GcpWorkspace) -> None:
    code = ("import sys; from keystead.config import load_config; from keystead.vault import Vault; "
            f"v = Vault.open(load_config({str(gws.config)!r})); assert 'app' in v.keys; "
            "print(sorted(m for m in sys.modules if m.startswith('google')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_rewrap_of_a_slot_on_a_disabled_version_is_that_item_only(fake: FakeCloudKMS) -> None:
    key = open_gcp(REF, name="app", options={"retry_seconds": 0}, clients=kms_client(fake))
    on_v1 = key.wrap(os.urandom(32), Context("v", "OLD"))
    key.rotate(now=T0, token="t1")
    on_v2 = key.wrap(os.urandom(32), Context("v", "NEW"))
    key.disable("1")
    out = key.rewrap_many("v", [("OLD", "1", on_v1.blob), ("NEW", "2", on_v2.blob)])
    assert isinstance(out[0], DecryptError) and "keystead keys restore app 1" in str(out[0])
    assert isinstance(out[1], Wrapped) and out[1].version == "2"
