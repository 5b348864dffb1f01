"""`policy from-audit`: the least-privilege policy for what the audit log shows."""

from __future__ import annotations

import json

from click.testing import CliRunner

from keystead.cli.policy import policy
from keystead.policies.lint import lint_document, parse

KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER = "arn:aws:kms:eu-west-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab"
GCP = "projects/p1/locations/global/keyRings/r/cryptoKeys/k"


def log(tmp_path, records):
    path = tmp_path / "audit.log"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def rec(actor, action, key=None, result="ok"):
    return {"seq": 1, "actor": actor, "action": action, "key": key, "result": result}


def test_proposes_only_what_was_done(tmp_path):
    path = log(tmp_path, [
        rec("api", "secrets.get", KEY), rec("api", "secrets.get", KEY),
        rec("api", "secrets.set", KEY, result="AccessDenied"),   # tried, not done
        rec("worker", "rotation.rotate", KEY),                        # someone else
        rec("api", "secrets.get", f"{GCP}/cryptoKeyVersions/3"),
        rec("api", "secrets.get", "local:main"),                  # no cloud IAM
        rec("api", "secrets.rm", None),                           # no KMS at all
        rec("api", "secrets.get", "alias/keystead/vault"),        # cannot scope
    ])
    result = CliRunner().invoke(policy, ["from-audit", "--audit", path, "--principal", "api"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["records"] == 6
    statements = out["aws_identity_policy"]["Statement"]
    assert statements == [{"Sid": "Keyeuwest11234abcd12ab34cd56ef1234567890ab", "Effect": "Allow",
                           "Action": "kms:Decrypt", "Resource": KEY}]
    assert out["gcp_permissions"] == {GCP: ["cloudkms.cryptoKeyVersions.useToDecrypt"]}
    assert [u["key"] for u in out["unmapped"]] == ["alias/keystead/vault"]
    # the proposal lints clean
    doc = parse(json.dumps(out["aws_identity_policy"]), "proposal.json")
    assert lint_document(doc) == []


def test_worker_rewrap_and_create(tmp_path):
    path = log(tmp_path, [rec("worker", "rotation.rewrap", KEY), rec("worker", "rotation.rotate", OTHER),
                          rec("worker", "keys.create", None), rec("worker", "teleport", KEY)])
    out = json.loads(CliRunner().invoke(
        policy, ["from-audit", "--audit", path, "--principal", "worker"]).output)
    by_resource = {s["Resource"]: s["Action"] for s in out["aws_identity_policy"]["Statement"]}
    assert by_resource == {KEY: ["kms:ReEncryptFrom", "kms:ReEncryptTo"],
                           OTHER: "kms:RotateKeyOnDemand", "*": "kms:CreateKey"}
    assert out["unmapped"][0]["action"] == "teleport"


def test_bad_log_and_unknown_principal(tmp_path):
    path = tmp_path / "audit.log"
    path.write_text(json.dumps(rec("a", "secrets.get", KEY)) + "\n{not json\n")
    result = CliRunner().invoke(policy, ["from-audit", "--audit", str(path), "--principal", "a"])
    assert result.exit_code != 0 and "audit.log:2: --audit: invalid JSON" in str(result.exception)
    good = log(tmp_path, [rec("a", "secrets.get", KEY)])
    result = CliRunner().invoke(policy, ["from-audit", "--audit", good, "--principal", "b"])
    assert "no successful records for 'b'" in str(result.exception)


def test_retire_keeps_the_deletion_window(tmp_path):
    """The proposal lints clean: ScheduleKeyDeletion only with a minimum waiting period."""
    path = log(tmp_path, [rec("w", "rotation.retire", KEY), rec("w", "keys.describe", KEY)])
    result = CliRunner().invoke(policy, ["from-audit", "--audit", path, "--principal", "w"])
    proposal = json.loads(result.output)["aws_identity_policy"]
    assert lint_document(parse(json.dumps(proposal), "proposal.json")) == []
    window = [s for s in proposal["Statement"] if s["Action"] == "kms:ScheduleKeyDeletion"]
    assert window and window[0]["Condition"] == {"NumericGreaterThanEquals": {
        "kms:ScheduleKeyDeletionPendingWindowInDays": "30"}}
