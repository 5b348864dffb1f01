"""The envelope: one secret, its payload sealed once, its data key wrapped per slot.

This module is the format and nothing else: values and the codec between
them and bytes. It knows no key, no store and no file. docs/envelope.md is
the specification; tests/vectors/envelope_v1.json holds its vectors (tests/test_envelope.py checks them).

An envelope on disk is UTF-8 JSON with a fixed field order (so one secret per
file diffs small in git)::

    {
      "keystead": 1,
      "vault": "default",
      "name": "DB_URL",
      "created_at": 1795000000,
      "cipher": "AES-256-GCM",
      "nonce": "<base64, 12 bytes>",
      "ciphertext": "<base64, payload + 16-byte tag>",
      "slots": [
        {"key": "local:main", "provider": "local", "version": "3",
         "wrapped_at": 1795000000, "wrapped": "<base64>"}
      ]
    }
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from keystead.errors import FormatError, InputError, UnsupportedVersion

FORMAT_VERSION = 1
CIPHER = "AES-256-GCM"
NONCE_LEN = 12
TAG_LEN = 16
MAX_ENVELOPE_BYTES = 64 * 1024 * 1024
MAX_SLOTS = 64
MAX_WRAPPED_BYTES = 8192
MAX_REF_LEN = 2048
PROVIDERS = ("local", "age", "aws", "gcp")

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}")
_VERSION = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}")
_FIELDS = ("keystead", "vault", "name", "created_at", "cipher", "nonce", "ciphertext", "slots")
_SLOT_FIELDS = ("key", "provider", "version", "wrapped_at", "wrapped")
_T = TypeVar("_T")


def check_name(name: str, what: str = "secret name") -> str:
    """Return ``name`` if it is a valid secret or vault name, else raise InputError.

    Names are 1-255 characters of ``A-Z a-z 0-9 _ . -`` and do not start
    with ``.`` or ``-``: no path separator, so a name never leaves the vault.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(
            f"invalid {what} {name!r}: use 1-255 characters A-Z a-z 0-9 _ . - "
            "(not starting with '.' or '-', no '/')"
        )
    return name


def aad_prefix(vault: str) -> bytes:
    """The associated data of every secret of ``vault`` starts with this; the name follows."""
    return b"keystead/v1\x00" + vault.encode() + b"\x00"


def associated_data(vault: str, name: str) -> bytes:
    """The AEAD associated data that binds a payload or a wrapped key to its name."""
    return aad_prefix(vault) + name.encode()


@dataclass(frozen=True, slots=True)
class Context:
    """Where a data key belongs: bound into every wrap and every payload."""

    vault: str
    secret: str

    @property
    def aad(self) -> bytes:
        return associated_data(self.vault, self.secret)

    @property
    def kms_context(self) -> dict[str, str]:
        """The same binding as a cloud KMS encryption context."""
        return {"keystead:vault": self.vault, "keystead:secret": self.secret}


@dataclass(frozen=True, slots=True)
class Slot:
    """One way to recover the data key: the key that wrapped it, its version, when."""

    key: str
    provider: str
    version: str
    wrapped_at: int
    wrapped: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Envelope:
    vault: str
    name: str
    created_at: int
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)
    slots: tuple[Slot, ...]

    @property
    def context(self) -> Context:
        return Context(self.vault, self.name)

    def slot(self, key: str) -> Slot | None:
        for s in self.slots:
            if s.key == key:
                return s
        return None

    def with_slot(self, new: Slot) -> Envelope:
        """A copy with the slot for ``new.key`` replaced (or appended)."""
        slots = tuple(new if s.key == new.key else s for s in self.slots)
        if new.key not in {s.key for s in self.slots}:
            slots += (new,)
        return Envelope(self.vault, self.name, self.created_at, self.nonce, self.ciphertext, slots)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode(envelope: Envelope) -> bytes:
    """Envelope -> canonical bytes (fixed field order, two-space indent, final newline)."""
    doc = {
        "keystead": FORMAT_VERSION,
        "vault": envelope.vault,
        "name": envelope.name,
        "created_at": envelope.created_at,
        "cipher": CIPHER,
        "nonce": _b64(envelope.nonce),
        "ciphertext": _b64(envelope.ciphertext),
        "slots": [
            {
                "key": s.key,
                "provider": s.provider,
                "version": s.version,
                "wrapped_at": s.wrapped_at,
                "wrapped": _b64(s.wrapped),
            }
            for s in envelope.slots
        ],
    }
    return (json.dumps(doc, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def _field(doc: Mapping[str, object], name: str, kind: type[_T], where: str) -> _T:
    value = doc.get(name)
    if type(value) is not kind:  # bool is not an int here
        raise FormatError(f"envelope {where}: field {name!r} must be {kind.__name__}")
    return value


def _bytes(doc: Mapping[str, object], name: str, where: str, *, lo: int, hi: int) -> bytes:
    text = _field(doc, name, str, where)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"envelope {where}: field {name!r} is not base64") from None
    if not lo <= len(raw) <= hi:
        raise FormatError(f"envelope {where}: field {name!r} has {len(raw)} bytes, expected {lo}..{hi}")
    return raw


def decode(data: bytes, *, where: str = "") -> Envelope:
    """Bytes -> Envelope. Raises only FormatError (or UnsupportedVersion)."""
    where = where or "data"
    if len(data) > MAX_ENVELOPE_BYTES:
        raise FormatError(f"envelope {where}: larger than {MAX_ENVELOPE_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise FormatError(f"envelope {where}: not valid JSON (truncated or corrupted?)") from None
    if not isinstance(doc, dict):
        raise FormatError(f"envelope {where}: not a JSON object")
    version = doc.get("keystead")
    if type(version) is not int:
        raise FormatError(f"envelope {where}: missing format version field 'keystead'")
    if version != FORMAT_VERSION:
        raise UnsupportedVersion(
            f"envelope {where}: format version {version} is not supported "
            f"(this keystead reads version {FORMAT_VERSION}; upgrade keystead)"
        )
    unknown = set(doc) - set(_FIELDS)
    if unknown:
        raise FormatError(f"envelope {where}: unknown field(s) {', '.join(sorted(unknown))}")
    if _field(doc, "cipher", str, where) != CIPHER:
        raise FormatError(f"envelope {where}: cipher must be {CIPHER!r}")
    vault = _field(doc, "vault", str, where)
    name = _field(doc, "name", str, where)
    try:
        check_name(vault, "vault name")
        check_name(name)
    except InputError as exc:
        raise FormatError(f"envelope {where}: {exc}") from None
    created_at = _field(doc, "created_at", int, where)
    nonce = _bytes(doc, "nonce", where, lo=NONCE_LEN, hi=NONCE_LEN)
    ciphertext = _bytes(doc, "ciphertext", where, lo=TAG_LEN, hi=MAX_ENVELOPE_BYTES)
    raw_slots = _field(doc, "slots", list, where)
    if not 1 <= len(raw_slots) <= MAX_SLOTS:
        raise FormatError(f"envelope {where}: needs 1..{MAX_SLOTS} slots, has {len(raw_slots)}")
    slots = tuple(_slot(s, f"{where} slot {i}") for i, s in enumerate(raw_slots))
    if len({s.key for s in slots}) != len(slots):
        raise FormatError(f"envelope {where}: two slots for the same key")
    return Envelope(vault, name, created_at, nonce, ciphertext, slots)


def _slot(doc: object, where: str) -> Slot:
    if not isinstance(doc, dict):
        raise FormatError(f"envelope {where}: not a JSON object")
    unknown = set(doc) - set(_SLOT_FIELDS)
    if unknown:
        raise FormatError(f"envelope {where}: unknown field(s) {', '.join(sorted(unknown))}")
    key = _field(doc, "key", str, where)
    if not 1 <= len(key) <= MAX_REF_LEN:
        raise FormatError(f"envelope {where}: key reference must be 1..{MAX_REF_LEN} characters")
    provider = _field(doc, "provider", str, where)
    if provider not in PROVIDERS:
        raise FormatError(f"envelope {where}: unknown provider {provider!r} (known: {', '.join(PROVIDERS)})")
    version = _field(doc, "version", str, where)
    if not _VERSION.fullmatch(version):
        raise FormatError(f"envelope {where}: malformed key version")
    wrapped_at = _field(doc, "wrapped_at", int, where)
    wrapped = _bytes(doc, "wrapped", where, lo=1, hi=MAX_WRAPPED_BYTES)
    return Slot(key, provider, version, wrapped_at, wrapped)
