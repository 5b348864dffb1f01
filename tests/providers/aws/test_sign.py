"""Signing keys against moto server: `keystead sign` / `keystead verify`, successor rotation, the cache.

moto signs a DIGEST as if it were a message (hashing it again); tests/providers/aws/moto_server.py
patches that in the server's process (patch_moto_digest_signing), so a large file's signature is
the one AWS would make. Everything else here is moto as it is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from keystead.errors import InputError, ProviderError
from keystead.providers.aws import AwsKey
from keystead.providers.aws_sign import (
    RAW_LIMIT,
    BadSignature,
    PublicKeyCache,
    Signature,
    decode_signature,
    sign_file,
    verify_file,
)
from tests.providers.aws.helpers import alias_arn, make_key, workspace
from tests.providers.aws.moto_server import Clients

ECC = {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}


def _signing_workspace(aws_env: Clients, tmp_path: Path, alias: str = "release"):
    meta = make_key(aws_env.kms(), alias=alias, **ECC)
    w = workspace(tmp_path, "")  # the local key only; the signing key comes through `keys add`
    out = w.cli("keys", "add", alias_arn(alias), "--purpose", "sign", "--name", alias)
    assert "holds no slots" in out.stderr
    return w, meta


def test_sign_and_verify_through_the_cli_small_and_large_files(aws_env: Clients, tmp_path: Path) -> None:
    w, meta = _signing_workspace(aws_env, tmp_path)
    small, large = tmp_path / "small.txt", tmp_path / "large.bin"
    small.write_bytes(b"release 1.2.3\n")
    large.write_bytes(os.urandom(3 * RAW_LIMIT + 5))
    for f in (small, large):
        w.cli("sign", "release", str(f))
        out = w.cli("verify", "release", str(f), f"{f}.sig")
        assert "good signature" in out.stderr and meta["KeyId"] in out.stderr

    # the default format is the DER signature KMS returns: any ECDSA tool verifies it
    pem = (tmp_path / ".keystead" / "public-keys" / f"{meta['KeyId']}.pem")
    assert stat.S_IMODE(pem.stat().st_mode) == 0o644
    public = serialization.load_pem_public_key(pem.read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify((tmp_path / "small.txt.sig").read_bytes(), small.read_bytes(), ec.ECDSA(hashes.SHA256()))
    public.verify((tmp_path / "large.bin.sig").read_bytes(), large.read_bytes(), ec.ECDSA(hashes.SHA256()))

    # a changed file: exit 1, one line, naming the key
    large.write_bytes(large.read_bytes()[:-1] + b"!")
    out = w.cli("verify", "release", str(large), f"{large}.sig", ok=False)
    assert out.exit_code == 1
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("keystead: error: bad signature")
    assert alias_arn("release") in out.stderr

    # the JSON format records the key that signed
    w.cli("sign", "release", str(small), "--json", "--out", str(tmp_path / "small.json"))
    doc = json.loads((tmp_path / "small.json").read_text())
    assert doc["key_id"] == meta["Arn"] and doc["format"] == "keystead-signature/1"
    w.cli("verify", "release", str(small), str(tmp_path / "small.json"))

    # each signature is an audit record, and the chain holds
    assert '"keys.sign"' in w.cli("audit", "show", "--action", "keys.sign", "--json").stdout
    w.cli("audit", "verify")

    # garbage is not a signature: exit 5
    (tmp_path / "junk.sig").write_bytes(b"not a signature")
    assert w.cli("verify", "release", str(small), str(tmp_path / "junk.sig"), ok=False).exit_code == 5


def test_a_signing_key_holds_no_slots(aws_env: Clients, tmp_path: Path) -> None:
    w, _meta = _signing_workspace(aws_env, tmp_path)
    w.cli("secrets", "set", "A", "1")
    from keystead.config import load_config

    config = load_config(w.config)
    assert [k.name for k in config.slot_keys] == ["main"]
    assert config.keys["release"].signs
    from keystead.stores import open_store

    store = open_store(config.store_url, base=config.root)
    try:
        assert [s.key for s in store.get("A").slots] == ["local:main"]
    finally:
        store.close()
    out = w.cli("keys", "add", alias_arn("other"), "--purpose", "sign", "--reseal", ok=False)
    assert out.exit_code == 2 and "holds no envelope slots" in out.stderr
    # added under a profile, a signing key stays out of the profile's keys (they hold slots) ...
    w.config.write_text(w.config.read_text() + '\n[profiles.ci]\nkeys = ["main"]\n')
    w.cli("--profile", "ci", "keys", "add", alias_arn("other"), "--purpose", "sign", "--name", "other")
    ci = load_config(w.config, profile="ci")
    assert [k.name for k in ci.slot_keys] == ["main"] and ci.keys["other"].signs
    # ... and a profile may not list one
    w.config.write_text(w.config.read_text().replace('keys = ["main"]', 'keys = ["main", "release"]'))
    out = w.cli("keys", "list", ok=False)
    assert out.exit_code == 3 and "signing key" in out.stderr


def test_verify_after_a_successor_rotation_with_the_old_signature(aws_env: Clients, tmp_path: Path) -> None:
    w, meta = _signing_workspace(aws_env, tmp_path)
    f = tmp_path / "artefact.tar"
    f.write_bytes(os.urandom(10_000))
    w.cli("sign", "release", str(f), "--out", str(tmp_path / "old.sig"))
    w.cli("sign", "release", str(f), "--json", "--out", str(tmp_path / "old.json"))

    w.cli("rotate", "release", "--force")
    kms = aws_env.kms()
    new = kms.describe_key(KeyId="alias/release")["KeyMetadata"]
    assert new["KeyId"] != meta["KeyId"] and new["KeySpec"] == "ECC_NIST_P256" and new["KeyUsage"] == "SIGN_VERIFY"

    w.cli("sign", "release", str(f), "--out", str(tmp_path / "new.sig"))
    out = w.cli("verify", "release", str(f), str(tmp_path / "new.sig"))
    assert new["KeyId"] in out.stderr
    for old in ("old.sig", "old.json"):  # the predecessor still verifies what it signed
        out = w.cli("verify", "release", str(f), str(tmp_path / old))
        assert meta["KeyId"] in out.stderr, out.stderr

    shown = json.loads(w.cli("keys", "show", "release", "--json").stdout)
    public = {p["key_id"]: p for p in shown["public_keys"]}
    assert set(public) == {meta["KeyId"], new["KeyId"]}
    assert all(len(p["sha256"]) == 64 for p in public.values())
    text = w.cli("keys", "show", "release").stdout
    assert public[meta["KeyId"]]["sha256"][:16] in text

    kms.disable_key(KeyId=meta["KeyId"])  # retirement's first step: still in grace, still verifies
    w.cli("verify", "release", str(f), str(tmp_path / "old.sig"))
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=30)  # retired: no longer trusted
    for old in ("old.sig", "old.json"):
        out = w.cli("verify", "release", str(f), str(tmp_path / old), ok=False)
        assert out.exit_code == 1, out.stderr


def test_sign_sends_raw_up_to_4096_bytes_and_a_digest_above(aws: Clients, tmp_path: Path) -> None:
    sent: list[tuple[str, int]] = []
    hooked = Clients(aws.url, {"before-parameter-build.kms.Sign": lambda params, **_: sent.append(
        (params["MessageType"], len(params["Message"])))})
    meta = make_key(aws.kms(), **ECC)
    key = AwsKey(meta["Arn"], clients=hooked, options={"purpose": "sign"})
    cache = PublicKeyCache(tmp_path / "public-keys")
    for size in (1, RAW_LIMIT, RAW_LIMIT + 1, 5 * 1024 * 1024 + 3):
        f = tmp_path / f"f{size}"
        f.write_bytes(os.urandom(size))
        sig, _digest = sign_file(key, f)
        assert verify_file(key, f, sig, cache) == meta["KeyId"]
    assert sent == [("RAW", 1), ("RAW", RAW_LIMIT), ("DIGEST", 32), ("DIGEST", 32)]
    with pytest.raises(InputError):
        (tmp_path / "empty").write_bytes(b"")
        sign_file(key, tmp_path / "empty")


def test_public_keys_are_cached_per_key_id(aws: Clients, tmp_path: Path) -> None:
    from tests.providers.aws.moto_server import CallCounter

    counter = CallCounter()
    counted = Clients(aws.url, {"before-call.kms": counter})
    meta = make_key(aws.kms(), **ECC)
    key = AwsKey(meta["Arn"], clients=counted, options={"purpose": "sign"})
    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    sig, _ = sign_file(key, f)
    cache = PublicKeyCache(tmp_path / "pk")
    for _ in range(3):
        verify_file(key, f, sig, cache)
    assert counter.counts.get("GetPublicKey") == 1
    # a fresh process with the same cache folder makes no GetPublicKey at all
    again = AwsKey(meta["Arn"], clients=counted, options={"purpose": "sign"})
    verify_file(again, f, sig, PublicKeyCache(tmp_path / "pk"))
    assert counter.counts.get("GetPublicKey") == 1
    # a signature naming a key that is not this one is refused, whatever its bytes
    other = make_key(aws.kms(), **ECC)
    with pytest.raises(BadSignature) as info:
        verify_file(key, f, Signature(other["Arn"], sig.der), cache)
    assert other["Arn"] in str(info.value)


def test_a_signing_key_refuses_to_wrap(aws: Clients) -> None:
    from keystead.envelope import Context

    key = AwsKey(make_key(aws.kms(), **ECC)["Arn"], clients=aws, options={"purpose": "sign"})
    with pytest.raises(ProviderError) as info:
        key.wrap(os.urandom(32), Context("v", "s"))  # moto would encrypt with it (AWS refuses)
    assert "signing key" in str(info.value) and key.ref in str(info.value)


def test_signature_file_formats() -> None:
    assert decode_signature(b"\x30\x45" + b"\x00" * 69, "s").key_id is None
    doc = {"format": "keystead-signature/1", "algorithm": "ECDSA_SHA_256", "key_id": "arn:x",
           "signature": base64.b64encode(b"\x30\x01").decode()}
    assert decode_signature(json.dumps(doc).encode(), "s") == Signature("arn:x", b"\x30\x01")
    from keystead.errors import FormatError

    for bad in (b"", b"{", json.dumps({**doc, "algorithm": "RSA"}).encode(), json.dumps({"format": "x"}).encode()):
        with pytest.raises(FormatError):
            decode_signature(bad, "s")


def test_an_exclusive_signing_key_retires_its_predecessor_after_the_grace_periods(
        aws_env: Clients, tmp_path: Path) -> None:
    """The worker's own retirement: disabled after one grace period (old signatures still verify),
    scheduled for deletion after the second (they no longer do)."""
    from datetime import UTC, datetime, timedelta

    meta = make_key(aws_env.kms(), alias="release", **ECC)
    w = workspace(tmp_path, "")
    w.cli("keys", "add", alias_arn("release"), "--purpose", "sign", "--name", "release", "--exclusive")
    f = tmp_path / "artefact"
    f.write_bytes(b"v1")
    w.cli("sign", "release", str(f), "--out", str(tmp_path / "old.sig"))
    now = datetime.now(UTC)
    w.cli("rotate", "release", "--force")
    kms = aws_env.kms()
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"  # in its grace period

    w.cli("rotate", "--as-of", (now + timedelta(days=8)).isoformat())
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    assert meta["KeyId"] in w.cli("verify", "release", str(f), str(tmp_path / "old.sig")).stderr

    w.cli("rotate", "--as-of", (now + timedelta(days=16)).isoformat())
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    out = w.cli("verify", "release", str(f), str(tmp_path / "old.sig"), ok=False)
    assert out.exit_code == 1 and "bad signature" in out.stderr
    shown = json.loads(w.cli("keys", "show", "release", "--json").stdout)
    old = next(v for v in shown["versions"] if v["id"].startswith(meta["KeyId"]))
    assert old["state"] == "pending-deletion"
    w.cli("keys", "restore", "release", old["id"])
    assert meta["KeyId"] in w.cli("verify", "release", str(f), str(tmp_path / "old.sig")).stderr  # restored


def test_a_disabled_predecessor_verifies_from_the_cache_only(tmp_path: Path) -> None:
    """Stubber: AWS refuses GetPublicKey for a disabled key (DisabledException); moto answers it. So a
    predecessor disabled by retirement verifies only where its public key was cached before."""
    old_id, new_id = "1111abcd-12ab-34cd-56ef-1234567890ab", "2222abcd-12ab-34cd-56ef-1234567890ab"
    alias = "arn:aws:kms:us-east-1:111122223333:alias/release"
    private = ec.generate_private_key(ec.SECP256R1())
    f = tmp_path / "f"
    f.write_bytes(b"signed by the old key")
    der = private.sign(hashlib.sha256(f.read_bytes()).digest(), ec.ECDSA(Prehashed(hashes.SHA256())))
    public_der = private.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)

    def meta(kid: str, state: str) -> dict:
        return {"KeyId": kid, "Arn": f"arn:aws:kms:us-east-1:111122223333:key/{kid}", "KeyState": state,
                "CreationDate": datetime(2026, 1, 1, tzinfo=UTC), "KeyUsage": "SIGN_VERIFY",
                "KeySpec": "ECC_NIST_P256", "Origin": "AWS_KMS"}

    def run(cache: PublicKeyCache, refuse: bool) -> str:
        client = boto3.client("kms", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        key = AwsKey(alias, clients=lambda service, opts: client, options={"purpose": "sign"}, name="release")
        new_public = ec.generate_private_key(ec.SECP256R1()).public_key()
        with Stubber(client) as stub:
            stub.add_response("describe_key", {"KeyMetadata": meta(new_id, "Enabled")}, {"KeyId": alias})
            if cache.cached(new_id) is None:
                stub.add_response("get_public_key", {"KeyId": new_id, "KeySpec": "ECC_NIST_P256",
                                                     "KeyUsage": "SIGN_VERIFY", "PublicKey": new_public.public_bytes(
                                                         serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)},
                                  {"KeyId": new_id})
            stub.add_response("describe_key", {"KeyMetadata": meta(new_id, "Enabled")}, {"KeyId": alias})
            stub.add_response("list_resource_tags", {"Tags": [{"TagKey": "keystead:predecessor", "TagValue": old_id}],
                                                     "Truncated": False}, {"KeyId": new_id})
            stub.add_response("describe_key", {"KeyMetadata": meta(old_id, "Disabled")}, {"KeyId": old_id})
            stub.add_response("list_resource_tags", {"Tags": [], "Truncated": False}, {"KeyId": old_id})
            if cache.cached(old_id) is None:
                if refuse:
                    stub.add_client_error("get_public_key", "DisabledException", f"{old_id} is disabled.", 400,
                                          expected_params={"KeyId": old_id})
                else:
                    stub.add_response("get_public_key", {"KeyId": old_id, "KeySpec": "ECC_NIST_P256",
                                                         "KeyUsage": "SIGN_VERIFY", "PublicKey": public_der},
                                      {"KeyId": old_id})
            try:
                return verify_file(key, f, Signature(None, der), cache)
            finally:
                stub.assert_no_pending_responses()

    with pytest.raises(ProviderError) as info:  # never cached, now disabled: AWS will not say
        run(PublicKeyCache(tmp_path / "cold"), refuse=True)
    assert "DisabledException" in str(info.value) and "\n" not in str(info.value)
    warm = PublicKeyCache(tmp_path / "warm")
    assert run(warm, refuse=False) == old_id  # KMS answers (as it did while the key was enabled): cached
    assert run(warm, refuse=True) == old_id  # then no call at all
