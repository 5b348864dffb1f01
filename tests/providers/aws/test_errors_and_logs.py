"""Bad input as one-line errors naming the key, and no data key in any log at DEBUG (moto server)."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest

from keystead.envelope import Context
from keystead.errors import DecryptError, ProviderError
from keystead.providers import open_key
from keystead.providers.aws import AwsKey
from tests.providers.aws.helpers import alias_arn, aws_key_toml, make_key, workspace
from tests.providers.aws.moto_server import ACCOUNT, REGION, Clients

CTX = Context("vault", "DB_URL")


def test_no_data_key_or_plaintext_in_the_logs_at_debug(aws: Clients, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger (and every logger left at NOTSET) at DEBUG
    key = AwsKey(make_key(aws.kms())["Arn"], clients=aws)
    dek = os.urandom(32)
    wrapped = key.wrap(dek, CTX)
    assert key.unwrap(wrapped, CTX) == dek
    key.rewrap_many("vault", [("DB_URL", wrapped.version, wrapped.blob)])
    for name in ("botocore", "boto3", "urllib3"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.INFO, name
    text = caplog.text + "".join(repr(r.args) for r in caplog.records)
    for form in (base64.b64encode(dek).decode(), dek.hex(), repr(dek)[2:-1]):
        assert form not in text
    assert not [r for r in caplog.records if r.name.startswith(("botocore", "urllib3")) and r.levelno < logging.INFO]

    # the check can fail: unpinned, botocore's DEBUG records carry the Encrypt body
    logging.getLogger("botocore").setLevel(logging.DEBUG)
    try:
        caplog.clear()
        key.wrap(dek, CTX)
        assert base64.b64encode(dek).decode() in caplog.text
    finally:
        logging.getLogger("botocore").setLevel(logging.INFO)


def _one_line(exc: BaseException, *names: str) -> str:
    text = str(exc)
    assert "\n" not in text and text
    for n in names:
        assert n in text, (n, text)
    return text


def test_malformed_references_are_refused_when_opened(tmp_path: Path) -> None:
    class Settings:
        key_file = tmp_path / "keys.json"
        age_identity_file = None

    for bad in ("arn:aws:kms:us-east-1:123456789012:key/not-a-key-id", "arn:aws:kms:us-east-1:12345:key/x"):
        with pytest.raises(ProviderError) as info:
            open_key(bad, Settings())
        _one_line(info.value, bad)


def test_unknown_key_wrong_region_and_moved_envelope(aws: Clients) -> None:
    missing = AwsKey(f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/nope", clients=aws)
    with pytest.raises(ProviderError) as info:
        missing.wrap(os.urandom(32), CTX)
    assert info.value.code == "NotFoundException" and info.value.op == "wrap"
    _one_line(info.value, missing.ref, "NotFoundException", "region")

    meta = make_key(aws.kms(), alias="app")
    elsewhere = AwsKey("alias/app", options={"region": "eu-west-1"}, clients=aws)  # the key lives in us-east-1
    with pytest.raises(ProviderError) as info:
        elsewhere.wrap(os.urandom(32), CTX)
    _one_line(info.value, "alias/app", "eu-west-1")

    key = AwsKey(meta["Arn"], clients=aws)
    wrapped = key.wrap(os.urandom(32), CTX)
    with pytest.raises(DecryptError):  # the envelope moved: its encryption context no longer matches
        key.unwrap(wrapped, Context("vault", "OTHER_NAME"))


def test_ciphertext_from_another_key_names_the_key(aws: Clients) -> None:
    a = AwsKey(make_key(aws.kms())["Arn"], clients=aws)
    b = AwsKey(make_key(aws.kms())["Arn"], clients=aws)
    foreign = b.wrap(os.urandom(32), CTX)
    with pytest.raises(ProviderError) as info:  # Decrypt with KeyId = the label's key: refused
        a.unwrap(foreign._replace(version=a.describe().primary), CTX)
    _one_line(info.value, a.ref)
    with pytest.raises(DecryptError):
        a.unwrap(foreign._replace(version="not a label"), CTX)


def test_a_bad_slot_changes_nothing_in_the_vault(aws_env: Clients, tmp_path: Path) -> None:
    make_key(aws_env.kms(), alias="app")
    w = workspace(tmp_path, aws_key_toml("app", alias_arn("app")), local=False)
    w.cli("secrets", "set", "A", "1")
    before = _envelopes(w)
    aws_env.kms().delete_alias(AliasName="alias/app")
    out = w.cli("secrets", "set", "A", "2", ok=False)
    assert out.exit_code == 6
    line = out.stderr.strip().splitlines()[-1]  # (after the warning about a value on the command line)
    assert line.startswith("keystead: error:") and alias_arn("app") in line and "NotFoundException" in line
    assert _envelopes(w) == before  # (the vault database's audit anchor moves: the failure is audited)


def _envelopes(w) -> dict[str, bytes]:
    from keystead.config import load_config
    from keystead.envelope import encode
    from keystead.stores import open_store

    config = load_config(w.config)
    store = open_store(config.store_url, base=config.root)
    try:
        return {e.name: encode(e) for e in store.iter_envelopes()}
    finally:
        store.close()
