"""The embedded local KMS: versioned key-encryption keys in one 0600 key file.

The key file is JSON (``keystead-keys/1``)::

    {"format": "keystead-keys/1",
     "keys": {"main": {"primary": "2",
                       "versions": [{"id": "1", "created_at": "2026-08-25T10:00:00Z",
                                     "state": "enabled", "material": "<base64 32 bytes>"},
                                    ...]}}}

A data key is wrapped with AES-256-GCM under the primary version: the blob is
``nonce (12) || ciphertext (32) || tag (16)``, with the envelope's associated
data (vault and secret name) bound in. Rotation adds a version and makes it
primary; old versions keep unwrapping until retired, when their material is
erased. Every change rewrites the file atomically under an exclusive lock.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keystead.envelope import Context, aad_prefix
from keystead.files import write_atomic
from keystead.errors import DecryptError, InputError, KeyFileError, NotFoundError, ProviderError
from keystead.providers.base import ENABLED, RETIRED, Key, KeyInfo, KeyVersion, Wrapped

FORMAT = "keystead-keys/1"
NONCE_LEN = 12


@dataclass(frozen=True, slots=True)
class _Version:
    id: str
    created_at: datetime
    state: str
    material: bytes = field(repr=False)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalKeyFile:
    """The key file: load, check its mode, change it atomically under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- reading -------------------------------------------------------------
    def _check_mode(self) -> None:
        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
        except FileNotFoundError:
            raise KeyFileError(
                f"no key file at {self.path}: run `keystead init` or `keystead keys create NAME`"
            ) from None
        if mode & 0o077:
            raise KeyFileError(
                f"key file {self.path} is readable by group or others (mode {mode:04o}); "
                f"fix: chmod 600 {self.path}"
            )

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict[str, tuple[str, tuple[_Version, ...]]]:
        """name -> (primary version id, versions)."""
        self._check_mode()
        try:
            doc = json.loads(self.path.read_bytes())
            if doc.get("format") != FORMAT:
                raise ValueError(f"format must be {FORMAT!r}")
            keys = {}
            for name, entry in doc["keys"].items():
                versions = tuple(
                    _Version(
                        str(v["id"]),
                        _utc(v["created_at"]),
                        v["state"],
                        base64.b64decode(v["material"], validate=True) if v["state"] == ENABLED else b"",
                    )
                    for v in entry["versions"]
                )
                keys[name] = (str(entry["primary"]), versions)
            return keys
        except KeyFileError:
            raise
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {self.path}: {exc.strerror}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyFileError(f"key file {self.path} is corrupt: {exc}") from None

    # -- writing -------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, tuple[str, tuple[_Version, ...]]]]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self.load() if self.path.exists() else {}
        finally:
            os.close(fd)

    def _write(self, keys: dict[str, tuple[str, tuple[_Version, ...]]]) -> None:
        doc = {
            "format": FORMAT,
            "keys": {
                name: {
                    "primary": primary,
                    "versions": [
                        {
                            "id": v.id,
                            "created_at": _iso(v.created_at),
                            "state": v.state,
                            "material": base64.b64encode(v.material).decode() if v.state == ENABLED else "",
                        }
                        for v in versions
                    ],
                }
                for name, (primary, versions) in sorted(keys.items())
            },
        }
        data = (json.dumps(doc, indent=2) + "\n").encode()
        try:
            write_atomic(self.path, data)
        except OSError as exc:
            raise KeyFileError(f"cannot write key file {self.path}: {exc.strerror}") from exc

    def create(self, name: str, *, now: datetime | None = None) -> None:
        """Add key ``name`` with a first version; InputError if it exists."""
        now = now or datetime.now(timezone.utc)
        with self._locked() as keys:
            if name in keys:
                raise InputError(f"local key {name!r} already exists in {self.path}")
            keys[name] = ("1", (_Version("1", now, ENABLED, AESGCM.generate_key(bit_length=256)),))
            self._write(keys)

    def add_version(self, name: str, *, now: datetime) -> None:
        with self._locked() as keys:
            primary, versions = self._entry(keys, name)
            new_id = str(max(int(v.id) for v in versions) + 1)
            fresh = _Version(new_id, now, ENABLED, AESGCM.generate_key(bit_length=256))
            keys[name] = (new_id, versions + (fresh,))
            self._write(keys)

    def retire(self, name: str, version: str) -> None:
        with self._locked() as keys:
            primary, versions = self._entry(keys, name)
            if version == primary:
                raise ProviderError(f"cannot retire version {version} of local:{name}: it is the primary")
            if version not in {v.id for v in versions}:
                raise NotFoundError(f"local:{name} has no version {version}")
            keys[name] = (
                primary,
                tuple(_Version(v.id, v.created_at, RETIRED, b"") if v.id == version else v for v in versions),
            )
            self._write(keys)

    def _entry(self, keys: dict, name: str) -> tuple[str, tuple[_Version, ...]]:
        if name not in keys:
            raise NotFoundError(f"no local key {name!r} in {self.path}")
        return keys[name]


class LocalKey(Key):
    """``local:NAME``: one key of the key file."""

    provider = "local"

    def __init__(self, name: str, keyfile: LocalKeyFile) -> None:
        self.name = name
        self.ref = f"local:{name}"
        self._file = keyfile
        self._reload()

    def _stamp(self) -> tuple[int, int]:
        st = os.stat(self._file.path)
        return st.st_ino, st.st_mtime_ns

    def _reload(self) -> None:
        try:
            stamp = self._stamp()  # before reading: a change made meanwhile reloads again
        except FileNotFoundError:
            stamp = None  # load() says what to do
        keys = self._file.load()
        self._loaded = stamp
        if self.name not in keys:
            raise NotFoundError(f"no local key {self.name!r} in {self._file.path}")
        self._primary, self._versions = keys[self.name]
        self._aeads = {v.id: AESGCM(v.material) for v in self._versions if v.state == ENABLED}

    def _aead(self, version: str) -> AESGCM:
        aead = self._aeads.get(version)
        if aead is None:
            self._reload()  # another process may have rotated since we loaded
            aead = self._aeads.get(version)
        if aead is None:
            raise DecryptError()
        return aead

    # -- what the key does ------------------------------------------------------
    def wrap(self, dek: bytes, context: Context) -> Wrapped:
        # Always wrap under the key file's current primary: a long-lived process
        # must not keep sealing under a version the worker has since rotated
        # away from (and may retire). One stat per wrap; the file is replaced
        # atomically on every change, so a new inode or mtime means reload.
        try:
            if self._stamp() != self._loaded:
                self._reload()
        except FileNotFoundError:
            raise KeyFileError(f"key file {self._file.path} disappeared") from None
        nonce = os.urandom(NONCE_LEN)
        return Wrapped(self._primary, nonce + self._aeads[self._primary].encrypt(nonce, dek, context.aad))

    def unwrap(self, wrapped: Wrapped, context: Context) -> bytes:
        blob = wrapped.blob
        try:
            return self._aead(wrapped.version).decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], context.aad)
        except (InvalidTag, ValueError):
            raise DecryptError() from None

    def rewrap_many(
        self, vault: str, items: Sequence[tuple[str, str, bytes]]
    ) -> tuple[str, list[bytes | ProviderError]]:
        # The hot loop of rotation: one urandom call per batch, the associated
        # data built from a per-vault prefix, no objects per item but the blob.
        primary = self._primary
        encrypt = self._aeads[primary].encrypt
        prefix = aad_prefix(vault)
        nonces = os.urandom(NONCE_LEN * len(items))
        aeads = self._aeads
        out: list[bytes | ProviderError] = []
        for i, (secret, version, blob) in enumerate(items):
            aad = prefix + secret.encode()
            try:
                aead = aeads.get(version) or self._aead(version)
                dek = aead.decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], aad)
            except (InvalidTag, ValueError, DecryptError):
                out.append(DecryptError())
                continue
            nonce = nonces[i * NONCE_LEN : (i + 1) * NONCE_LEN]
            out.append(nonce + encrypt(nonce, dek, aad))
        return primary, out

    # -- how the key is managed -----------------------------------------------
    def describe(self) -> KeyInfo:
        self._reload()
        primary = next(v for v in self._versions if v.id == self._primary)
        return KeyInfo(
            ref=self.ref,
            provider=self.provider,
            primary=self._primary,
            versions=tuple(KeyVersion(v.id, v.created_at, v.state) for v in self._versions),
            last_rotated=primary.created_at,
            rotates_in_place=True,
        )

    def rotate(self, *, now: datetime) -> KeyInfo:
        self._file.add_version(self.name, now=now)
        return self.describe()

    def retire(self, version: str) -> None:
        self._file.retire(self.name, version)
        self._reload()
