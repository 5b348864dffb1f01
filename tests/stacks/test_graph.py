"""The declared graph of the example stack, asserted after the mocked run has finished.

Everything here runs the real program (stacks/program.py) with the real pulumi, pulumi-aws and
pulumi-gcp SDKs under pulumi.runtime.set_mocks; FakeCloud only invents ids and ARNs.
"""

from __future__ import annotations

import json

from keystead.policies.generate import documents, gcp
from keystead.policies.generate.aws import identity_policy, with_arns

KEY = "aws:kms/key:Key"
REPLICA = "aws:kms/replicaKey:ReplicaKey"
ALIAS = "aws:kms/alias:Alias"
CRYPTO_KEY = "gcp:kms/cryptoKey:CryptoKey"


def _slow_payments(spec):
    spec["keys"]["payments"]["rotation_days"] = 180


def test_every_primary_has_a_replica_per_dr_region_with_its_own_generated_policy(stack, spec_of):
    graph = stack()
    spec, docs = spec_of(), documents(spec_of())
    multi = [k for k in spec.keys if k.cloud == "aws" and k.replica_regions]
    assert {k.name for k in multi} == {"vault", "payments", "release-signing"}
    for key in multi:
        primary = graph.named(KEY, key.name)
        assert primary.props["region"] == key.region and primary.props["multiRegion"] is True
        assert json.loads(primary.props["policy"]) == docs[f"aws/key-policies/{key.name}.json"]
        replicas = [r for r in graph.of_type(REPLICA) if r.props["tags"]["keystead:key"] == key.name]
        assert sorted(r.props["region"] for r in replicas) == sorted(key.replica_regions)
        for replica in replicas:
            region = replica.props["region"]
            assert replica.props["primaryKeyArn"] == primary.outputs["arn"]
            assert json.loads(replica.props["policy"]) == docs[f"aws/key-policies/{key.name}.{region}.json"]
            assert replica.parent == key.name
    # the dr = true keys took [aws] dr_regions, in the configured order
    assert spec.key("vault").replica_regions == ("us-west-2", "eu-west-1")


def test_regions_come_from_the_resources_region_argument_not_from_extra_providers(dev):
    graph = dev
    assert not [r for r in graph.records if r.type.startswith("pulumi:providers:")]
    placed = [r for r in graph.records if r.type in (KEY, REPLICA, ALIAS)]
    assert placed and all(r.provider == "" and r.props.get("region") for r in placed)


def test_every_region_has_the_alias_and_aliases_ignore_target_key_id(dev):
    graph = dev
    aliases = graph.of_type(ALIAS)
    by_key: dict[str, set[str]] = {}
    for alias in aliases:
        assert alias.ignore_changes == ("targetKeyId",), alias.name
        by_key.setdefault(alias.props["name"], set()).add(alias.props["region"])
    assert by_key["alias/keystead/vault"] == {"us-east-1", "us-west-2", "eu-west-1"}
    assert by_key["alias/keystead/payments"] == {"us-east-1", "eu-west-1"}
    assert by_key["alias/keystead/hsm-vault"] == {"us-east-1"}
    replica = graph.named(REPLICA, "vault-eu-west-1")
    assert graph.named(ALIAS, "vault-alias-eu-west-1").props["targetKeyId"] == replica.outputs["keyId"]


def test_rotation_periods_and_deletion_windows_as_configured(stack):
    graph = stack(edit=_slow_payments)
    assert graph.named(KEY, "vault").props["rotationPeriodInDays"] == 90
    assert graph.named(KEY, "payments").props["rotationPeriodInDays"] == 180
    assert graph.exports["keys"]["payments"]["rotation_period_days"] == 180
    for name in ("vault", "payments"):
        assert graph.named(KEY, name).props["enableKeyRotation"] is True
        assert graph.named(KEY, name).props["deletionWindowInDays"] == 30
        assert graph.named(KEY, name).props["tags"]["keystead:key"] == name
    signing = graph.named(KEY, "release-signing").props
    assert (signing["customerMasterKeySpec"], signing["keyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    assert "enableKeyRotation" not in signing  # asymmetric: rotated by successor


def test_hsm_key_store_spans_distinct_zones_and_its_keys_do_not_rotate(dev):
    graph = dev
    (cluster,) = graph.of_type("aws:cloudhsmv2/cluster:Cluster")
    assert (cluster.props["hsmType"], cluster.props["mode"]) == ("hsm2m.medium", "FIPS")
    hsms = graph.of_type("aws:cloudhsmv2/hsm:Hsm")
    assert len(hsms) == 2
    assert len({h.props["availabilityZone"] for h in hsms}) == 2
    assert sorted(h.props["subnetId"] for h in hsms) == sorted(cluster.props["subnetIds"])
    (store,) = graph.of_type("aws:kms/customKeyStore:CustomKeyStore")
    assert store.props["keyStorePassword"] == "[secret]"
    assert store.props["cloudHsmClusterId"] == cluster.outputs["clusterId"]
    assert set(store.depends_on) >= {h.name for h in hsms}
    key = graph.named(KEY, "hsm-vault").props
    assert key["customKeyStoreId"] == store.outputs["id"]
    assert "enableKeyRotation" not in key and "multiRegion" not in key
    assert graph.exports["keys"]["hsm-vault"]["rotation"] == "successor"
    assert graph.exports["hsm"]["main"]["hsm_count"] == 2


def test_the_store_waits_for_its_connection_before_its_keys(stack):
    graph = stack(config={"keystead:hsmConnected": None})
    assert len(graph.of_type("aws:kms/customKeyStore:CustomKeyStore")) == 1
    assert not [r for r in graph.of_type(KEY) if r.name == "hsm-vault"]
    assert "hsm-vault" not in graph.exports["keys"]
    assert [n for n in graph.notes if "hsm-vault" in n and "keystead:hsmConnected" in n]


def test_without_a_trust_anchor_only_the_cluster_and_hsms_are_declared(stack):
    graph = stack(config={"keystead:hsmTrustAnchors": None, "keystead:hsmConnected": None})
    assert len(graph.of_type("aws:cloudhsmv2/hsm:Hsm")) == 2
    assert not graph.of_type("aws:kms/customKeyStore:CustomKeyStore")
    assert "hsm-vault" not in graph.exports["keys"]
    assert graph.exports["hsm"]["main"]["custom_key_store_id"] is None


def test_gcp_keys_rotate_every_90_days_are_protected_and_set_their_own_level(dev):
    graph = dev
    keys = {r.name: r for r in graph.of_type(CRYPTO_KEY)}
    assert set(keys) == {"gcp-vault", "gcp-signing"}
    assert all(r.protect for r in keys.values())
    assert keys["gcp-vault"].props["rotationPeriod"] == "7776000s"
    assert keys["gcp-vault"].props["versionTemplate"] == {"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION",
                                                           "protectionLevel": "HSM"}
    assert keys["gcp-signing"].props["versionTemplate"]["protectionLevel"] == "SOFTWARE"
    assert keys["gcp-signing"].props["purpose"] == "ASYMMETRIC_SIGN"
    assert "rotationPeriod" not in keys["gcp-signing"].props  # GCP does not rotate asymmetric keys
    assert not graph.of_type("gcp:kms/cryptoKeyIAMBinding:CryptoKeyIAMBinding")  # additive members only


def test_no_iam_document_in_the_stack_differs_from_what_policies_generates(stack, spec_of):
    graph = stack()
    spec = spec_of()
    arns = {r.props["tags"]["keystead:key"]: r.outputs["arn"] for r in graph.of_type(KEY)}
    docs = documents(spec, arns)
    seen = set()
    for record in graph.of_type(KEY) + graph.of_type(REPLICA):
        name = record.props["tags"]["keystead:key"]
        path = f"aws/key-policies/{name}.json" if record.type == KEY else \
            f"aws/key-policies/{name}.{record.props['region']}.json"
        assert json.loads(record.props["policy"]) == docs[path], path
        seen.add(path)
    for role in graph.of_type("aws:iam/role:Role"):
        worker = role.parent
        assert json.loads(role.props["assumeRolePolicy"]) == docs[f"aws/trust-policies/{worker}.json"]
        seen.add(f"aws/trust-policies/{worker}.json")
    for policy in graph.of_type("aws:iam/rolePolicy:RolePolicy"):
        expected = docs[f"aws/workers/{policy.parent}.json"]
        assert json.loads(policy.props["policy"]) == expected
        assert expected == identity_policy(with_arns(spec, arns), policy.parent)
        seen.add(f"aws/workers/{policy.parent}.json")
    granted = {(m.props["cryptoKeyId"].rsplit("/", 1)[1], m.props["role"], m.props["member"])
               for m in graph.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")}
    wanted = set()
    for key in (k for k in spec.keys if k.cloud == "gcp"):
        assert key.resource is not None
        for binding in gcp.bindings(spec, key.name)["bindings"]:
            wanted |= {(key.resource.rsplit("/", 1)[1], binding["role"], m) for m in binding["members"]}
        seen.add(f"gcp/bindings/{key.name}.json")
    assert granted == wanted
    (role,) = graph.of_type("gcp:projects/iAMCustomRole:IAMCustomRole")
    assert sorted(role.props["permissions"]) == docs["gcp/roles/keysteadRotator.json"]["includedPermissions"]
    seen.add("gcp/roles/keysteadRotator.json")
    # every document the stack's own resources need was compared (the other principals' roles exist already)
    stack_docs = {p for p in docs if not p.startswith(("aws/identity-policies/", "aws/trust-policies/api"))}
    assert seen == stack_docs


def test_exports_follow_the_contract(dev):
    graph = dev
    keys = graph.exports["keys"]
    vault = keys["vault"]
    assert vault["arn"].startswith("arn:aws:kms:us-east-1:111122223333:key/mrk-")
    assert vault["replica_regions"] == ["us-west-2", "eu-west-1"]
    assert set(vault["replica_arns"]) == {"us-west-2", "eu-west-1"}
    assert vault["replica_arns"]["eu-west-1"].startswith("arn:aws:kms:eu-west-1:")
    assert (vault["rotation"], vault["purpose"], vault["hsm"], vault["multi_region"]) == \
        ("scheduled", "encrypt", False, True)
    assert keys["release-signing"]["purpose"] == "sign"
    assert keys["gcp-vault"]["id"] == "projects/acme-dev/locations/europe-west1/keyRings/keystead/cryptoKeys/vault"
    assert keys["gcp-vault"]["protection_level"] == "HSM"
    assert graph.exports["hsm"]["main"]["cluster_id"].startswith("cluster-")
    workers = graph.exports["workers"]
    assert workers["rotation-worker"]["aws_role_arn"] == "arn:aws:iam::111122223333:role/keystead-rotation"
    assert workers["rotation-worker"]["gcp_service_account"] == "keystead-rotation@acme-dev.iam.gserviceaccount.com"
    assert workers["dr-replicator"]["gcp_service_account"] is None


def test_components_parent_their_children(dev):
    graph = dev
    components = {r.name: r.type for r in graph.records if not r.custom and r.type != "pulumi:pulumi:Stack"}
    assert components["vault"] == "keystead:aws:MultiRegionKey"
    assert components["release-signing"] == "keystead:aws:SigningKey"
    assert components["main"] == "keystead:aws:HsmKeyStore"
    assert components["europe-west1-keystead"] == "keystead:gcp:KeyRing"
    assert components["rotation-worker"] == "keystead:identity:WorkerIdentity"
    assert all(r.parent in components for r in graph.records if r.custom)
    # the GCP grants wait for the rotator role and service account the worker identities create
    (ring,) = [r for r in graph.records if r.type == "keystead:gcp:KeyRing"]
    assert {"rotation-worker-sa", "rotation-worker-rotator-role"} <= set(ring.depends_on)


def test_a_second_run_in_one_process_is_its_own_stack(stack):
    stack()
    graph = stack(stack_name="prod")
    assert all(r.urn.startswith("urn:pulumi:prod::") for r in graph.records)


def test_policy_generate_on_the_stack_spec_writes_the_stack_key_policies(dev, tmp_path):
    """One inventory: `keystead policy generate` on the file Pulumi.dev.yaml names gives the same documents."""
    from click.testing import CliRunner

    from keystead.cli.entry import cli

    from .conftest import SPEC

    result = CliRunner().invoke(cli, ["policy", "generate", str(SPEC), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for record in dev.of_type(KEY):
        name = record.props["tags"]["keystead:key"]
        assert (tmp_path / f"aws/key-policies/{name}.json").read_text() == record.props["policy"]
    for record in dev.of_type(REPLICA):
        name, region = record.props["tags"]["keystead:key"], record.props["region"]
        assert (tmp_path / f"aws/key-policies/{name}.{region}.json").read_text() == record.props["policy"]
    role = dev.named("aws:iam/role:Role", "rotation-worker-role")
    assert (tmp_path / "aws/trust-policies/rotation-worker.json").read_text() == role.props["assumeRolePolicy"]
