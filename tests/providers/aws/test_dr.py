"""Disaster recovery where moto cannot show it, with botocore's Stubber (real clients, one per region,
canned answers, every call and its parameters checked):

- moto 5.2.5 answers HTTP 500 for UpdatePrimaryRegion (not implemented): ``dr promote``'s call is here;
- moto never answers KMSInternalException, ThrottlingException or AccessDenied for DescribeKey: the
  failover rules and the refused checks are here. Everything moto can show is in test_failover.py and
  test_dr_cli.py, against the server.
"""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber

from keystead.config import KeyConfig
from keystead.envelope import Context
from keystead.errors import DecryptError, InputError, ProviderError, ProviderUnavailable
from keystead.providers import Wrapped
from keystead.providers.aws import AwsKey
from keystead.rotation import dr

KID = "mrk-1234abcd12ab34cd56ef1234567890ab"
PRIMARY, DR, FAR = "us-east-1", "eu-west-1", "ap-south-1"
ARN = f"arn:aws:kms:{PRIMARY}:111122223333:key/{KID}"
CTX = Context("vault", "S")
VERSION = f"{KID}:0-20260101T000000Z"


def regional_arn(region: str) -> str:
    return ARN.replace(PRIMARY, region)


def meta(region: str = PRIMARY, primary: str = PRIMARY, replicas: tuple[str, ...] = (DR,), **over) -> dict:
    regions = [primary, *replicas]
    return {"KeyId": KID, "Arn": regional_arn(region), "CreationDate": datetime(2026, 1, 1, tzinfo=UTC),
            "KeyState": "Enabled", "MultiRegion": True,
            "MultiRegionConfiguration": {
                "MultiRegionKeyType": "PRIMARY" if region == primary else "REPLICA",
                "PrimaryKey": {"Arn": regional_arn(primary), "Region": primary},
                "ReplicaKeys": [{"Arn": regional_arn(r), "Region": r} for r in regions if r != primary]},
            **over}


@pytest.fixture
def stubs():
    """One stubbed KMS client per region; the key's client factory hands out the region's."""
    out: dict[str, Stubber] = {}
    for region in (PRIMARY, DR, FAR):
        client = boto3.client("kms", region_name=region, aws_access_key_id="x", aws_secret_access_key="x")
        stub = Stubber(client)
        stub.activate()
        stub.client = client
        out[region] = stub
    yield out
    for stub in out.values():
        stub.assert_no_pending_responses()
        stub.deactivate()


def key(stubs, replicas=(DR,)) -> AwsKey:
    return AwsKey(ARN, options={"replica_regions": list(replicas)},
                  clients=lambda service, opts: stubs[str(opts["region"])].client)


KC = KeyConfig("app", ARN, options={"replica_regions": [DR]})


@pytest.mark.parametrize(("code", "status", "fails_over"), [
    ("KMSInternalException", 500, True),
    ("ServiceUnavailable", 503, True),
    ("DependencyTimeoutException", 503, True),
    ("ThrottlingException", 400, False),  # throttling is not an outage
    ("AccessDeniedException", 400, False),  # final
    ("InvalidCiphertextException", 400, False),  # final
])
def test_which_errors_fail_over(stubs, code: str, status: int, fails_over: bool) -> None:
    # moto never answers these: which primary-region answers send unwrap to the replica
    k = key(stubs)
    stubs[PRIMARY].add_client_error("decrypt", service_error_code=code, http_status_code=status)
    if fails_over:
        stubs[DR].add_response("decrypt", {"Plaintext": b"k" * 32, "KeyId": regional_arn(DR)})
        assert k.unwrap(Wrapped(VERSION, b"blob"), CTX) == b"k" * 32
    else:
        with pytest.raises(ProviderError) as exc:
            k.unwrap(Wrapped(VERSION, b"blob"), CTX)
        assert isinstance(exc.value, DecryptError) or exc.value.code == code


def test_a_replica_that_refuses_for_good_is_final_a_missing_one_is_skipped(stubs) -> None:
    k = key(stubs, replicas=(FAR, DR))
    stubs[PRIMARY].add_client_error("decrypt", service_error_code="KMSInternalException", http_status_code=500)
    stubs[FAR].add_client_error("decrypt", service_error_code="NotFoundException", http_status_code=400)
    stubs[DR].add_response("decrypt", {"Plaintext": b"k" * 32, "KeyId": regional_arn(DR)})
    assert k.unwrap(Wrapped(VERSION, b"blob"), CTX) == b"k" * 32  # ap-south-1 has no replica: eu-west-1 served
    assert k.failover_order() == [DR, PRIMARY, FAR]  # the regions that failed are asked last for a while
    k._down = {region: 0.0 for region in k._down}  # ... until REGION_DOWN_SECONDS have passed
    assert k.failover_order() == [PRIMARY, FAR, DR]

    k2 = key(stubs, replicas=(DR,))
    stubs[PRIMARY].add_client_error("decrypt", service_error_code="KMSInternalException", http_status_code=500)
    stubs[DR].add_client_error("decrypt", service_error_code="AccessDeniedException", http_status_code=400)
    with pytest.raises(ProviderError) as exc:  # the replica's key policy lacks this role: say so, stop
        k2.unwrap(Wrapped(VERSION, b"blob"), CTX)
    assert exc.value.code == "AccessDeniedException" and not isinstance(exc.value, ProviderUnavailable)


def test_promote_calls_update_primary_region_in_the_current_primary_region(stubs) -> None:
    # moto answers HTTP 500 for UpdatePrimaryRegion: the call KMS gets is checked here
    k = key(stubs)
    stubs[PRIMARY].add_response("describe_key", {"KeyMetadata": meta()}, {"KeyId": KID})
    layout = dr.promotion(KC, k, DR)
    assert layout is not None and layout.primary == PRIMARY
    stubs[PRIMARY].add_response("update_primary_region", {}, {"KeyId": KID, "PrimaryRegion": DR})
    dr.promote(k, layout, DR)


def test_promote_refuses_a_region_without_a_replica_and_a_single_region_key(stubs) -> None:
    # moto cannot run promote at all (HTTP 500); the checks before the call, on KMS's own answers
    k = key(stubs)
    stubs[PRIMARY].add_response("describe_key", {"KeyMetadata": meta()}, {"KeyId": KID})
    with pytest.raises(InputError, match=f"region {FAR} is not a replica region of key app"):
        dr.promotion(KC, k, FAR)
    stubs[PRIMARY].add_response("describe_key", {"KeyMetadata": meta()}, {"KeyId": KID})
    assert dr.promotion(KC, k, PRIMARY) is None  # already the primary: nothing to call
    stubs[PRIMARY].add_response("describe_key", {"KeyMetadata": meta(MultiRegion=False)}, {"KeyId": KID})
    with pytest.raises(InputError, match="not a multi-region key"):
        dr.promotion(KC, k, DR)


def test_access_denied_is_a_refused_check_not_a_verdict(stubs) -> None:
    # moto enforces no key policy: AccessDenied for DescribeKey, UpdatePrimaryRegion and Encrypt comes from here
    k = key(stubs)
    stubs[PRIMARY].add_client_error("describe_key", service_error_code="AccessDeniedException",
                                    http_status_code=400)
    status = dr.check(KC, k)
    assert status.error is not None and "AccessDeniedException" in status.error and not status.healthy
    assert "kms:DescribeKey" in status.error  # what to grant

    stubs[PRIMARY].add_response("describe_key", {"KeyMetadata": meta()}, {"KeyId": KID})
    layout = dr.promotion(KC, k, DR)
    assert layout is not None
    stubs[PRIMARY].add_client_error("update_primary_region", service_error_code="AccessDeniedException",
                                    http_status_code=400)
    with pytest.raises(ProviderError) as exc:
        dr.promote(k, layout, DR)
    assert exc.value.exit_code == 6 and "kms:UpdatePrimaryRegion" in str(exc.value)

    # a replica whose key policy does not let this role decrypt: the drill fails that step, with the reason
    stubs[PRIMARY].add_response("describe_key", {"KeyMetadata": meta()}, {"KeyId": KID})
    stubs[PRIMARY].add_response("encrypt", {"CiphertextBlob": b"c", "KeyId": ARN})
    stubs[DR].add_client_error("decrypt", service_error_code="AccessDeniedException", http_status_code=400)
    stubs[DR].add_client_error("encrypt", service_error_code="AccessDeniedException", http_status_code=400)
    report = dr.drill(KC, k, vault="vault", rng=lambda n: b"c" * n)
    assert not report.passed
    assert [(s.source, s.target, s.ok) for s in report.steps] == [(PRIMARY, DR, False), (DR, PRIMARY, False)]
    assert all("AccessDeniedException" in (s.error or "") for s in report.steps)


def test_dr_keys_finds_the_aws_key_behind_a_wrapper(stubs) -> None:
    # no KMS call: which keys `dr` takes, through a wrapper that keeps its key as .key (rate limit, metrics)
    from pathlib import Path

    from keystead.config import Config

    class Wrapper:
        def __init__(self, key: AwsKey) -> None:
            self.key, self.ref, self.provider = key, key.ref, key.provider

    inner = key(stubs)
    plain = KeyConfig("plain", "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    config = Config(path=Path("keystead.toml"), root=Path("."), vault_name="v", store_url="", state_url="",
                    audit_path=Path("audit.log"), key_file=Path("k"), age_identity_file=None,
                    keys={"app": KC, "plain": plain}, slot_keys=(KC,), profile=None, profiles=())
    assert dr.dr_keys(config, {"app": Wrapper(inner), "plain": Wrapper(inner)}, {}) == [(KC, inner)]
    with pytest.raises(InputError, match="key plain has no replicas"):
        dr.dr_keys(config, {}, {}, "plain")
