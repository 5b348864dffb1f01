"""`keystead stack config --from-outputs FILE`: keystead.toml's keys from the stack's outputs (issue 14).

Real keystead.toml files written by `keystead init`, a real vault (the local
key) whose envelopes hold slots of a key whose ref the outputs would change,
driven through the CLI. The outputs are in the shape docs/stacks.md and
CONTRACTS §1 fix (`pulumi stack output --json`).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from keystead.config import load_config
from keystead.errors import EXIT_CODES
from keystead.stack_config import parse_outputs, retired_name
from tests.conftest import Workspace

ACCOUNT = "111122223333"
KEY_ID = "mrk-0123456789abcdef0123456789abcdef"
VAULT_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/vault"
PAYMENTS_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/payments"
GCP_ID = "projects/acme/locations/europe-west1/keyRings/keystead/cryptoKeys/gkey"


def aws_key(alias: str, **extra) -> dict:
    return {"provider": "aws", "arn": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{KEY_ID}", "alias": f"alias/{alias}",
            "region": "us-east-1", "replica_regions": ["eu-west-1", "eu-central-1"],
            "replica_arns": {"eu-west-1": "arn:...", "eu-central-1": "arn:..."}, "multi_region": True,
            "rotation": "scheduled", "rotation_period_days": 90, "purpose": "encrypt", "hsm": False, **extra}


def outputs(**keys) -> dict:
    return {"keys": keys, "hsm": {}, "workers": {"rotation": {"aws_role_arn": None, "gcp_service_account": None}}}


@pytest.fixture
def write_outputs(tmp_path_factory: pytest.TempPathFactory):
    """Writes FILE outside the workspace (whose snapshot proves nothing changed)."""
    folder = tmp_path_factory.mktemp("outputs")

    def write(data: object, name: str = "outputs.json") -> str:
        path = folder / name
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return str(path)
    return write


def keys_of(ws: Workspace) -> dict:
    return tomllib.loads(ws.config.read_text())["keys"]


def test_adds_keys_with_refs_options_and_rotation_kind(sqlite_ws: Workspace, write_outputs) -> None:
    before = sqlite_ws.config.read_text()
    signing = aws_key("signing", rotation="successor", purpose="sign", replica_regions=[], multi_region=False)
    gcp = {"provider": "gcp", "id": GCP_ID, "rotation": "scheduled", "rotation_period_days": 90.0,
           "purpose": "encrypt", "protection_level": "HSM"}
    gsign = {"provider": "gcp", "id": GCP_ID.replace("gkey", "gsign"), "rotation": "successor",
             "rotation_period_days": 365, "purpose": "sign", "protection_level": "SOFTWARE"}
    path = write_outputs(outputs(vault=aws_key("vault", rotation_period_days=180), signing=signing, gkey=gcp,
                                 gsign=gsign))
    out = sqlite_ws.cli("stack", "config", "--from-outputs", path)
    assert "added vault, signing, gkey, gsign" in out.stderr
    text = sqlite_ws.config.read_text()
    assert text.startswith(before.split("[rotation]")[0])  # comments and everything before kept as they were
    keys = keys_of(sqlite_ws)
    assert keys["vault"] == {"ref": VAULT_ARN, "rotation_period_days": 180, "region": "us-east-1",
                             "replica_regions": ["eu-west-1", "eu-central-1"], "purpose": "encrypt",
                             "manage_rotation": False}
    assert keys["signing"] == {"ref": f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/signing", "rotation_period_days": 90,
                               "region": "us-east-1", "purpose": "sign"}
    assert keys["gkey"] == {"ref": GCP_ID, "rotation_period_days": 90, "purpose": "encrypt"}
    assert keys["gsign"]["purpose"] == "sign"
    config = load_config(sqlite_ws.config)
    assert config.keys["vault"].ref == VAULT_ARN and config.keys["vault"].exclusive is False
    assert config.keys["vault"].options["manage_rotation"] is False  # the stack owns the schedule
    from keystead.providers.aws import AwsKey

    aws = AwsKey(VAULT_ARN, options=config.keys["vault"].options, exclusive=True)
    assert aws.manage_rotation is False and aws.replica_regions == ["eu-west-1", "eu-central-1"]
    assert any(r["action"] == "stack.config" and r["details"]["name"] == "vault"
               for r in map(json.loads, (sqlite_ws.root / ".keystead" / "audit.log").read_text().splitlines()))


def test_running_it_again_changes_nothing(sqlite_ws: Workspace, write_outputs) -> None:
    path = write_outputs(outputs(vault=aws_key("vault")))
    sqlite_ws.cli("stack", "config", "--from-outputs", path)
    first = sqlite_ws.config.read_bytes()
    again = sqlite_ws.cli("stack", "config", "--from-outputs", path)
    assert "nothing to change" in again.stderr
    assert sqlite_ws.config.read_bytes() == first


def test_updates_an_entry_keeping_the_users_fields_and_spelling(sqlite_ws: Workspace, write_outputs) -> None:
    """`alias/vault` with the region and account configured is the same key as the alias ARN: not a ref change."""
    with sqlite_ws.config.open("a") as f:
        f.write('\n[providers.aws]\naccount = "111122223333"\n\n[keys.vault]\n# the team key\nref = "alias/vault"\n'
                'region = "us-east-1"\nreplica_regions = ["ap-south-1"]\n'
                'role_arn = "arn:aws:iam::111122223333:role/r"\n'
                'rotation_period_days = 365\n')
    path = write_outputs(outputs(vault=aws_key("vault")))
    out = sqlite_ws.cli("stack", "config", "--from-outputs", path)
    assert "updated vault" in out.stderr
    text = sqlite_ws.config.read_text()
    assert "# the team key" in text
    vault = keys_of(sqlite_ws)["vault"]
    assert vault["ref"] == "alias/vault" and vault["role_arn"] == "arn:aws:iam::111122223333:role/r"
    assert vault["replica_regions"] == ["eu-west-1", "eu-central-1"] and vault["rotation_period_days"] == 90
    assert load_config(sqlite_ws.config).keys["vault"].ref == VAULT_ARN


def test_dry_run_prints_the_diff_and_writes_nothing(sqlite_ws: Workspace, write_outputs) -> None:
    before = sqlite_ws.snapshot()
    out = sqlite_ws.cli("stack", "config", "--from-outputs", write_outputs(outputs(vault=aws_key("vault"))),
                        "--dry-run")
    assert f'+ref = "{VAULT_ARN}"' in out.stdout and "+[keys.vault]" in out.stdout
    assert out.stdout.startswith("--- keystead.toml (now)")
    assert "dry run" in out.stderr
    assert sqlite_ws.snapshot() == before


def _vault_under_local_payments(ws: Workspace) -> None:
    ws.cli("keys", "create", "payments")
    ws.cli("secrets", "set", "db-password", input="s3cret")
    ws.cli("secrets", "set", "api-token", input="t0ken")


def test_refuses_to_change_a_ref_that_envelopes_hold(ws: Workspace, write_outputs) -> None:
    _vault_under_local_payments(ws)
    before = ws.snapshot()
    path = write_outputs(outputs(payments=aws_key("payments")))
    for extra in ((), ("--dry-run",)):
        result = ws.cli("stack", "config", "--from-outputs", path, *extra, ok=False)
        assert result.exit_code == EXIT_CODES["InputError"], result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("keystead: error: key payments:")
        assert "local:payments" in result.stderr and "2 envelopes in 1 store" in result.stderr
        assert "--migrate" in result.stderr
        assert ws.snapshot() == before


def test_migrate_keeps_the_old_key_beside_the_new_one(ws: Workspace, write_outputs) -> None:
    _vault_under_local_payments(ws)
    path = write_outputs(outputs(payments=aws_key("payments")))
    out = ws.cli("stack", "config", "--from-outputs", path, "--migrate")
    assert "migrated payments" in out.stderr
    assert f"keystead keys add {PAYMENTS_ARN} --name payments --reseal" in out.stderr
    assert "keystead keys remove payments-old" in out.stderr
    config = load_config(ws.config)
    assert config.keys["payments"].ref == PAYMENTS_ARN
    assert config.keys["payments-old"].ref == "local:payments"
    # nothing orphaned: the envelopes still open, through the old entry or main
    assert ws.cli("secrets", "get", "db-password").stdout == "s3cret"
    again = ws.cli("stack", "config", "--from-outputs", path, "--migrate")
    assert "nothing to change" in again.stderr


def test_migrate_renames_in_profiles_too(sqlite_ws: Workspace, write_outputs) -> None:
    sqlite_ws.cli("keys", "create", "payments")
    with sqlite_ws.config.open("a") as f:
        f.write('\n[profiles.ci]\nkeys = ["main", "payments"]\n')
    sqlite_ws.cli("secrets", "set", "x", input="1")
    sqlite_ws.cli("stack", "config", "--from-outputs", write_outputs(outputs(payments=aws_key("payments"))),
                  "--migrate")
    profile = tomllib.loads(sqlite_ws.config.read_text())["profiles"]["ci"]
    assert profile["keys"] == ["main", "payments", "payments-old"]


def test_a_ref_no_envelope_holds_changes_in_place(sqlite_ws: Workspace, write_outputs) -> None:
    sqlite_ws.cli("keys", "create", "payments")  # declared, but no secret was set: nothing holds it
    sqlite_ws.cli("stack", "config", "--from-outputs", write_outputs(outputs(payments=aws_key("payments"))))
    keys = keys_of(sqlite_ws)
    assert keys["payments"]["ref"] == PAYMENTS_ARN and "payments-old" not in keys


def test_envelopes_in_a_profiles_own_store_count(sqlite_ws: Workspace, write_outputs) -> None:
    sqlite_ws.cli("keys", "create", "payments")
    with sqlite_ws.config.open("a") as f:
        f.write('\n[profiles.team]\nkeys = ["payments"]\nstore = "dir:team-secrets"\n')
    sqlite_ws.cli("--profile", "team", "secrets", "set", "shared", input="v")
    assert sqlite_ws.cli("secrets", "list").stdout.strip() == ""  # the base store holds nothing
    result = sqlite_ws.cli("stack", "config", "--from-outputs", write_outputs(outputs(payments=aws_key("payments"))),
                           ok=False)
    assert result.exit_code == EXIT_CODES["InputError"] and "1 envelope in 1 store" in result.stderr


def test_a_store_that_cannot_be_read_refuses_without_its_password(sqlite_ws: Workspace, write_outputs) -> None:
    sqlite_ws.cli("keys", "create", "payments")
    with sqlite_ws.config.open("a") as f:
        f.write('\n[profiles.prod]\nkeys = ["payments"]\nstore = "postgresql://app:hunter2@127.0.0.1:1/vault"\n')
    before = sqlite_ws.snapshot()
    result = sqlite_ws.cli("stack", "config", "--from-outputs", write_outputs(outputs(payments=aws_key("payments"))),
                           ok=False)
    assert result.exit_code == EXIT_CODES["InputError"] and "cannot be counted" in result.stderr
    assert "hunter2" not in result.stderr
    assert sqlite_ws.snapshot() == before


@pytest.mark.parametrize(("data", "words"), [
    ("{not json", "not JSON"),
    ("[1, 2]", 'no "keys" object'),
    ({"keys": {}}, '"keys" is empty'),
    ({"keys": {"vault": "arn:aws:kms:..."}}, "keys.vault: must be an object"),
    ({"keys": {"vault": {"provider": "azure"}}}, "keys.vault.provider: unknown provider 'azure'"),
    ({"keys": {"vault": aws_key("vault", region="eu-west-1")}}, "not the region of its arn"),
    ({"keys": {"vault": aws_key("vault", arn="arn:aws:kms:us-east-1:1:key/x")}}, "keys.vault.arn"),
    ({"keys": {"vault": aws_key("vault", rotation="weekly")}}, "keys.vault.rotation"),
    ({"keys": {"vault": aws_key("vault", rotation_period_days=90.5)}}, "rotation_period_days"),
    ({"keys": {"vault": aws_key("vault", replica_regions=["us-east-1"])}}, "the key's own region"),
    ({"keys": {"vault": {"provider": "gcp", "id": "projects/p/keyRings/r", "rotation_period_days": 90}}},
     "keys.vault.id"),
    ({"keys": {"bad/name": aws_key("vault")}}, "not a keystead key name"),
])
def test_bad_outputs_are_one_line_exit_2_and_change_nothing(sqlite_ws: Workspace, write_outputs, data,
                                                            words) -> None:
    before = sqlite_ws.snapshot()
    result = sqlite_ws.cli("stack", "config", "--from-outputs", write_outputs(data), ok=False)
    assert result.exit_code == EXIT_CODES["InputError"], result.stderr
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert sqlite_ws.snapshot() == before


def test_a_missing_file_or_config(sqlite_ws: Workspace, tmp_path: Path, write_outputs) -> None:
    result = sqlite_ws.cli("stack", "config", "--from-outputs", str(tmp_path / "nope.json"), ok=False)
    assert result.exit_code == EXIT_CODES["InputError"] and "cannot read" in result.stderr
    other = Workspace(tmp_path / "empty", "")
    result = other.cli("stack", "config", "--from-outputs", write_outputs(outputs(vault=aws_key("vault"))), ok=False)
    assert result.exit_code == EXIT_CODES["ConfigError"]


def test_a_stack_key_with_another_keys_ref_is_a_config_error(sqlite_ws: Workspace, write_outputs) -> None:
    with sqlite_ws.config.open("a") as f:
        f.write(f'\n[keys.legacy]\nref = "{VAULT_ARN}"\n')
    before = sqlite_ws.snapshot()
    result = sqlite_ws.cli("stack", "config", "--from-outputs", write_outputs(outputs(vault=aws_key("vault"))),
                           ok=False)
    assert result.exit_code == EXIT_CODES["ConfigError"] and "names the same key" in result.stderr
    assert sqlite_ws.snapshot() == before


def test_standard_input(sqlite_ws: Workspace) -> None:
    sqlite_ws.cli("stack", "config", "--from-outputs", "-", input=json.dumps(outputs(vault=aws_key("vault"))))
    assert keys_of(sqlite_ws)["vault"]["ref"] == VAULT_ARN


def test_parse_outputs_and_names() -> None:
    (key,) = parse_outputs(json.dumps(outputs(vault=aws_key("vault", replica_regions=[]))))
    assert key.options == {"region": "us-east-1", "purpose": "encrypt", "manage_rotation": False}
    assert retired_name("a", {"a", "a-old", "a-old-2"}) == "a-old-3"
    assert len(retired_name("x" * 64, set())) == 64


@pytest.mark.pg
def test_envelopes_in_a_postgresql_profile_store_count(sqlite_ws: Workspace, write_outputs, pg_url: str) -> None:
    """The PostgreSQL server at 127.0.0.1:5432 (skipped when unreachable; KEYSTEAD_REQUIRE_PG=1 fails instead)."""
    sqlite_ws.cli("keys", "create", "payments")
    with sqlite_ws.config.open("a") as f:
        f.write(f'\n[profiles.prod]\nkeys = ["payments"]\nstore = "{pg_url}"\n')
    sqlite_ws.cli("--profile", "prod", "secrets", "set", "one", input="1")
    sqlite_ws.cli("--profile", "prod", "secrets", "set", "two", input="2")
    path = write_outputs(outputs(payments=aws_key("payments")))
    result = sqlite_ws.cli("stack", "config", "--from-outputs", path, ok=False)
    assert result.exit_code == EXIT_CODES["InputError"] and "2 envelopes in 1 store" in result.stderr
    sqlite_ws.cli("stack", "config", "--from-outputs", path, "--migrate")
    assert load_config(sqlite_ws.config).keys["payments-old"].ref == "local:payments"
