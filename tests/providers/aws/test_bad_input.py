"""The issue's bad-input list, end to end: each is one line naming the key (and what to do), and
the vault is byte for byte what it was.

Against moto server as it is: a malformed ARN, the wrong region, an envelope moved to another name
(encryption context mismatch), a slot wrapped by another key, and AccessDenied (moto's IAM
enforcement). moto lets a disabled or pending-deletion key encrypt, never expires credentials and has
no custom key stores: for those, a botocore ``before-send`` hook on the real client answers the call
with the error AWS gives (HTTP 400, KMS's JSON error body), as the Throttle helper does; each case says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from keystead.config import load_config
from keystead.errors import ProviderError
from keystead.vault import Vault
from tests.providers.aws.helpers import alias_arn, aws_key_toml, make_key, workspace
from tests.providers.aws.moto_server import ACCOUNT, REGION, Clients, _Raw


def _store_bytes(w) -> dict[str, bytes]:
    from keystead.envelope import encode
    from keystead.stores import open_store

    config = load_config(w.config)
    store = open_store(config.store_url, base=config.root)
    try:
        return {e.name: encode(e) for e in store.iter_envelopes()}
    finally:
        store.close()


def _one_line(text: str, *words: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.startswith("keystead: error:")]
    assert len(lines) == 1, text
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


class Refuse:
    """A ``before-send.kms.<Op>`` handler answering every call with KMS error ``code`` (what moto cannot)."""

    def __init__(self, code: str, message: str = "") -> None:
        self.code, self.message, self.calls = code, message, 0

    def __call__(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        self.calls += 1
        body = json.dumps({"__type": self.code, "message": self.message}).encode()
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body))


@pytest.mark.parametrize(("code", "words"), [
    ("DisabledException", ("disabled", "enable it")),  # moto: a disabled key still encrypts
    ("KMSInvalidStateException", ("pending deletion", "keys restore")),  # moto: so does a pending-deletion one
    ("ExpiredTokenException", ("expired", "refresh them")),  # moto never expires credentials
    ("CustomKeyStoreInvalidStateException", ("disconnected", "connect-custom-key-store")),  # moto has none
])
def test_refusals_moto_cannot_give_change_nothing(aws_env: Clients, tmp_path: Path, code: str,
                                                  words: tuple[str, ...]) -> None:
    make_key(aws_env.kms(), alias="app")
    w = workspace(tmp_path, aws_key_toml("app", alias_arn("app")))
    w.cli("secrets", "set", "A", "1")
    before = _store_bytes(w)
    refuse = Refuse(code)
    hooked = Clients(aws_env.url, {"before-send.kms.Encrypt": refuse, "before-send.kms.ReEncrypt": refuse})
    with Vault.open(load_config(w.config), clients=hooked) as vault:
        for attempt in (lambda: vault.set("A", b"2"), lambda: vault.set("B", b"new")):
            with pytest.raises(ProviderError) as info:
                attempt()
            _one_line(f"keystead: error: {info.value}", alias_arn("app"), code, *words)
    assert refuse.calls >= 2
    assert _store_bytes(w) == before
    assert w.cli("secrets", "get", "A").stdout == "1"


def test_access_denied_names_the_key_and_the_policy_fix(aws_env: Clients, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        request: pytest.FixtureRequest) -> None:
    """moto's IAM enforcement: a user who may only describe keys."""
    make_key(aws_env.kms(), alias="app")
    w = workspace(tmp_path, aws_key_toml("app", alias_arn("app")))
    w.cli("secrets", "set", "A", "1")
    iam = aws_env("iam", {})
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="p", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kms:DescribeKey"], "Resource": "*"}]}))
    access = iam.create_access_key(UserName="reader")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", access["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    before = _store_bytes(w)
    request.getfixturevalue("iam_enforced")
    out = w.cli("secrets", "set", "A", "2", ok=False)
    assert out.exit_code == 6
    _one_line(out.stderr, alias_arn("app"))
    assert _store_bytes(w) == before


def test_moved_envelope_foreign_slot_wrong_region_and_malformed_arn_change_nothing(
        aws_env: Clients, tmp_path: Path) -> None:
    from dataclasses import replace

    from keystead.envelope import encode
    from keystead.stores import open_store

    make_key(aws_env.kms(), alias="app")
    other = make_key(aws_env.kms())
    w = workspace(tmp_path, aws_key_toml("app", alias_arn("app")), local=False)
    w.cli("secrets", "set", "A", "1")
    w.cli("secrets", "set", "F", "2")
    config = load_config(w.config)
    store = open_store(config.store_url, base=config.root)
    try:
        a = store.get("A")
        store.put(replace(a, name="MOVED"))  # copied under another name: its encryption context is A's
        f = store.get("F")
        foreign = aws_env.kms().encrypt(KeyId=other["KeyId"], Plaintext=b"k" * 32,
                                        EncryptionContext={"keystead:vault": config.vault_name,
                                                           "keystead:secret": "F"})["CiphertextBlob"]
        (slot,) = f.slots
        store.put(replace(f, slots=(replace(slot, wrapped=foreign),)))  # a slot another key wrapped
    finally:
        store.close()
    before = _store_bytes(w)
    assert encode(a) != before["MOVED"]
    # moto answers AccessDenied for Decrypt of another key's ciphertext (AWS: IncorrectKeyException, which
    # reads as the moved envelope's message): both name the key and what to do
    for name, words in (("MOVED", ("MOVED", "restore it from a backup")), ("F", ("wrapped by a key",))):
        out = w.cli("secrets", "get", name, ok=False)
        assert out.exit_code == 6
        _one_line(out.stderr, alias_arn("app"), *words)
    assert _store_bytes(w) == before

    # the wrong region: the alias lives in us-east-1
    wrong = workspace(tmp_path / "wrong", aws_key_toml("app", "alias/app", region="eu-west-1"), local=False)
    out = wrong.cli("secrets", "set", "A", "1", ok=False)
    assert out.exit_code == 6
    _one_line(out.stderr, "alias/app", "NotFoundException", "eu-west-1", "check the reference and the region")
    assert _store_bytes(wrong) == {}

    # a malformed ARN: refused when the key is opened, before any call
    bad = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/not-a-key-id"
    broken = workspace(tmp_path / "broken", aws_key_toml("app", bad))
    out = broken.cli("secrets", "set", "A", "1", ok=False)
    assert out.exit_code == 6
    _one_line(out.stderr, bad, "malformed")
    assert _store_bytes(broken) == {}
