"""The rotation engine over AWS keys in moto server mode: catch-up after an AWS rotation (every
slot rewrapped with ReEncrypt), successor rotation with a crash between its calls, two-phase
retirement and restore (exclusive keys only), a shared key never retired, a throttled endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keystead.config import load_config
from keystead.rotation.engine import Engine, Outcome
from keystead.rotation.state import StateDB
from keystead.stores import open_store
from keystead.vault import Vault
from tests.providers.aws.helpers import aws_key_toml, make_key, workspace
from tests.providers.aws.moto_server import ACCOUNT, REGION, CallCounter, Clients, Throttle

PROVIDERS = f'[providers.aws]\nregion = "{REGION}"\naccount = "{ACCOUNT}"\n'
NOW = datetime.now(UTC)  # moto stamps CreationDate with the real clock
DUE = NOW + timedelta(days=120)


def sweep(w, clients, now=NOW, *, force=False, only="app"):
    with Vault.open(load_config(w.config), clients=clients) as vault:
        state = StateDB.open(vault.config.state_url)
        engine = Engine(vault, state, now=now)
        try:
            return engine.run_key(only, force=force)
        finally:
            engine.close()
            state.close()


def slots(w, ref_name="app"):
    config = load_config(w.config)
    ref = config.keys[ref_name].ref
    store = open_store(config.store_url, base=config.root)
    try:
        return {e.name: e.slot(ref) for e in store.iter_envelopes()}
    finally:
        store.close()


def primary(clients, w, name="app") -> str:
    with Vault.open(load_config(w.config), clients=clients) as vault:
        return vault.keys[name].describe().primary


def seal(w, n: int) -> None:
    for i in range(n):
        w.cli("secrets", "set", f"S{i:03d}", f"value-{i}")


def test_worker_catches_up_after_an_aws_rotation_with_reencrypt(aws_env: Clients, tmp_path: Path) -> None:
    kms = aws_env.kms()
    meta = make_key(kms, alias="app")
    w = workspace(tmp_path, aws_key_toml("app", "alias/app"), local=False, extra=PROVIDERS)
    seal(w, 6)
    before = primary(aws_env, w)
    assert {s.version for s in slots(w).values()} == {before}
    assert sweep(w, aws_env).outcome is Outcome.IDLE  # scheduled: never due, nothing behind

    # AWS rotates the key on its schedule (moto records the rotation; see test_stubbed for material ids)
    kms.rotate_key_on_demand(KeyId=meta["KeyId"])
    after = primary(aws_env, w)
    assert after != before and after.startswith(meta["KeyId"] + ":1-")

    calls = CallCounter()
    counting = Clients(aws_env.url, hooks={"before-call.kms": calls})
    result = sweep(w, counting)
    assert (result.outcome, result.state) == (Outcome.WAITING, "verified"), result.message  # then the grace
    assert result.rewrapped == 6
    assert calls.counts.get("ReEncrypt") == 6 and "Encrypt" not in calls.counts  # the data key never left KMS
    assert {s.version for s in slots(w).values()} == {after}
    assert w.cli("secrets", "get", "S003").stdout == "value-3"
    # a shared (not exclusive) scheduled key: nothing disabled, ever
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def _successor_workspace(aws_env: Clients, tmp_path: Path, *, exclusive: bool):
    kms = aws_env.kms()
    # A key in a custom key store (moto accepts the unknown store id): rotation kind successor.
    old = make_key(kms, alias="app", Origin="AWS_CLOUDHSM", CustomKeyStoreId="cks-0123456789abcdef0",
                   Tags=[{"TagKey": "team", "TagValue": "payments"}])
    w = workspace(tmp_path, aws_key_toml("app", "alias/app", exclusive=exclusive), local=False,
                  extra=PROVIDERS + "[rotation]\ngrace_days = 7\n")
    w.config.write_text(w.config.read_text().replace("[rotation]\ninterval_minutes = 60\ngrace_days = 7\n", ""))
    seal(w, 4)
    return kms, old, w


def _keys(kms) -> list[str]:
    return [k["KeyId"] for k in kms.list_keys()["Keys"]]


def test_successor_rotation_crash_between_create_key_and_update_alias_adopts(
        aws_env: Clients, tmp_path: Path) -> None:
    kms, old, w = _successor_workspace(aws_env, tmp_path, exclusive=True)
    old_version = primary(aws_env, w)

    def crash(**_):
        raise RuntimeError("worker killed between CreateKey and UpdateAlias")

    crashing = Clients(aws_env.url, hooks={"before-call.kms.UpdateAlias": crash})
    first = sweep(w, crashing, DUE)
    assert first.outcome is Outcome.FAILED and first.state == "planned"
    assert len(_keys(kms)) == 2  # the successor exists, the alias still names the old key
    assert kms.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"] == old["KeyId"]

    result = sweep(w, aws_env, DUE)  # the resume adopts the key tagged with the rotation's token
    assert len(_keys(kms)) == 2, "a second successor key was created"
    new = kms.describe_key(KeyId="alias/app")["KeyMetadata"]
    assert new["KeyId"] != old["KeyId"] and new["Origin"] == "AWS_CLOUDHSM"
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=new["KeyId"])["Tags"]}
    assert tags["keystead:key"] == "app" and tags["keystead:rotation"].startswith("keystead-rotation-")
    assert tags["keystead:predecessor"] == old["KeyId"] and tags["team"] == "payments"
    assert result.outcome is Outcome.WAITING, result.message  # verified; the old key waits out the grace
    assert {s.version.split(":")[0] for s in slots(w).values()} == {new["KeyId"]}
    assert w.cli("secrets", "get", "S001").stdout == "value-1"

    # retirement, two phases: DisableKey after the grace, ScheduleKeyDeletion (30 days) a grace later
    assert sweep(w, aws_env, DUE + timedelta(days=8)).outcome is Outcome.DONE
    assert kms.describe_key(KeyId=old["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    sweep(w, aws_env, DUE + timedelta(days=16))
    gone = kms.describe_key(KeyId=old["KeyId"])["KeyMetadata"]
    assert gone["KeyState"] == "PendingDeletion"

    # keystead keys restore undoes it within the window: CancelKeyDeletion + EnableKey
    out = w.cli("keys", "restore", "app", old_version)
    assert "restored" in out.stderr
    assert kms.describe_key(KeyId=old["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_a_shared_successor_key_is_never_retired(aws_env: Clients, tmp_path: Path) -> None:
    kms, old, w = _successor_workspace(aws_env, tmp_path, exclusive=False)
    assert sweep(w, aws_env, DUE).outcome is Outcome.WAITING
    for days in (8, 16, 40):
        sweep(w, aws_env, DUE + timedelta(days=days))
    assert kms.describe_key(KeyId=old["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
    assert "rotation.retire_skipped" in (w.root / ".keystead" / "audit.log").read_text()


@pytest.mark.parametrize("share", [0.4, 1.0])
def test_a_throttled_endpoint_pauses_or_completes_and_never_marks_slots_unreadable(
        aws_env: Clients, tmp_path: Path, share: float) -> None:
    kms = aws_env.kms()
    meta = make_key(kms, alias="app")
    w = workspace(tmp_path, aws_key_toml("app", "alias/app"), local=False, extra=PROVIDERS)
    seal(w, 12)
    kms.rotate_key_on_demand(KeyId=meta["KeyId"])
    target = primary(aws_env, w)
    throttle = Throttle(share)
    # botocore's standard retries here: its adaptive mode (the provider's default) also rate-limits
    # the client after throttles, down to 0.5 requests/s, which makes this test take minutes.
    throttled = Clients(aws_env.url, hooks={"before-send.kms.ReEncrypt": throttle}, retries="standard")
    outcomes = []
    for _ in range(8 if share < 1 else 2):
        result = sweep(w, throttled)
        outcomes.append(result.outcome)
        assert result.outcome in (Outcome.PAUSED, Outcome.WAITING), result.message  # WAITING: verified
        assert result.unreadable == []
        if result.outcome is Outcome.WAITING:
            break
    assert throttle.throttled > 0
    versions = {s.version for s in slots(w).values()}
    if share == 1.0:  # retries exhausted on every call: paused, nothing changed, nothing marked
        assert set(outcomes) == {Outcome.PAUSED} and target not in versions
        assert "ThrottlingException" in result.message
    else:
        assert outcomes[-1] is Outcome.WAITING and versions == {target}
