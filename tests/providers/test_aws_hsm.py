"""`keystead hsm connect | status | copy-backup` (keystead/cli/hsm.py, keystead/providers/aws_hsm.py).

These run against botocore's Stubber, not the moto server the other AWS tests
use: moto 5.2.5 answers HTTP 500 (NotImplementedError) for
CreateCustomKeyStore, ConnectCustomKeyStore and DescribeCustomKeyStores, and
implements neither CreateHsm nor InitializeCluster (docs/shared reference,
cloud-libraries.md §3), so it cannot show a key store connecting or failing.
The Stubber checks every request's exact parameters against botocore's real
service model and answers with responses botocore validates too. The CLI
takes its clients from ``keystead.cli.hsm.client_factory``, which the tests
point at the stubbed clients.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner

from keystead.cli import cli
from keystead.cli import hsm as hsm_cli
from keystead.errors import EXIT_CODES, ProviderError, ProviderUnavailable
from keystead.providers import aws_hsm

REGION = "us-east-1"
STORE = "cks-1234567890abcdef0"
CLUSTER = "cluster-abcdefghijk"
CLOUDHSM_CODES = ["INVALID_CREDENTIALS", "CLUSTER_NOT_FOUND", "NETWORK_ERRORS", "INTERNAL_ERROR",
                  "INSUFFICIENT_CLOUDHSM_HSMS", "USER_LOCKED_OUT", "USER_NOT_FOUND", "USER_LOGGED_IN",
                  "SUBNET_NOT_FOUND", "INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET"]


def _client(service: str):
    return boto3.client(service, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def stubs(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Stubbed kms and cloudhsmv2 clients, handed to the CLI; run from a folder without keystead.toml."""
    monkeypatch.chdir(tmp_path)
    clients = {"kms": _client("kms"), "cloudhsmv2": _client("cloudhsmv2")}
    stubbers = {name: Stubber(c) for name, c in clients.items()}
    asked: list[tuple[str, dict]] = []

    def factory(service, options):
        asked.append((service, dict(options)))
        return clients[service]

    monkeypatch.setattr(hsm_cli, "client_factory", factory)
    for s in stubbers.values():
        s.activate()
    yield stubbers["kms"], stubbers["cloudhsmv2"], asked
    for s in stubbers.values():
        s.assert_no_pending_responses()
        s.deactivate()


def store(state: str, code: str | None = None, **extra) -> dict:
    entry = {"CustomKeyStoreId": STORE, "CustomKeyStoreName": "keystead-hsm", "CloudHsmClusterId": CLUSTER,
             "ConnectionState": state, "CustomKeyStoreType": "AWS_CLOUDHSM",
             "CreationDate": datetime(2026, 11, 1, tzinfo=UTC), **extra}
    if code:
        entry["ConnectionErrorCode"] = code
    return entry


def expect_describe(kms: Stubber, *states: tuple[str, str | None]) -> None:
    for state, code in states:
        kms.add_response("describe_custom_key_stores", {"CustomKeyStores": [store(state, code)]},
                         {"CustomKeyStoreId": STORE})


def expect_connect(kms: Stubber) -> None:
    kms.add_response("connect_custom_key_store", {}, {"CustomKeyStoreId": STORE})


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# -- connect ---------------------------------------------------------------------------------

def test_connect_polls_until_connected(stubs) -> None:
    kms, _hsm, asked = stubs
    expect_describe(kms, ("DISCONNECTED", None))
    expect_connect(kms)
    expect_describe(kms, ("CONNECTING", None), ("CONNECTING", None), ("CONNECTED", None))
    result = run("hsm", "connect", STORE, "--region", REGION, "--interval", "0")
    assert result.exit_code == 0, result.stderr
    assert f"custom key store {STORE} is CONNECTED" in result.stderr
    assert asked == [("kms", {"region": REGION})]


@pytest.mark.parametrize("code", CLOUDHSM_CODES)
def test_each_failure_code_is_explained_with_exit_6(stubs, code: str) -> None:
    kms, _hsm, _asked = stubs
    expect_describe(kms, ("DISCONNECTED", None))
    expect_connect(kms)
    expect_describe(kms, ("CONNECTING", None), ("FAILED", code))
    result = run("hsm", "connect", STORE, "--region", REGION, "--interval", "0")
    assert result.exit_code == EXIT_CODES["ProviderError"] == 6
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("keystead: error: ")
    assert code in result.stderr and aws_hsm.CONNECTION_ERRORS[code] in result.stderr


def test_every_documented_code_has_words() -> None:
    """Each ConnectionErrorCode in botocore's KMS model is explained (none falls to the generic line)."""
    model = _client("kms").meta.service_model.shape_for("CustomKeyStoresListEntry")
    assert set(model.members["ConnectionErrorCode"].enum) == set(aws_hsm.CONNECTION_ERRORS)
    assert set(CLOUDHSM_CODES) <= set(aws_hsm.CONNECTION_ERRORS)
    assert len(set(aws_hsm.CONNECTION_ERRORS.values())) == len(aws_hsm.CONNECTION_ERRORS)


def test_a_failed_store_is_disconnected_first(stubs) -> None:
    kms, _hsm, _asked = stubs
    expect_describe(kms, ("FAILED", "USER_LOGGED_IN"))
    kms.add_response("disconnect_custom_key_store", {}, {"CustomKeyStoreId": STORE})
    expect_describe(kms, ("DISCONNECTING", None), ("DISCONNECTED", None))
    expect_connect(kms)
    expect_describe(kms, ("CONNECTED", None))
    result = run("hsm", "connect", STORE, "--region", REGION, "--interval", "0")
    assert result.exit_code == 0, result.stderr
    assert "had FAILED (USER_LOGGED_IN); disconnected it" in result.stderr


def test_a_connected_store_is_left_alone(stubs) -> None:
    kms, _hsm, _asked = stubs
    expect_describe(kms, ("CONNECTED", None))  # no ConnectCustomKeyStore: the Stubber would refuse it
    result = run("hsm", "connect", STORE, "--region", REGION)
    assert result.exit_code == 0 and "connected already" in result.stderr


def test_wait_zero_returns_while_connecting(stubs) -> None:
    kms, _hsm, _asked = stubs
    expect_describe(kms, ("DISCONNECTED", None))
    expect_connect(kms)
    result = run("hsm", "connect", STORE, "--region", REGION, "--wait", "0")
    assert result.exit_code == 0 and "is CONNECTING" in result.stderr


def test_a_connection_that_outlasts_the_wait() -> None:
    """Time is injected: the wait ends after three polls, with the store still CONNECTING."""
    kms = _client("kms")
    with Stubber(kms) as stub:
        expect_describe(stub, ("DISCONNECTED", None))
        expect_connect(stub)
        expect_describe(stub, ("CONNECTING", None), ("CONNECTING", None), ("CONNECTING", None))
        now = [0.0]

        def sleep(seconds: float) -> None:
            now[0] += seconds

        with pytest.raises(ProviderUnavailable, match="still CONNECTING after 30 s") as caught:
            aws_hsm.connect(kms, STORE, region=REGION, wait=30, interval=10, sleep=sleep, clock=lambda: now[0])
        assert caught.value.exit_code == 6
        stub.assert_no_pending_responses()


@pytest.mark.parametrize(("error", "exit_code", "words"), [
    ("CloudHsmClusterNotActiveException", 6, "initialize and activate it"),
    ("CloudHsmClusterInvalidConfigurationException", 6, "two Availability Zones"),
    ("AccessDeniedException", 6, "may not call kms:ConnectCustomKeyStore"),
    ("KMSInternalException", 6, "try again later"),
])
def test_connect_refusals(stubs, error: str, exit_code: int, words: str) -> None:
    kms, _hsm, _asked = stubs
    expect_describe(kms, ("DISCONNECTED", None))
    kms.add_client_error("connect_custom_key_store", service_error_code=error, service_message="refused",
                         expected_params={"CustomKeyStoreId": STORE})
    result = run("hsm", "connect", STORE, "--region", REGION)
    assert result.exit_code == exit_code and words in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_an_unknown_store_is_not_found(stubs) -> None:
    kms, _hsm, _asked = stubs
    kms.add_client_error("describe_custom_key_stores", service_error_code="CustomKeyStoreNotFoundException",
                         service_message="no", expected_params={"CustomKeyStoreId": STORE})
    result = run("hsm", "connect", STORE, "--region", REGION)
    assert result.exit_code == EXIT_CODES["NotFoundError"] and "keystead hsm status" in result.stderr


def test_connect_uses_the_configs_aws_settings(stubs, tmp_path) -> None:
    """keystead.toml's [providers.aws] region/profile/endpoint reach the client; --region wins over region."""
    kms, _hsm, asked = stubs
    (tmp_path / "keystead.toml").write_text('[vault]\nname = "v"\n[providers.aws]\nregion = "eu-west-1"\n'
                                            'endpoint = "https://kms.example"\n')
    expect_describe(kms, ("CONNECTED", None))
    assert run("hsm", "connect", STORE).exit_code == 0
    expect_describe(kms, ("CONNECTED", None))
    assert run("hsm", "connect", STORE, "--region", "us-west-2").exit_code == 0
    assert asked == [("kms", {"region": "eu-west-1", "endpoint": "https://kms.example"}),
                     ("kms", {"region": "us-west-2", "endpoint": "https://kms.example"})]


# -- status ----------------------------------------------------------------------------------

def _hsm(zone: str, state: str = "ACTIVE") -> dict:
    return {"HsmId": f"hsm-{zone[-2:]}abcdefg", "AvailabilityZone": zone, "ClusterId": CLUSTER, "State": state,
            "SubnetId": f"subnet-{zone[-1]}"}


def test_status_json(stubs) -> None:
    kms, hsm, asked = stubs
    other = store("FAILED", "USER_LOCKED_OUT", CustomKeyStoreId="cks-0000000000000000f",
                  CloudHsmClusterId="cluster-zzzzzzzzzzz", CustomKeyStoreName="dr")
    kms.add_response("describe_custom_key_stores", {"CustomKeyStores": [store("CONNECTED")], "Truncated": True,
                                                    "NextMarker": "m1"}, {})
    kms.add_response("describe_custom_key_stores", {"CustomKeyStores": [other], "Truncated": False},
                     {"Marker": "m1"})
    hsm.add_response("describe_clusters", {"Clusters": [
        {"ClusterId": CLUSTER, "State": "ACTIVE",
         "Hsms": [_hsm("us-east-1a"), _hsm("us-east-1b", "CREATE_IN_PROGRESS")]},
    ]}, {"Filters": {"clusterIds": [CLUSTER, "cluster-zzzzzzzzzzz"]}})
    result = run("hsm", "status", "--json", "--region", REGION)
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows[0] == {"custom_key_store_id": STORE, "name": "keystead-hsm", "type": "AWS_CLOUDHSM",
                       "connection_state": "CONNECTED", "connection_error_code": None, "cluster_id": CLUSTER,
                       "cluster_state": "ACTIVE", "hsm_count": 2, "hsms_active": 1,
                       "availability_zones": ["us-east-1a", "us-east-1b"]}
    assert rows[1]["connection_error_code"] == "USER_LOCKED_OUT" and rows[1]["hsm_count"] is None
    assert [s for s, _ in asked] == ["kms", "cloudhsmv2"]


def test_status_table_explains_failures(stubs) -> None:
    kms, hsm, _asked = stubs
    kms.add_response("describe_custom_key_stores", {"CustomKeyStores": [store("FAILED", "NETWORK_ERRORS")]}, {})
    hsm.add_response("describe_clusters", {"Clusters": [{"ClusterId": CLUSTER, "State": "ACTIVE", "Hsms": [
        _hsm("us-east-1a"), _hsm("us-east-1b")]}]}, {"Filters": {"clusterIds": [CLUSTER]}})
    result = run("hsm", "status", "--region", REGION)
    assert result.exit_code == 0
    assert "FAILED (NETWORK_ERRORS)" in result.stdout and "2 active / 2" in result.stdout
    assert aws_hsm.CONNECTION_ERRORS["NETWORK_ERRORS"] in result.stderr


# -- copy-backup -----------------------------------------------------------------------------

def _backup(backup_id: str, day: int, state: str = "READY") -> dict:
    return {"BackupId": backup_id, "BackupState": state, "ClusterId": CLUSTER,
            "CreateTimestamp": datetime(2026, 11, day, 3, 0, tzinfo=UTC)}


def test_copy_backup_copies_the_newest_ready_one(stubs) -> None:
    _kms, hsm, _asked = stubs
    hsm.add_response("describe_clusters", {"Clusters": [{"ClusterId": CLUSTER, "State": "ACTIVE"}]}, {})
    filters = {"Filters": {"clusterIds": [CLUSTER], "states": ["READY"]}}
    first = [_backup("backup-aaaaaaaaaaa", 3), _backup("backup-ccccccccccc", 28)]
    hsm.add_response("describe_backups", {"Backups": first, "NextToken": "t"}, filters)
    hsm.add_response("describe_backups", {"Backups": [_backup("backup-bbbbbbbbbbb", 27),
                                                      _backup("backup-ddddddddddd", 29, "CREATE_IN_PROGRESS")]},
                     {**filters, "NextToken": "t"})
    hsm.add_response("copy_backup_to_region", {"DestinationBackup": {"SourceRegion": REGION,
                                                                     "SourceBackup": "backup-ccccccccccc",
                                                                     "SourceCluster": CLUSTER}},
                     {"DestinationRegion": "us-west-2", "BackupId": "backup-ccccccccccc"})
    result = run("hsm", "copy-backup", "--to", "us-west-2", "--region", REGION)
    assert result.exit_code == 0, result.stderr
    assert "backup-ccccccccccc" in result.stderr and "2026-11-28 03:00" in result.stderr


def test_copy_backup_needs_a_cluster_when_the_region_has_several(stubs) -> None:
    _kms, hsm, _asked = stubs
    hsm.add_response("describe_clusters", {"Clusters": [{"ClusterId": CLUSTER}, {"ClusterId": "cluster-two"}]}, {})
    result = run("hsm", "copy-backup", "--to", "us-west-2", "--region", REGION)
    assert result.exit_code == EXIT_CODES["InputError"] and "pass --cluster" in result.stderr


def test_copy_backup_refusals(stubs) -> None:
    _kms, hsm, _asked = stubs
    same = run("hsm", "copy-backup", "--to", REGION, "--region", REGION, "--cluster", CLUSTER)
    assert same.exit_code == EXIT_CODES["InputError"] and "own region" in same.stderr
    hsm.add_response("describe_backups", {"Backups": []},
                     {"Filters": {"clusterIds": [CLUSTER], "states": ["READY"]}})
    none = run("hsm", "copy-backup", "--to", "us-west-2", "--region", REGION, "--cluster", CLUSTER)
    assert none.exit_code == EXIT_CODES["NotFoundError"] and "no READY backup" in none.stderr


def test_errors_are_provider_errors() -> None:
    import botocore.exceptions as be

    err = be.ClientError({"Error": {"Code": "CloudHsmAccessDeniedException", "Message": "no"}}, "CopyBackupToRegion")
    translated = aws_hsm.translate(err, "cloudhsm:CopyBackupToRegion", REGION)
    assert isinstance(translated, ProviderError) and translated.code == "CloudHsmAccessDeniedException"
    assert "may not call cloudhsm:CopyBackupToRegion" in str(translated)
