"""The provider contract: what every key provider does, whatever its backend.

Parametrized over providers the way tests/stores/test_contract.py is over
stores; GCP runs against the loopback Cloud KMS fake (tests/providers/gcp_fake.py)
with the real google-cloud-kms client, and AWS (moto server) joins the
``CASES`` list when it lands. A case says what its provider can do (bind
the context into the wrap, rotate), and the tests hold it to exactly that.
"""

from __future__ import annotations

import os
from collections.abc import Callable
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
    make: Callable[[Path], ManagedKey]
    binds_context: bool  # the wrap itself authenticates the vault and secret name
    rotates: bool
    retire_is_final: bool = True  # False: retire schedules a deletion that restore can still undo (GCP)


def _local(tmp: Path) -> ManagedKey:
    kf = LocalKeyFile(tmp / "keys.json")
    kf.create("main", now=T0)
    return LocalKey("main", kf)


def _age(tmp: Path) -> ManagedKey:
    ident = x25519.Identity.generate()
    (tmp / "id.txt").write_text(f"{ident}\n")
    return AgeKey(str(ident.to_public()), identity_file=tmp / "id.txt")


_GCP_REF = "projects/keystead-test/locations/global/keyRings/ring/cryptoKeys/contract"


def _gcp(tmp: Path) -> ManagedKey:
    from keystead.providers.gcp import open_gcp
    from tests.providers.gcp_fake import FakeCloudKMS, kms_client

    fake = FakeCloudKMS().start()
    _FAKES.append(fake)
    fake.add_key(_GCP_REF)
    return open_gcp(_GCP_REF, name="contract", options={"retry_seconds": 0}, clients=kms_client(fake))


_FAKES: list = []

CASES = [Case("local", _local, binds_context=True, rotates=True),
         Case("age", _age, binds_context=False, rotates=False),
         Case("gcp", _gcp, binds_context=True, rotates=True, retire_is_final=False)]


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


@pytest.fixture
def key(case: Case, tmp_path: Path):
    yield case.make(tmp_path)
    while _FAKES:
        _FAKES.pop().stop()


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
    key.disable(old.version)
    assert key.describe().version(old.version).state is VersionState.DISABLED
    with pytest.raises(ProviderError):  # disabled opens nothing, and not silently
        key.unwrap(old, CTX)
    key.disable(old.version)  # idempotent
    key.restore(old.version)
    assert key.unwrap(old, CTX) == dek
    key.disable(old.version)
    key.retire(old.version)
    if not case.retire_is_final:  # a deletion window: restorable until it ends, opening nothing meanwhile
        assert key.describe().version(old.version).state is VersionState.PENDING_DELETION
        assert old.version not in key.describe().live_versions
        with pytest.raises(ProviderError):
            key.unwrap(old, CTX)
        key.retire(old.version)  # idempotent
        key.restore(old.version)
        assert key.unwrap(old, CTX) == dek
        return  # the end of the window: tests/providers/test_gcp.py
    assert key.describe().version(old.version).state is VersionState.RETIRED
    assert old.version not in key.describe().live_versions
    with pytest.raises(DecryptError):
        key.unwrap(old, CTX)
    key.retire(old.version)  # idempotent
    with pytest.raises(ProviderError):
        key.restore(old.version)  # gone for good
