"""The policy pack: the pure checks (keystead.policies.pack.checks) and their CrossGuard validations.

Resources are given as Pulumi gives them: type tokens, camelCase props,
numbers as floats (90.0), unset arguments absent. The CrossGuard validations
are called with pulumi-policy's real ResourceValidationArgs /
StackValidationArgs / PolicyResource objects (constructing them needs no
server); the PolicyPack itself is never built here, since that starts a gRPC
server and blocks (policies/pack/__main__.py).
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from keystead.policies.pack import checks
from keystead.policies.pack.checks import Resource, Settings, Violation, check_resource, check_stack

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "111122223333"
S = Settings()


@pytest.fixture(scope="module")
def key_policy(example_docs) -> str:
    """A key policy keystead generates (from the docs' example spec): it passes the lint."""
    return json.dumps(example_docs["aws/key-policies/vault.json"])


def key(name: str = "vault", **props) -> Resource:
    base = {"enableKeyRotation": True, "rotationPeriodInDays": 90.0, "deletionWindowInDays": 30.0,
            "multiRegion": False, "region": "us-east-1"}
    return Resource(checks.KEY, name, {**base, **props})


def crypto_key(name: str = "gkey", protect: bool = True, **props) -> Resource:
    base = {"purpose": "ENCRYPT_DECRYPT", "rotationPeriod": "7776000s", "destroyScheduledDuration": "2592000s"}
    return Resource(checks.GCP_CRYPTO_KEY, name, {**base, **props}, protect=protect)


def rules(violations: list[Violation]) -> list[str]:
    return sorted(v.rule for v in violations)


# -- AWS keys ------------------------------------------------------------------------------

def test_a_good_key_passes(key_policy: str) -> None:
    assert check_resource(key(policy=key_policy), S) == []


def test_rotation_must_be_enabled() -> None:
    (v,) = check_resource(key(enableKeyRotation=False), S)
    assert (v.resource, v.rule) == ("vault", "kms-rotation") and "enableKeyRotation" in v.message
    assert rules(check_resource(key(enableKeyRotation=None), S)) == ["kms-rotation"]


@pytest.mark.parametrize(("period", "settings", "bad"), [
    (90.0, S, False), (90, S, False), (91.0, S, True), (365.0, S, True),
    (180.0, Settings(max_rotation_days=180), False), (181.0, Settings(max_rotation_days=180), True),
    (30.0, Settings(max_rotation_days=365), True),  # below AWS's 90
    (3000.0, Settings(max_rotation_days=5000), True),  # above AWS's 2560
])
def test_rotation_period_at_most_the_maximum(period, settings, bad) -> None:
    found = check_resource(key(rotationPeriodInDays=period), settings)
    assert rules(found) == (["kms-rotation"] if bad else [])


def test_an_unset_period_is_aws_default_365() -> None:
    props = dict(key().props)
    del props["rotationPeriodInDays"]
    (v,) = check_resource(Resource(checks.KEY, "vault", props), S)
    assert "365" in v.message and "unset" in v.message
    assert check_resource(Resource(checks.KEY, "vault", props), Settings(max_rotation_days=365)) == []


@pytest.mark.parametrize("props", [
    {"customKeyStoreId": "cks-1234567890abcdef0"},
    {"origin": "AWS_CLOUDHSM"},
    {"customerMasterKeySpec": "ECC_NIST_P256", "keyUsage": "SIGN_VERIFY"},
    {"keySpec": "RSA_3072"},
    {"customerMasterKeySpec": "HMAC_256", "keyUsage": "GENERATE_VERIFY_MAC"},
])
def test_keys_that_rotate_by_successor_are_exempt_from_rotation(props) -> None:
    assert check_resource(key(enableKeyRotation=False, **props), S) == []
    # ... but not from the other rules
    assert rules(check_resource(key(enableKeyRotation=False, deletionWindowInDays=3.0, **props), S)) == \
        ["kms-deletion-window"]


@pytest.mark.parametrize(("days", "settings", "bad"), [
    (7.0, S, False), (6.0, S, True), (30, S, False), (31.0, S, True), ("7", S, True),
    (10.0, Settings(min_deletion_window_days=14), True), (14.0, Settings(min_deletion_window_days=14), False),
])
def test_deletion_window_at_least_the_minimum(days, settings, bad) -> None:
    assert rules(check_resource(key(deletionWindowInDays=days), settings)) == (["kms-deletion-window"] if bad else [])
    replica = Resource(checks.REPLICA_KEY, "vault-eu", {"deletionWindowInDays": days, "region": "eu-west-1"})
    assert rules(check_resource(replica, settings)) == (["kms-deletion-window"] if bad else [])


def test_an_unset_deletion_window_is_aws_default_30() -> None:
    props = dict(key().props)
    del props["deletionWindowInDays"]
    assert check_resource(Resource(checks.KEY, "vault", props), Settings(min_deletion_window_days=30)) == []


# -- key policies ------------------------------------------------------------------------

def test_key_policy_lint_errors_are_violations(key_policy: str) -> None:
    doc = json.loads(key_policy)
    doc["Statement"].append({"Sid": "Everything", "Effect": "Allow",
                             "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/app"},
                             "Action": "kms:*", "Resource": "*"})
    found = check_resource(key(policy=json.dumps(doc)), S)
    assert rules(found) == ["kms-key-policy"] * len(found) and found
    assert any("KS001" in v.message and "Everything" in v.message for v in found)


def test_a_policy_that_locks_everyone_out_is_a_violation() -> None:
    doc = {"Version": "2012-10-17", "Statement": [
        {"Sid": "Use", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/app"},
         "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"}]}
    found = check_resource(key(policy=json.dumps(doc)), S)
    assert any("KS003" in v.message for v in found)


@pytest.mark.parametrize(("policy", "words"), [
    ("{not json", "cannot be read"),
    (json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt",
                                                        "Resource": "*"}]}), "not a key policy"),
])
def test_an_unreadable_policy_is_a_violation(policy, words) -> None:
    (v,) = check_resource(key(policy=policy), S)
    assert v.rule == "kms-key-policy" and words in v.message


def test_replica_and_key_policy_resources_are_linted(key_policy: str) -> None:
    bad = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "Anyone", "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}]})
    for type_ in (checks.REPLICA_KEY, checks.KEY_POLICY):
        assert check_resource(Resource(type_, "p", {"policy": key_policy}), S) == []
        assert any("KS008" in v.message for v in check_resource(Resource(type_, "p", {"policy": bad}), S))
    assert rules(check_resource(Resource(checks.KEY_POLICY, "p", {"keyId": "k"}), S)) == ["kms-key-policy"]


# -- GCP ---------------------------------------------------------------------------------

def test_a_good_crypto_key_passes() -> None:
    assert check_resource(crypto_key(), S) == []


@pytest.mark.parametrize(("props", "protect", "expected"), [
    ({"rotationPeriod": None}, True, ["gcp-rotation"]),
    ({"rotationPeriod": "7776001s"}, True, ["gcp-rotation"]),
    ({"rotationPeriod": "3600s"}, True, ["gcp-rotation"]),
    ({"rotationPeriod": "90 days"}, True, ["gcp-rotation"]),
    ({}, False, ["gcp-protect"]),
    ({"destroyScheduledDuration": "86400s"}, True, ["kms-deletion-window"]),
    ({"purpose": "ASYMMETRIC_SIGN", "rotationPeriod": None}, True, []),  # GCP cannot rotate asymmetric keys
])
def test_crypto_key_rules(props, protect, expected) -> None:
    """A None value: the prop is absent (unset arguments do not reach the checks)."""
    r = crypto_key(protect=protect, **props)
    r = Resource(r.type, r.name, {k: v for k, v in r.props.items() if v is not None}, r.protect)
    assert rules(check_resource(r, S)) == expected


def test_gcp_rotation_follows_the_configured_maximum() -> None:
    assert check_resource(crypto_key(rotationPeriod="15552000s"), Settings(max_rotation_days=180)) == []
    assert rules(check_resource(crypto_key(rotationPeriod="15552000s"), S)) == ["gcp-rotation"]


def test_other_resources_are_not_checked() -> None:
    assert check_resource(Resource("aws:iam/role:Role", "r", {"policy": "{not json"}), S) == []
    assert check_resource(Resource("aws:kms/alias:Alias", "a", {"targetKeyId": "x"}), S) == []


# -- the stack: replicas -----------------------------------------------------------------

ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/mrk-0123456789abcdef0123456789abcdef"


def mrk(**props) -> Resource:
    return key(multiRegion=True, arn=ARN, **props)


def replica(region: str, name: str = "vault-replica", **props) -> Resource:
    return Resource(checks.REPLICA_KEY, name, {"primaryKeyArn": ARN, "region": region,
                                                "deletionWindowInDays": 30.0, **props})


def test_a_multi_region_key_with_a_replica_elsewhere_passes() -> None:
    assert check_stack([mrk(), replica("eu-west-1")], S) == []


@pytest.mark.parametrize("replicas", [[], [replica("us-east-1")],
                                      [replica("eu-west-1", primaryKeyArn=ARN.replace("0123", "ffff"))]])
def test_a_multi_region_key_without_a_replica_elsewhere_fails(replicas) -> None:
    (v,) = check_stack([mrk(), *replicas], S)
    assert (v.resource, v.rule) == ("vault", "kms-replica")


def test_replicas_are_matched_by_key_id_or_by_tag() -> None:
    by_id = key(multiRegion=True, keyId=ARN.rsplit("/", 1)[1])
    assert check_stack([by_id, replica("eu-west-1")], S) == []
    tags = {"keystead:key": "vault"}
    inputs_only = key(multiRegion=True, tags=tags)  # a graph of inputs: the primary's arn is not known
    assert check_stack([inputs_only, replica("eu-west-1", primaryKeyArn=None, tags=tags)], S) == []
    assert rules(check_stack([inputs_only, replica("eu-west-1", tags={"keystead:key": "other"})], S)) == \
        ["kms-replica"]


def test_single_region_keys_need_no_replica() -> None:
    assert check_stack([key()], S) == []


def test_check_stack_includes_every_resource_rule() -> None:
    found = check_stack([mrk(enableKeyRotation=False), crypto_key(protect=False)], S)
    assert rules(found) == ["gcp-protect", "kms-replica", "kms-rotation"]


# -- CrossGuard --------------------------------------------------------------------------

pp = pytest.importorskip("pulumi_policy")


def _opts(protect: bool = False):
    return pp.PolicyResourceOptions(protect, [], False, [], pp.PolicyCustomTimeouts(0, 0, 0), [])


def _urn(r: Resource) -> str:
    return f"urn:pulumi:dev::keystead::{r.type}::{r.name}"


def _resource_args(r: Resource, config=None):
    return pp.ResourceValidationArgs(r.type, r.props, _urn(r), r.name, _opts(r.protect), None, config)


def _policy_resource(r: Resource):
    return pp.PolicyResource(r.type, r.props, _urn(r), r.name, _opts(r.protect), None, None, [], {})


@pytest.fixture(scope="module")
def pack():
    from keystead.policies.pack import crossguard

    return {p.name: p for p in crossguard.policies()}


def run_resource(pack, r: Resource, config: dict | None = None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, policy in pack.items():
        if isinstance(policy, pp.ResourceValidationPolicy):
            found: list[str] = []
            args = _resource_args(r, (config or {}).get(name))
            policy.validate(args, lambda m, urn=None, found=found: found.append(m))
            if found:
                out[name] = found
    return out


def test_the_pack_has_one_policy_per_rule(pack) -> None:
    assert sorted(pack) == sorted([r.id for r in checks.RESOURCE_RULES] + [r.id for r in checks.STACK_RULES])
    assert isinstance(pack["kms-replica"], pp.StackValidationPolicy)


def test_crossguard_flags_a_bad_key_and_passes_a_good_one(pack, key_policy: str) -> None:
    assert run_resource(pack, key(policy=key_policy)) == {}
    found = run_resource(pack, key(rotationPeriodInDays=365.0, deletionWindowInDays=5.0))
    assert sorted(found) == ["kms-deletion-window", "kms-rotation"]
    assert "365" in found["kms-rotation"][0]
    assert run_resource(pack, crypto_key(protect=False)) == {"gcp-protect": [check_resource(
        crypto_key(protect=False), S)[0].message]}


def test_crossguard_config_sets_the_maximum_and_the_minimum(pack) -> None:
    r = key(rotationPeriodInDays=180.0, deletionWindowInDays=10.0)
    assert sorted(run_resource(pack, r)) == ["kms-rotation"]
    config = {"kms-rotation": {"maxRotationDays": 180}, "kms-deletion-window": {"minDeletionWindowDays": 14}}
    assert sorted(run_resource(pack, r, config)) == ["kms-deletion-window"]


def test_crossguard_config_schemas_have_the_defaults(pack) -> None:
    assert pack["kms-rotation"].config_schema.properties["maxRotationDays"]["default"] == 90
    assert pack["kms-deletion-window"].config_schema.properties["minDeletionWindowDays"]["default"] == 7


def test_crossguard_stack_validation_names_the_urn(pack) -> None:
    primary, other = mrk(), key("other", multiRegion=True, arn=ARN.replace("0123", "aaaa"))
    reports: list[tuple[str, str | None]] = []
    args = pp.StackValidationArgs([_policy_resource(r) for r in (primary, replica("eu-west-1"), other)])
    pack["kms-replica"].validate(args, lambda m, urn=None: reports.append((m, urn)))
    assert [urn for _m, urn in reports] == [_urn(other)]


def test_crossguard_unknown_values_reach_only_the_rule_that_reads_them(pack) -> None:
    """In a preview, CrossGuard's props proxy raises UnknownValueError when an unknown value is read;
    the engine then skips that policy for that resource. Only kms-key-policy reads ``policy``."""
    from pulumi.runtime.rpc import UNKNOWN
    from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

    r = key()
    props = unknown_checking_proxy({**r.props, "policy": UNKNOWN, "enableKeyRotation": False})
    args = pp.ResourceValidationArgs(r.type, props, _urn(r), r.name, _opts(), None)
    found: list[str] = []
    pack["kms-rotation"].validate(args, lambda m, urn=None: found.append(m))
    assert len(found) == 1
    with pytest.raises(UnknownValueError):
        pack["kms-key-policy"].validate(args, lambda m, urn=None: found.append(m))


def test_checks_stay_pure_and_only_the_pack_imports_pulumi_policy() -> None:
    for path in (ROOT / "policies").rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        pulumi = {n for n in names if n.startswith("pulumi")}
        allowed = {"pulumi_policy"} if path.name in ("crossguard.py", "__main__.py") and \
            path.parent.name == "pack" else set()
        assert pulumi <= allowed, f"{path.relative_to(ROOT)} imports {pulumi}"


def test_main_starts_the_pack_server() -> None:
    """Run as the Pulumi CLI runs it (a script, the pack's folder as the working directory), in its own
    process: PolicyPack starts its gRPC server and prints the port for the engine; the test then stops it."""
    import subprocess
    import sys

    pack_dir = ROOT / "policies" / "pack"
    proc = subprocess.Popen([sys.executable, "__main__.py"], cwd=pack_dir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline().strip()
        assert line.isdigit() and 0 < int(line) < 65536, (line, proc.stderr.read() if proc.poll() is not None else "")
        assert proc.poll() is None  # serving, as the engine expects
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_main_builds_the_pack_from_the_same_policies() -> None:
    """__main__.py is read, never imported (building PolicyPack starts a server and blocks)."""
    tree = ast.parse((ROOT / "policies" / "pack" / "__main__.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "PolicyPack"]
    (call,) = calls
    assert {k.arg for k in call.keywords} == {"name", "enforcement_level", "policies"}
    assert (ROOT / "policies" / "pack" / "PulumiPolicy.yaml").read_text().count("name: python") == 1



def test_through_pulumi_policys_own_analyzer(key_policy: str) -> None:
    """The pack's policies behind pulumi-policy's analyzer servicer, as the Pulumi engine calls it (its private
    ``_PolicyAnalyzerServicer``; it may change): props go through protobuf (numbers become floats) and the
    real unknown-checking proxy, the enforcement level comes from the pack. No server is started."""
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import analyzer_pb2
    from pulumi_policy.policy import _PolicyAnalyzerServicer

    from keystead.policies.pack import crossguard

    servicer = _PolicyAnalyzerServicer(crossguard.PACK_NAME, "0.1.0", crossguard.policies(), crossguard.ENFORCEMENT)

    def analyze(r: Resource) -> list[tuple[str, int]]:
        props = struct_pb2.Struct()
        props.update(dict(r.props))
        request = analyzer_pb2.AnalyzeRequest(type=r.type, properties=props, urn=_urn(r), name=r.name,
                                              options=analyzer_pb2.AnalyzerResourceOptions(protect=r.protect))
        response = servicer.Analyze(request, None)
        return [(d.policyName, int(d.enforcementLevel)) for d in response.diagnostics]

    assert analyze(key(policy=key_policy)) == []
    mandatory = int(analyzer_pb2.EnforcementLevel.Value("MANDATORY"))
    assert analyze(key(rotationPeriodInDays=120, policy=key_policy)) == [("kms-rotation", mandatory)]
    assert analyze(crypto_key(protect=False)) == [("gcp-protect", mandatory)]
    assert analyze(crypto_key()) == []


@pytest.fixture(scope="module")
def dev_graph():
    """The stack's own program (stacks/) with Pulumi.dev.yaml, run under Pulumi's mocks (keystead.stacks.offline)."""
    pytest.importorskip("pulumi_aws")
    from keystead.stacks import offline, program

    base = program.project_dir(ROOT)
    project, values, secrets = offline.load_stack_config(base, "dev")
    return offline.run(lambda: program.main(base), stack="dev", project=project, config=values, secret_keys=secrets)


def test_crossguard_passes_the_example_stack_and_flags_it_broken(pack, dev_graph) -> None:
    """Resource policies see each resource's inputs (as in Analyze), the stack policy the mocks' outputs (as in
    AnalyzeStack: ``PolicyResource.props`` are outputs), through pulumi-policy's own argument objects."""
    records = [r for r in dev_graph.records if r.custom]

    def run_all(records, drop_replicas: bool = False) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for r in records:
            res = Resource(r.type, r.name, r.props, r.protect)
            found += [(name, r.name) for name, msgs in run_resource(pack, res).items() for _ in msgs]
        stack = [pp.PolicyResource(r.type, {**r.props, **r.outputs}, r.urn, r.name, _opts(r.protect), None, None,
                                   [], {}) for r in records
                 if not (drop_replicas and r.type == checks.REPLICA_KEY)]
        urns = {r.urn: r.name for r in records}
        pack["kms-replica"].validate(pp.StackValidationArgs(stack),
                                     lambda m, urn=None: found.append(("kms-replica", urns.get(urn, "?"))))
        return found

    assert any(r.type == checks.REPLICA_KEY for r in records) and any(r.type == checks.GCP_CRYPTO_KEY for r in records)
    assert run_all(records) == []
    broken = []
    for r in records:
        if r.type == checks.GCP_CRYPTO_KEY:
            r = dataclasses.replace(r, protect=False)
        elif r.type == checks.KEY and r.props.get("enableKeyRotation"):
            r = dataclasses.replace(r, props={**r.props, "rotationPeriodInDays": 365.0})
        broken.append(r)
    found = run_all(broken, drop_replicas=True)
    rules_found = {rule for rule, _name in found}
    assert rules_found == {"gcp-protect", "kms-rotation", "kms-replica"}
    multi = {r.name for r in records if r.type == checks.KEY and r.props.get("multiRegion")}
    assert {name for rule, name in found if rule == "kms-replica"} == multi
