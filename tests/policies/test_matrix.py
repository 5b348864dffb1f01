"""Every role on every key type: the exact actions (or GCP roles), or a rejection.

The expectations are written out here, not read from policies/actions.py, so a
change to the tables has to be a change to this test too.
"""

from __future__ import annotations

import pytest
from policy_cases import MATRIX_KEYS, matrix_spec

from keystead.policies import actions as A
from keystead.policies.generate import documents, render
from keystead.policies.lint import lint_document, parse
from keystead.policies.spec import SpecError

REJECT = "reject"
ROTATION = {"kms:DisableKeyRotation", "kms:EnableKeyRotation", "kms:GetKeyRotationStatus",
            "kms:ListKeyRotations", "kms:RotateKeyOnDemand"}
ADMIN = {"kms:CancelKeyDeletion", "kms:DescribeKey", "kms:DisableKey", "kms:EnableKey",
         "kms:GetKeyPolicy", "kms:ListGrants", "kms:ListKeyPolicies", "kms:ListResourceTags",
         "kms:PutKeyPolicy", "kms:RevokeGrant", "kms:ScheduleKeyDeletion", "kms:TagResource",
         "kms:UntagResource", "kms:UpdateKeyDescription", "kms:ListAliases", "kms:ListKeys"}
ENCRYPT = {"kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
           "kms:DescribeKey"}
DECRYPT = {"kms:Decrypt", "kms:DescribeKey"}
BOTH = ENCRYPT | DECRYPT | {"kms:ReEncryptFrom", "kms:ReEncryptTo"}
REWRAP = {"kms:ReEncryptFrom", "kms:ReEncryptTo"}
IN_PLACE = {"kms:DescribeKey", "kms:EnableKeyRotation", "kms:GetKeyRotationStatus",
            "kms:ListKeyRotations", "kms:RotateKeyOnDemand"} | REWRAP
SUCCESSOR = {"kms:DescribeKey", "kms:UpdateAlias", "kms:ScheduleKeyDeletion", "kms:TagResource",
             "kms:CreateKey"}
AUDITOR = {"kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListGrants",
           "kms:ListKeyPolicies", "kms:ListKeyRotations", "kms:ListResourceTags",
           "kms:ListAliases", "kms:ListKeys"}
KEYSTORE = {"cloudhsm:DescribeClusters", "kms:ConnectCustomKeyStore", "kms:CreateCustomKeyStore",
            "kms:DeleteCustomKeyStore", "kms:DescribeCustomKeyStores",
            "kms:DisconnectCustomKeyStore", "kms:UpdateCustomKeyStore",
            "iam:CreateServiceLinkedRole"}
REPLICATOR = {"kms:DescribeKey", "kms:ReplicateKey", "kms:UpdatePrimaryRegion",
              "kms:PutKeyPolicy", "kms:TagResource", "kms:CreateKey", "iam:CreateServiceLinkedRole"}
ROTATOR_GCP = "projects/p1/roles/keysteadRotator"

#: role -> key type -> expected identity-policy actions, GCP role, or REJECT
EXPECTED = {
    "admin": {"symmetric": ADMIN | ROTATION,
              "multi-region": ADMIN | ROTATION | {"kms:ReplicateKey", "kms:UpdatePrimaryRegion"},
              "hsm": ADMIN, "ecc-sign": ADMIN, "hmac": ADMIN,
              "gcp": "roles/cloudkms.admin", "gcp-sign": "roles/cloudkms.admin"},
    "encrypt": {"symmetric": ENCRYPT, "multi-region": ENCRYPT, "hsm": ENCRYPT,
                "ecc-sign": REJECT, "hmac": REJECT,
                "gcp": "roles/cloudkms.cryptoKeyEncrypter", "gcp-sign": REJECT},
    "decrypt": {"symmetric": DECRYPT, "multi-region": DECRYPT, "hsm": DECRYPT,
                "ecc-sign": REJECT, "hmac": REJECT,
                "gcp": "roles/cloudkms.cryptoKeyDecrypter", "gcp-sign": REJECT},
    "encrypt-decrypt": {"symmetric": BOTH, "multi-region": BOTH, "hsm": BOTH,
                        "ecc-sign": REJECT, "hmac": REJECT,
                        "gcp": "roles/cloudkms.cryptoKeyEncrypterDecrypter", "gcp-sign": REJECT},
    "signer": {"symmetric": REJECT, "multi-region": REJECT, "hsm": REJECT,
               "ecc-sign": {"kms:Sign", "kms:GetPublicKey", "kms:DescribeKey"},
               "hmac": {"kms:GenerateMac", "kms:DescribeKey"},
               "gcp": REJECT, "gcp-sign": "roles/cloudkms.signer"},
    "verifier": {"symmetric": REJECT, "multi-region": REJECT, "hsm": REJECT,
                 "ecc-sign": {"kms:Verify", "kms:GetPublicKey", "kms:DescribeKey"},
                 "hmac": {"kms:VerifyMac", "kms:DescribeKey"},
                 "gcp": REJECT, "gcp-sign": "roles/cloudkms.publicKeyViewer"},
    # The rotator opens what it rewrapped to verify it: kms:Decrypt on keystead's envelopes (symmetric keys).
    "rotator": {"symmetric": IN_PLACE | {"kms:Decrypt"}, "multi-region": IN_PLACE | {"kms:Decrypt"},
                "hsm": SUCCESSOR | REWRAP | {"kms:Decrypt"},
                "ecc-sign": SUCCESSOR, "hmac": SUCCESSOR, "gcp": ROTATOR_GCP,
                "gcp-sign": ROTATOR_GCP},
    "replicator": {"symmetric": REJECT, "multi-region": REPLICATOR, "hsm": REJECT,
                   "ecc-sign": REJECT, "hmac": REJECT, "gcp": REJECT, "gcp-sign": REJECT},
    "keystore-admin": {"symmetric": REJECT, "multi-region": REJECT, "hsm": KEYSTORE,
                       "ecc-sign": REJECT, "hmac": REJECT, "gcp": REJECT, "gcp-sign": REJECT},
    "auditor": {"symmetric": AUDITOR, "multi-region": AUDITOR, "hsm": AUDITOR,
                "ecc-sign": AUDITOR | {"kms:GetPublicKey"}, "hmac": AUDITOR,
                "gcp": "roles/cloudkms.viewer", "gcp-sign": "roles/cloudkms.viewer"},
}
CELLS = [(role, kt) for role in A.ROLES for kt in MATRIX_KEYS]
IAM_ONLY = {"kms:ListAliases", "kms:ListKeys", "kms:CreateKey", "iam:CreateServiceLinkedRole"}


def test_matrix_is_complete():
    assert set(EXPECTED) == set(A.ROLES)
    assert all(set(row) == set(MATRIX_KEYS) for row in EXPECTED.values())


def _actions(doc: dict, principal: str | None = None) -> set[str]:
    out: set[str] = set()
    for statement in doc["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        if principal and statement.get("Principal", {}).get("AWS") != principal:
            continue
        value = statement["Action"]
        out |= {value} if isinstance(value, str) else set(value)
    return out


@pytest.mark.parametrize("role, key_type", CELLS, ids=[f"{r}-{k}" for r, k in CELLS])
def test_role_on_key_type(role, key_type):
    expected = EXPECTED[role][key_type]
    if expected == REJECT:
        with pytest.raises(SpecError, match=r"principals\.app\.roles\.k: role"):
            matrix_spec(role, key_type)
        return
    docs = documents(matrix_spec(role, key_type))
    for path, doc in docs.items():  # every generated document lints clean
        assert lint_document(parse(render(doc), path)) == [], path
    if key_type.startswith("gcp"):
        (binding,) = docs["gcp/bindings/k.json"]["bindings"]
        assert binding == {"role": expected,
                           "members": ["serviceAccount:app@p1.iam.gserviceaccount.com"]}
        assert ("gcp/roles/keysteadRotator.json" in docs) == (role == "rotator")
        return
    identity = docs["aws/identity-policies/app.json"]
    assert _actions(identity) == expected
    key_policy = docs["aws/key-policies/k.json"]
    assert key_policy["Statement"][0]["Sid"] == "EnableAccountRootAccess"
    in_key_policy = _actions(key_policy, "arn:aws:iam::111122223333:role/app")
    assert in_key_policy <= expected
    # what only IAM can grant (no key resource) stays out of the key policy
    assert not in_key_policy & IAM_ONLY
    if role in A.CRYPTO_ROLES:
        assert in_key_policy == expected
        assert not in_key_policy & A.ADMIN_ACTIONS
    if role == "admin":
        assert not in_key_policy & A.CRYPTO_ACTIONS
