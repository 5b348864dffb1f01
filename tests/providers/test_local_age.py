"""The local and age providers beyond the contract, and choosing a provider by a reference's form."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyrage import x25519

from keystead.envelope import Context
from keystead.errors import DecryptError, InputError, KeyFileError, NotFoundError, ProviderError, UnknownReference
from keystead.providers import open_key, provider_of
from keystead.providers.age import AgeKey
from keystead.providers.base import RETIRED, Wrapped
from keystead.providers.local import LocalKey, LocalKeyFile

CTX = Context("v", "S")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def keyfile(tmp_path: Path) -> LocalKeyFile:
    kf = LocalKeyFile(tmp_path / "sub" / "keys.json")
    kf.create("main", now=T0)
    return kf


def test_key_file_is_created_0600(keyfile: LocalKeyFile) -> None:
    assert stat.S_IMODE(os.stat(keyfile.path).st_mode) == 0o600


def test_group_readable_key_file_is_refused_with_the_fix(keyfile: LocalKeyFile) -> None:
    os.chmod(keyfile.path, 0o640)
    with pytest.raises(KeyFileError) as info:
        LocalKey("main", keyfile)
    assert str(keyfile.path) in str(info.value) and "chmod 600" in str(info.value)


def test_missing_key_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="keystead init"):
        LocalKey("main", LocalKeyFile(tmp_path / "none.json"))


def test_corrupt_key_file(keyfile: LocalKeyFile) -> None:
    keyfile.path.write_text("{not json")
    with pytest.raises(KeyFileError, match="corrupt"):
        LocalKey("main", keyfile)


def test_wrap_unwrap_and_context_binding(keyfile: LocalKeyFile) -> None:
    key = LocalKey("main", keyfile)
    dek = os.urandom(32)
    wrapped = key.wrap(dek, CTX)
    assert wrapped.version == "1" and len(wrapped.blob) == 60
    assert key.unwrap(wrapped, CTX) == dek
    with pytest.raises(DecryptError):
        key.unwrap(wrapped, Context("v", "OTHER"))
    with pytest.raises(DecryptError):
        key.unwrap(Wrapped("1", wrapped.blob[:-1] + bytes([wrapped.blob[-1] ^ 1])), CTX)


def test_rotate_adds_primary_old_versions_still_unwrap_until_retired(keyfile: LocalKeyFile) -> None:
    key = LocalKey("main", keyfile)
    dek = os.urandom(32)
    old = key.wrap(dek, CTX)
    info = key.rotate(now=T0 + timedelta(days=90), token="t")
    assert info.primary == "2" and info.live_versions == ("1", "2")
    assert info.last_rotated == T0 + timedelta(days=90)
    new = key.rewrap(old, CTX)
    assert new.version == "2" and key.unwrap(new, CTX) == dek
    assert key.unwrap(old, CTX) == dek
    key.retire("1")
    assert [v.state for v in key.describe().versions] == [RETIRED, "enabled"]  # StrEnum: equal to its text
    with pytest.raises(DecryptError):
        key.unwrap(old, CTX)
    assert key.unwrap(new, CTX) == dek
    assert b"material" in keyfile.path.read_bytes()  # the field stays, emptied
    with pytest.raises(ProviderError, match="primary"):
        key.retire("2")


def test_rewrap_many_reports_bad_items_and_keeps_going(keyfile: LocalKeyFile) -> None:
    key = LocalKey("main", keyfile)
    dek = os.urandom(32)
    good = key.wrap(dek, CTX)
    key.rotate(now=T0 + timedelta(days=1), token="t")
    items = [("S", "1", good.blob), ("S", "1", b"\0" * 60), ("S", "9", good.blob), ("OTHER", "1", good.blob),
             ("S", "1", good.blob)]
    out = key.rewrap_many("v", items)
    assert [type(x) for x in out] == [Wrapped, DecryptError, DecryptError, DecryptError, Wrapped]
    assert out[0].version == out[4].version == "2"
    assert key.unwrap(out[0], CTX) == key.unwrap(out[4], CTX) == dek
    assert out[0].blob[:12] != out[4].blob[:12]  # a fresh nonce per item


def test_base_rewrap_many_matches_the_fast_path(keyfile: LocalKeyFile) -> None:
    from keystead.providers.base import Key

    key = LocalKey("main", keyfile)
    dek = os.urandom(32)
    good = key.wrap(dek, CTX)
    key.rotate(now=T0 + timedelta(days=1), token="t")
    out = Key.rewrap_many(key, "v", [("S", "1", good.blob), ("S", "1", b"\0" * 60)])
    assert out[0].version == "2" and isinstance(out[1], DecryptError)
    assert key.unwrap(out[0], CTX) == dek


def test_a_second_process_sees_rotation(keyfile: LocalKeyFile) -> None:
    reader = LocalKey("main", keyfile)
    writer = LocalKey("main", keyfile)
    writer.rotate(now=T0 + timedelta(days=1), token="t")
    wrapped = writer.wrap(os.urandom(32), CTX)
    assert reader.unwrap(wrapped, CTX)  # reloads on an unknown version


def test_create_twice_and_unknown_key(keyfile: LocalKeyFile) -> None:
    with pytest.raises(InputError, match="already exists"):
        keyfile.create("main")
    with pytest.raises(NotFoundError):
        LocalKey("nope", keyfile)


def test_age_slot_round_trip_needs_an_identity(tmp_path: Path) -> None:
    ident = x25519.Identity.generate()
    ident_file = tmp_path / "me.txt"
    ident_file.write_text(f"# created for a test\n{ident}\n")
    recipient = str(ident.to_public())
    dek = os.urandom(32)
    wrapped = AgeKey(recipient).wrap(dek, CTX)
    with pytest.raises(KeyFileError, match="KEYSTEAD_AGE_IDENTITY_FILE"):
        AgeKey(recipient).unwrap(wrapped, CTX)
    with pytest.raises(KeyFileError, match=r"no age identity file at .*nowhere"):
        AgeKey(recipient, identity_file=tmp_path / "nowhere").unwrap(wrapped, CTX)
    assert AgeKey(recipient, identity_file=ident_file).unwrap(wrapped, CTX) == dek
    other = tmp_path / "other.txt"
    other.write_text(str(x25519.Identity.generate()) + "\n")
    with pytest.raises(DecryptError):
        AgeKey(recipient, identity_file=other).unwrap(wrapped, CTX)
    with pytest.raises(ProviderError, match="does not rotate"):
        AgeKey(recipient).rotate(now=T0, token="t")


@pytest.mark.parametrize(
    "ref, provider",
    [
        ("local:main", "local"),
        ("age1ff9zuqqp2pm09vkuc9wkw6c7vrfdggp86eljvn34h08rt704jc0s90sc9l", "age"),
        ("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", "aws"),
        ("alias/keystead", "aws"),
        ("mrk-1234abcd12ab34cd56ef1234567890ab", "aws"),
        ("projects/p/locations/global/keyRings/r/cryptoKeys/k", "gcp"),
    ],
)
def test_provider_is_chosen_by_form(ref: str, provider: str) -> None:
    assert provider_of(ref) == provider


@pytest.mark.parametrize("ref", ["", "local:", "local:../x", "vault:transit/k", "projects/p/keys/k"])
def test_unknown_reference_lists_accepted_forms(ref: str) -> None:
    with pytest.raises(UnknownReference) as info:
        provider_of(ref)
    assert "local:NAME" in str(info.value) and "age1" in str(info.value)


AGE_R = "age1ff9zuqqp2pm09vkuc9wkw6c7vrfdggp86eljvn34h08rt704jc0s90sc9l"


@pytest.mark.parametrize("ref", ["age1notvalid", "age1short", f"{AGE_R},age1x"])
def test_a_malformed_age_recipient_is_named_as_one(ref: str) -> None:
    with pytest.raises(UnknownReference) as info:
        provider_of(ref)
    assert "invalid age recipient" in str(info.value) and "unknown key reference" not in str(info.value)


def test_a_checksum_error_in_an_age_recipient_is_invalid_not_unknown() -> None:
    good = "age1ff9zuqqp2pm09vkuc9wkw6c7vrfdggp86eljvn34h08rt704jc0s90sc9l"
    bad = good[:-1] + ("q" if good[-1] != "q" else "p")
    with pytest.raises(UnknownReference, match="invalid age recipient"):
        AgeKey(bad)


@pytest.mark.parametrize("ref, options, settings, canonical", [
    ("local:main", None, None, "local:main"),
    (" local:main ", None, None, "local:main"),
    (f"{AGE_R}, {AGE_R}", None, None, f"{AGE_R},{AGE_R}"),
    ("alias/app", None, {"region": "eu-west-1", "account": "123456789012"},
     "arn:aws:kms:eu-west-1:123456789012:alias/app"),
    ("alias/app", {"region": "us-east-1"}, {"region": "eu-west-1", "account": "123456789012"},
     "arn:aws:kms:us-east-1:123456789012:alias/app"),
    ("alias/app", None, None, "alias/app"),
    ("arn:aws:kms:eu-west-1:123456789012:alias/app", None, None, "arn:aws:kms:eu-west-1:123456789012:alias/app"),
])
def test_canonical_ref(ref, options, settings, canonical) -> None:
    from keystead.providers import canonical_ref

    assert canonical_ref(ref, options, settings) == canonical


def test_cloud_references_are_known_and_open_without_a_network_call(tmp_path: Path) -> None:
    class Settings:
        key_file = tmp_path / "keys.json"
        age_identity_file = None

    asked = []
    key = open_key("alias/keystead", Settings(), clients=lambda service, opts: asked.append(service))
    assert key.provider == "aws" and asked == []  # no client built, no call made until first use
    gcp = open_key("projects/keystead-test/locations/global/keyRings/ring/cryptoKeys/app", Settings(),
                   clients=lambda service, opts: asked.append(service))
    assert gcp.provider == "gcp" and asked == []


def test_a_long_lived_key_wraps_under_the_primary_another_process_rotated_to(keyfile: LocalKeyFile) -> None:
    sealer = LocalKey("main", keyfile)  # loaded before the rotation, kept open (a server, say)
    LocalKey("main", keyfile).rotate(now=T0 + timedelta(days=90), token="t")  # the worker, elsewhere
    assert sealer.wrap(os.urandom(32), CTX).version == "2"
