"""Envelopes with aws slots through the real CLI, against moto in server mode.

keystead.toml names the key; the CLI builds its own boto3 client, which finds
the server through AWS_ENDPOINT_URL (boto3's own handling) and dummy
credentials (the ``aws_env`` fixture).
"""

from __future__ import annotations

from pathlib import Path

from keystead.config import load_config
from keystead.crypto import open_envelope
from keystead.stores import open_store
from keystead.vault import Vault
from tests.providers.aws.helpers import LOCAL, alias_arn, aws_key_toml, make_key, workspace
from tests.providers.aws.moto_server import ACCOUNT, REGION, Clients

PROVIDERS = f'[providers.aws]\nregion = "{REGION}"\naccount = "{ACCOUNT}"\n'


def _envelope(w, name: str):
    config = load_config(w.config)
    store = open_store(config.store_url, base=config.root)
    try:
        return store.get(name)
    finally:
        store.close()


def test_aws_slot_round_trips_through_the_cli(aws_env: Clients, tmp_path: Path) -> None:
    meta = make_key(aws_env.kms(), alias="app")
    w = workspace(tmp_path, aws_key_toml("app", "alias/app"), local=False, extra=PROVIDERS)
    assert load_config(w.config).keys["app"].ref == alias_arn("app")  # canonical at load
    w.cli("secrets", "set", "DB_URL", "postgres://u:p@db/app")
    assert w.cli("secrets", "get", "DB_URL").stdout == "postgres://u:p@db/app"
    (slot,) = _envelope(w, "DB_URL").slots
    assert (slot.key, slot.provider) == (alias_arn("app"), "aws")
    assert slot.version.startswith(meta["KeyId"] + ":0-")  # moto reports no material id: <n>-<date>
    # the installed entry point in a real process, too (its own boto3, its own environment)
    proc = w.run("secrets", "get", "DB_URL")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"postgres://u:p@db/app"
    shown = w.cli("status", "--json").stdout
    assert alias_arn("app") in shown and "scheduled" in shown


def test_hybrid_envelope_opens_through_either_slot(aws_env: Clients, tmp_path: Path) -> None:
    make_key(aws_env.kms(), alias="app")
    w = workspace(tmp_path, aws_key_toml("app", "alias/app"), extra=PROVIDERS)
    w.cli("secrets", "set", "API_TOKEN", "t0ken")
    env = _envelope(w, "API_TOKEN")
    assert [s.provider for s in env.slots] == ["local", "aws"]
    with Vault.open(load_config(w.config), clients=aws_env) as vault:
        assert open_envelope(env, vault.keys["main"]) == b"t0ken"
        assert open_envelope(env, vault.keys["app"]) == b"t0ken"
    # a server's keystead.toml names only the aws key: the CLI opens the same envelope through KMS
    w.config.write_text(w.config.read_text().replace(LOCAL, ""))
    assert w.cli("secrets", "get", "API_TOKEN").stdout == "t0ken"
    # a developer's names only the local key: it opens offline, KMS unreachable
    w2 = workspace(tmp_path / "dev", "")
    (tmp_path / "dev" / ".keystead" / "keys.json").write_bytes((tmp_path / ".keystead" / "keys.json").read_bytes())
    with Vault.open(load_config(w2.config)) as dev:
        assert open_envelope(env, dev.keys["main"]) == b"t0ken"


def test_init_with_a_kms_key_makes_it_the_vaults_key(aws_env: Clients, tmp_path: Path) -> None:
    from tests.conftest import Workspace

    meta = make_key(aws_env.kms(), alias="app")
    w = Workspace(tmp_path, "sqlite:///.keystead/vault.db")
    w.cli("init", "--dir", str(tmp_path), "--kms-key", "alias/app", "--region", REGION,
          "--replica-region", "eu-west-1", "--role-arn", f"arn:aws:iam::{ACCOUNT}:role/keystead")
    config = load_config(w.config)
    (kc,) = config.slot_keys
    assert (kc.name, kc.ref, kc.provider) == ("app", "alias/app", "aws")
    assert kc.options == {"region": REGION, "replica_regions": ["eu-west-1"],
                          "role_arn": f"arn:aws:iam::{ACCOUNT}:role/keystead"}
    assert not config.key_file.exists()  # no local key: the vault's key is the KMS key

    plain = tmp_path / "plain"
    w2 = Workspace(plain, "sqlite:///.keystead/vault.db")
    w2.cli("init", "--dir", str(plain), "--kms-key", meta["Arn"], "--key", "vault")
    w2.cli("secrets", "set", "DB_URL", "postgres://db")
    assert w2.cli("secrets", "get", "DB_URL").stdout == "postgres://db"
    (slot,) = _envelope(w2, "DB_URL").slots
    assert (slot.key, slot.provider) == (meta["Arn"], "aws") and slot.version.startswith(meta["KeyId"])


def test_init_refuses_a_malformed_kms_key_and_writes_nothing(tmp_path: Path) -> None:
    from tests.conftest import Workspace

    w = Workspace(tmp_path, "sqlite:///.keystead/vault.db")
    bad = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/not-a-key-id"
    out = w.cli("init", "--dir", str(tmp_path), "--kms-key", bad, ok=False)
    assert out.exit_code == 6 and bad in out.stderr and out.stderr.count("\n") == 1
    out = w.cli("init", "--dir", str(tmp_path), "--kms-key", "local:main", ok=False)
    assert out.exit_code == 2 and "not an AWS KMS key reference" in out.stderr
    out = w.cli("init", "--dir", str(tmp_path), "--region", REGION, ok=False)
    assert out.exit_code == 2
    assert not w.config.exists() and not (tmp_path / ".keystead").exists()
