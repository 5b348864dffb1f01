"""Slots across the vault: add a key's slot to every secret, remove one, re-seal.

Three walks over the secrets of one store, in name (byte) order, ``batch`` at
a time, each envelope replaced by compare-and-swap (:meth:`Store.swap`): a
secret set or rewrapped meanwhile is read again and redone, never
overwritten. Each batch is one audit record.

- :func:`add_slot` gives every secret a slot for a key. The data key comes
  from a slot this machine can open (checked against the payload first); the
  payload is not touched.
- :func:`remove_slot` takes a key's slot out of every secret, never the last
  slot of one: those secrets are named and nothing is changed.
- :func:`reseal` seals every secret again: a fresh data key, the payload
  re-encrypted, wrapped for exactly the given keys (the profile's now). What
  a team runs after someone leaves: a data key kept from before opens nothing.

A re-seal is resumable: its progress (the last name done) is kept in a small
job file beside the key file, rewritten atomically after each batch; the same
re-seal (same secrets, same keys) started again continues after it, and the
file goes when the walk has gone through every secret. Every envelope is
always either the old one (its old slots open it) or the new one (the new
slots open it), so a re-seal killed at any instant leaves nothing that no
slot opens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keystead.clock import epoch
from keystead.crypto import open_with_dek, seal
from keystead.envelope import MAX_SLOTS, Envelope, Slot
from keystead.errors import DecryptError, InputError, Interrupted, KeysteadError, NotFoundError
from keystead.files import write_atomic
from keystead.providers import KeyOps, Wrapped

if TYPE_CHECKING:  # the vault is the caller's; importing it here would load the stores with this module
    from keystead.vault import Vault

DEFAULT_BATCH = 500
RETRIES = 3
"""Tries per secret when it keeps changing under the walk (then it is reported as busy)."""

Transform = Callable[[Envelope], Envelope | None]
"""The new envelope for one read, or None when it needs no change."""


@dataclass
class Report:
    """What a walk did. ``unopened``: secrets no slot of this machine opens (left as they
    were); ``busy``: secrets that kept changing meanwhile; ``damaged``: unreadable envelopes."""

    changed: int = 0
    unchanged: int = 0
    batches: int = 0
    unopened: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    resumed_after: str | None = None

    @property
    def left(self) -> list[str]:
        return sorted(set(self.unopened) | set(self.busy) | set(self.damaged), key=str.encode)


def names_list(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# -- the walk ---------------------------------------------------------------------------

def _envelopes(vault: Vault, names: Sequence[str] | None, after: str, report: Report) -> Iterator[Envelope]:
    if names is None:
        yield from vault.store.iter_envelopes(after=after, on_damaged=lambda n, _e: report.damaged.append(n))
        return
    for name in sorted(set(names), key=str.encode):
        if name.encode() <= after.encode():
            continue
        try:
            yield vault.store.get(name)
        except NotFoundError:
            continue  # removed since the walk began: nothing to do
        except KeysteadError:
            report.damaged.append(name)


def walk(vault: Vault, transform: Transform, *, action: str, key: str, names: Sequence[str] | None = None,
         after: str = "", batch: int = DEFAULT_BATCH, progress: Callable[[int], None] | None = None,
         on_batch: Callable[[str, Report], None] | None = None, stop: Callable[[], bool] | None = None) -> Report:
    """Apply ``transform`` to every envelope (or to ``names``) after ``after``; see the module docstring.

    ``on_batch(last_name, report)`` runs after each batch is stored; ``stop`` is polled
    between batches and ends the walk with :class:`Interrupted`."""
    report = Report(resumed_after=after or None)
    pending: list[tuple[Envelope, Envelope]] = []
    last = after

    def attempt(env: Envelope) -> Envelope | None:
        try:
            return transform(env)
        except DecryptError:
            report.unopened.append(env.name)
        except KeysteadError as exc:
            if not _is_open_failure(exc):
                raise
            report.unopened.append(env.name)
        return None

    def flush() -> None:
        nonlocal pending
        todo, pending = pending, []
        for _ in range(RETRIES):
            if not todo:
                break
            swapped = vault.store.swap(todo)
            report.changed += len(swapped)
            if swapped:
                report.batches += 1
                done = sorted(swapped, key=str.encode)
                vault.audit.append(action, key=key, count=len(swapped), first=done[0], last=done[-1])
            again = []
            for old, _new in todo:
                if old.name in swapped:
                    continue
                try:
                    fresh = vault.store.get(old.name)
                except NotFoundError:
                    continue  # removed meanwhile: nothing to do
                except KeysteadError:
                    report.damaged.append(old.name)
                    continue
                new = attempt(fresh)
                if new is None:
                    report.unchanged += old.name not in report.unopened
                else:
                    again.append((fresh, new))
            todo = again
        report.busy.extend(old.name for old, _new in todo)

    def end_batch(last: str) -> None:
        """Write the pending batch, then say how far the walk got (progress, the resume point)."""
        count = len(pending)
        flush()
        if progress:
            progress(count)
        if on_batch:
            on_batch(last, report)

    for env in _envelopes(vault, names, after, report):
        new = attempt(env)
        if new is None:
            report.unchanged += env.name not in report.unopened
            if progress:
                progress(1)
        else:
            pending.append((env, new))
        last = env.name
        if len(pending) >= batch:
            end_batch(last)
            if stop is not None and stop():
                raise Interrupted(f"interrupted after {report.changed} secret(s) "
                                  f"(up to {last}): run the same command again to finish")
    end_batch(last)
    return report


def _is_open_failure(exc: KeysteadError) -> bool:
    """A secret this machine cannot open (no identity, no key file): reported, not fatal."""
    from keystead.errors import ProviderError

    return isinstance(exc, ProviderError)


# -- data keys ----------------------------------------------------------------------------

def data_key(vault: Vault, env: Envelope) -> bytes:
    """The data key of ``env`` from the first slot this machine opens, checked against the
    payload (so a slot never gets a wrong key). DecryptError when no slot opens it."""
    bound = dataclasses.replace(env, vault=vault.name)
    others: list[KeysteadError] = []
    for key in vault.opening_keys():
        slot = bound.slot(key.ref)
        if slot is None:
            continue
        try:
            dek = key.unwrap(Wrapped(slot.version, slot.wrapped), bound.context)
            open_with_dek(bound, dek)
        except DecryptError:
            continue
        except KeysteadError as exc:
            others.append(exc)
            continue
        return dek
    if others:
        raise others[0]
    raise DecryptError(f"no slot of secret {env.name!r} opens here")


def add_slot(vault: Vault, key: KeyOps, **kw: Any) -> Report:
    """Give every secret without one a slot for ``key``; the payload stays as it is."""

    def transform(env: Envelope) -> Envelope | None:
        if env.slot(key.ref) is not None:
            return None
        if len(env.slots) >= MAX_SLOTS:
            raise InputError(f"secret {env.name!r} already has {MAX_SLOTS} slots, the most an envelope holds")
        bound = dataclasses.replace(env, vault=vault.name)
        wrapped = key.wrap(data_key(vault, env), bound.context)
        return env.with_slot(Slot(key.ref, key.provider, wrapped.version, int(epoch(vault.clock())), wrapped.blob))

    return walk(vault, transform, action="keys.add_slot", key=key.ref, **kw)


def only_slot_of(vault: Vault, ref: str, names: Sequence[str] | None = None) -> list[str]:
    """Secrets whose only slot is ``ref``'s (removing it would leave them unopenable)."""
    report = Report()
    return [e.name for e in _envelopes(vault, names, "", report) if len(e.slots) == 1 and e.slots[0].key == ref]


def remove_slot(vault: Vault, ref: str, **kw: Any) -> Report:
    """Take ``ref``'s slot out of every secret. Refuses, changing nothing, when it is the
    only slot of some secret (InputError naming them)."""
    alone = only_slot_of(vault, ref, kw.get("names"))
    if alone:
        raise InputError(f"{ref} holds the only slot of {len(alone)} secret(s) ({names_list(alone)}): "
                         "give them another key first (`keystead keys add REF --reseal`); nothing was changed")

    def transform(env: Envelope) -> Envelope | None:
        if env.slot(ref) is None:
            return None
        if len(env.slots) == 1:
            raise InputError(f"{ref} became the only slot of secret {env.name!r} meanwhile; nothing was removed")
        kept = tuple(s for s in env.slots if s.key != ref)
        return dataclasses.replace(env, slots=kept)

    return walk(vault, transform, action="keys.remove_slot", key=ref, **kw)


# -- re-seal --------------------------------------------------------------------------------

def reseal_transform(vault: Vault, keys: Sequence[KeyOps]) -> Transform:
    if not keys:
        raise InputError("no key to seal with: the profile names no key")

    def transform(env: Envelope) -> Envelope:
        value = vault.open_envelope(env.name, env)
        new = seal(vault.name, env.name, value, keys, now=vault.clock())
        _verify(new, keys)
        return new

    return transform


def _verify(env: Envelope, keys: Sequence[KeyOps]) -> None:
    """Open the new envelope through the first of its slots this machine can open."""
    from keystead.crypto import open_envelope

    for key in sorted(keys, key=lambda k: k.provider != "local"):
        try:
            open_envelope(env, key)
            return
        except DecryptError:
            raise DecryptError(f"re-sealed secret {env.name!r} failed verification through {key.ref}") from None
        except KeysteadError:
            continue  # cannot open here (an age identity we do not hold): the next key


@dataclass
class Job:
    """A re-seal's progress, beside the key file: resumable after a crash."""

    path: Path
    keys: list[str]
    names: list[str] | None
    started_at: int
    cursor: str = ""
    done: int = 0

    @classmethod
    def path_for(cls, folder: Path, store_url: str) -> Path:
        return folder / f"reseal-{hashlib.sha256(store_url.encode()).hexdigest()[:12]}.json"

    @classmethod
    def load(cls, path: Path) -> Job | None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, list(doc["keys"]), doc["names"], int(doc["started_at"]), str(doc["cursor"]),
                       int(doc["done"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable: start over (a re-seal from the start is always correct)

    def save(self) -> None:
        doc = {"format": "keystead-reseal/1", "keys": self.keys, "names": self.names,
               "started_at": self.started_at, "cursor": self.cursor, "done": self.done}
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.path, (json.dumps(doc, indent=2) + "\n").encode())

    def matches(self, keys: list[str], names: list[str] | None) -> bool:
        return self.keys == keys and self.names == names

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def reseal(vault: Vault, keys: Sequence[KeyOps], *, names: Sequence[str] | None = None, batch: int = DEFAULT_BATCH,
           progress: Callable[[int], None] | None = None, stop: Callable[[], bool] | None = None,
           job_folder: Path | None = None) -> Report:
    """Seal every secret (or ``names``) again for exactly ``keys``; resumes an unfinished
    re-seal of the same secrets to the same keys."""
    refs = sorted(k.ref for k in keys)
    wanted = sorted(set(names), key=str.encode) if names is not None else None
    folder = job_folder or vault.config.key_file.parent
    path = Job.path_for(folder, vault.store.url)
    job = Job.load(path)
    if job is None or not job.matches(refs, wanted):
        job = Job(path, refs, wanted, int(epoch(vault.clock())))
    job.save()
    base = job.done

    def on_batch(last: str, report: Report) -> None:
        job.cursor = last
        job.done = base + report.changed
        job.save()

    report = walk(vault, reseal_transform(vault, keys), action="secrets.reseal", key=" ".join(refs),
                  names=wanted, after=job.cursor, batch=batch, progress=progress, on_batch=on_batch, stop=stop)
    job.finish()  # done: what is left (unopened, busy, damaged) is named by the report, not resumed
    return report
