"""Signing keys on AWS KMS: sign with KMS, verify offline with ``cryptography``.

A signing key is an ECC_NIST_P256 SIGN_VERIFY key declared with ``purpose = "sign"``;
it holds no envelope slots. docs/aws.md (Signing keys) is the user's view.

Sign: KMS ``Sign`` with ECDSA_SHA_256. A file of at most :data:`RAW_LIMIT`
bytes is sent as it is (``MessageType = RAW``: KMS hashes it); a larger one is
hashed here with SHA-256, streamed in :data:`CHUNK` pieces, and only the digest
is sent (``MessageType = DIGEST``: KMS's Sign takes at most 4096 bytes). Either
way the signature is ECDSA over SHA-256 of the file's bytes, so verification
never needs to know which mode signed: it hashes the file (streamed) and checks
the DER signature as a prehashed SHA-256 digest.

Signature file (:func:`encode_signature`): by default the DER ECDSA signature
exactly as KMS returns it (what ``openssl dgst -sha256 -verify`` reads); with
``--json`` a small JSON object that also records the key id that signed::

    {"format": "keystead-signature/1", "algorithm": "ECDSA_SHA_256",
     "key_id": "arn:aws:kms:...:key/...", "signature": "<base64 DER>"}

A DER signature starts with byte 0x30, a JSON one with ``{``: verify reads either.

Verify: the public key of each candidate key, from GetPublicKey, cached on disk
per key id (:class:`PublicKeyCache`); a cached public key needs no call, so a
disabled predecessor (GetPublicKey refuses a disabled key) still verifies what
it signed. Candidates, in order: the key the reference names now, then its
predecessors (the successor rotation's ``keystead:predecessor`` chain, see
:mod:`keystead.providers.aws_rotation`) that are still enabled or disabled, i.e.
in their grace period; a predecessor scheduled for deletion is retired and no
longer trusted. A JSON signature names its key: only that key is tried, and only
if it is one of those candidates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from keystead.errors import FormatError, InputError, KeysteadError, ProviderError
from keystead.providers.aws import key_id_of
from keystead.providers.base import VersionState

if TYPE_CHECKING:
    from keystead.providers.aws import AwsKey

ALGORITHM = "ECDSA_SHA_256"
RAW_LIMIT = 4096
"""Largest message KMS Sign takes as it is; a larger file is signed by its SHA-256 digest."""
CHUNK = 1 << 20
FORMAT = "keystead-signature/1"
MAX_SIGNATURE_FILE = 64 * 1024
_TRUSTED = (VersionState.ENABLED, VersionState.DISABLED)


class BadSignature(KeysteadError):
    """The signature does not match the file under any key it may come from (exit 1)."""


@dataclass(frozen=True)
class Signature:
    key_id: str | None
    """The key (ARN) that signed, when the signature file records it."""
    der: bytes


def read_file(path: Path) -> tuple[int, bytes, bytes | None]:
    """(size, SHA-256 digest, the bytes themselves when at most RAW_LIMIT), streamed."""
    h = hashlib.sha256()
    size = 0
    head = bytearray()
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                if len(head) <= RAW_LIMIT:
                    head += chunk[: RAW_LIMIT + 1 - len(head)]
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return size, h.digest(), bytes(head) if size <= RAW_LIMIT else None


def sign_file(key: AwsKey, path: Path) -> tuple[Signature, bytes]:
    """KMS Sign over ``path`` (RAW up to 4096 bytes, else DIGEST of its SHA-256); the signature
    and the file's SHA-256 digest."""
    size, digest, raw = read_file(path)
    if size == 0:
        raise InputError(f"{path} is empty: KMS signs at least one byte")
    message, mode = (raw, "RAW") if raw is not None else (digest, "DIGEST")
    with key._translated("sign"):
        out = key.client().sign(KeyId=key.ref, Message=message, MessageType=mode, SigningAlgorithm=ALGORITHM)
    return Signature(str(out["KeyId"]), bytes(out["Signature"])), digest


def encode_signature(sig: Signature, *, as_json: bool) -> bytes:
    if not as_json:
        return sig.der
    doc = {"format": FORMAT, "algorithm": ALGORITHM, "key_id": sig.key_id,
           "signature": base64.b64encode(sig.der).decode("ascii")}
    return (json.dumps(doc, sort_keys=True) + "\n").encode("utf-8")


def decode_signature(data: bytes, where: str) -> Signature:
    """A signature file: DER as KMS returns it, or keystead's JSON (see the module docstring)."""
    if len(data) > MAX_SIGNATURE_FILE:
        raise FormatError(f"{where}: {len(data)} bytes is no signature (at most {MAX_SIGNATURE_FILE})")
    text = data.lstrip()
    if text[:1] == b"{":
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError("format")
            if doc.get("algorithm") != ALGORITHM:
                raise FormatError(f"{where}: algorithm {doc.get('algorithm')!r}: only {ALGORITHM} is verified")
            der = base64.b64decode(str(doc["signature"]), validate=True)
            key_id = doc.get("key_id")
            return Signature(str(key_id) if key_id else None, der)
        except FormatError:
            raise
        except (ValueError, KeyError, binascii.Error):
            raise FormatError(f"{where}: not a keystead signature ({FORMAT} JSON with key_id and signature)") from None
    if data[:1] != b"\x30" or len(data) > 256:
        raise FormatError(f"{where}: not a DER ECDSA signature nor a keystead JSON signature")
    return Signature(None, data)


class PublicKeyCache:
    """Public keys of signing keys by key id, PEM files ``<key id>.pem`` in ``folder`` (0644).

    Written atomically (temporary file, rename); the folder itself is the caller's
    (keystead: ``.keystead/public-keys`` beside keystead.toml, inside the 0700 folder)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key_id: str) -> Path:
        return self.folder / f"{key_id_of(key_id)}.pem"

    def cached(self, key_id: str) -> bytes | None:
        try:
            return self.path(key_id).read_bytes()
        except FileNotFoundError:
            return None

    def get(self, key: AwsKey, key_id: str) -> bytes:
        """The PEM public key of ``key_id``: the cache, else GetPublicKey (then cached)."""
        pem = self.cached(key_id)
        if pem is not None:
            return pem
        from cryptography.hazmat.primitives import serialization

        with key._translated("public-key"):
            out = key.client().get_public_key(KeyId=key_id)
        spec = out.get("KeySpec") or out.get("CustomerMasterKeySpec")
        if out.get("KeyUsage", "SIGN_VERIFY") != "SIGN_VERIFY" or spec != "ECC_NIST_P256":
            raise ProviderError(f"AWS KMS key {key_id} is {spec} {out.get('KeyUsage')}: keystead signs with "
                                "ECC_NIST_P256 SIGN_VERIFY keys only", op="public-key", key=key.ref)
        public = serialization.load_der_public_key(out["PublicKey"])
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self._write(self.path(key_id), pem)
        return pem

    def _write(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)  # a public key: readable by anyone who verifies
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            pass  # a cache that cannot be written only costs the next verify a GetPublicKey


def fingerprint(pem: bytes) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex (``openssl pkey -pubin -outform DER | sha256sum``)."""
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_public_key(pem)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def candidates(key: AwsKey) -> list[tuple[str, str]]:
    """(key id, state) of the key the reference names now, then its predecessors in grace."""
    with key._translated("describe"):
        current = key._target()
    out = [(current, str(VersionState.ENABLED))]
    info = key.describe()
    for v in info.versions:
        kid = v.id.split(":", 1)[0]
        if kid != current and v.state in _TRUSTED and kid not in (k for k, _s in out):
            out.append((kid, str(v.state)))
    return out


def verify_file(key: AwsKey, path: Path, sig: Signature, cache: PublicKeyCache) -> str:
    """The key id whose public key verifies ``sig`` over ``path``; BadSignature if none does."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    _size, digest, _raw = read_file(path)

    def matches(kid: str) -> bool:
        public = serialization.load_pem_public_key(cache.get(key, kid))
        if not isinstance(public, ec.EllipticCurvePublicKey):
            return False
        try:
            public.verify(sig.der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        except InvalidSignature:
            return False
        return True

    with key._translated("describe"):
        current = key._target()
    wanted = key_id_of(sig.key_id) if sig.key_id else None
    if wanted in (None, current) and matches(current):
        return current  # the common case: one DescribeKey (remembered by the key), the public key cached
    tried = [current]
    if wanted != current:  # a predecessor's signature: follow the chain (needs kms:ListResourceTags)
        chain = [kid for kid, _state in candidates(key) if kid != current]
        if wanted is not None and wanted not in chain:
            raise BadSignature(f"{path}: signed by AWS KMS key {sig.key_id}, which is not {key.ref} nor one of its "
                               "predecessors still in their grace period")
        for kid in [wanted] if wanted else chain:
            if matches(kid):
                return kid
        tried = [wanted] if wanted else [current, *chain]
    raise BadSignature(f"bad signature: it does not match {path} under {key.ref} (tried {', '.join(tried)})")
