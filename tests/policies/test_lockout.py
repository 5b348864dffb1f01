"""The offline lockout check: which key policies still let the deployer call kms:PutKeyPolicy."""

from __future__ import annotations

import pytest

from keystead.errors import PolicyError
from keystead.policies.generate import LockoutError, check_admin_access
from keystead.policies.generate.lockout import principal_arn

ADMIN = "arn:aws:iam::111122223333:role/kms-admins"
ROOT = "arn:aws:iam::111122223333:root"


def policy(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(principal, action="kms:*", **extra):
    return {"Sid": "A", "Effect": "Allow", "Principal": {"AWS": principal}, "Action": action, "Resource": "*",
            **extra}


def deny_non(exempt):
    return {"Sid": "DenyOthers", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": ["kms:PutKeyPolicy"],
            "Resource": "*", "Condition": {"ArnNotEquals": {"aws:PrincipalArn": exempt}}}


@pytest.mark.parametrize(("label", "doc", "deployer"), [
    ("root statement, deployer delegated by IAM", policy(allow(ROOT)), ADMIN),
    ("the deployer named", policy(allow(ADMIN, "kms:PutKeyPolicy")), ADMIN),
    ("a wildcard action pattern", policy(allow(ADMIN, "kms:Put*")), ADMIN),
    ("exempt from the deny", policy(allow(ROOT), deny_non([ROOT, ADMIN])), ADMIN),
    ("the bypass deny never applies", policy(allow(ROOT), {
        "Sid": "DenyBypass", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:PutKeyPolicy",
        "Resource": "*", "Condition": {"Bool": {"kms:BypassPolicyLockoutSafetyCheck": "true"}}}), ADMIN),
    ("an assumed-role session of the admin role", policy(allow(ADMIN), deny_non([ADMIN])),
     "arn:aws:sts::111122223333:assumed-role/kms-admins/ci-run-7"),
])
def test_policies_that_keep_the_deployer_in(label, doc, deployer):
    check_admin_access(doc, deployer=deployer, where="keys.k")


@pytest.mark.parametrize(("label", "doc", "message"), [
    ("only another principal", policy(allow("arn:aws:iam::111122223333:role/app")), "no unconditional Allow"),
    ("a conditional allow does not count",
     policy(allow(ADMIN, Condition={"StringEquals": {"aws:RequestedRegion": "us-east-1"}})), "no unconditional"),
    ("NotAction leaves PutKeyPolicy out", {"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ADMIN}, "NotAction": "kms:PutKeyPolicy", "Resource": "*"}]},
     "no unconditional"),
    ("denied as a non-admin", policy(allow(ROOT), deny_non([ROOT])), "Deny DenyOthers"),
    ("a deny this check cannot evaluate", policy(allow(ROOT), {
        "Sid": "Odd", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*",
        "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}), "cannot be evaluated offline"),
])
def test_policies_that_lock_the_deployer_out(label, doc, message):
    with pytest.raises(LockoutError) as caught:
        check_admin_access(doc, deployer=ADMIN, where="keys.k")
    assert str(caught.value).startswith(f"keys.k: the key policy would lock the deployer {ADMIN} out")
    assert message in str(caught.value)
    assert caught.value.exit_code == 10


def test_principal_arns():
    assert principal_arn("arn:aws:sts::111122223333:assumed-role/a/b") == "arn:aws:iam::111122223333:role/a"
    assert principal_arn(ROOT) == ROOT
    with pytest.raises(PolicyError, match="not an IAM role, user or root ARN"):
        principal_arn("kms-admins")
