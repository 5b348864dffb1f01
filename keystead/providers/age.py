"""age recipients as a slot (pyrage): developers open secrets offline with their identity.

Reference: one or more X25519 recipients, comma-separated
(``age1...`` or ``age1...,age1...``). Wrapping encrypts the 32-byte data key
to every recipient; unwrapping needs one matching identity, read from the
file named by ``KEYSTEAD_AGE_IDENTITY_FILE`` or the config's
``[providers.age] identity_file``. age has no associated data, so the name
binding of an age slot comes from the payload's AEAD alone (an age slot moved
to another secret opens a data key that then fails on the payload).

An age recipient set has one version ("1" always) and does not rotate
(:attr:`RotationKind.NONE`): to change it, declare a new recipient in
keystead.toml and re-seal. It is never due and never planned.
"""

from __future__ import annotations

from pathlib import Path

import pyrage
from pyrage import x25519

from keystead.clock import EPOCH
from keystead.envelope import Context
from keystead.errors import DecryptError, KeyFileError, UnknownReference
from keystead.providers.base import Key, KeyInfo, KeyVersion, RotationKind, VersionState, Wrapped

VERSION = "1"


def load_identities(path: Path | None) -> list[x25519.Identity]:
    """Identities from an age identity file (``AGE-SECRET-KEY-1...`` lines)."""
    if path is None:
        return []
    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except FileNotFoundError:
        raise KeyFileError(f"no age identity file at {path} (KEYSTEAD_AGE_IDENTITY_FILE or "
                           "[providers.age] identity_file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read age identity file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return [x25519.Identity.from_str(line.strip()) for line in lines if line.strip().startswith("AGE-SECRET-KEY-")]
    except Exception:  # pyrage raises its own IdentityError, not exported consistently
        raise KeyFileError(f"age identity file {path} holds a malformed identity") from None


class AgeKey(Key):
    provider = "age"

    def __init__(self, ref: str, *, identity_file: Path | None = None) -> None:
        self.ref = ref
        try:
            self._recipients = [x25519.Recipient.from_str(r.strip()) for r in ref.split(",")]
        except pyrage.RecipientError:
            raise UnknownReference(f"invalid age recipient in {ref!r}: not a valid X25519 recipient "
                                   "(checksum or encoding is wrong)") from None
        self._identity_file = identity_file
        self._identities: list[x25519.Identity] | None = None

    def _wrap(self, dek: bytes, context: Context) -> Wrapped:
        return Wrapped(VERSION, pyrage.encrypt(dek, self._recipients))

    def _unwrap(self, wrapped: Wrapped, context: Context) -> bytes:
        if self._identities is None:
            self._identities = load_identities(self._identity_file)
        if not self._identities:
            raise KeyFileError("no age identity: set KEYSTEAD_AGE_IDENTITY_FILE to your identity file",
                               op="unwrap", key=self.ref)
        try:
            dek: bytes = pyrage.decrypt(wrapped.blob, self._identities)
            return dek
        except pyrage.DecryptError:
            raise DecryptError() from None

    def describe(self) -> KeyInfo:
        return KeyInfo(
            ref=self.ref,
            provider=self.provider,
            primary=VERSION,
            versions=(KeyVersion(VERSION, EPOCH, VersionState.ENABLED),),
            last_rotated=None,
            rotation=RotationKind.NONE,
        )
