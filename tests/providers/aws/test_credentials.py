"""Whose credentials sign the KMS calls: a key's ``role_arn`` (AssumeRole) and IRSA (web identity),
both through botocore's own credential providers, against moto server's STS.

Each test reads the access key id out of the signed request (a botocore ``before-send`` hook on the
key's own client: the SigV4 ``Credential=`` field) and compares it with the sessions moto's STS
handed out (/moto-api/data.json), so a client that kept the base credentials fails the test.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from keystead.envelope import Context
from keystead.errors import ProviderError
from keystead.providers.aws import AwsKey
from tests.providers.aws.helpers import make_key
from tests.providers.aws.moto_server import ACCOUNT, Clients, MotoServer

_CREDENTIAL = re.compile(rb"Credential=([A-Z0-9]+)/")


def _signed_by(key: AwsKey) -> list[str]:
    """Access key ids of the key's KMS requests, as they are signed."""
    seen: list[str] = []

    def grab(request, **_) -> None:
        found = _CREDENTIAL.search(request.headers["Authorization"])
        seen.append(found.group(1).decode() if found else "")

    key.client().meta.events.register("before-send.kms", grab)
    return seen


def _sessions(server: MotoServer) -> dict[str, str]:
    """access key id -> role ARN, of every session moto's STS handed out."""
    return {s["access_key_id"]: s["role_arn"] for s in server.data().get("sts", {}).get("AssumedRole", [])}


def test_a_key_with_role_arn_calls_kms_with_the_assumed_roles_credentials(
        aws_env: Clients, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    """With moto's IAM enforcement on: the base user may only assume the role, the role may use KMS;
    so the call succeeds only if it is signed with the role's session."""
    iam = aws_env("iam", {})
    meta = make_key(aws_env.kms())
    iam.create_user(UserName="base")
    iam.put_user_policy(UserName="base", PolicyName="assume", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["sts:AssumeRole"], "Resource": "*"}]}))
    base = iam.create_access_key(UserName="base")["AccessKey"]
    # (moto does not match an account-root principal in a trust policy, so the trust here is "*")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["sts:AssumeRole"]}]}
    role = iam.create_role(RoleName="keystead-kms", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    iam.put_role_policy(RoleName="keystead-kms", PolicyName="kms", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kms:*"], "Resource": "*"}]}))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", base["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", base["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    request.getfixturevalue("iam_enforced")

    key = AwsKey(meta["Arn"], options={"role_arn": role["Arn"]})  # the provider's own client: no injection
    seen = _signed_by(key)
    dek = os.urandom(32)
    assert key.unwrap(key.wrap(dek, Context("v", "s")), Context("v", "s")) == dek
    sessions = _sessions(moto_server)
    assert seen and all(sessions.get(k) == role["Arn"] for k in seen), (seen, sessions)
    assert base["AccessKeyId"] not in seen

    # the check can fail: the same key without the role is signed by the base user, which may not use KMS
    plain = AwsKey(meta["Arn"])
    seen_plain = _signed_by(plain)
    with pytest.raises(ProviderError) as info:
        plain.wrap(dek, Context("v", "s"))
    assert seen_plain[0] == base["AccessKeyId"] and meta["Arn"] in str(info.value)


def test_irsa_web_identity_through_boto3s_own_provider(aws_env: Clients, moto_server: MotoServer,
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """EKS IRSA sets AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE and no keys; botocore's
    AssumeRoleWithWebIdentity provider does the rest. moto's STS answers it (unsigned, so moto's IAM
    enforcement, which needs a signature on every request, stays off here)."""
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/keystead-irsa"
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a2V5c3RlYWQ6d29ya2VyIn0.c2ln")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ROLE_ARN", role_arn)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    meta = make_key(aws_env.kms())

    key = AwsKey(meta["Arn"])
    seen = _signed_by(key)
    key.wrap(os.urandom(32), Context("v", "s"))
    sessions = _sessions(moto_server)
    assert seen and sessions.get(seen[0]) == role_arn, (seen, sessions)
    assert seen[0] != "testing"
