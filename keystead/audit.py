"""The audit log: one JSON line per operation, hash-chained, append-only.

The record, its hash and the chain are :mod:`keystead.audit_chain` (re-exported
here). ``<log>.head`` (``{"seq": …, "hash": …}``, rewritten after every
append) reveals records cut off the end. The head may lag the log after a
crash between the two writes; it is accepted while the record at its seq
carries its hash.

The anchor: a vault in a database (SQLite) also keeps the latest ``seq`` and
``hash`` in the database itself (its ``meta`` table), written after every
append through the small :class:`AuditAnchor` interface the Vault hands in.
Deleting or cutting the log files then no longer passes: ``verify`` reports a
log shorter than its anchor, and a vault that holds secrets but has no log.
While the anchor confirms the whole log, a lost ``.head`` is restored from
it (with an ``audit.repair`` record). A dir store has no anchor (each git
clone keeps its own log in .keystead/): there a new chain on a vault that
already holds secrets begins with ``audit.start``, which says how many.

The way out of a chain that can no longer be trusted (a lost head on a dir
store, records deleted) is :meth:`AuditLog.reset` (``keystead audit reset
--reason TEXT``): the old log is kept beside the new one, and the new chain's
first record, ``audit.reset``, names the old head, the reason and the number
of secrets the vault held.

What it does not do: anyone who can rewrite the files and the database can
forge a whole new chain. Copy the head's hash somewhere else (CI logs, a
ticket) to anchor it further.

Records of secret operations name in ``key`` the key reference(s) used,
separated by spaces (no reference form contains one): for ``secrets.set``
the keys sealed under, for ``secrets.get`` the keys that hold a slot.

Records hold facts, never a secret value or key material (see
:func:`keystead.audit_chain.entry`). Appends from several processes are
serialised by ``flock`` on the log; each batch is one ``write`` and one
``fsync``. Appending refuses a
log whose end or head is damaged (run ``keystead audit verify``); to start
a new log, move both the log and its ``.head`` aside.
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from keystead.audit_chain import (
    FIELDS,
    FORBIDDEN_DETAILS,
    GENESIS,
    MAX_RECORD_BYTES,
    AuditReport,
    Entry,
    anchor_problem,
    bad_report,
    chain_break,
    entry,
    links,
    parse,
    record_hash,
    timestamp,
)
from keystead.clock import utcnow
from keystead.errors import AuditError
from keystead.files import fsync_folder, locked, write_atomic

__all__ = [
    "FIELDS", "FORBIDDEN_DETAILS", "GENESIS", "MAX_RECORD_BYTES",
    "AuditAnchor", "AuditLog", "AuditReport",
    "default_actor", "record_hash",
]



@runtime_checkable
class AuditAnchor(Protocol):
    """Where the chain's latest (seq, hash) is kept outside the log files: the vault database."""

    def read_audit_anchor(self) -> tuple[int, str] | None: ...

    def write_audit_anchor(self, seq: int, digest: str) -> None: ...


def default_actor() -> str:
    """``$KEYSTEAD_ACTOR``, else ``user@host``."""
    actor = os.environ.get("KEYSTEAD_ACTOR")
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class AuditLog:
    """The hash-chained audit log at ``path`` (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        actor: str | None = None,
        clock: Callable[[], datetime] | None = None,
        anchor: AuditAnchor | None = None,
        vault_size: Callable[[], int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.actor = actor or default_actor()
        self.clock = clock or utcnow
        self.anchor = anchor
        self.vault_size = vault_size  # how many secrets the vault holds: for a chain that starts late

    def append(
        self, action: str, *, secret: str | None = None, key: str | None = None, result: str = "ok", **details: Any
    ) -> dict[str, Any]:
        """Append one record and return it (with its seq and hash)."""
        record = {"action": action, "secret": secret, "key": key, "result": result, "details": details}
        return self.append_many([record])[0]

    def append_many(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Append several records (mappings with ``action`` and optionally ``secret``,
        ``key``, ``result``, ``details``) in one write and one fsync."""
        entries = [entry(r) for r in records]
        if not entries:
            return []
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with locked(self.path, flags=os.O_RDWR | os.O_CREAT | os.O_APPEND) as fd:
                return self._append_locked(fd, entries)
        except OSError as exc:
            raise AuditError(f"cannot open audit log {self.path}: {exc.strerror or exc}") from exc

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in order. A torn final line (a crash mid-append) is skipped."""
        for lineno, raw in self._lines():
            if not raw.endswith(b"\n"):
                return
            record = parse(raw)
            if record is None:
                raise AuditError(f"audit log {self.path}: line {lineno} is not a record")
            yield record

    def verify(self) -> AuditReport:
        """Check every record's hash, the chain, the head and the anchor.

        A missing log is empty and valid, unless the anchor says it held
        records or an anchored vault holds secrets."""
        head = self._read_head()
        anchor = self._read_anchor()
        anchor_seen = GENESIS if anchor is None or anchor[0] == 0 else None
        prev, last_seq, head_hash_seen = GENESIS, 0, GENESIS if head is None or head[0] == 0 else None
        lines = self._lines()
        for lineno, raw in lines:
            expected = last_seq + 1
            if not raw.endswith(b"\n"):
                return bad_report(last_seq, expected, lineno,
                                  f"line {lineno} is torn: the last record was cut off mid-write")
            record = parse(raw)
            if record is None:
                return bad_report(last_seq, expected, lineno, f"line {lineno} is not a record")
            seq = record["seq"]
            if record_hash(record) != record["hash"]:
                return bad_report(last_seq, seq, lineno,
                                  f"record {seq} was edited (its hash does not match its content)")
            if seq != expected or record["prev"] != prev:
                rest = [parse(line) for _, line in lines]
                return bad_report(last_seq, *chain_break(record, lineno, expected, prev, rest))
            prev, last_seq = record["hash"], seq
            if head is not None and seq == head[0]:
                head_hash_seen = record["hash"]
            if anchor is not None and seq == anchor[0]:
                anchor_seen = record["hash"]
        note = None
        if head is None and last_seq and anchor == (last_seq, prev):
            note = (f"the head file {self.head_path} is missing, but the vault database's anchor confirms all "
                    f"{last_seq} records (the next append restores the head)")
        else:
            problem = self._head_problem(head, last_seq, head_hash_seen)
            if problem:
                return bad_report(last_seq, last_seq + 1 if head and head[0] > last_seq else None, None, problem)
        problem = anchor_problem(anchor, last_seq, anchor_seen)
        if problem:
            return bad_report(last_seq, last_seq + 1 if anchor and anchor[0] > last_seq else None, None, problem)
        if last_seq == 0 and self.vault_size is not None and (held := self.vault_size()):
            if self.anchor is not None:
                return bad_report(0, 1, None, f"the vault holds {held} secret(s) but the audit log is empty or missing "
                                        "(deleted?)")
            note = (f"the vault holds {held} secret(s) written before this log began "
                    "(a dir store's log is each clone's own)")
        return AuditReport(ok=True, records=last_seq, note=note)

    def reset(self, reason: str) -> dict[str, Any]:
        """Start a new chain: keep the old log beside it, and return the new chain's first record.

        That record, ``audit.reset``, names the reason, the old log's last
        record, what its head file and the anchor said, and how many secrets
        the vault holds. The one audited way out of a chain that cannot be
        trusted any more (``keystead audit reset --reason TEXT``).
        """
        if not reason.strip():
            raise AuditError("audit reset needs a reason (--reason TEXT): it goes into the new chain's first record")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with locked(self.path, flags=os.O_RDWR | os.O_CREAT | os.O_APPEND) as fd:
                size = os.fstat(fd).st_size
                last_line, _ = _tail(fd, size)
                last = parse(last_line) if last_line is not None else None
                try:
                    head = self._read_head()
                    old_head: Any = {"seq": head[0], "hash": head[1]} if head else "missing"
                except AuditError:
                    old_head = "damaged"
                anchor = self._read_anchor()
                details: dict[str, Any] = {
                    "reason": reason,
                    "old_last": {"seq": last["seq"], "hash": last["hash"]} if last else None,
                    "old_head": old_head,
                    "old_anchor": {"seq": anchor[0], "hash": anchor[1]} if anchor else None,
                    "old_log": None,
                }
                if size:
                    kept = self.path.with_name(f"{self.path.name}.{timestamp(self.clock()).replace(':', '')}.old")
                    shutil.copyfile(self.path, kept)
                    with open(kept, "rb+") as fh:
                        os.fsync(fh.fileno())
                    details["old_log"] = kept.name
                if self.vault_size is not None:
                    details["secrets"] = self.vault_size()
                os.ftruncate(fd, 0)
                self.head_path.unlink(missing_ok=True)
                entries = [entry({"action": "audit.reset", "details": details})]
                return self._append_locked(fd, entries, resetting=True)[0]
        except OSError as exc:
            raise AuditError(f"cannot reset audit log {self.path}: {exc.strerror or exc}") from exc

    # -- internals -------------------------------------------------------

    def _append_locked(self, fd: int, entries: list[Entry], *, resetting: bool = False) -> list[dict[str, Any]]:
        size = os.fstat(fd).st_size
        last_line, torn = _tail(fd, size)
        last = parse(last_line) if last_line is not None else None
        if last_line is not None and last is None:
            raise AuditError(f"audit log {self.path} ends with a line that is not a record; run keystead audit verify")
        head = self._read_head()
        anchor = None if resetting else self._read_anchor()
        self._check_anchor(anchor, last)  # before anything is written, even a new head
        repair: list[Entry] = []
        if size == 0 and head is None:
            self._write_head(0, GENESIS)
            fsync_folder(self.path.parent)
            head = (0, GENESIS)
            held = self.vault_size() if self.vault_size is not None and not resetting else 0
            if held:  # a chain that starts on a vault with secrets says so
                repair.append(("audit.start", None, None, "ok", {"secrets": held}))
        elif head is None and last is not None and not torn and anchor == (last["seq"], last["hash"]):
            # Only the head was lost, and the vault database vouches for the whole log: restore it.
            head = (last["seq"], last["hash"])
            repair.append(("audit.repair", None, None, "ok", {"head": "restored from the vault database's anchor"}))
        lines: list[str] = []
        if torn:
            candidate = parse(torn + b"\n")
            if candidate is not None and links(candidate, last):
                lines.append("")  # a whole record that only lacks its newline: finish it
                last = candidate
            else:  # half a record from a writer that died: never acknowledged, so cut it off
                os.ftruncate(fd, size - len(torn))
                size -= len(torn)
                repair = [("audit.repair", None, None, "ok", {"dropped_bytes": len(torn)})]
        self._check_head(head, last)
        prev, seq = (last["hash"], last["seq"]) if last else (GENESIS, 0)
        ts = timestamp(self.clock())
        written = []
        for action, secret, key, result, details in repair + entries:
            seq += 1
            record = {"seq": seq, "ts": ts, "actor": self.actor, "action": action, "secret": secret,
                      "key": key, "result": result, "details": details, "prev": prev}
            record["hash"] = prev = record_hash(record)
            written.append(record)
            lines.append(json.dumps(record, separators=(",", ":"), ensure_ascii=True))
        payload = ("\n".join(lines) + "\n").encode("ascii")
        try:
            if os.write(fd, payload) != len(payload):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)
            reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise AuditError(f"cannot write audit log {self.path}: {reason}; nothing was appended") from exc
        try:
            self._write_head(seq, prev)
        except OSError as exc:
            raise AuditError(
                f"audit record {seq} appended, but the head {self.head_path} was not updated: {exc.strerror or exc}"
            ) from exc
        if self.anchor is not None:
            try:
                self.anchor.write_audit_anchor(seq, prev)
            except Exception as exc:  # any store failure: the record is written, say so
                raise AuditError(f"audit record {seq} appended, but its anchor in the vault database was not "
                                 f"updated: {exc}") from exc
        return written[len(repair) :]

    def _read_anchor(self) -> tuple[int, str] | None:
        if self.anchor is None:
            return None
        try:
            return self.anchor.read_audit_anchor()
        except Exception as exc:
            raise AuditError(f"cannot read the audit anchor in the vault database: {exc}") from exc

    def _check_anchor(self, anchor: tuple[int, str] | None, last: dict[str, Any] | None) -> None:
        if anchor is None:
            return
        last_seq = last["seq"] if last else 0
        problem = None
        if anchor[0] > last_seq:
            problem = anchor_problem(anchor, last_seq, None)
        elif (anchor[0] == last_seq and last and anchor[1] != last["hash"]) or (
            last and anchor[0] == last_seq - 1 and anchor[1] != last["prev"]
        ):
            problem = f"record {anchor[0]} does not match the vault database's anchor (the log was rewritten?)"
        if problem:
            raise AuditError(f"audit log {self.path}: {problem}; run keystead audit verify")

    def _check_head(self, head: tuple[int, str] | None, last: dict[str, Any] | None) -> None:
        last_seq = last["seq"] if last else 0
        if head is None:
            if last_seq:
                raise AuditError(f"audit head file {self.head_path} is missing; run keystead audit verify "
                                 "(and, once you know why, keystead audit reset --reason TEXT)")
            return
        seq, digest = head
        if seq > last_seq or (seq == last_seq and last and digest != last["hash"]) or (
            last and seq == last_seq - 1 and digest != last["prev"]
        ):
            raise AuditError(
                f"audit log {self.path} does not match its head (record {seq}); records were "
                "deleted or rewritten: run keystead audit verify"
            )

    def _head_problem(self, head: tuple[int, str] | None, last_seq: int, seen: str | None) -> str | None:
        if head is None:
            return (f"the head file {self.head_path} is missing (records after {last_seq} may have been deleted)"
                    if last_seq else None)
        seq, digest = head
        if seq > last_seq:
            return f"records after {last_seq} were deleted (the head says the log reached record {seq})"
        if seen != digest:
            return f"record {seq} does not match the head file (the log was rewritten?)"
        return None

    def _read_head(self) -> tuple[int, str] | None:
        try:
            data = self.head_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditError(f"cannot read audit head {self.head_path}: {exc.strerror or exc}") from exc
        try:
            doc = json.loads(data)
            seq, digest = doc["seq"], doc["hash"]
            if type(seq) is int and seq >= 0 and isinstance(digest, str) and len(digest) == 64:
                return seq, digest
        except (ValueError, TypeError, KeyError):
            pass
        raise AuditError(f"audit head file {self.head_path} is damaged; run keystead audit verify")

    def _write_head(self, seq: int, digest: str) -> None:
        write_atomic(self.head_path, json.dumps({"seq": seq, "hash": digest}).encode("ascii") + b"\n",
                     sync_folder=False)

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - opened apart so a missing log is not a read error; `with fh` below
        except FileNotFoundError:
            return
        except OSError as exc:
            raise AuditError(f"cannot read audit log {self.path}: {exc.strerror or exc}") from exc
        with fh:
            try:
                yield from enumerate(fh, 1)
            except OSError as exc:
                raise AuditError(f"cannot read audit log {self.path}: {exc.strerror or exc}") from exc


def _tail(fd: int, size: int) -> tuple[bytes | None, bytes]:
    """(the last complete line, or None; the bytes after the last newline)."""
    pos, buf = size, b""
    while pos > 0:
        step = min(8192, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        end = buf.rfind(b"\n")
        if end == -1:
            continue
        start = buf.rfind(b"\n", 0, end)
        if start != -1 or pos == 0:
            return buf[start + 1 : end + 1], buf[end + 1 :]
    return None, buf
