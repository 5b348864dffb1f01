"""The provider contract: what every key provider does, whatever its backend.

Parametrized over providers the way tests/stores/test_contract.py is over
stores; GCP runs against the loopback Cloud KMS fake (tests/providers/gcp_fake.py)
with the real google-cloud-kms client. A case says what its provider can do (bind the context into the wrap,
rotate, retire for good or within a window), and the tests hold it to
exactly that.

The AWS cases run against moto in server mode (tests/providers/conftest.py):
``aws-scheduled`` is an AWS_KMS symmetric key named by its key ARN (rotation
kind *scheduled*: ``rotate`` is RotateKeyOnDemand; its old material is
superseded, never disabled or retired); ``aws-successor`` is a symmetric key
in a custom key store named by an alias (rotation kind *successor*: a new
key, the alias moved; an old key is disabled, then scheduled for deletion
within a 30-day window, restorable meanwhile). moto lets disabled and
pending-deletion keys decrypt, so ``enforces_disable`` is False for them and
tests/providers/aws/test_stubbed.py shows the refusal with botocore's Stubber.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyrage import x25519

from keystead.envelope import Context
from keystead.errors import DecryptError, ProviderError
from keystead.providers import ManagedKey, RotationKind, VersionState, Wrapped
from keystead.providers.age import AgeKey
from keystead.providers.local import LocalKey, LocalKeyFile

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CTX = Context("vault", "SECRET")


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[pytest.FixtureRequest, Path], ManagedKey]
    binds_context: bool  # the wrap itself authenticates the vault and secret name
    rotates: bool
    retirement: str = "final"
    """final: a retired version is gone (RETIRED, never restored); window: the provider deletes it
    after a window (PENDING_DELETION, restorable); none: old versions are never disabled or retired."""
    enforces_disable: bool = True  # the backend refuses to open through a disabled version


def _local(request: pytest.FixtureRequest, tmp: Path) -> ManagedKey:
    kf = LocalKeyFile(tmp / "keys.json")
    kf.create("main", now=T0)
    return LocalKey("main", kf)


def _age(request: pytest.FixtureRequest, tmp: Path) -> ManagedKey:
    ident = x25519.Identity.generate()
    (tmp / "id.txt").write_text(f"{ident}\n")
    return AgeKey(str(ident.to_public()), identity_file=tmp / "id.txt")


def _aws_scheduled(request: pytest.FixtureRequest, tmp: Path) -> ManagedKey:
    from keystead.providers.aws import AwsKey

    clients = request.getfixturevalue("aws")
    arn = clients.kms().create_key(Description="contract")["KeyMetadata"]["Arn"]
    return AwsKey(arn, clients=clients, name="contract")


def _aws_successor(request: pytest.FixtureRequest, tmp: Path) -> ManagedKey:
    from keystead.providers.aws import AwsKey

    clients = request.getfixturevalue("aws")
    kms = clients.kms()
    # moto accepts a custom key store id it does not know (and then behaves as a plain key):
    # enough for the rotation kind; the key store itself is Stubber-tested.
    kid = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId="cks-0123456789abcdef0")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/contract", TargetKeyId=kid)
    return AwsKey("arn:aws:kms:us-east-1:123456789012:alias/contract", clients=clients, name="contract",
                  exclusive=True)


_GCP_REF = "projects/keystead-test/locations/global/keyRings/ring/cryptoKeys/contract"
_FAKES: list[object] = []


def _gcp(request: pytest.FixtureRequest, tmp: Path) -> ManagedKey:
    from keystead.providers.gcp import open_gcp
    from tests.providers.gcp_fake import FakeCloudKMS, kms_client

    fake = FakeCloudKMS().start()
    _FAKES.append(fake)
    fake.add_key(_GCP_REF)
    return open_gcp(_GCP_REF, name="contract", options={"retry_seconds": 0}, clients=kms_client(fake))


CASES = [Case("local", _local, binds_context=True, rotates=True),
         Case("age", _age, binds_context=False, rotates=False),
         Case("aws-scheduled", _aws_scheduled, binds_context=True, rotates=True, retirement="none"),
         Case("aws-successor", _aws_successor, binds_context=True, rotates=True, retirement="window",
              enforces_disable=False),
         Case("gcp", _gcp, binds_context=True, rotates=True, retirement="window")]


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


@pytest.fixture
def key(case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ManagedKey]:
    yield case.make(request, tmp_path)
    while _FAKES:
        _FAKES.pop().stop()  # type: ignore[attr-defined]  # a FakeCloudKMS


def test_is_both_halves(key: ManagedKey) -> None:
    assert isinstance(key, ManagedKey)


def test_wrap_unwrap_round_trip_with_a_label(key: ManagedKey) -> None:
    dek = os.urandom(32)
    wrapped = key.wrap(dek, CTX)
    assert wrapped.version and wrapped.version == key.describe().primary
    assert key.unwrap(wrapped, CTX) == dek
    assert key.wrap(dek, CTX).blob != wrapped.blob  # fresh randomness per wrap


def test_wrapped_bytes_never_show_in_a_repr(key: ManagedKey) -> None:
    wrapped = key.wrap(os.urandom(32), CTX)
    assert wrapped.blob.hex() not in repr(wrapped) and str(len(wrapped.blob)) in repr(wrapped)


def test_data_key_length_is_checked(key: ManagedKey) -> None:
    with pytest.raises(ProviderError):
        key.wrap(os.urandom(31), CTX)


def test_tampered_blob_is_a_decrypt_error(key: ManagedKey) -> None:
    wrapped = key.wrap(os.urandom(32), CTX)
    bad = bytearray(wrapped.blob)
    bad[-1] ^= 1
    with pytest.raises(DecryptError):
        key.unwrap(Wrapped(wrapped.version, bytes(bad)), CTX)


def test_context_binding(case: Case, key: ManagedKey) -> None:
    dek = os.urandom(32)
    wrapped = key.wrap(dek, CTX)
    if case.binds_context:
        with pytest.raises(DecryptError):
            key.unwrap(wrapped, Context("vault", "OTHER"))
        with pytest.raises(DecryptError):
            key.unwrap(wrapped, Context("other-vault", "SECRET"))
    else:  # the payload's AEAD binds the name (docs/envelope.md)
        assert key.unwrap(wrapped, Context("vault", "OTHER")) == dek


def test_rewrap_many_one_result_per_item_in_order(case: Case, key: ManagedKey) -> None:
    deks = [os.urandom(32) for _ in range(3)]
    good = [key.wrap(d, Context("vault", f"S{i}")) for i, d in enumerate(deks)]
    if case.rotates:
        key.rotate(now=T0 + timedelta(days=1), token="t1")
    items = [("S0", good[0].version, good[0].blob), ("S1", good[1].version, b"\0" * len(good[1].blob)),
             ("S2", good[2].version, good[2].blob)]
    out = key.rewrap_many("vault", items)
    assert len(out) == 3 and isinstance(out[1], DecryptError)
    primary = key.describe().primary
    for i in (0, 2):
        w = out[i]
        assert isinstance(w, Wrapped) and w.version == primary
        assert key.unwrap(w, Context("vault", f"S{i}")) == deks[i]
    assert key.rewrap_many("vault", []) == []


def test_describe(case: Case, key: ManagedKey) -> None:
    info = key.describe()
    assert info.ref == key.ref and info.provider == key.provider
    assert info.primary in info.live_versions
    assert isinstance(info.rotation, RotationKind)
    assert (info.rotation is not RotationKind.NONE) == case.rotates
    assert (info.last_rotated is None) == (info.rotation is RotationKind.NONE)


def test_rotate_is_idempotent_per_token(case: Case, key: ManagedKey) -> None:
    if not case.rotates:
        with pytest.raises(ProviderError):
            key.rotate(now=T0, token="t1")
        return
    first = key.describe().primary
    a = key.rotate(now=T0 + timedelta(days=1), token="t1")
    assert a.primary != first and first in a.live_versions
    again = key.rotate(now=T0 + timedelta(days=2), token="t1")  # a resume after a crash
    assert again.primary == a.primary and len(again.versions) == len(a.versions)
    b = key.rotate(now=T0 + timedelta(days=3), token="t2")
    assert b.primary not in (first, a.primary)


def test_two_phase_retirement_and_restore(case: Case, key: ManagedKey) -> None:
    if not case.rotates:
        for step in (key.disable, key.retire, key.restore):
            with pytest.raises(ProviderError):
                step("1")
        return
    dek = os.urandom(32)
    old = key.wrap(dek, CTX)
    key.rotate(now=T0 + timedelta(days=1), token="t1")
    with pytest.raises(ProviderError):
        key.disable(key.describe().primary)  # never the primary
    if case.retirement == "none":  # old material stays live for the key's lifetime
        assert key.describe().version(old.version).state is VersionState.SUPERSEDED
        for step in (key.disable, key.retire):
            with pytest.raises(ProviderError, match="superseded"):
                step(old.version)
        assert key.unwrap(old, CTX) == dek
        return
    key.disable(old.version)
    assert key.describe().version(old.version).state is VersionState.DISABLED
    if case.enforces_disable:
        with pytest.raises(ProviderError):  # disabled opens nothing, and not silently
            key.unwrap(old, CTX)
    key.disable(old.version)  # idempotent
    key.restore(old.version)
    assert key.describe().version(old.version).state is VersionState.ENABLED
    assert key.unwrap(old, CTX) == dek
    key.disable(old.version)
    key.retire(old.version)
    gone = VersionState.RETIRED if case.retirement == "final" else VersionState.PENDING_DELETION
    assert key.describe().version(old.version).state is gone
    assert old.version not in key.describe().live_versions
    if case.enforces_disable:  # opens nothing: gone for good, or waiting out its deletion window
        with pytest.raises(DecryptError if case.retirement == "final" else ProviderError):
            key.unwrap(old, CTX)
    key.retire(old.version)  # idempotent
    if case.retirement == "final":
        with pytest.raises(ProviderError):
            key.restore(old.version)  # gone for good
    else:  # restorable within the provider's deletion window
        key.restore(old.version)
        assert key.describe().version(old.version).state is VersionState.ENABLED
        assert key.unwrap(old, CTX) == dek
