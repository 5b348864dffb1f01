"""Every configuration error stops the program before a single resource is declared.

Each case edits the example spec or stack config, runs the real program under mocks, and
checks the error's class, that its message starts with the field or config key it names,
and that the mock monitor saw nothing but the Stack itself.
"""

from __future__ import annotations

import pytest
import tomlkit

from keystead.errors import ConfigError, PolicyError
from keystead.policies import SpecError
from keystead.policies.generate import LockoutError
from keystead.stacks.config import StackConfigError


def _set(path: str, value):
    def edit(spec):
        *parents, last = path.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, tomlkit.table()) if part not in node else node[part]
        node[last] = value
    return edit


def _drop(path: str):
    def edit(spec):
        *parents, last = path.split(".")
        node = spec
        for part in parents:
            node = node[part]
        del node[last]
    return edit


SPEC_CASES = [
    ("aws rotation below 90 days", _set("keys.vault.rotation_days", 30), "keys.vault.rotation_days"),
    ("aws rotation above 2560 days", _set("keys.vault.rotation_days", 3000), "keys.vault.rotation_days"),
    ("deletion window below 7", _set("keys.payments.deletion_window_days", 5), "keys.payments.deletion_window_days"),
    ("deletion window above 30", _set("keys.payments.deletion_window_days", 31),
     "keys.payments.deletion_window_days"),
    ("gcp rotation of one day", _set("keys.gcp-vault.rotation_days", 1), "keys.gcp-vault.rotation_days"),
    ("replica region is the primary", _set("keys.payments.replica_regions", ["us-east-1"]),
     "keys.payments.replica_regions"),
    ("dr region list holds the primary", _set("aws.dr_regions", ["us-east-1"]), "aws.dr_regions"),
    ("dr asked with no dr region", _set("aws.dr_regions", []), "keys.release-signing.dr"),
    ("one hsm subnet", _set("hsm_stores.main.subnets", {"subnet-0a1b2c3d4e5f60001": "us-east-1a"}),
     "hsm_stores.main.subnets"),
    ("two hsm subnets in one zone",
     _set("hsm_stores.main.subnets", {"subnet-0a1b2c3d4e5f60001": "us-east-1a",
                                      "subnet-0a1b2c3d4e5f60002": "us-east-1a"}), "hsm_stores.main.subnets"),
    ("undeclared key store", _set("keys.hsm-vault.key_store", "other"), "keys.hsm-vault.key_store"),
    ("undeclared key in a principal", _set("principals.release.roles", {"nope": "signer"}),
     "principals.release.roles.nope"),
    ("undeclared key for a worker", _set("workers.replicator.keys", ["nope"]), "workers.replicator.keys"),
    ("half an IRSA trust", _drop("workers.rotation.namespace"), "workers.rotation"),
    ("a trust for a user", _set("workers.replicator.arn", "arn:aws:iam::111122223333:user/dr"),
     "workers.replicator.arn"),
]


@pytest.mark.parametrize(("label", "edit", "field"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_spec_errors_name_the_field_and_declare_nothing(stack, declared, label, edit, field):
    with pytest.raises(SpecError) as caught:
        stack(edit=edit)
    message = str(caught.value)
    assert f": {field}: " in message or message.startswith(f"{field}: "), message
    assert caught.value.exit_code == 10
    assert set(declared) <= {"pulumi:pulumi:Stack"}, declared


CONFIG_CASES = [
    ("undeclared key", {"keystead:keys": '["vault", "nope"]'}, "keystead:keys"),
    ("undeclared worker", {"keystead:workers": '["rotation", "janitor"]'}, "keystead:workers"),
    ("trust anchor for an undeclared store", {"keystead:hsmTrustAnchors": '{"other": "x.crt"}'},
     "keystead:hsmTrustAnchors.other"),
    ("a typo in a setting", {"keystead:deplyer": "x"}, "keystead:deplyer"),
    ("no spec", {"keystead:spec": None}, "keystead:spec"),
    ("a deployer that is no ARN", {"keystead:deployer": "kms-admins"}, "keystead:deployer"),
    ("hsm password missing", {"keystead:hsmPassword": None}, "keystead:hsmPassword"),
    ("connected before its trust anchor", {"keystead:hsmTrustAnchors": None}, "keystead:hsmConnected"),
    ("an undeclared store connected", {"keystead:hsmConnected": '["main", "other"]'}, "keystead:hsmConnected"),
]


@pytest.mark.parametrize(("label", "config", "key"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_stack_config_errors_name_the_config_key(stack, declared, label, config, key):
    with pytest.raises(StackConfigError) as caught:
        stack(config=config)
    assert str(caught.value).startswith(f"{key}: "), str(caught.value)
    assert isinstance(caught.value, ConfigError) and caught.value.exit_code == 3
    assert set(declared) <= {"pulumi:pulumi:Stack"}, declared


def test_a_password_that_is_not_a_secret_is_refused(stack):
    with pytest.raises(StackConfigError, match=r"^keystead:hsmPassword: must be a secret"):
        stack(secret_keys=[])


def test_a_policy_that_locks_the_deployer_out_is_refused(stack, declared):
    """The deployer is not among the keys' admins: deny_destructive's Deny would stop its PutKeyPolicy."""
    with pytest.raises(LockoutError) as caught:
        stack(config={"keystead:deployer": "arn:aws:sts::111122223333:assumed-role/ci-deploy/run-42"})
    message = str(caught.value)
    assert message.startswith("keys.hsm-vault: the key policy would lock the deployer "
                              "arn:aws:iam::111122223333:role/ci-deploy out"), message  # the first key, by name
    assert "MalformedPolicyDocumentException" in message and "DenyDestructiveToNonAdmins" in message
    assert isinstance(caught.value, PolicyError) and caught.value.exit_code == 10
    assert set(declared) <= {"pulumi:pulumi:Stack"}, declared


def test_without_root_access_the_root_deployer_is_locked_out(stack):
    with pytest.raises(LockoutError, match=r"no unconditional Allow of kms:PutKeyPolicy"):
        stack(edit=_set("aws.root_access", False), config={"keystead:deployer": None})


def test_the_admin_deployer_passes_without_root_access(stack, declared):
    graph = stack(edit=_set("aws.root_access", False))
    assert graph.named("aws:kms/key:Key", "vault")
    assert "aws:kms/key:Key" in declared  # the spy the error cases rely on does see registrations


def test_the_component_refuses_a_lockout_policy_before_declaring_its_key():
    """MultiRegionKey checks its policy itself too: a policy without the deployer never reaches AWS."""
    import json

    from keystead.stacks import offline
    from keystead.stacks.multi_region_key import MultiRegionKey, MultiRegionKeyArgs

    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "OnlyTheApp", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/app"},
        "Action": "kms:*", "Resource": "*"}]})
    args = MultiRegionKeyArgs(key_name="k", region="us-east-1", policy=policy,
                              deployer="arn:aws:iam::111122223333:role/kms-admins", replica_regions=("eu-west-1",))
    with pytest.raises(LockoutError, match=r"^keys\.k: .*no unconditional Allow"):
        offline.run(lambda: MultiRegionKey("k", args))
    ok = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "Admins", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/kms-admins"},
        "Action": "kms:*", "Resource": "*"}]})
    graph = offline.run(lambda: MultiRegionKey("k", MultiRegionKeyArgs(
        key_name="k", region="us-east-1", policy=ok, deployer="arn:aws:iam::111122223333:role/kms-admins",
        replica_regions=("eu-west-1",))))
    assert [r.props["region"] for r in graph.of_type("aws:kms/replicaKey:ReplicaKey")] == ["eu-west-1"]
