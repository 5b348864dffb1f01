"""The vault: a store of envelopes, the configured keys, and the audit log, together.

This is the library face of ``keystead secrets``: set, get, list, remove,
import and export secrets. Every call that reads or changes a secret appends
an audit record (never the value). Keys whose provider cannot be opened are
reported in ``key_errors`` instead of stopping the vault from opening, so one
broken key never locks out the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from keystead.audit import AuditAnchor, AuditLog
from keystead.clock import Clock, utcnow
from keystead.config import Config
from keystead.crypto import open_any, seal
from keystead.envelope import Envelope, check_name
from keystead.errors import DecryptError, Interrupted, KeysteadError
from keystead.providers import ClientFactory, KeyWrapper, ManagedKey, identity, open_key
from keystead.stores import Store, open_store

# Cheapest first: a slot of the embedded key opens offline and fast, age
# needs an identity file, cloud slots cost a network round trip.
_OPEN_ORDER = {"local": 0, "age": 1, "aws": 2, "gcp": 3}


class Vault:
    def __init__(
        self,
        config: Config,
        store: Store,
        keys: dict[str, ManagedKey],
        key_errors: dict[str, KeysteadError],
        audit: AuditLog,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.config = config
        self.name = config.vault_name
        self.store = store
        self.keys = keys
        self.key_errors = key_errors
        self.audit = audit
        self.clock = clock
        self.wrap_key: KeyWrapper = identity

    @classmethod
    def open(cls, config: Config, *, clock: Clock = utcnow, wrap_key: KeyWrapper = identity,
             store_url: str | None = None, clients: ClientFactory | None = None) -> Vault:
        """Open the configured keys and the vault store.

        ``wrap_key`` wraps every key once, here (caching, rate limiting,
        metrics: the same interface around the provider); rotation lanes open
        their vault through the same call. ``store_url`` opens another store
        of the config (a profile's) instead of the active one. ``clients`` is
        handed to cloud providers (tests point it at a local server).
        """
        keys: dict[str, ManagedKey] = {}
        errors: dict[str, KeysteadError] = {}
        for kc in config.keys.values():
            try:
                keys[kc.name] = wrap_key(open_key(kc.ref, config, options=kc.options, clients=clients))
            except KeysteadError as exc:
                errors[kc.name] = exc
        store = open_store(store_url or config.store_url, base=config.root)
        anchor = store if isinstance(store, AuditAnchor) else None  # the chain's head, kept in the vault database
        audit = AuditLog(config.audit_path, anchor=anchor, vault_size=store.count)
        vault = cls(config, store, keys, errors, audit, clock=clock)
        vault.wrap_key = wrap_key  # rotation lanes open their own vault with the same wrapper
        return vault

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- keys --------------------------------------------------------------------
    def slot_keys(self) -> list[ManagedKey]:
        """The keys every new envelope gets a slot for (the active profile's).

        A key that could not be opened raises its own error (the same error,
        and exit code, as reading through it would)."""
        out = []
        for kc in self.config.slot_keys:
            if kc.name in self.key_errors:
                raise self.key_errors[kc.name]
            out.append(self.keys[kc.name])
        return out

    def opening_keys(self) -> list[ManagedKey]:
        return sorted(self.keys.values(), key=lambda k: _OPEN_ORDER.get(k.provider, 9))

    # -- secrets -------------------------------------------------------------------
    @contextlib.contextmanager
    def _audited(self, action: str, *, secret: str | None = None, key: str | None = None,
                 **details: Any) -> Iterator[dict[str, Any]]:
        """One audit record for the operation, whatever its end: ok, our error, or any
        other exception (a bug, Ctrl-C), recorded by type before it propagates."""
        try:
            yield details
        except BaseException as exc:
            with contextlib.suppress(KeysteadError):  # never hide the original error
                self.audit.append(action, secret=secret, key=key, result=type(exc).__name__, **details)
            raise
        self.audit.append(action, secret=secret, key=key, **details)

    def seal(self, name: str, value: bytes) -> Envelope:
        return seal(self.name, name, value, self.slot_keys(), now=self.clock())

    def set(self, name: str, value: bytes) -> Envelope:
        check_name(name)
        with self._audited("secrets.set", secret=name, key=" ".join(kc.ref for kc in self.config.slot_keys)) as details:
            envelope = self.seal(name, value)
            self.store.put(envelope)
            details["slots"] = [s.key for s in envelope.slots]
        return envelope

    def open_envelope(self, name: str, envelope: Envelope) -> bytes:
        # Open under the name it was asked for, not the one the envelope
        # claims: an envelope copied or renamed to another name fails here.
        bound = dataclasses.replace(envelope, vault=self.name, name=name)
        unopened = [(self.config.keys[n].ref, e) for n, e in self.key_errors.items() if n in self.config.keys]
        try:
            return open_any(bound, self.opening_keys(), unopened=unopened)
        except DecryptError:
            if envelope.vault != self.name:
                raise DecryptError(
                    f"secret {name!r} was sealed in vault {envelope.vault!r}, but {self.config.path} names "
                    f"this vault {self.name!r}: the vault name is bound into every envelope "
                    f"(set [vault].name = {envelope.vault!r} to read it)"
                ) from None
            raise

    def get(self, name: str) -> bytes:
        check_name(name)
        try:
            envelope = self.store.get(name)
        except KeysteadError as exc:
            self.audit.append("secrets.get", secret=name, result=type(exc).__name__)
            raise
        with self._audited("secrets.get", secret=name, key=" ".join(s.key for s in envelope.slots)):
            return self.open_envelope(name, envelope)

    def delete(self, name: str) -> None:
        check_name(name)
        with self._audited("secrets.rm", secret=name):
            self.store.delete(name)

    def names(self) -> list[str]:
        return self.store.names()

    def import_many(self, items: Mapping[str, bytes], *, stop: Callable[[], bool] | None = None,
                    **details: Any) -> int:
        """Seal and store many secrets with one ``put_many``; return how many were written.

        How much of an import survives a failure or a ``stop`` is the store's:
        sqlite writes all or nothing (one transaction), dir writes each file
        atomically. ``stop`` is polled before each envelope; when it returns
        true the import ends with :class:`Interrupted`, whose audit record says
        how many secrets of how many were written. ``details`` go into the audit record
        (``source="sops"``: where the values came from).
        """
        for name in items:
            check_name(name)

        class Stopped(Exception):
            pass

        sealed: list[tuple[str, bytes]] = []  # (name, nonce) of every envelope handed to the store

        def envelopes() -> Iterator[Envelope]:
            for n, v in items.items():
                if stop is not None and stop():
                    raise Stopped
                envelope = seal(self.name, n, v, keys, now=now)
                sealed.append((n, envelope.nonce))
                yield envelope

        with self._audited("secrets.import", count=len(items), **details) as details:
            keys = self.slot_keys()
            now = self.clock()
            try:
                written = self.store.put_many(envelopes())
            except Stopped:
                # Count what the store really holds: all or none of them (sqlite), each file (dir).
                done = 0
                for n, nonce in sealed:
                    with contextlib.suppress(KeysteadError):
                        done += self.store.get(n).nonce == nonce
                details["written"] = done
                raise Interrupted(f"interrupted after {done} of {len(items)} secrets") from None
            details["written"] = written
            return written

    def export(self) -> Iterator[tuple[str, bytes]]:
        """Every secret, decrypted, in name order (streamed).

        The audit record is written however the export ends, with the count
        of secrets decrypted: a consumer that stops early (a ``break``, an
        error on one value) still leaves a record of what it read.
        """
        count, result = 0, "ok"
        try:
            for envelope in self.store.iter_envelopes():
                value = self.open_envelope(envelope.name, envelope)
                count += 1
                yield envelope.name, value
        except GeneratorExit:
            result = "stopped"
            raise
        except BaseException as exc:
            result = type(exc).__name__
            raise
        finally:
            if result == "ok":
                self.audit.append("secrets.export", count=count)
            else:
                with contextlib.suppress(KeysteadError):  # never hide why the export ended
                    self.audit.append("secrets.export", result=result, count=count)
