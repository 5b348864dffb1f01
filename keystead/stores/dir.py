"""A vault kept as a folder: one envelope file per secret, ``<folder>/<name>.json``.

Each file holds exactly ``envelope.encode(env)`` (fixed field order), so a
vault folder diffs small in git. Every write is atomic per file: the new
content goes to a hidden temp file beside it (``.NAME.json.tmp-XXXXXXXX``),
is fsynced, renamed over the old file, and the folder is fsynced. A crash
leaves either the old or the new file, never half of one; a leftover temp
file is ignored by listing and removed when the store is opened later.

A folder is not a database: ``put_many`` and ``replace_slots`` are atomic
per file, not per batch. A crash in the middle of a batch leaves the files
written so far in place. Writers in several processes are serialised by an
advisory lock on the folder itself (``flock``), which makes the
compare-and-swap of ``replace_slots`` safe between a worker and the CLI.

Envelope files are mode 0600, the folder is created 0700.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from keystead.envelope import Envelope, Slot, check_name, decode, encode
from keystead.errors import FormatError, InputError, NotFoundError, StoreError
from keystead.files import MAX_FILE_NAME, TEMP_MARK, fsync_folder, locked, write_atomic
from keystead.stores.base import DAMAGED, OnDamaged, SlotRow, SlotUpdate, redact_url

SUFFIX = ".json"
STALE_TEMP_SECONDS = 300
"""A temp file older than this belongs to a writer that died; younger ones may be live."""
MAX_NAME = MAX_FILE_NAME - len(SUFFIX)


class DirStore:
    """Envelopes as files in one folder. See the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.url = f"dir:{self.path}"
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._root = self.path.resolve(strict=True)
        except OSError as exc:
            raise _store_error(exc, self.path, "opening vault folder") from exc
        if not self._root.is_dir():
            raise StoreError(f"vault path {self.path} is not a folder")
        self._remove_stale_temps()

    # -- whole envelopes -------------------------------------------------

    def get(self, name: str) -> Envelope:
        return self._read(self._file(name), name)

    def put(self, envelope: Envelope) -> None:
        target = self._file(envelope.name)
        with self._locked():
            self._write(target, encode(envelope))

    def put_many(self, envelopes: Iterable[Envelope]) -> int:
        """Write each envelope atomically; the batch as a whole is not atomic."""
        count = 0
        with self._locked():
            try:
                for env in envelopes:
                    self._write(self._file(env.name), encode(env), sync_folder=False)
                    count += 1
            finally:
                if count:
                    self._sync_folder()
        return count

    def delete(self, name: str) -> None:
        target = self._file(name)
        with self._locked():
            try:
                os.unlink(target)
            except FileNotFoundError:
                raise NotFoundError(f"no secret {name} in vault at {self.path}") from None
            except OSError as exc:
                raise _store_error(exc, target, "deleting") from exc
            self._sync_folder()

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self._root)
        except OSError as exc:
            raise _store_error(exc, self.path, "listing") from exc
        found = []
        for entry in entries:
            if entry.startswith(".") or not entry.endswith(SUFFIX):
                continue
            name = entry[: -len(SUFFIX)]
            try:
                found.append(check_name(name))
            except InputError:
                continue  # not a secret's file (e.g. '-notes.json')
        found.sort(key=str.encode)  # byte order (the Store contract)
        return found

    def count(self) -> int:
        return len(self.names())

    def iter_envelopes(
        self, *, after: str = "", batch: int = 1000, on_damaged: OnDamaged | None = None
    ) -> Iterator[Envelope]:
        """Envelopes in name order after ``after``, read one file at a time.

        A file that does not decode goes to ``on_damaged`` and is skipped; without
        ``on_damaged`` its FormatError propagates.
        """
        for name, env in self._envelopes_after(after):
            if isinstance(env, FormatError):
                if on_damaged is None:
                    raise env
                on_damaged(name, env)
                continue
            yield env

    # -- slots, for rotation ---------------------------------------------

    def slots_behind(
        self, key: str, version: str, *, after: str = "", until: str | None = None, limit: int = 1000
    ) -> list[SlotRow]:
        rows: list[SlotRow] = []
        if limit <= 0:
            return rows
        for name, env in self._envelopes_after(after):
            if until is not None and name > until:
                break
            if isinstance(env, FormatError):
                rows.append(SlotRow(name, DAMAGED, b""))
            else:
                slot = env.slot(key)
                if slot is None or slot.version == version:
                    continue
                rows.append(SlotRow(name, slot.version, slot.wrapped))
            if len(rows) >= limit:
                break
        return rows

    def split_points(self, key: str, parts: int) -> list[str]:
        """Names that cut the folder into ``parts`` ranges of about equal size (by file count)."""
        names = self.names()
        return sorted({names[len(names) * i // parts] for i in range(1, parts)} if names else set())

    def replace_slots(self, key: str, updates: Sequence[SlotUpdate]) -> int:
        """Swap each slot still at its ``old_version``; return how many were swapped."""
        replaced = 0
        with self._locked():
            try:
                for up in updates:
                    target = self._file(up.secret)
                    try:
                        env = self._read(target, up.secret)
                    except (NotFoundError, FormatError):
                        continue  # deleted meanwhile, or damaged: not replaced
                    slot = env.slot(key)
                    if slot is None or slot.version != up.old_version:
                        continue
                    if up.old_wrapped is not None and slot.wrapped != up.old_wrapped:
                        continue  # re-set meanwhile under the same version
                    new = Slot(key, slot.provider, up.version, up.wrapped_at, up.wrapped)
                    self._write(target, encode(env.with_slot(new)), sync_folder=False)
                    replaced += 1
            finally:
                if replaced:
                    self._sync_folder()
        return replaced

    def swap(self, pairs: Sequence[tuple[Envelope, Envelope]]) -> set[str]:
        """Replace each envelope still exactly as read (compare-and-swap), atomically per file."""
        swapped: set[str] = set()
        with self._locked():
            try:
                for old, new in pairs:
                    if old.name != new.name:
                        raise InputError(f"swap of {old.name!r} with an envelope named {new.name!r}")
                    target = self._file(old.name)
                    try:
                        current = self._read(target, old.name)
                    except (NotFoundError, FormatError):
                        continue  # deleted meanwhile, or damaged: not replaced
                    if current != old:
                        continue  # changed meanwhile
                    self._write(target, encode(new), sync_folder=False)
                    swapped.add(old.name)
            finally:
                if swapped:
                    self._sync_folder()
        return swapped

    def version_counts(self, key: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _name, env in self._envelopes_after(""):
            version = DAMAGED if isinstance(env, FormatError) else getattr(env.slot(key), "version", None)
            if version is not None:
                counts[version] = counts.get(version, 0) + 1
        return counts

    def close(self) -> None:
        """Nothing to release: each call opens and closes its own files."""

    def __enter__(self) -> DirStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DirStore({redact_url(self.url)!r})"

    # -- files -----------------------------------------------------------

    def _file(self, name: str) -> Path:
        check_name(name)
        if len(name) > MAX_NAME:
            raise InputError(
                f"secret name {name[:32]}... is too long for a dir: vault "
                f"(at most {MAX_NAME} characters; a sqlite: vault takes 255)"
            )
        target = self._root / (name + SUFFIX)
        if Path(os.path.realpath(target)).parent != self._root:
            raise StoreError(f"{target} leads outside the vault folder {self._root} (a symlink?)")
        return target

    def _envelopes_after(self, after: str) -> Iterator[tuple[str, Envelope | FormatError]]:
        """(name, envelope) in name order after ``after``; a file that does not decode
        gives its FormatError in place of the envelope; a file deleted since the
        listing is left out."""
        for name in self.names():
            if name <= after:
                continue
            try:
                yield name, self.get(name)
            except NotFoundError:
                continue
            except FormatError as exc:
                yield name, exc

    def _read(self, target: Path, name: str) -> Envelope:
        try:
            with open(target, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise NotFoundError(f"no secret {name} in vault at {self.path}") from None
        except OSError as exc:
            raise _store_error(exc, target, "reading") from exc
        env = decode(data, where=str(target))
        if env.name != name:
            raise FormatError(f"envelope {target}: holds secret {env.name!r}, not {name!r} (file renamed?)")
        return env

    def _write(self, target: Path, data: bytes, *, sync_folder: bool = True) -> None:
        """Replace ``target`` atomically; a batch passes ``sync_folder=False`` and
        syncs the folder once at its end (each file is still old-or-new after a
        crash; the renames are durable once the folder is synced)."""
        try:
            write_atomic(target, data, sync_folder=sync_folder)
        except OSError as exc:
            raise _store_error(exc, target, "writing") from exc

    def _sync_folder(self) -> None:
        try:
            fsync_folder(self._root)
        except OSError as exc:
            raise _store_error(exc, self.path, "syncing") from exc

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the folder's advisory write lock (one writer at a time, across processes)."""
        with ExitStack() as held:
            try:
                held.enter_context(locked(self._root))
            except OSError as exc:
                raise _store_error(exc, self.path, "locking") from exc
            yield

    def _remove_stale_temps(self) -> None:
        now = time.time()
        try:
            with os.scandir(self._root) as entries:
                for entry in entries:
                    if not (entry.name.startswith(".") and TEMP_MARK in entry.name):
                        continue
                    try:
                        if entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime > STALE_TEMP_SECONDS:
                            os.unlink(entry.path)
                    except OSError:
                        continue  # another process got there first, or it is not ours to remove
        except OSError as exc:
            raise _store_error(exc, self.path, "listing") from exc


def _store_error(exc: OSError, path: Path, doing: str) -> StoreError:
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return StoreError(f"disk full writing {path}")
    reason = exc.strerror or str(exc)
    return StoreError(f"{doing} {path}: {reason}")
