"""Seal and open envelopes: AES-256-GCM payload, data key wrapped once per key.

Crypto knows keys (through their wrap/unwrap interface) but no files and no
stores. The data key lives in local variables only, never in a value that
could be printed or logged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keystead.clock import epoch, utcnow
from keystead.envelope import NONCE_LEN, Context, Envelope, Slot, check_name
from keystead.errors import DecryptError, InputError, KeysteadError, ProviderError
from keystead.providers.base import DEK_LEN, KeyOps, Wrapped

MAX_SECRET_BYTES = 32 * 1024 * 1024


def _epoch(now: datetime | None) -> int:
    return int(epoch(now or utcnow()))


def seal(
    vault: str, name: str, plaintext: bytes, keys: Sequence[KeyOps], *, now: datetime | None = None
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


def unwrap_slot(envelope: Envelope, key: KeyOps) -> bytes:
    """The data key from ``key``'s slot of ``envelope``."""
    slot = envelope.slot(key.ref)
    if slot is None:
        raise DecryptError(f"secret {envelope.name!r} has no slot for key {key.ref}")
    dek = key.unwrap(Wrapped(slot.version, slot.wrapped), envelope.context)
    if len(dek) != DEK_LEN:
        raise DecryptError()
    return dek


def open_envelope(envelope: Envelope, key: KeyOps) -> bytes:
    """Open ``envelope`` through ``key``'s slot only."""
    return open_with_dek(envelope, unwrap_slot(envelope, key))


def open_any(envelope: Envelope, keys: Sequence[KeyOps], *,
             unopened: Sequence[tuple[str, KeysteadError]] = ()) -> bytes:
    """Open ``envelope`` through the first of ``keys`` whose slot works.

    Which slot failed, and why, is deliberately not said when the failures
    are decryption failures. Two exceptions, neither of which says anything
    about the ciphertext: when a slot gave a data key and the payload still
    failed, the envelope itself was altered (it "failed authentication");
    and when every slot failed and some failed for another reason (a key
    file that cannot be read, access denied, the network; ``unopened`` are
    the keys that could not even be opened, as ``(ref, error)``), that
    reason is raised: it is the user's fix.
    """
    others: list[tuple[str, KeysteadError]] = [(r, e) for r, e in unopened if envelope.slot(r) is not None]
    payload_failed = False
    for key in keys:
        slot = envelope.slot(key.ref)
        if slot is None:
            continue
        try:
            dek = key.unwrap(Wrapped(slot.version, slot.wrapped), envelope.context)
        except DecryptError:
            continue
        except KeysteadError as exc:
            others.append((key.ref, exc))
            continue
        try:
            return open_with_dek(envelope, dek)
        except DecryptError:
            payload_failed = True
    if payload_failed:
        raise DecryptError(f"secret {envelope.name!r}: the envelope failed authentication "
                           "(its payload was altered or corrupted); restore it from a backup or remove it")
    if len(others) == 1:
        raise others[0][1]
    if others:
        raise ProviderError(f"cannot open secret {envelope.name!r}: "
                            + "; ".join(f"{ref}: {exc}" for ref, exc in others))
    tried = [k.ref for k in keys if envelope.slot(k.ref) is not None]
    raise DecryptError(f"cannot decrypt secret {envelope.name!r} with any configured key"
                       + (f" (tried {', '.join(tried)})" if tried else " (no slot for any of them)")
                       + ": an envelope copied from another name or vault, or a slot another key wrapped, does "
                       "not open; restore it from a backup or set it again")
