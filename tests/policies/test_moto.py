"""A principal given only `decrypt` can Decrypt and nothing else, on a real moto server.

moto's IAM enforcement checks the Action of identity policies, but it calls
every KMS request's resource "*" and evaluates no KMS condition keys and no
key policies. So this test keeps our generated action list exactly and
rewrites only the Resource to "*" (moto cannot match a key ARN): it shows a
missing action is denied, not that our resource scoping or conditions hold
(policy_sentry and the lint check those).
"""

from __future__ import annotations

import json

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from policy_cases import small_spec

from keystead.policies.generate import documents

REGION = "eu-west-1"
ROOT = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _client(service: str, url: str, **creds):
    return boto3.client(service, region_name=REGION, endpoint_url=url, **(creds or ROOT))


def _for_moto(policy: dict) -> dict:
    statements = []
    for statement in policy["Statement"]:
        statement = {k: v for k, v in statement.items() if k != "Condition"}
        statement["Resource"] = "*"  # moto matches every KMS request against "*"
        statements.append(statement)
    return {**policy, "Statement": statements}


@pytest.fixture
def enforced(moto_url):
    """IAM enforcement on for the test, off again afterwards (it is process-wide)."""
    reset = f"{moto_url}/moto-api/reset-auth"
    yield lambda: requests.post(reset, data=b"0", timeout=10).raise_for_status()
    requests.post(reset, data=b"inf", timeout=10).raise_for_status()


def test_decrypt_only_principal(moto_url, enforced, monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    kms, iam = _client("kms", moto_url), _client("iam", moto_url)
    key_arn = kms.create_key(Description="vault")["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key_arn, Plaintext=b"hunter2")["CiphertextBlob"]
    account = key_arn.split(":")[4]

    spec = small_spec({"vault": {"arn": key_arn}}, {"app": {
        "kind": "aws-role", "arn": f"arn:aws:iam::{account}:user/app",
        "roles": {"vault": "decrypt"}}})
    spec = spec.__class__(keys=spec.keys, principals=spec.principals,
                          aws=spec.aws.__class__(account=account, region=REGION))
    generated = documents(spec)["aws/identity-policies/app.json"]
    assert {a for s in generated["Statement"] for a in s["Action"]} == {
        "kms:Decrypt", "kms:DescribeKey"}
    assert all(s["Resource"] == key_arn for s in generated["Statement"])

    iam.create_user(UserName="app")
    iam.put_user_policy(UserName="app", PolicyName="keystead",
                        PolicyDocument=json.dumps(_for_moto(generated)))
    secret = iam.create_access_key(UserName="app")["AccessKey"]
    app = _client("kms", moto_url, aws_access_key_id=secret["AccessKeyId"],
                  aws_secret_access_key=secret["SecretAccessKey"])
    enforced()

    assert app.decrypt(CiphertextBlob=blob)["Plaintext"] == b"hunter2"
    for call in (lambda: app.encrypt(KeyId=key_arn, Plaintext=b"x"),
                 lambda: app.schedule_key_deletion(KeyId=key_arn, PendingWindowInDays=30)):
        with pytest.raises(ClientError) as denied:
            call()
        # moto answers an IAM denial with a 403 XML body that the JSON protocol of
        # KMS does not parse, so botocore reports the code as "403"
        error = denied.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert error["Error"]["Code"] in ("403", "AccessDenied", "AccessDeniedException")
    assert app.describe_key(KeyId=key_arn)["KeyMetadata"]["KeyState"] == "Enabled"
