"""What moto cannot show, with botocore's Stubber (the real client, canned answers, every call checked).

moto 5.2.5 returns no KeyMaterialId, ignores RotationPeriodInDays, keeps the material on
RotateKeyOnDemand, lets disabled keys encrypt, and has no custom key stores: each test below
says which of these it stands in for.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import ANY, Stubber

from keystead.envelope import Context
from keystead.errors import DecryptError, ProviderError, ProviderUnavailable
from keystead.providers import RotationKind, VersionState, Wrapped
from keystead.providers.aws import AwsKey

KID = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:us-east-1:111122223333:key/{KID}"
M1, M2 = "a" * 64, "b" * 64
T = datetime(2026, 1, 1, tzinfo=UTC)
CTX = Context("vault", "S")
LISTED = {"KeyId": KID, "IncludeKeyMaterial": "ALL_KEY_MATERIAL"}


def _meta(**over):
    return {"KeyId": KID, "Arn": ARN, "CreationDate": T, "KeyState": "Enabled", "KeyUsage": "ENCRYPT_DECRYPT",
            "KeySpec": "SYMMETRIC_DEFAULT", "Origin": "AWS_KMS", "CurrentKeyMaterialId": M2, **over}


@pytest.fixture
def stub():
    client = boto3.client("kms", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as s:
        s.client = client
        yield s
        s.assert_no_pending_responses()


def _key(stub, ref=ARN, **kw) -> AwsKey:
    return AwsKey(ref, clients=lambda service, opts: stub.client, **kw)


def _describe(stub, meta, rotations, status):
    stub.add_response("describe_key", {"KeyMetadata": meta}, {"KeyId": ANY})
    stub.add_response("list_key_rotations", {"Rotations": rotations, "Truncated": False},
                      {"KeyId": KID, "IncludeKeyMaterial": "ALL_KEY_MATERIAL"})
    stub.add_response("get_key_rotation_status", status, {"KeyId": KID})


def test_labels_carry_the_key_material_id_and_old_material_is_superseded(stub) -> None:
    # moto returns no KeyMaterialId: here KMS names every material, as AWS does now.
    rotations = [{"KeyId": KID, "KeyMaterialId": M1, "KeyMaterialState": "NON_CURRENT"},
                 {"KeyId": KID, "KeyMaterialId": M2, "KeyMaterialState": "CURRENT", "RotationDate": T,
                  "RotationType": "AUTOMATIC"}]
    _describe(stub, _meta(), rotations, {"KeyRotationEnabled": True, "RotationPeriodInDays": 90})
    info = _key(stub).describe()
    assert info.rotation is RotationKind.SCHEDULED and info.primary == f"{KID}:{M2}"
    assert info.version(f"{KID}:{M1}").state is VersionState.SUPERSEDED and info.pending is None


def test_rewrap_labels_with_the_destination_material(stub) -> None:
    key = _key(stub)
    stub.add_response("describe_key", {"KeyMetadata": _meta()}, {"KeyId": KID})
    stub.add_response("re_encrypt", {"CiphertextBlob": b"new", "KeyId": ARN, "SourceKeyId": ARN,
                                     "DestinationKeyMaterialId": M2, "SourceKeyMaterialId": M1},
                      {"CiphertextBlob": b"old", "SourceKeyId": KID, "DestinationKeyId": ARN,
                       "SourceEncryptionContext": CTX.kms_context, "DestinationEncryptionContext": CTX.kms_context})
    (out,) = key.rewrap_many("vault", [("S", f"{KID}:{M1}", b"old")])
    assert out.version == f"{KID}:{M2}" and out.blob == b"new"


@pytest.mark.parametrize(("period", "want"), [(30, 90), (365, 365), (9999, 2560)])
def test_a_managed_key_gets_automatic_rotation_with_its_period_clamped(stub, period, want) -> None:
    # moto ignores RotationPeriodInDays: here KMS reports it (and rotation off at first).
    _describe(stub, _meta(), [], {"KeyRotationEnabled": False})
    stub.add_response("enable_key_rotation", {}, {"KeyId": KID, "RotationPeriodInDays": want})
    _key(stub, exclusive=True, period_days=period).describe()


def test_a_shared_key_keeps_its_owners_schedule(stub) -> None:
    _describe(stub, _meta(), [], {"KeyRotationEnabled": True, "RotationPeriodInDays": 365})
    _key(stub, exclusive=False, period_days=90).describe()  # no EnableKeyRotation (the stub would fail)


def test_on_demand_rotation_is_pending_until_kms_finishes_and_refused_at_the_limit(stub) -> None:
    # moto keeps the material and never reports a rotation in progress: here KMS does.
    key = _key(stub, options={"on_demand_limit": 2})
    on_demand = {"KeyId": KID, "KeyMaterialId": M1, "RotationType": "ON_DEMAND", "RotationDate": T,
                 "KeyMaterialState": "CURRENT"}
    _describe(stub, _meta(CurrentKeyMaterialId=M1), [on_demand], {"KeyRotationEnabled": True})  # Key.rotate's check
    stub.add_response("describe_key", {"KeyMetadata": _meta(CurrentKeyMaterialId=M1)}, {"KeyId": ARN})
    stub.add_response("list_resource_tags", {"Tags": [], "Truncated": False}, {"KeyId": KID})
    stub.add_response("list_key_rotations", {"Rotations": [on_demand], "Truncated": False}, LISTED)
    stub.add_response("tag_resource", {}, {"KeyId": KID, "Tags": ANY})
    stub.add_response("rotate_key_on_demand", {"KeyId": KID}, {"KeyId": KID})
    _describe(stub, _meta(CurrentKeyMaterialId=M1), [on_demand],
              {"KeyRotationEnabled": True, "OnDemandRotationStartDate": T})
    info = key.rotate(now=T, token="t1")
    assert info.pending is not None and info.primary == f"{KID}:{M1}"  # the engine waits

    used = [dict(on_demand, KeyMaterialId=m) for m in (M1, M2)]
    _describe(stub, _meta(), used, {"KeyRotationEnabled": True})
    stub.add_response("describe_key", {"KeyMetadata": _meta()}, {"KeyId": ARN})
    stub.add_response("list_resource_tags", {"Tags": [], "Truncated": False}, {"KeyId": KID})
    stub.add_response("list_key_rotations", {"Rotations": used, "Truncated": False}, LISTED)
    with pytest.raises(ProviderError, match="2 of the 2 on-demand rotations") as refused:
        key.rotate(now=T, token="t2")
    assert "\n" not in str(refused.value) and ARN in str(refused.value)


@pytest.mark.parametrize(("code", "family", "words"), [
    ("DisabledException", ProviderError, "disabled"),  # moto lets a disabled key encrypt
    ("KMSInvalidStateException", ProviderError, "pending deletion"),  # ... and a pending-deletion one
    ("AccessDeniedException", ProviderError, "kms:Encrypt"),
    ("ExpiredTokenException", ProviderError, "expired"),
    ("ThrottlingException", ProviderUnavailable, "retries"),
    ("CustomKeyStoreInvalidStateException", ProviderUnavailable, "unavailable"),  # a disconnected key store
])
def test_refusals_are_one_line_errors_naming_the_key(stub, code, family, words) -> None:
    key = _key(stub)
    stub.add_response("describe_key", {"KeyMetadata": _meta()}, {"KeyId": KID})
    stub.add_client_error("encrypt", service_error_code=code, http_status_code=400)
    with pytest.raises(family) as info:
        key.wrap(os.urandom(32), CTX)
    assert type(info.value) is family and info.value.code == code and info.value.key == ARN
    text = str(info.value)
    assert "\n" not in text and ARN in text and words in text


def test_a_disabled_source_key_fails_the_batch_not_the_slots(stub) -> None:
    key = _key(stub)
    stub.add_response("describe_key", {"KeyMetadata": _meta()}, {"KeyId": KID})
    stub.add_client_error("re_encrypt", service_error_code="DisabledException", http_status_code=400)
    with pytest.raises(ProviderError, match="disabled"):
        key.rewrap_many("vault", [("S", f"{KID}:{M1}", b"old")])
    stub.add_client_error("decrypt", service_error_code="IncorrectKeyException", http_status_code=400)
    with pytest.raises(DecryptError):
        key.unwrap(Wrapped(f"{KID}:{M1}", b"x"), CTX)


def test_a_custom_key_store_successor_keeps_its_key_store(stub) -> None:
    # moto has no custom key stores (CreateCustomKeyStore answers HTTP 500): CreateKey's arguments here.
    cks = "cks-0123456789abcdef0"
    meta = _meta(Origin="AWS_CLOUDHSM", CustomKeyStoreId=cks, CurrentKeyMaterialId=None)
    del meta["CurrentKeyMaterialId"]
    alias = "arn:aws:kms:us-east-1:111122223333:alias/hsm"
    new_id = "9999abcd-12ab-34cd-56ef-1234567890ab"
    key = _key(stub, ref=alias, name="hsm")
    stub.add_response("describe_key", {"KeyMetadata": meta}, {"KeyId": alias})  # Key.rotate's kind check
    stub.add_response("list_resource_tags", {"Tags": [], "Truncated": False}, {"KeyId": KID})
    stub.add_response("describe_key", {"KeyMetadata": meta}, {"KeyId": alias})
    stub.add_response("list_resource_tags", {"Tags": [], "Truncated": False}, {"KeyId": KID})
    stub.add_response("list_keys", {"Keys": [{"KeyId": KID, "KeyArn": ARN}], "Truncated": False}, {})
    stub.add_response("get_key_policy", {"Policy": "{}"}, {"KeyId": KID, "PolicyName": "default"})
    stub.add_response("create_key", {"KeyMetadata": dict(meta, KeyId=new_id)}, {
        "Policy": "{}", "Description": ANY, "KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "SYMMETRIC_DEFAULT",
        "Origin": "AWS_CLOUDHSM", "CustomKeyStoreId": cks, "MultiRegion": False,
        "Tags": [{"TagKey": "keystead:key", "TagValue": "hsm"}, {"TagKey": "keystead:predecessor", "TagValue": KID},
                 {"TagKey": "keystead:rotation", "TagValue": "t1"}]})
    stub.add_response("update_alias", {}, {"AliasName": "alias/hsm", "TargetKeyId": new_id})
    new_meta = dict(meta, KeyId=new_id, Arn=ARN.replace(KID, new_id))
    stub.add_response("describe_key", {"KeyMetadata": new_meta}, {"KeyId": alias})
    stub.add_response("list_resource_tags", {"Tags": [{"TagKey": "keystead:predecessor", "TagValue": KID}],
                                             "Truncated": False}, {"KeyId": new_id})
    stub.add_response("describe_key", {"KeyMetadata": meta}, {"KeyId": KID})
    stub.add_response("list_resource_tags", {"Tags": [], "Truncated": False}, {"KeyId": KID})
    info = key.rotate(now=T, token="t1")
    assert info.rotation is RotationKind.SUCCESSOR
    assert info.primary.startswith(new_id + ":") and [v.id.split(":")[0] for v in info.versions] == [new_id, KID]
