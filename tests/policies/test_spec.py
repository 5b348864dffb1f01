"""Spec parsing: the example loads; every kind of bad input names its field and line."""

from __future__ import annotations

import pytest

from keystead.errors import PolicyError
from keystead.policies.spec import SeparationOfDuties, SpecError, load_spec

GOOD = """\
version = 1
[aws]
account = "111122223333"
region = "eu-west-1"

[keys.vault]
type = "symmetric"

[principals.api]
kind = "aws-role"
arn = "arn:aws:iam::111122223333:role/api"
roles = { vault = "decrypt" }
"""


def load(tmp_path, text: str, name: str = "iam.toml"):
    path = tmp_path / name
    path.write_text(text)
    return load_spec(path)


def test_example_spec_loads(example_spec):
    names = {k.name for k in example_spec.keys}
    assert names == {"vault", "legacy", "hsm-vault", "release-signing", "gcp-vault", "gcp-signing"}
    api = next(p for p in example_spec.principals if p.name == "api")
    assert api.arn == "arn:aws:iam::111122223333:role/keystead-api"
    assert api.encryption_context == (("vault", "payments"),)
    workers = {p.name for p in example_spec.principals if p.kind == "worker"}
    assert workers == {"rotation-worker", "dr-replicator"}


def test_good_spec(tmp_path):
    spec = load(tmp_path, GOOD)
    assert spec.key("vault").alias == "alias/keystead/vault"
    assert spec.principals[0].roles_on("vault") == ("decrypt",)


@pytest.mark.parametrize("old, new, field, words", [
    ('roles = { vault = "decrypt" }', 'roles = { vault = "decrpyt" }',
     "principals.api.roles.vault", "unknown role 'decrpyt'"),
    ('roles = { vault = "decrypt" }', 'roles = { vualt = "decrypt" }',
     "principals.api.roles.vualt", "key 'vualt' is not declared"),
    ('arn = "arn:aws:iam::111122223333:role/api"', 'arn = "arn:aws:iam::1111:role/api"',
     "principals.api.arn", "not an IAM role or user ARN"),
    ('type = "symmetric"', 'type = "quantum"', "keys.vault.type", "unknown key type"),
    ('region = "eu-west-1"', 'region = "mars"', "aws.region", "not an AWS region"),
    ('roles = { vault = "decrypt" }', 'roles = { vault = "signer" }',
     "principals.api.roles.vault", "does not fit AWS symmetric key"),
    ('roles = { vault = "decrypt" }', 'roles = { vault = "replicator" }',
     "principals.api.roles.vault", "needs a multi-Region key"),
    ('kind = "aws-role"', 'kind = "robot"', "principals.api.kind", "unknown kind"),
])
def test_bad_field_is_named_with_its_line(tmp_path, old, new, field, words):
    text = GOOD.replace(old, new)
    assert text != GOOD
    with pytest.raises(SpecError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert field in message and words in message
    line = next(i for i, text_line in enumerate(text.splitlines(), 1) if new.split(" =")[0] in text_line
                and text_line.strip().startswith(new.split(" =")[0]))
    assert f"iam.toml:{line}:" in message, message
    assert isinstance(caught.value, PolicyError) and caught.value.exit_code == 10


def test_issuer_must_be_https(tmp_path):
    text = GOOD + """
[principals.web]
kind = "irsa"
role_name = "web"
issuer = "http://oidc.eks.eu-west-1.amazonaws.com/id/ABC"
namespace = "web"
service_account = "web"
"""
    with pytest.raises(SpecError, match=r"iam.toml:17: principals.web.issuer: .*https://"):
        load(tmp_path, text)


@pytest.mark.parametrize("member", ["allUsers", "allAuthenticatedUsers"])
def test_public_gcp_member_rejected(tmp_path, member):
    text = GOOD + f"""
[gcp]
project = "p1"

[keys.g]
cloud = "gcp"
resource = "projects/p1/locations/global/keyRings/r/cryptoKeys/k"

[principals.everyone]
kind = "gcp"
member = "{member}"
roles = {{ g = "decrypt" }}
"""
    with pytest.raises(SpecError, match=rf"iam.toml:\d+: principals.everyone.member: {member} "
                                        r"would make the key public"):
        load(tmp_path, text)


def test_lockout_rejected(tmp_path):
    text = GOOD.replace('region = "eu-west-1"', 'region = "eu-west-1"\nroot_access = false')
    with pytest.raises(SpecError, match=r"iam.toml:7: keys.vault: .*lock every admin out"):
        load(tmp_path, text)
    # with an admin holding PutKeyPolicy the key stays manageable
    ok = text + """
[principals.admins]
kind = "aws-role"
arn = "arn:aws:iam::111122223333:role/admins"
roles = { vault = "admin" }
"""
    assert load(tmp_path, ok).holders("vault", "admin")


def test_admin_and_crypto_rejected_naming_both(tmp_path):
    text = GOOD.replace('roles = { vault = "decrypt" }', 'roles = { vault = ["admin", "decrypt"] }')
    with pytest.raises(SeparationOfDuties) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert "'admin'" in message and "'decrypt'" in message and "principals.api.roles.vault" in message


def test_override_needs_a_reason_and_then_passes(tmp_path):
    text = GOOD.replace('roles = { vault = "decrypt" }',
                        'roles = { vault = ["admin", "decrypt"] }\nallow_admin_and_crypto = true')
    with pytest.raises(SpecError, match="override_reason"):
        load(tmp_path, text)
    spec = load(tmp_path, text + 'override_reason = "break-glass role, reviewed 2026-11"\n')
    assert spec.principals[0].roles_on("vault") == ("admin", "decrypt")


def test_unknown_field_and_bad_toml(tmp_path):
    with pytest.raises(SpecError, match=r"iam.toml:8: keys.vault.colour: unknown field"):
        load(tmp_path, GOOD.replace('type = "symmetric"', 'type = "symmetric"\ncolour = "red"'))
    with pytest.raises(SpecError, match="invalid TOML"):
        load(tmp_path, GOOD + "[[[")


def test_yaml_spec(tmp_path):
    text = """
aws: {account: "111122223333", region: eu-west-1}
keys: {vault: {type: symmetric}}
principals:
  api: {kind: aws-role, arn: "arn:aws:iam::111122223333:role/api", roles: {vault: decrypt}}
"""
    spec = load(tmp_path, text, "iam.yaml")
    assert spec.principals[0].roles_on("vault") == ("decrypt",)
    with pytest.raises(SpecError, match=r"principals\.api\.roles\.vault: unknown role"):
        load(tmp_path, text.replace("vault: decrypt", "vault: nope"), "iam.yaml")


def test_yaml_names_must_be_strings(tmp_path):
    text = """
aws: {account: "111122223333", region: eu-west-1}
keys: {123: {type: symmetric}}
"""
    with pytest.raises(SpecError, match=r"keys.123: names are strings"):
        load(tmp_path, text, "iam.yaml")
