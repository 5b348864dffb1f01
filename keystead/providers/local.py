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
primary (once per rotation token, recorded on the version); old versions keep
unwrapping until disabled. A disabled version keeps its material but opens
nothing until restored; a retired one has its material erased, for good.
Every change rewrites the file atomically under an exclusive lock.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keystead.clock import iso, parse_iso, utcnow
from keystead.envelope import Context, aad_prefix
from keystead.errors import DecryptError, InputError, KeyFileError, NotFoundError, ProviderError
from keystead.files import locked, write_atomic
from keystead.providers.base import (
    Key,
    KeyInfo,
    KeyVersion,
    RewrapResult,
    RotationKind,
    SlotItem,
    VersionState,
    Wrapped,
)

FORMAT = "keystead-keys/1"
NONCE_LEN = 12
_STATES = {VersionState.ENABLED, VersionState.DISABLED, VersionState.RETIRED}


@dataclass(frozen=True, slots=True)
class _Version:
    id: str
    created_at: datetime
    state: VersionState
    material: bytes = field(repr=False)
    token: str | None = None

    @property
    def has_material(self) -> bool:
        return self.state is not VersionState.RETIRED


_Keys = dict[str, tuple[str, tuple[_Version, ...]]]


class LocalKeyFile:
    """The key file: load, check its mode, change it atomically under a lock."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
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

    def load(self) -> _Keys:
        """name -> (primary version label, versions)."""
        self._check_mode()
        try:
            doc = json.loads(self.path.read_bytes())
            if doc.get("format") != FORMAT:
                raise ValueError(f"format must be {FORMAT!r}")
            keys = {}
            for name, entry in doc["keys"].items():
                versions = []
                for v in entry["versions"]:
                    state = VersionState(v["state"])
                    if state not in _STATES:
                        raise ValueError(f"version state {state} is not a local key state")
                    material = (base64.b64decode(v["material"], validate=True)
                                if state is not VersionState.RETIRED else b"")
                    versions.append(_Version(str(v["id"]), parse_iso(v["created_at"]), state, material, v.get("token")))
                keys[name] = (str(entry["primary"]), tuple(versions))
            return keys
        except KeyFileError:
            raise
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {self.path}: {exc.strerror}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyFileError(f"key file {self.path} is corrupt: {exc}") from None

    # -- writing -------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Keys]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            with locked(self.path.with_name(self.path.name + ".lock")):
                yield self.load() if self.path.exists() else {}
        except OSError as exc:
            raise KeyFileError(f"cannot lock key file {self.path}: {exc.strerror or exc}") from exc

    def _write(self, keys: _Keys) -> None:
        doc = {
            "format": FORMAT,
            "keys": {
                name: {
                    "primary": primary,
                    "versions": [
                        {
                            "id": v.id,
                            "created_at": iso(v.created_at),
                            "state": str(v.state),
                            "material": base64.b64encode(v.material).decode() if v.has_material else "",
                            **({"token": v.token} if v.token else {}),
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
        with self._locked() as keys:
            if name in keys:
                raise InputError(f"local key {name!r} already exists in {self.path}")
            first = _Version("1", now or utcnow(), VersionState.ENABLED, AESGCM.generate_key(bit_length=256))
            keys[name] = ("1", (first,))
            self._write(keys)

    def add_version(self, name: str, *, now: datetime, token: str | None = None) -> None:
        """A new primary version; with ``token``, only if no version was made for it yet."""
        with self._locked() as keys:
            _primary, versions = self._entry(keys, name)
            if token is not None and any(v.token == token for v in versions):
                return  # made by an earlier call with this token (a resumed rotation)
            new_id = str(max(int(v.id) for v in versions) + 1)
            fresh = _Version(new_id, now, VersionState.ENABLED, AESGCM.generate_key(bit_length=256), token)
            keys[name] = (new_id, versions + (fresh,))
            self._write(keys)

    def set_state(self, name: str, version: str, state: VersionState) -> None:
        """Disable, restore (enable) or retire (erase) one non-primary version; idempotent."""
        with self._locked() as keys:
            primary, versions = self._entry(keys, name)
            found = next((v for v in versions if v.id == version), None)
            if found is None:
                raise NotFoundError(f"local:{name} has no version {version}")
            if found.state is state:
                return
            if version == primary:
                raise ProviderError(f"cannot {_VERB[state]} version {version} of local:{name}: it is the primary",
                                    op=_VERB[state], key=f"local:{name}")
            if found.state is VersionState.RETIRED:
                raise ProviderError(f"version {version} of local:{name} is retired: its material is erased "
                                    "and cannot be restored", op=_VERB[state], key=f"local:{name}")
            material = b"" if state is VersionState.RETIRED else found.material
            changed = _Version(found.id, found.created_at, state, material, found.token)
            keys[name] = (primary, tuple(changed if v.id == version else v for v in versions))
            self._write(keys)

    def retire(self, name: str, version: str) -> None:
        self.set_state(name, version, VersionState.RETIRED)

    def _entry(self, keys: _Keys, name: str) -> tuple[str, tuple[_Version, ...]]:
        if name not in keys:
            raise NotFoundError(f"no local key {name!r} in {self.path}")
        return keys[name]


_VERB = {VersionState.ENABLED: "restore", VersionState.DISABLED: "disable", VersionState.RETIRED: "retire"}


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
            stamp: tuple[int, int] | None = self._stamp()  # before reading: a change made meanwhile reloads again
        except FileNotFoundError:
            stamp = None  # load() says what to do
        keys = self._file.load()
        self._loaded = stamp
        if self.name not in keys:
            raise NotFoundError(f"no local key {self.name!r} in {self._file.path}")
        self._primary, self._versions = keys[self.name]
        self._aeads = {v.id: AESGCM(v.material) for v in self._versions if v.state is VersionState.ENABLED}

    def _aead(self, version: str) -> AESGCM:
        aead = self._aeads.get(version)
        if aead is None:
            self._reload()  # another process may have rotated (or restored) since we loaded
            aead = self._aeads.get(version)
        if aead is None:
            state = next((v.state for v in self._versions if v.id == version), None)
            if state is VersionState.DISABLED:
                raise ProviderError(f"version {version} of {self.ref} is disabled: "
                                    f"`keystead keys restore {self.name} {version}` brings it back",
                                    op="unwrap", key=self.ref, code="disabled")
            raise DecryptError()
        return aead

    # -- what the key does ------------------------------------------------------
    def _wrap(self, dek: bytes, context: Context) -> Wrapped:
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

    def _unwrap(self, wrapped: Wrapped, context: Context) -> bytes:
        blob = wrapped.blob
        try:
            return self._aead(wrapped.version).decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], context.aad)
        except (InvalidTag, ValueError):
            raise DecryptError() from None

    def rewrap_many(self, vault: str, items: Sequence[SlotItem]) -> list[RewrapResult]:
        # The hot loop of rotation: one urandom call per batch, the associated
        # data built from a per-vault prefix, one small tuple per item.
        primary = self._primary
        encrypt = self._aeads[primary].encrypt
        prefix = aad_prefix(vault)
        nonces = os.urandom(NONCE_LEN * len(items))
        aeads = self._aeads
        new_wrapped = tuple.__new__  # Wrapped(primary, blob) without the named tuple's Python-level __new__
        out: list[RewrapResult] = []
        for i, (secret, version, blob) in enumerate(items):
            aad = prefix + secret.encode()
            try:
                aead = aeads.get(version) or self._aead(version)
                dek = aead.decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], aad)
            except (InvalidTag, ValueError, ProviderError):
                out.append(DecryptError())
                continue
            if len(dek) != 32:
                out.append(DecryptError())
                continue
            nonce = nonces[i * NONCE_LEN : (i + 1) * NONCE_LEN]
            out.append(new_wrapped(Wrapped, (primary, nonce + encrypt(nonce, dek, aad))))
        return out

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
            rotation=RotationKind.IN_PLACE,
        )

    def _rotate(self, *, now: datetime, token: str) -> KeyInfo:
        self._file.add_version(self.name, now=now, token=token)
        return self.describe()

    def disable(self, version: str) -> None:
        self._file.set_state(self.name, version, VersionState.DISABLED)
        self._reload()

    def retire(self, version: str) -> None:
        self._file.set_state(self.name, version, VersionState.RETIRED)
        self._reload()

    def restore(self, version: str) -> None:
        self._file.set_state(self.name, version, VersionState.ENABLED)
        self._reload()
