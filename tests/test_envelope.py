"""Envelope format v1: the spec's test vectors, the codec's bounds, and a fuzzer."""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from keystead import envelope as ev
from keystead.crypto import open_envelope, open_with_dek, seal, unwrap_slot
from keystead.errors import DecryptError, FormatError, KeysteadError, UnsupportedVersion
from keystead.providers.local import LocalKey, LocalKeyFile

VECTORS = json.loads((Path(__file__).parent / "vectors" / "envelope_v1.json").read_text())["vectors"]


def _key_file_with(tmp_path: Path, kek: bytes, version: str) -> LocalKeyFile:
    """A key file written by hand from the documented format, not by LocalKeyFile."""
    path = tmp_path / "keys.json"
    doc = {"format": "keystead-keys/1", "keys": {"main": {"primary": version, "versions": [
        {"id": version, "created_at": "2026-01-01T00:00:00Z", "state": "enabled",
         "material": base64.b64encode(kek).decode()}]}}}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps(doc).encode())
    os.close(fd)
    return LocalKeyFile(path)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["envelope"]["name"] for v in VECTORS])
def test_vector_opens_to_its_plaintext(vector: dict, tmp_path: Path) -> None:
    raw = json.dumps(vector["envelope"]).encode()
    envelope = ev.decode(raw)
    key = LocalKey("main", _key_file_with(tmp_path, bytes.fromhex(vector["kek_hex"]), vector["kek_version"]))
    assert unwrap_slot(envelope, key) == bytes.fromhex(vector["dek_hex"])
    assert open_envelope(envelope, key) == bytes.fromhex(vector["plaintext_hex"])
    assert envelope.context.aad == bytes.fromhex(vector["aad_hex"])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["envelope"]["name"] for v in VECTORS])
def test_vector_ciphertext_is_reproducible_from_the_spec(vector: dict) -> None:
    """A second implementation, using only the spec and AES-GCM, gets the same bytes."""
    env = vector["envelope"]
    dek = bytes.fromhex(vector["dek_hex"])
    aad = b"keystead/v1\x00" + env["vault"].encode() + b"\x00" + env["name"].encode()
    nonce = base64.b64decode(env["nonce"])
    sealed = AESGCM(dek).encrypt(nonce, bytes.fromhex(vector["plaintext_hex"]), aad)
    assert sealed == base64.b64decode(env["ciphertext"])
    wrapped = base64.b64decode(env["slots"][0]["wrapped"])
    kek = bytes.fromhex(vector["kek_hex"])
    assert AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], aad) == dek


def test_encode_is_canonical_and_round_trips() -> None:
    envelope = ev.decode(json.dumps(VECTORS[0]["envelope"]).encode())
    data = ev.encode(envelope)
    assert ev.decode(data) == envelope
    assert ev.encode(ev.decode(data)) == data
    assert list(json.loads(data)) == [
        "keystead", "vault", "name", "created_at", "cipher", "nonce", "ciphertext", "slots"]
    assert data.endswith(b"\n")


def test_repr_never_shows_key_or_payload_bytes() -> None:
    envelope = ev.decode(json.dumps(VECTORS[0]["envelope"]).encode())
    text = repr(envelope)
    assert VECTORS[0]["envelope"]["ciphertext"] not in text
    assert "wrapped=" not in text and "ciphertext=" not in text


def _mutate(**changes) -> bytes:
    doc = json.loads(json.dumps(VECTORS[0]["envelope"]))
    for k, v in changes.items():
        if v is None:
            doc.pop(k)
        else:
            doc[k] = v
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not valid JSON"),
        (json.dumps(VECTORS[0]["envelope"]).encode()[:200], "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (_mutate(keystead=None), "missing format version"),
        (_mutate(cipher="AES-128-CBC"), "cipher must be"),
        (_mutate(nonce="AAAA"), "'nonce' has 3 bytes"),
        (_mutate(nonce="!!!not base64"), "not base64"),
        (_mutate(name="../etc/passwd"), "invalid secret name"),
        (_mutate(slots=[]), "needs 1..64 slots"),
        (_mutate(extra=1), "unknown field(s) extra"),
        (_mutate(created_at="yesterday"), "'created_at' must be int"),
        (_mutate(created_at=True), "'created_at' must be int"),
    ],
)
def test_malformed_envelopes_are_format_errors(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as info:
        ev.decode(data, where="x.json")
    assert message in str(info.value)
    assert "x.json" in str(info.value)


def test_unknown_version_is_rejected_clearly() -> None:
    with pytest.raises(UnsupportedVersion, match="format version 2 is not supported"):
        ev.decode(_mutate(keystead=2))


def test_slot_with_unknown_provider_is_rejected() -> None:
    slot = dict(VECTORS[0]["envelope"]["slots"][0], provider="vault-transit")
    with pytest.raises(FormatError, match="unknown provider"):
        ev.decode(_mutate(slots=[slot]))


def test_wrong_dek_and_renamed_envelope_fail_to_open() -> None:
    envelope = ev.decode(json.dumps(VECTORS[0]["envelope"]).encode())
    dek = bytes.fromhex(VECTORS[0]["dek_hex"])
    assert open_with_dek(envelope, dek) == bytes.fromhex(VECTORS[0]["plaintext_hex"])
    with pytest.raises(DecryptError):
        open_with_dek(envelope, bytes(32))
    import dataclasses

    with pytest.raises(DecryptError):
        open_with_dek(dataclasses.replace(envelope, name="OTHER"), dek)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_raise_only_our_errors(data: bytes) -> None:
    with contextlib.suppress(KeysteadError):
        ev.decode(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(VECTORS[0]["envelope"]) + ["slots.0.wrapped", "slots.0.version", "slots.0.key"]), _json)
def test_fuzz_field_replacement_raises_only_our_errors(field: str, value: object) -> None:
    doc = json.loads(json.dumps(VECTORS[0]["envelope"]))
    if field.startswith("slots.0."):
        doc["slots"][0][field.split(".")[-1]] = value
    else:
        doc[field] = value
    with contextlib.suppress(KeysteadError):
        ev.decode(json.dumps(doc).encode())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=255))
def test_fuzz_corrupted_valid_envelope(payload: bytes, pos: int, byte: int) -> None:
    data = bytearray(json.dumps(VECTORS[0]["envelope"]).encode())
    data[pos % len(data)] = byte
    with contextlib.suppress(KeysteadError):
        ev.decode(bytes(data))


def test_seal_gives_one_slot_per_key_and_opens_with_each(tmp_path: Path) -> None:
    keyfile = LocalKeyFile(tmp_path / "keys.json")
    keyfile.create("a")
    keyfile.create("b")
    a, b = LocalKey("a", keyfile), LocalKey("b", keyfile)
    envelope = seal("v", "S", b"hello", [a, b])
    assert [s.key for s in envelope.slots] == ["local:a", "local:b"]
    assert open_envelope(envelope, a) == open_envelope(envelope, b) == b"hello"
