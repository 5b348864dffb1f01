"""`policy lint`: every rule fires on a policy that breaks it; formats; exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from keystead.cli.policy import policy
from keystead.policies.lint import RULES, lint_document, parse

ACCT = "111122223333"
ROOT = {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCT}:root"},
        "Action": "kms:*", "Resource": "*"}
KEY = f"arn:aws:kms:eu-west-1:{ACCT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ROLE = f"arn:aws:iam::{ACCT}:role/app"


def identity(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


def key_policy(*statements, root=True):
    return {"Version": "2012-10-17", "Statement": ([ROOT] if root else []) + list(statements)}


def user(actions, **extra):
    return {"Sid": "S", "Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": actions,
            "Resource": "*", **extra}


BAD = {
    "KS001": identity({"Effect": "Allow", "Action": "kms:*", "Resource": KEY}),
    "KS002": identity({"Effect": "Allow", "Action": ["kms:Decrypt", "kms:ListKeys"],
                       "Resource": "*"}),
    "KS003": key_policy(user(["kms:Decrypt"]), root=False),
    "KS004": identity({"Effect": "Allow", "Action": "kms:PutKeyPolicy", "Resource": KEY,
                       "Condition": {"Bool": {"kms:BypassPolicyLockoutSafetyCheck": "true"}}}),
    "KS005": key_policy(user(["kms:PutKeyPolicy", "kms:Decrypt"])),
    "KS006": identity({"Effect": "Allow", "Action": "kms:ReEncrypt*", "Resource": KEY}),
    "KS007": key_policy(user(["kms:CreateGrant"])),
    "KS008": key_policy({"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt",
                         "Resource": "*"}),
    "KS009": key_policy({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt",
                         "Resource": "*",
                         "Condition": {"StringEquals": {"kms:CallerAccount": ACCT}}}),
    "KS010": identity({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY, "Condition": {
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["vault"]}}}),
    "KS011": identity({"Effect": "Allow", "Action": ["kms:Decrypt", "kms:DescribeKey"],
                       "Resource": KEY,
                       "Condition": {"StringEquals": {"kms:EncryptionContext:vault": "a"}}}),
    "KS012": identity({"Effect": "Allow", "Action": "kms:ScheduleKeyDeletion", "Resource": KEY}),
    "KS013": identity({"Effect": "Allow", "Action": "kms:EnableKeyRotation", "Resource": KEY}),
    "KS014": identity({"Effect": "Allow", "Action": "kms:ReplicateKey", "Resource": KEY}),
    "KS015": identity({"Effect": "Allow", "Action": "iam:CreateServiceLinkedRole",
                       "Resource": f"arn:aws:iam::{ACCT}:role/aws-service-role/*"}),
    "KS016": {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
        "Principal": {"Federated": f"arn:aws:iam::{ACCT}:oidc-provider/oidc.example/id/X"},
        "Condition": {"StringLike": {"oidc.example/id/X:sub": "system:serviceaccount:*"}}}]},
    "KS017": {"bindings": [{"role": "roles/cloudkms.cryptoKeyDecrypter",
                            "members": ["allUsers"]}]},
    "KS018": {"bindings": [{"role": "roles/cloudkms.admin", "members": ["user:a@x.example"]},
                           {"role": "roles/cloudkms.cryptoKeyDecrypter",
                            "members": ["user:a@x.example"]}]},
    "KS019": {"bindings": [{"role": "roles/cloudkms.cryptoOperator",
                            "members": ["serviceAccount:a@p.iam.gserviceaccount.com"]}]},
    "KS020": {"name": "projects/p/roles/rot", "includedPermissions": [
        "cloudkms.cryptoKeyVersions.create", "cloudkms.cryptoKeyVersions.destroy"]},
}


@pytest.mark.parametrize("rule_id", sorted(BAD))
def test_each_rule_fires(rule_id):
    doc = parse(json.dumps(BAD[rule_id], indent=2), f"{rule_id}.json")
    found = {f.rule for f in lint_document(doc)}
    assert rule_id in found, found
    assert all(f.fix for f in lint_document(doc))


def test_every_rule_has_a_bad_example():
    assert set(BAD) | {"KS021"} == set(RULES)


def test_root_statement_and_denies_are_not_findings():
    good = key_policy(user(["kms:Decrypt"]), {
        "Effect": "Deny", "Principal": "*", "Action": "kms:PutKeyPolicy", "Resource": "*",
        "Condition": {"Bool": {"kms:BypassPolicyLockoutSafetyCheck": "true"}}})
    assert lint_document(parse(json.dumps(good), "good.json")) == []


def write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=2) if not isinstance(doc, str) else doc)
    return str(path)


def test_text_json_sarif_and_exit_codes(tmp_path):
    runner = CliRunner()
    bad = write(tmp_path, "bad.json", BAD["KS002"])
    result = runner.invoke(policy, ["lint", bad])
    assert result.exit_code == 1
    assert f"{bad}:4: error KS002 [Statement[0]]" in result.output
    assert "fix: scope the statement to key ARNs" in result.output

    result = runner.invoke(policy, ["lint", bad, "--format", "json"])
    (row,) = json.loads(result.output)["findings"]
    assert row["rule"] == "KS002" and row["severity"] == "error" and row["line"] == 4

    result = runner.invoke(policy, ["lint", bad, "--format", "sarif"])
    sarif = json.loads(result.output)
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == set(RULES)
    (res,) = run["results"]
    assert res["ruleId"] == "KS002" and res["level"] == "error"
    assert run["tool"]["driver"]["rules"][res["ruleIndex"]]["id"] == "KS002"
    assert res["locations"][0]["physicalLocation"]["region"] == {"startLine": 4}


def test_fail_on_threshold(tmp_path):
    note_only = write(tmp_path, "rot.json", BAD["KS013"])
    runner = CliRunner()
    assert runner.invoke(policy, ["lint", note_only]).exit_code == 0
    assert runner.invoke(policy, ["lint", note_only, "--fail-on", "note"]).exit_code == 1
    warn = write(tmp_path, "warn.json", BAD["KS012"])
    assert runner.invoke(policy, ["lint", warn, "--fail-on", "error"]).exit_code == 0
    assert runner.invoke(policy, ["lint", warn]).exit_code == 1


def test_unreadable_input_exits_2_with_location(tmp_path):
    broken = write(tmp_path, "broken.json", '{\n  "Statement": [\n    {"Effect": "Allow",,}\n]}')
    result = CliRunner().invoke(policy, ["lint", broken])
    assert result.exit_code == 2
    assert f"{broken}:3:24: invalid JSON" in result.output
    missing = CliRunner().invoke(policy, ["lint", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "cannot read" in missing.output
    other = write(tmp_path, "other.json", '{"hello": 1}')
    assert CliRunner().invoke(policy, ["lint", other]).exit_code == 2


def test_override_is_generated_and_then_reported(tmp_path):
    from policy_cases import small_spec

    from keystead.policies.generate import write as write_docs
    spec = small_spec({"k": {}}, {"app": {
        "kind": "aws-role", "arn": ROLE, "roles": {"k": ["admin", "decrypt"]},
        "allow_admin_and_crypto": True, "override_reason": "break glass"}})
    write_docs(spec, tmp_path / "iam")
    result = CliRunner().invoke(policy, ["lint", str(tmp_path / "iam")])
    assert result.exit_code == 1
    assert "KS005" in result.output and "key-policies/k.json" in result.output
    assert "identity-policies/app.json" in result.output


def test_against_spec_reports_broader_live_permissions(tmp_path, example_path, example_docs):
    live = json.loads(json.dumps(example_docs["aws/identity-policies/reporting.json"]))
    decrypt = next(s for s in live["Statement"] if s["Sid"] == "DecryptLegacy")
    decrypt["Action"] = ["kms:Decrypt", "kms:Encrypt"]
    path = write(tmp_path, "reporting.json", live)
    runner = CliRunner()
    result = runner.invoke(policy, ["lint", path, "--against", str(example_path)])
    assert result.exit_code == 1
    assert "KS021" in result.output and "kms:Encrypt on arn:aws:kms" in result.output
    assert "kms:Decrypt on" not in result.output
    # the generated documents themselves are never broader than the spec
    clean = write(tmp_path, "reporting2.json", example_docs["aws/identity-policies/reporting.json"])
    result = runner.invoke(policy, ["lint", clean, "--against", str(example_path),
                                    "--principal", "reporting"])
    assert result.exit_code == 0, result.output
    key = json.loads(json.dumps(example_docs["aws/key-policies/vault.json"]))
    key["Statement"].append({"Sid": "Extra", "Effect": "Allow",
                             "Principal": {"AWS": f"arn:aws:iam::{ACCT}:role/reporting"},
                             "Action": "kms:Decrypt", "Resource": "*"})
    result = runner.invoke(policy, ["lint", write(tmp_path, "vault.json", key),
                                    "--against", str(example_path)])
    assert result.exit_code == 1 and "role/reporting may kms:Decrypt on key 'vault'" in result.output
    gcp = json.loads(json.dumps(example_docs["gcp/bindings/gcp-vault.json"]))
    gcp["bindings"][0]["members"].append("group:everyone@acme.example")
    result = runner.invoke(policy, ["lint", write(tmp_path, "gcp-vault.json", gcp),
                                    "--against", str(example_path)])
    assert result.exit_code == 1 and "group:everyone@acme.example holds" in result.output


def test_identity_policy_that_assumes_roles_is_still_an_identity_policy():
    """sts:AssumeRole in an identity policy does not make it a trust policy (no Principal)."""
    doc = parse(json.dumps(identity({"Effect": "Allow", "Action": ["sts:AssumeRole", "kms:Decrypt"],
                                     "Resource": "*"})), "assume.json")
    assert doc.kind == "identity"
    assert "KS002" in {f.rule for f in lint_document(doc)}


def test_admin_and_crypto_on_overlapping_resources():
    """kms:PutKeyPolicy on key/* and kms:Decrypt on one key ARN overlap: KS005."""
    doc = parse(json.dumps(identity(
        {"Effect": "Allow", "Action": "kms:PutKeyPolicy",
         "Resource": f"arn:aws:kms:eu-west-1:{ACCT}:key/*"},
        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY})), "overlap.json")
    assert "KS005" in {f.rule for f in lint_document(doc)}
    # different keystead:key tags on key/* are different keys: no finding
    any_key = f"arn:aws:kms:eu-west-1:{ACCT}:key/*"
    tagged = parse(json.dumps(identity(
        {"Effect": "Allow", "Action": "kms:PutKeyPolicy", "Resource": any_key,
         "Condition": {"StringEquals": {"aws:ResourceTag/keystead:key": "a"}}},
        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": any_key,
         "Condition": {"StringEquals": {"aws:ResourceTag/keystead:key": "b"}}})), "tags.json")
    assert "KS005" not in {f.rule for f in lint_document(tagged)}


def test_public_principal_with_negated_caller_account_is_public():
    doc = parse(json.dumps(key_policy({
        "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
        "Condition": {"StringNotEquals": {"kms:CallerAccount": ACCT}}})), "star.json")
    assert "KS008" in {f.rule for f in lint_document(doc)}


MALFORMED = {
    "effect-lowercase": (identity({"Effect": "allow", "Action": "kms:*", "Resource": "*"}),
                         "Statement[0].Effect"),
    "nested-action": (identity({"Effect": "Allow", "Action": [["kms:*"]], "Resource": "*"}),
                      "Statement[0].Action"),
    "action-object": (identity({"Effect": "Allow", "Action": {"a": 1}, "Resource": "*"}),
                      "Statement[0].Action"),
    "statement-string": ({"Version": "2012-10-17", "Statement": "kms:*"}, "Statement"),
    "statement-null": ({"Version": "2012-10-17", "Statement": None}, "Statement"),
    "condition-list": (identity({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY,
                                 "Condition": [1]}), "Statement[0].Condition"),
    "principal-list": (key_policy({"Effect": "Allow", "Principal": ["*"], "Action": "kms:Decrypt",
                                   "Resource": "*"}), "Statement[1].Principal"),
    "members-string": ({"bindings": [{"role": "roles/cloudkms.admin", "members": "allUsers"}]},
                       "bindings[0].members"),
    "role-missing": ({"bindings": [{"members": ["allUsers"]}]}, "bindings[0].role"),
    "bindings-string": ({"bindings": "x"}, "bindings"),
    "permissions-string": ({"includedPermissions": "cloudkms.cryptoKeyVersions.create"},
                           "includedPermissions"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_policy_is_unreadable_input(tmp_path, case):
    """A document AWS or GCP would reject is exit 2 naming the field, never a clean pass."""
    document, field = MALFORMED[case]
    path = write(tmp_path, f"{case}.json", document)
    result = CliRunner().invoke(policy, ["lint", path])
    assert result.exit_code == 2, result.output
    assert f"{path}: {field}" in result.output


@pytest.mark.parametrize("text, words", [
    ("[" * 100_000, "nested too deeply"),
    ('{"Statement": [{"Sid": "\\ud800", "Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}',
     "invalid JSON"),
])
def test_hostile_json_is_one_line_exit_2(tmp_path, text, words):
    path = write(tmp_path, "hostile.json", text)
    result = CliRunner().invoke(policy, ["lint", path])
    assert result.exit_code == 2, result.exception
    assert words in result.output and "Traceback" not in result.output


def test_directory_without_policies_is_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(policy, ["lint", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no *.json files" in result.output


def test_sarif_is_sarif_2_1_0(tmp_path, monkeypatch):
    """The parts of the SARIF 2.1.0 schema that code-scanning uploads need."""
    write(tmp_path, "with space.json", BAD["KS002"])
    monkeypatch.chdir(tmp_path)
    bad = "with space.json"
    sarif = json.loads(CliRunner().invoke(policy, ["lint", bad, "--format", "sarif"]).output)
    assert sarif["version"] == "2.1.0" and sarif["$schema"].endswith("sarif-2.1.0.json")
    (run,) = sarif["runs"]
    driver = run["tool"]["driver"]
    assert isinstance(driver["name"], str) and driver["rules"]
    for rule in driver["rules"]:
        assert rule["id"] and rule["shortDescription"]["text"]
        assert rule["defaultConfiguration"]["level"] in ("none", "note", "warning", "error")
    for result in run["results"]:
        assert result["level"] in ("none", "note", "warning", "error")
        assert result["message"]["text"]
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        (location,) = result["locations"]
        uri = location["physicalLocation"]["artifactLocation"]["uri"]
        assert uri == "with%20space.json"  # a relative URI reference, not a raw path
        assert location["physicalLocation"]["region"]["startLine"] >= 1
