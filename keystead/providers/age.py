"""age recipients as a slot (pyrage): developers open secrets offline with their identity.

Reference: one or more X25519 recipients, comma-separated
(``age1...`` or ``age1...,age1...``). Wrapping encrypts the 32-byte data key
to every recipient; unwrapping needs one matching identity, read from the
file named by ``KEYSTEAD_AGE_IDENTITY_FILE`` or the config's
``[providers.age] identity_file``. age has no associated data, so the name
binding of an age slot comes from the payload's AEAD alone (an age slot moved
to another secret opens a data key that then fails on the payload).

An age recipient set has no versions ("1" always) and does not rotate in
place: to rotate, put a new recipient in keystead.toml and re-seal.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyrage
from pyrage import x25519

from keystead.envelope import Context
from keystead.errors import DecryptError, KeyFileError, ProviderError, UnknownReference
from keystead.providers.base import ENABLED, Key, KeyInfo, KeyVersion, Wrapped

VERSION = "1"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def load_identities(path: Path | None) -> list[x25519.Identity]:
    """Identities from an age identity file (``AGE-SECRET-KEY-1...`` lines)."""
    if path is None:
        return []
    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except OSError as exc:
        raise KeyFileError(f"cannot read age identity file {path}: {exc.strerror}") from None
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
            raise UnknownReference(f"malformed age recipient in {ref!r}") from None
        self._identity_file = identity_file
        self._identities: list[x25519.Identity] | None = None

    def wrap(self, dek: bytes, context: Context) -> Wrapped:
        return Wrapped(VERSION, pyrage.encrypt(dek, self._recipients))

    def unwrap(self, wrapped: Wrapped, context: Context) -> bytes:
        if self._identities is None:
            self._identities = load_identities(self._identity_file)
        if not self._identities:
            raise DecryptError("no age identity: set KEYSTEAD_AGE_IDENTITY_FILE to your identity file")
        try:
            return pyrage.decrypt(wrapped.blob, self._identities)
        except pyrage.DecryptError:
            raise DecryptError() from None

    def describe(self) -> KeyInfo:
        return KeyInfo(
            ref=self.ref,
            provider=self.provider,
            primary=VERSION,
            versions=(KeyVersion(VERSION, _EPOCH, ENABLED),),
            last_rotated=_EPOCH,
            rotates_in_place=False,
        )

    def rotate(self, *, now: datetime) -> KeyInfo:
        raise ProviderError(
            "age recipients do not rotate in place: add the new recipient to keystead.toml and re-seal"
        )

    def retire(self, version: str) -> None:
        raise ProviderError("age recipients have no versions to retire")
