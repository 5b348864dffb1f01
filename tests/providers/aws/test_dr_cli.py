"""`keystead dr status|drill|promote` and the multi-region round trip through the real CLI, against
moto server: an MRK primary in us-east-1 replicated into eu-west-1 (and ap-south-1 where a test needs
two), the CLI's own boto3 clients found through AWS_ENDPOINT_URL (``aws_env``), and the primary region
taken down in keystead.toml with ``region_endpoints`` pointing it at a port that refuses connections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keystead.audit import AuditLog
from keystead.config import load_config
from keystead.stores import open_store
from tests.providers.aws.helpers import workspace
from tests.providers.aws.moto_server import ACCOUNT, REGION, Clients
from tests.providers.aws.regions import RefusingPort
from tests.providers.aws.test_failover import DR, PROVIDERS, key_toml, mrk, set_down

FAR = "ap-south-1"


@pytest.fixture
def fast_retries(aws_env: Clients, monkeypatch: pytest.MonkeyPatch) -> Clients:
    """One attempt per call (botocore reads AWS_MAX_ATTEMPTS): a refused region costs no backoff sleeps."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    return aws_env


def slots(w, arn: str) -> dict[str, str]:
    config = load_config(w.config)
    store = open_store(config.store_url, base=config.root)
    try:
        return {e.name: e.slot(arn).version for e in store.iter_envelopes()}
    finally:
        store.close()


def dr_json(w, *args: str, code: int = 0):
    result = w.cli("dr", *args, "--json", ok=False)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return json.loads(result.stdout), result.stderr


@pytest.mark.slow  # ~14 s: a dozen CLI runs, each building its own boto3 clients per region
def test_multi_region_round_trip_catch_up_failover_and_drill(
        fast_retries: Clients, tmp_path: Path, refusing: RefusingPort) -> None:
    aws = fast_retries
    arn = mrk(aws)
    w = workspace(tmp_path, key_toml(arn), local=False, extra=PROVIDERS)
    for i in range(4):
        w.cli("secrets", "set", f"S{i}", f"value-{i}")
    assert w.cli("secrets", "get", "S2").stdout == "value-2"
    before = set(slots(w, arn).values())
    assert len(before) == 1

    # AWS rotates the key (moto records the rotation and the label changes; its material does not)
    aws.kms().rotate_key_on_demand(KeyId=arn)
    w.cli("rotate")
    after = set(slots(w, arn).values())
    assert len(after) == 1 and after != before  # every slot caught up (ReEncrypt)

    status, _ = dr_json(w, "status")
    (key,) = status
    assert key["healthy"] and key["primary"] == REGION
    assert [(r["region"], r["role"], r["state"]) for r in key["regions"]] == [
        (REGION, "primary", "Enabled"), (DR, "replica", "Enabled")]
    drill, _ = dr_json(w, "drill")
    (report,) = drill
    assert report["passed"] and [(s["source"], s["target"]) for s in report["steps"]] == [(REGION, DR), (DR, REGION)]
    assert set(report["latency_ms"]) == {REGION, DR} and all(v > 0 for v in report["latency_ms"].values())

    # the primary region goes down: reads go on through the replica, the drill and the status say what failed
    set_down(w, refusing)
    assert w.cli("secrets", "get", "S3").stdout == "value-3"
    proc = w.run("secrets", "get", "S0", env={"AWS_MAX_ATTEMPTS": "1"})  # the real console script too
    assert proc.returncode == 0 and proc.stdout == b"value-0", proc.stderr
    drill, err = dr_json(w, "drill", code=8)
    steps = {(s["source"], s["target"]): s for s in drill[0]["steps"]}
    assert not steps[(REGION, DR)]["ok"] and "EndpointConnectionError" in steps[(REGION, DR)]["error"]
    assert not steps[(DR, REGION)]["ok"] and steps[(DR, REGION)]["encrypt_ms"] is not None  # DR encrypted
    assert err.startswith("keystead: error: dr drill failed for key app: ") and err.count("\n") == 1
    status, err = dr_json(w, "status", code=8)
    assert [(r["region"], r["state"]) for r in status[0]["regions"]] == [(REGION, "unreachable"), (DR, "Enabled")]
    assert f"{REGION} cannot be reached" in err
    table = w.cli("dr", "drill", ok=False)
    assert table.exit_code == 8 and "FAIL" in table.stdout and "pass" not in table.stdout

    records = [r for r in AuditLog(load_config(w.config).audit_path).records() if r["action"] == "dr.drill"]
    assert [r["result"] for r in records] == ["ok", "RotationError", "RotationError"]
    assert records[0]["key"] == arn and records[1]["details"]["failed"] == 2
    text = load_config(w.config).audit_path.read_text()
    assert "value-" not in text


@pytest.mark.slow  # ~8 s: CLI runs over three regions
def test_status_names_a_missing_or_unusable_replica(fast_retries: Clients, tmp_path: Path) -> None:
    aws = fast_retries
    arn = mrk(aws)  # replicated into eu-west-1 only
    w = workspace(tmp_path, key_toml(arn, replicas=(DR, FAR)), local=False, extra=PROVIDERS)
    status, err = dr_json(w, "status", code=8)
    assert [(r["region"], r["state"]) for r in status[0]["regions"]] == [
        (REGION, "Enabled"), (DR, "Enabled"), (FAR, "missing")]
    assert f"no replica in DR region {FAR}" in err and err.count("\n") == 1
    drill, err = dr_json(w, "drill", code=8)
    assert [s["ok"] for s in drill[0]["steps"]] == [True, True, False, False]
    assert "NotFoundException" in drill[0]["steps"][2]["error"]

    aws.kms().replicate_key(KeyId=arn.rsplit("/", 1)[1], ReplicaRegion=FAR)  # by id: moto 500s for an ARN
    assert dr_json(w, "status")[0][0]["healthy"]
    aws.kms(DR).schedule_key_deletion(KeyId=arn.rsplit("/", 1)[1], PendingWindowInDays=7)
    status, err = dr_json(w, "status", code=8)
    assert [r["state"] for r in status[0]["regions"]] == ["Enabled", "PendingDeletion", "Enabled"]
    assert f"replica in {DR} is PendingDeletion" in err
    table = w.cli("dr", "status", ok=False)
    assert table.exit_code == 8 and "PendingDeletion" in table.stdout and FAR in table.stdout


def test_bad_input_is_one_line_with_its_exit_code(fast_retries: Clients, tmp_path: Path) -> None:
    aws = fast_retries
    arn = mrk(aws)
    single, other = (str(aws.kms().create_key()["KeyMetadata"]["Arn"]) for _ in range(2))
    keys = key_toml(arn) + f'[keys.plain]\nref = "{single}"\n[keys.fake]\nref = "{other}"\nreplica_regions = ["{DR}"]\n'
    w = workspace(tmp_path, keys, extra=PROVIDERS)
    before = w.snapshot()
    cases = [
        (("dr", "status", "--key", "nope"), 4, "no key 'nope'"),
        (("dr", "drill", "--key", "nope"), 4, "no key 'nope'"),
        (("dr", "promote", "nope", DR, "--yes"), 4, "no key 'nope'"),
        (("dr", "drill", "--key", "plain"), 2, "key plain has no replicas"),
        (("dr", "promote", "main", DR, "--yes"), 2, "key main has no replicas"),  # the local key
        (("dr", "promote", "app", FAR, "--yes"), 2, f"region {FAR} is not a replica region of key app"),
        (("dr", "promote", "app", DR), 2, "standard input is not a terminal: pass --yes"),
        (("dr", "promote", "fake", DR, "--yes"), 2, "key fake is not a multi-region key"),
        (("dr", "status", "--key", "fake"), 8, "not a multi-region key"),
    ]
    for args, code, text in cases:
        result = w.cli(*args, ok=False)
        assert result.exit_code == code, (args, result.exit_code, result.stderr)
        assert result.stderr.startswith("keystead: error: ") and text in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    promoted = w.cli("dr", "promote", "app", REGION, "--yes")  # already the primary: nothing to do
    assert "already the primary" in promoted.stderr
    assert w.snapshot() == before  # nothing changed (the audit log aside)


def test_no_multi_region_key_at_all_is_exit_4(aws_env: Clients, tmp_path: Path) -> None:
    w = workspace(tmp_path, "")
    for command in ("status", "drill"):
        result = w.cli("dr", command, ok=False)
        assert result.exit_code == 4 and "no multi-region keys" in result.stderr


def test_promote_against_moto_reaches_update_primary_region(fast_retries: Clients, tmp_path: Path) -> None:
    """moto 5.2.5 does not implement UpdatePrimaryRegion (HTTP 500): this shows the CLI gets as far as
    calling it, in the primary's region, and reports the 500 as one line (exit 6: a 5xx is the region being
    unavailable) with an audit record; what KMS is asked is in test_dr.py (botocore Stubber)."""
    arn = mrk(fast_retries)
    w = workspace(tmp_path, key_toml(arn), local=False, extra=PROVIDERS)
    result = w.cli("dr", "promote", "app", DR, "--yes", ok=False)
    assert result.exit_code == 6, result.stderr
    assert result.stderr.startswith(f"keystead: error: region {REGION}: promote with AWS KMS key {arn}")
    assert result.stderr.count("\n") == 1
    (record,) = [r for r in AuditLog(load_config(w.config).audit_path).records() if r["action"] == "dr.promote"]
    assert record["result"] == "ProviderUnavailable" and record["details"] == {"source": REGION, "target": DR}
    assert ACCOUNT in arn
