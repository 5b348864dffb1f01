"""`keystead rotate --preflight`: against moto server with its IAM enforcement on, and Stubber for
what moto cannot show (it ignores DryRun, and its refusals are HTTP 403 XML, not KMS's JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber

from keystead.providers.aws import AwsKey
from keystead.providers.aws_preflight import ALLOWED, DENIED, UNCHECKED, preflight
from tests.providers.aws.helpers import alias_arn, aws_key_toml, make_key, workspace
from tests.providers.aws.moto_server import Clients

ECC = {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}


def _by_action(row: dict) -> dict[str, str]:
    return {a: c["status"] for c in row["checks"] for a in c["actions"]}


def test_preflight_with_every_permission_checks_and_changes_nothing(aws_env: Clients, tmp_path: Path) -> None:
    kms = aws_env.kms()
    make_key(kms, alias="app")
    make_key(kms, alias="release", **ECC)
    keys = aws_key_toml("app", alias_arn("app"), exclusive=True) + \
        aws_key_toml("release", alias_arn("release"), purpose="sign")
    w = workspace(tmp_path, keys)
    w.cli("secrets", "set", "A", "1")
    before, listed = w.snapshot(), kms.list_keys()["Keys"]

    out = w.cli("rotate", "--preflight", "--json")
    rows = {r["key"]: r for r in json.loads(out.stdout)["keys"]}
    assert rows["main"]["note"] == "needs no cloud permission"
    app = _by_action(rows["app"])
    assert rows["app"]["rotation"] == "scheduled"
    for action in ("kms:DescribeKey", "kms:ListKeyRotations", "kms:GetKeyRotationStatus",
                   "kms:ReEncryptFrom", "kms:ReEncryptTo"):
        assert app[action] == ALLOWED, (action, rows["app"])
    assert app["kms:EnableKeyRotation"] == UNCHECKED and app["kms:RotateKeyOnDemand"] == UNCHECKED
    rewrap = next(c for c in rows["app"]["checks"] if "kms:ReEncryptTo" in c["actions"])
    assert rewrap["how"] == "dry run"
    release = _by_action(rows["release"])
    assert rows["release"]["rotation"] == "successor"
    for action in ("kms:CreateKey", "kms:TagResource", "kms:UpdateAlias"):
        assert release[action] == UNCHECKED
    assert release["kms:ListResourceTags"] == ALLOWED and "kms:ReEncryptTo" not in release  # signing: no rewrap
    assert release["kms:DisableKey"] == "not needed"  # not exclusive: never retired

    text = w.cli("rotate", "--preflight", "app").stderr
    assert "cannot check without doing it" in text and "kms:RotateKeyOnDemand" in text
    assert w.snapshot() == before and kms.list_keys()["Keys"] == listed  # nothing made, nothing written


def _worker(aws: Clients, actions: list[str]) -> dict:
    iam = aws("iam", {})
    iam.create_user(UserName="worker")
    iam.put_user_policy(UserName="worker", PolicyName="kms", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
    key: dict = iam.create_access_key(UserName="worker")["AccessKey"]
    return key


def test_preflight_names_each_missing_permission_and_the_statement_that_grants_it(
        aws_env: Clients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """moto's IAM enforcement denies what the worker user's policy does not allow (its 403 XML refusal
    is what preflight reads as denied)."""
    make_key(aws_env.kms(), alias="app")
    w = workspace(tmp_path, aws_key_toml("app", alias_arn("app")))
    w.cli("secrets", "set", "A", "1")
    worker = _worker(aws_env, ["kms:DescribeKey", "kms:GetKeyRotationStatus", "kms:ReEncrypt*"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", worker["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", worker["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    before = w.snapshot()
    request.getfixturevalue("iam_enforced")

    out = w.cli("rotate", "--preflight", "app", "--json", ok=False)
    assert out.exit_code == 10, (out.stdout, out.stderr)
    row = json.loads(out.stdout)["keys"][0]
    status = _by_action(row)
    assert status["kms:ListKeyRotations"] == DENIED
    assert status["kms:DescribeKey"] == status["kms:ReEncryptTo"] == status["kms:GetKeyRotationStatus"] == ALLOWED
    denied = next(c for c in row["checks"] if c["status"] == DENIED)
    grant = denied["grant"][0]
    assert grant["Sid"] == "RotatorApp" and "kms:ListKeyRotations" in grant["Action"]
    assert grant["Effect"] == "Allow"
    # verification decrypts every rewrapped slot: the generated rotator policy grants kms:Decrypt on
    # keystead's envelopes (context key keystead:vault), and preflight names that statement
    decrypt = next(c for c in row["checks"] if c["actions"] == ["kms:Decrypt"])
    assert decrypt["status"] == DENIED and decrypt["grant"][0]["Sid"] == "RotatorAppVerify"
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("keystead: error: preflight:") and "kms:ListKeyRotations on app" in last

    text = w.cli("rotate", "--preflight", "app", ok=False).stderr
    assert "granted by RotatorApp in aws/workers/rotation-worker.json" in text
    assert w.snapshot() == before


def test_preflight_names_the_statement_of_a_given_spec(aws_env: Clients, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       request: pytest.FixtureRequest) -> None:
    make_key(aws_env.kms(), alias="app")
    w = workspace(tmp_path, aws_key_toml("app", alias_arn("app")))
    spec = tmp_path / "iam.toml"
    spec.write_text('version = 1\n[aws]\naccount = "123456789012"\nregion = "us-east-1"\n'
                    '[keys.app]\nalias = "alias/app"\n'
                    '[workers.rotation]\narn = "arn:aws:iam::123456789012:role/keystead-rotation"\n')
    worker = _worker(aws_env, ["kms:DescribeKey", "kms:ListKeyRotations", "kms:GetKeyRotationStatus"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", worker["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", worker["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    request.getfixturevalue("iam_enforced")
    out = w.cli("rotate", "--preflight", "app", "--spec", str(spec), "--json", ok=False)
    assert out.exit_code == 10
    row = json.loads(out.stdout)["keys"][0]
    denied = next(c for c in row["checks"] if c["status"] == DENIED)
    assert set(denied["actions"]) <= {"kms:ReEncryptFrom", "kms:ReEncryptTo"}
    assert denied["grant"][0]["Sid"] == "RotatorAppRewrap"
    condition = denied["grant"][0]["Condition"]  # the spec's own statement: no ARN in it, scoped by tag
    assert condition["Bool"] == {"kms:ReEncryptOnSameKey": "true"}
    assert condition["StringEquals"] == {"aws:ResourceTag/keystead:key": "app"}


# -- Stubber: the real KMS answers (DryRunOperationException, AccessDeniedException JSON) --------------
KID = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:us-east-1:111122223333:key/{KID}"
META = {"KeyId": KID, "Arn": ARN, "CreationDate": datetime(2026, 1, 1, tzinfo=UTC), "KeyState": "Enabled",
        "KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "SYMMETRIC_DEFAULT", "Origin": "AWS_KMS"}


@pytest.mark.parametrize("answer, status, actions", [
    ("DryRunOperationException", ALLOWED, ("kms:ReEncryptFrom", "kms:ReEncryptTo")),
    ("AccessDeniedException", DENIED, ("kms:ReEncryptFrom",)),
])
def test_dry_run_answers_as_aws_gives_them(answer: str, status: str, actions: tuple[str, ...]) -> None:
    """moto ignores DryRun (it re-encrypts) and refuses with HTTP 403 XML; AWS answers
    DryRunOperationException (HTTP 412) or AccessDeniedException (HTTP 400, JSON) naming the action."""
    client = boto3.client("kms", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    key = AwsKey(ARN, clients=lambda service, opts: client)
    with Stubber(client) as stub:
        stub.add_response("describe_key", {"KeyMetadata": META}, {"KeyId": ARN})
        stub.add_response("list_key_rotations", {"Rotations": [], "Truncated": False}, {"KeyId": KID, "Limit": 1})
        stub.add_response("get_key_rotation_status", {"KeyRotationEnabled": True}, {"KeyId": KID})
        message = ("Request would have succeeded, but DryRun flag is set." if status == ALLOWED else
                   f"User: arn:aws:sts::111122223333:assumed-role/w/s is not authorized to perform: "
                   f"kms:ReEncryptFrom on resource: {ARN} because no identity-based policy allows it")
        stub.add_client_error("re_encrypt", answer, message, 412 if status == ALLOWED else 400, expected_params={
            "CiphertextBlob": b"blob", "SourceKeyId": KID, "DestinationKeyId": ARN, "DryRun": True,
            "SourceEncryptionContext": ANY, "DestinationEncryptionContext": ANY})
        context = {"keystead:vault": "vault", "keystead:secret": "A"}
        stub.add_client_error("decrypt", "DryRunOperationException", "Request would have succeeded", 412,
                              expected_params={"CiphertextBlob": b"blob", "KeyId": KID, "DryRun": True,
                                               "EncryptionContext": context})
        kind, checks = preflight(key, ("vault", "A", f"{KID}:m", b"blob"))
        stub.assert_no_pending_responses()
    rewrap = next(c for c in checks if "kms:ReEncryptFrom" in c.actions)
    assert str(kind) == "scheduled" and rewrap.status == status and rewrap.actions == actions
    assert next(c for c in checks if c.actions == ("kms:Decrypt",)).status == ALLOWED


def test_preflight_without_describe_key_says_so(aws_env: Clients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                request: pytest.FixtureRequest) -> None:
    """moto's IAM enforcement: a worker that may not even describe the key."""
    make_key(aws_env.kms(), alias="app")
    w = workspace(tmp_path, aws_key_toml("app", alias_arn("app")))
    worker = _worker(aws_env, ["kms:ListKeys"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", worker["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", worker["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    request.getfixturevalue("iam_enforced")
    out = w.cli("rotate", "--preflight", "app", ok=False)
    assert out.exit_code == 10
    assert "denied     kms:DescribeKey" in out.stderr and "pass --spec SPEC" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("keystead: error: preflight:")
