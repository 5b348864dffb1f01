"""`policy generate`: every document, deterministic, lint-clean, rule-shaped."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from keystead.cli.policy import policy
from keystead.errors import PolicyError
from keystead.policies import actions as A
from keystead.policies.generate import documents, render
from keystead.policies.lint import lint_paths

EXPECTED_FILES = {
    "aws/identity-policies/api.json", "aws/identity-policies/hsm-operators.json",
    "aws/identity-policies/kms-admins.json", "aws/identity-policies/release.json",
    "aws/identity-policies/reporting.json", "aws/identity-policies/security-audit.json",
    "aws/key-policies/hsm-vault.json", "aws/key-policies/legacy.json",
    "aws/key-policies/release-signing.json", "aws/key-policies/vault.json",
    "aws/key-policies/vault.eu-central-1.json", "aws/trust-policies/api.json",
    "aws/workers/dr-replicator.json", "aws/workers/rotation-worker.json",
    "gcp/bindings/gcp-signing.json", "gcp/bindings/gcp-vault.json",
    "gcp/roles/keysteadRotator.json",
}


def actions_of(statement: dict) -> set[str]:
    value = statement["Action"]
    return {value} if isinstance(value, str) else set(value)


def test_generate_cli_writes_every_document_deterministically(example_path, tmp_path):
    runner = CliRunner()
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        result = runner.invoke(policy, ["generate", str(example_path), "--out", str(out)])
        assert result.exit_code == 0, result.output
    files = {p.relative_to(first).as_posix() for p in first.rglob("*.json")}
    assert files == EXPECTED_FILES
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes()
    # generated output lints clean: no finding of any severity
    docs, findings = lint_paths([first])
    assert len(docs) == len(EXPECTED_FILES) and findings == []


def test_render_is_sorted_and_sids_unique(example_docs):
    for path, doc in example_docs.items():
        text = render(doc)
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
        if "Statement" in doc:
            sids = [s["Sid"] for s in doc["Statement"]]
            assert len(sids) == len(set(sids)), path
            assert all(sid.isalnum() for sid in sids), path


def test_key_policy_shape(example_docs):
    policy_doc = example_docs["aws/key-policies/vault.json"]
    by_sid = {s["Sid"]: s for s in policy_doc["Statement"]}
    root = by_sid["EnableAccountRootAccess"]
    assert root["Principal"] == {"AWS": "arn:aws:iam::111122223333:root"}
    assert root["Action"] == "kms:*"
    admin = set().union(*(actions_of(s) for sid, s in by_sid.items()
                          if s["Principal"].get("AWS") == "arn:aws:iam::111122223333:role/kms-admins"))
    assert "kms:PutKeyPolicy" in admin and not admin & A.CRYPTO_ACTIONS
    assert {"kms:ReplicateKey", "kms:UpdatePrimaryRegion"} <= admin
    api = by_sid["EncryptDecryptApi"]
    assert api["Condition"] == {"StringEquals": {"kms:EncryptionContext:vault": "payments"}}
    assert actions_of(api) <= A.ENCRYPTION_CONTEXT_ACTIONS
    assert "kms:ReEncryptFrom" in actions_of(api) and "kms:ReEncrypt*" not in actions_of(api)
    deletion = by_sid["AdminDeletionWindowKmsAdmins"]
    assert deletion["Condition"] == {"NumericGreaterThanEquals": {
        "kms:ScheduleKeyDeletionPendingWindowInDays": "30"}}
    deny = by_sid["DenyDestructiveToNonAdmins"]
    assert deny["Effect"] == "Deny" and set(deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]) == {
        "arn:aws:iam::111122223333:role/kms-admins", "arn:aws:iam::111122223333:root"}
    # replica key policies are not synced by AWS: the same document is written per replica
    assert example_docs["aws/key-policies/vault.eu-central-1.json"] == policy_doc


def test_grants_only_for_aws_resources(example_docs):
    legacy = example_docs["aws/key-policies/legacy.json"]
    grants = [s for s in legacy["Statement"] if "kms:CreateGrant" in actions_of(s)
              and s["Sid"] != "EnableAccountRootAccess"]
    assert grants and all(s["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}
                          for s in grants)
    assert grants[0]["Condition"]["StringEquals"] == {
        "kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}


def test_identity_policies_scope_resources(example_docs):
    for path, doc in example_docs.items():
        if not path.startswith(("aws/identity-policies", "aws/workers")):
            continue
        for statement in doc["Statement"]:
            if statement["Effect"] == "Allow" and statement["Resource"] == "*":
                kms = {a for a in actions_of(statement) if a.startswith("kms:")}
                assert kms <= A.WILDCARD_ONLY, (path, statement["Sid"])
    reporting = example_docs["aws/identity-policies/reporting.json"]
    decrypt = next(s for s in reporting["Statement"] if s["Sid"] == "DecryptLegacy")
    assert decrypt["Resource"] == ("arn:aws:kms:eu-west-1:111122223333:key/"
                                   "1234abcd-12ab-34cd-56ef-1234567890ab")
    # a key the stack creates is scoped by its keystead:key tag until its ARN is known
    api = example_docs["aws/identity-policies/api.json"]
    vault = next(s for s in api["Statement"] if s["Sid"] == "EncryptDecryptVault")
    assert vault["Condition"]["StringEquals"]["aws:ResourceTag/keystead:key"] == "vault"
    assert sorted(vault["Resource"]) == ["arn:aws:kms:eu-central-1:111122223333:key/*",
                                         "arn:aws:kms:eu-west-1:111122223333:key/*"]


def test_known_arns_replace_tag_scope(example_spec):
    arn = "arn:aws:kms:eu-west-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef"
    docs = documents(example_spec, {"vault": arn})
    api = docs["aws/identity-policies/api.json"]
    vault = next(s for s in api["Statement"] if s["Sid"] == "EncryptDecryptVault")
    assert vault["Resource"] == sorted([arn, arn.replace("eu-west-1", "eu-central-1")])
    assert "aws:ResourceTag/keystead:key" not in vault["Condition"]["StringEquals"]


def test_irsa_trust_policy(example_docs):
    (statement,) = example_docs["aws/trust-policies/api.json"]["Statement"]
    issuer = "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
    assert statement["Principal"] == {
        "Federated": f"arn:aws:iam::111122223333:oidc-provider/{issuer}"}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {"StringEquals": {
        f"{issuer}:aud": "sts.amazonaws.com",
        f"{issuer}:sub": "system:serviceaccount:payments:api"}}


def test_workers(example_docs):
    rotation = example_docs["aws/workers/rotation-worker.json"]["Statement"]
    by_sid = {s["Sid"]: s for s in rotation}
    assert actions_of(by_sid["RotatorLegacy"]) == {
        "kms:DescribeKey", "kms:GetKeyRotationStatus", "kms:ListKeyRotations",
        "kms:RotateKeyOnDemand"}
    assert by_sid["RotatorLegacyRotationPeriod"]["Condition"]["NumericLessThanEquals"] == {
        "kms:RotationPeriodInDays": "90"}
    assert actions_of(by_sid["RotatorLegacyRewrap"]) == {"kms:ReEncryptFrom", "kms:ReEncryptTo"}
    # HSM-backed keys cannot rotate in place: a successor key with the same spec and origin
    successor = by_sid["RotatorHsmVaultSuccessorKey"]
    assert successor["Resource"] == "*" and successor["Condition"]["StringEquals"][
        "kms:KeyOrigin"] == "AWS_CLOUDHSM"
    dr = {s["Sid"]: s for s in example_docs["aws/workers/dr-replicator.json"]["Statement"]}
    assert dr["ReplicatorVaultReplicaRegion"]["Condition"] == {"StringEquals": {
        "aws:ResourceTag/keystead:key": "vault", "kms:ReplicaRegion": "eu-central-1"}}
    assert dr["ReplicatorVaultServiceLinkedRole"]["Condition"] == {
        "StringEquals": {"iam:AWSServiceName": "mrk.kms.amazonaws.com"}}


def test_gcp_bindings_and_rotator_role(example_docs):
    vault = example_docs["gcp/bindings/gcp-vault.json"]["bindings"]
    roles = {b["role"]: b["members"] for b in vault}
    assert roles == {
        "projects/acme-prod/roles/keysteadRotator": [
            "serviceAccount:keystead-rotation@acme-prod.iam.gserviceaccount.com"],
        "roles/cloudkms.admin": ["group:kms-admins@acme.example"],
        "roles/cloudkms.cryptoKeyEncrypterDecrypter": [
            "serviceAccount:api@acme-prod.iam.gserviceaccount.com"],
    }
    signing = {b["role"] for b in example_docs["gcp/bindings/gcp-signing.json"]["bindings"]}
    assert "roles/cloudkms.signerVerifier" in signing
    role = example_docs["gcp/roles/keysteadRotator.json"]
    assert role["includedPermissions"] == sorted([
        "cloudkms.cryptoKeyVersions.create", "cloudkms.cryptoKeys.update",
        "cloudkms.cryptoKeyVersions.update", "cloudkms.cryptoKeys.get",
        "cloudkms.cryptoKeyVersions.get", "cloudkms.cryptoKeyVersions.list",
        "cloudkms.cryptoKeyVersions.useToDecrypt", "cloudkms.cryptoKeyVersions.useToEncrypt"])


def test_generate_cli_errors_are_one_line(tmp_path, example_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(example_path.read_text().replace('roles = { legacy = "decrypt" }',
                                                    'roles = { legacy = "decrypts" }'))
    result = CliRunner().invoke(policy, ["generate", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "principals.reporting.roles.legacy: unknown role 'decrypts'" in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_output_does_not_depend_on_hash_seed(example_path, tmp_path):
    """Set iteration order changes with PYTHONHASHSEED; two processes must agree byte for byte."""
    import os
    import subprocess
    import sys

    script = ("import sys, json; from keystead.policies.generate import documents, render; "
              "from keystead.policies.spec import load_spec; "
              "sys.stdout.write(''.join(p + render(d) for p, d in "
              "documents(load_spec(sys.argv[1])).items()))")
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", script, str(example_path)], env=env,
                             capture_output=True, text=True, check=True)
        outputs.add(run.stdout)
    assert len(outputs) == 1


@pytest.mark.parametrize("value, words", [
    ("vault=arn:x", "not a KMS key ARN"),
    ("vault=arn:aws:iam::111122223333:role/x", "not a KMS key ARN"),
    ("vault=arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
     "multi-Region"),
    ("gcp-vault=arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
     "is a GCP key"),
])
def test_key_arn_option_is_checked(example_path, tmp_path, value, words):
    result = CliRunner().invoke(policy, ["generate", str(example_path), "--out", str(tmp_path),
                                         "--key-arn", value])
    assert isinstance(result.exception, PolicyError), result.exception
    assert "--key-arn" in str(result.exception) and words in str(result.exception)
    assert not list(tmp_path.rglob("*.json"))
