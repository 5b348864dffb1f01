"""Seal and open envelopes: AES-256-GCM payload, data key wrapped once per key.

Crypto knows keys (through their wrap/unwrap interface) but no files and no
stores. The data key lives in local variables only, never in a value that
could be printed or logged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keystead.envelope import NONCE_LEN, Context, Envelope, Slot, check_name
from keystead.errors import DecryptError, InputError, KeysteadError
from keystead.providers.base import Key, Wrapped

DEK_LEN = 32
MAX_SECRET_BYTES = 32 * 1024 * 1024


def _epoch(now: datetime | None) -> int:
    return int((now or datetime.now(timezone.utc)).timestamp())


def seal(
    vault: str, name: str, plaintext: bytes, keys: Sequence[Key], *, now: datetime | None = None
) -> Envelope:
    """Encrypt ``plaintext`` once under a fresh data key; wrap that key once per key."""
    check_name(name)
    if not keys:
        raise InputError("no key to seal with: add a key to keystead.toml or the active profile")
    if len(plaintext) > MAX_SECRET_BYTES:
        raise InputError(f"secret {name!r} is larger than {MAX_SECRET_BYTES // (1024 * 1024)} MiB")
    context = Context(vault, name)
    dek = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_LEN)
    ciphertext = AESGCM(dek).encrypt(nonce, plaintext, context.aad)
    when = _epoch(now)
    slots = []
    for key in keys:
        wrapped = key.wrap(dek, context)
        slots.append(Slot(key.ref, key.provider, wrapped.version, when, wrapped.blob))
    return Envelope(vault, name, when, nonce, ciphertext, tuple(slots))


def open_with_dek(envelope: Envelope, dek: bytes) -> bytes:
    """Decrypt the payload with a data key; DecryptError if either is wrong."""
    try:
        return AESGCM(dek).decrypt(envelope.nonce, envelope.ciphertext, envelope.context.aad)
    except (InvalidTag, ValueError):
        raise DecryptError() from None


def unwrap_slot(envelope: Envelope, key: Key) -> bytes:
    """The data key from ``key``'s slot of ``envelope``."""
    slot = envelope.slot(key.ref)
    if slot is None:
        raise DecryptError(f"secret {envelope.name!r} has no slot for key {key.ref}")
    dek = key.unwrap(Wrapped(slot.version, slot.wrapped), envelope.context)
    if len(dek) != DEK_LEN:
        raise DecryptError()
    return dek


def open_envelope(envelope: Envelope, key: Key) -> bytes:
    """Open ``envelope`` through ``key``'s slot only."""
    return open_with_dek(envelope, unwrap_slot(envelope, key))


def open_any(envelope: Envelope, keys: Sequence[Key]) -> bytes:
    """Open ``envelope`` through the first of ``keys`` whose slot works.

    Any one slot decrypts; which one failed, and why, is deliberately not said.
    """
    for key in keys:
        if envelope.slot(key.ref) is None:
            continue
        try:
            return open_envelope(envelope, key)
        except KeysteadError:
            continue
    raise DecryptError(f"cannot decrypt secret {envelope.name!r} with any configured key")
