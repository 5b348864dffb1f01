"""Replica failover of unwrap against moto server: a multi-region key, its primary region made to
refuse connections (``refusing`` + the ``region_endpoints`` option), the replica serving.
Writes never fail over: a rotation pauses, a new secret waits for the primary region."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keystead.config import load_config
from keystead.envelope import Context
from keystead.errors import DecryptError, ProviderError, ProviderUnavailable
from keystead.providers import Wrapped
from keystead.providers.aws import AwsKey
from keystead.rotation.engine import Engine, Outcome
from keystead.rotation.state import StateDB
from keystead.stores import open_store
from keystead.vault import Vault
from tests.providers.aws.helpers import workspace
from tests.providers.aws.moto_server import ACCOUNT, REGION, Clients
from tests.providers.aws.regions import RefusingPort, RegionalClients

DR = "eu-west-1"
PROVIDERS = f'[providers.aws]\nregion = "{REGION}"\naccount = "{ACCOUNT}"\n'


def mrk(aws: Clients, replicas: tuple[str, ...] = (DR,)) -> str:
    """A multi-region key in us-east-1 replicated into ``replicas``; its key ARN."""
    meta = aws.kms().create_key(MultiRegion=True, Description="dr test")["KeyMetadata"]
    for region in replicas:
        aws.kms().replicate_key(KeyId=meta["KeyId"], ReplicaRegion=region)
    return str(meta["Arn"])


def key_toml(arn: str, *, replicas: tuple[str, ...] = (DR,), down: RefusingPort | None = None) -> str:
    lines = ["[keys.app]", f'ref = "{arn}"', "replica_regions = [" + ", ".join(f'"{r}"' for r in replicas) + "]"]
    if down is not None:
        lines.append(f'region_endpoints = ["{REGION}={down.url}"]')
    return "\n".join(lines) + "\n"


def set_down(w, down: RefusingPort | None) -> None:
    """Take the primary region down (or bring it back) in keystead.toml."""
    text = w.config.read_text()
    kept = [line for line in text.splitlines() if not line.startswith("region_endpoints")]
    if down is not None:
        kept.insert(kept.index("[keys.app]") + 3, f'region_endpoints = ["{REGION}={down.url}"]')
    w.config.write_text("\n".join(kept) + "\n")


def test_unwrap_is_served_by_the_replica_while_the_primary_refuses_connections(
        aws: Clients, tmp_path: Path, refusing: RefusingPort, caplog: pytest.LogCaptureFixture) -> None:
    arn = mrk(aws)
    w = workspace(tmp_path, key_toml(arn), local=False, extra=PROVIDERS)
    clients = RegionalClients(aws.url)
    with Vault.open(load_config(w.config), clients=clients) as vault:
        vault.set("DB_URL", b"postgres://u:p@db/app")
    assert clients.asked_in("Encrypt") == [REGION]

    set_down(w, refusing)
    clients = RegionalClients(aws.url)
    caplog.set_level(logging.DEBUG)
    with Vault.open(load_config(w.config), clients=clients) as vault:
        assert vault.get("DB_URL") == b"postgres://u:p@db/app"
        assert vault.get("DB_URL") == b"postgres://u:p@db/app"
    # the primary first; once it failed, it is asked last for REGION_DOWN_SECONDS: the second read goes to the replica
    assert clients.asked_in("Decrypt") == [REGION, DR, DR]
    served = [r for r in caplog.records if r.name == "keystead.providers.aws" and "served by" in r.getMessage()]
    assert served and served[0].levelno == logging.INFO
    assert DR in served[0].getMessage() and arn in served[0].getMessage()
    assert "postgres" not in caplog.text  # key and region only, never data


def test_final_errors_never_fail_over(aws: Clients, tmp_path: Path, refusing: RefusingPort) -> None:
    arn = mrk(aws)
    clients = RegionalClients(aws.url)
    key = AwsKey(arn, options={"replica_regions": [DR]}, clients=clients)
    wrapped = key.wrap(b"k" * 32, Context("vault", "A"))
    with pytest.raises(DecryptError):  # the envelope moved under another name: InvalidCiphertext
        key.unwrap(wrapped, Context("vault", "B"))
    other = AwsKey(str(aws.kms().create_key(MultiRegion=True)["KeyMetadata"]["Arn"]),
                   options={"replica_regions": [DR]}, clients=clients)
    foreign = Wrapped(other.wrap(b"k" * 32, Context("vault", "A")).version, wrapped.blob)
    with pytest.raises(ProviderError) as denied:  # moto: AccessDenied for a ciphertext of another key
        other.unwrap(foreign, Context("vault", "A"))
    assert denied.value.code == "AccessDeniedException"
    assert DR not in clients.asked_in("Decrypt")  # neither was asked again in the replica


def test_every_region_down_is_one_transient_error_naming_each(aws: Clients, refusing: RefusingPort) -> None:
    arn = mrk(aws)
    clients = RegionalClients(aws.url)
    key = AwsKey(arn, options={"replica_regions": [DR]}, clients=clients)
    wrapped = key.wrap(b"k" * 32, Context("vault", "A"))
    dead = AwsKey(arn, options={"replica_regions": [DR, "ap-south-1"],
                                "region_endpoints": [f"{REGION}={refusing.url}", f"{DR}={refusing.url}"]},
                  clients=clients)
    with pytest.raises(ProviderUnavailable) as exc:
        dead.unwrap(wrapped, Context("vault", "A"))
    message = str(exc.value)
    assert REGION in message and DR in message and "ap-south-1: NotFoundException" in message  # no replica there
    assert "\n" not in message


def test_a_single_region_key_is_never_asked_elsewhere(aws: Clients, refusing: RefusingPort) -> None:
    arn = str(aws.kms().create_key()["KeyMetadata"]["Arn"])
    clients = RegionalClients(aws.url)
    key = AwsKey(arn, options={"replica_regions": [DR]}, clients=clients)
    wrapped = key.wrap(b"k" * 32, Context("vault", "A"))
    down = AwsKey(arn, options={"replica_regions": [DR], "region_endpoints": [f"{REGION}={refusing.url}"]},
                  clients=clients)
    with pytest.raises(ProviderUnavailable):
        down.unwrap(wrapped, Context("vault", "A"))
    assert clients.asked_in("Decrypt") == [REGION]  # a single-region key's ciphertext opens nowhere else


def test_writes_do_not_fail_over_the_rotation_pauses_and_resumes(
        aws: Clients, tmp_path: Path, refusing: RefusingPort) -> None:
    arn = mrk(aws)
    w = workspace(tmp_path, key_toml(arn), local=False, extra=PROVIDERS)
    clients = RegionalClients(aws.url)
    with Vault.open(load_config(w.config), clients=clients) as vault:
        for i in range(3):
            vault.set(f"S{i}", f"v{i}".encode())
        before = vault.keys["app"].describe().primary
        items = [(e.name, e.slot(arn).version, e.slot(arn).wrapped) for e in vault.store.iter_envelopes()]
    aws.kms().rotate_key_on_demand(KeyId=arn)  # moto records it (the label changes); its material stays

    set_down(w, refusing)
    clients = RegionalClients(aws.url)
    with Vault.open(load_config(w.config), clients=clients) as vault:
        down_key = vault.keys["app"]
        with pytest.raises(ProviderUnavailable):
            down_key.rewrap_many(vault.name, items)
        with pytest.raises(ProviderUnavailable):  # a new secret waits for the primary region
            vault.set("NEW", b"x")
        assert vault.get("S1") == b"v1"  # reads go on through the replica
    assert clients.asked_in("ReEncrypt") == [] and clients.asked_in("Encrypt") == []
    assert DR not in {region for region, op in clients.calls if op != "Decrypt"}  # only reads went to the replica
    assert sweep(w, clients).outcome is Outcome.PAUSED
    assert {e.slot(arn).version for e in envelopes(w)} == {before}  # nothing rewritten
    assert "NEW" not in {e.name for e in envelopes(w)}

    set_down(w, None)  # the primary region is back: the next sweep catches up
    result = sweep(w, RegionalClients(aws.url))
    assert result.rewrapped == 3, result.message
    with Vault.open(load_config(w.config), clients=RegionalClients(aws.url)) as vault:
        after = vault.keys["app"].describe().primary
        assert after != before and vault.get("S2") == b"v2"
    assert {e.slot(arn).version for e in envelopes(w)} == {after}


def sweep(w, clients):
    with Vault.open(load_config(w.config), clients=clients) as vault:
        state = StateDB.open(vault.config.state_url)
        engine = Engine(vault, state, now=datetime.now(UTC))
        try:
            return engine.run_key("app")
        finally:
            engine.close()
            state.close()


def envelopes(w):
    config = load_config(w.config)
    store = open_store(config.store_url, base=config.root)
    try:
        return list(store.iter_envelopes())
    finally:
        store.close()


def test_region_endpoints_must_be_region_equals_url() -> None:
    with pytest.raises(ProviderError, match="REGION=URL"):
        AwsKey("alias/app", options={"region": REGION, "region_endpoints": ["eu-west-1 https://x"]})
    key = AwsKey("alias/app", options={"region": REGION, "region_endpoints": ["eu-west-1=https://vpce.example"]})
    assert key.region_endpoints == {"eu-west-1": "https://vpce.example"}


def test_a_key_with_replicas_connects_with_a_short_timeout(aws_env: Clients) -> None:
    # a region that drops packets (moto cannot: a closed port refuses at once) must not hold failover for minutes
    from keystead.providers.aws import DR_CONNECT_TIMEOUT, make_client

    asked = RegionalClients(aws_env.url)
    AwsKey("alias/app", options={"region": REGION, "replica_regions": [DR]}, clients=asked).client(DR)
    AwsKey("alias/app", options={"region": REGION, "connect_timeout": 2}, clients=asked).client()
    AwsKey("alias/app", options={"region": REGION}, clients=asked).client()
    assert [a.get("connect_timeout") for a in asked.asked] == [DR_CONNECT_TIMEOUT, 2, None]
    assert make_client("kms", {"region": REGION, "connect_timeout": 5}).meta.config.connect_timeout == 5
    assert make_client("kms", {"region": REGION}).meta.config.connect_timeout == 60  # botocore's default
