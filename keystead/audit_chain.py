"""The audit record and its hash chain: what a record holds, how it is hashed,
how a line parses, and why a chain breaks. Pure: no files (the log that
writes and reads them is :mod:`keystead.audit`).

A record, keys in this order::

    {"seq": 7, "ts": "2026-11-23T15:08:00.123Z", "actor": "ci@build-3",
     "action": "keys.rotate", "secret": null, "key": "local:main", "result": "ok",
     "details": {"version": "4"}, "prev": "<hash of record 6>", "hash": "<sha256 hex>"}

``hash`` is the SHA-256 (hex) of ``prev`` followed by the canonical JSON
(sorted keys, no spaces) of the record without ``hash``; the first record's
``prev`` is 64 zeros. Editing, deleting, inserting or reordering records
breaks the chain, and :func:`chain_break` says which of these it was.

Records hold facts, never a secret value or key material: detail keys named
``value``, ``plaintext``, ``dek``, ``material`` or ``wrapped`` are refused,
as are bytes (:func:`entry`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keystead.clock import iso
from keystead.errors import AuditError

GENESIS = "0" * 64
FORBIDDEN_DETAILS = frozenset({"value", "plaintext", "dek", "material", "wrapped"})
FIELDS = ("seq", "ts", "actor", "action", "secret", "key", "result", "details", "prev", "hash")
MAX_RECORD_BYTES = 16 * 1024

Entry = tuple[str, str | None, str | None, str, dict[str, Any]]
"""A record before it is chained: (action, secret, key, result, details)."""


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What :meth:`keystead.audit.AuditLog.verify` found: ok, or the first problem and where.

    ``note`` explains an ok log that is not the whole story (a head restored
    from the anchor, secrets older than the log)."""

    ok: bool
    records: int
    first_bad_seq: int | None = None
    first_bad_line: int | None = None
    problem: str | None = None
    note: str | None = None


def record_hash(record: Mapping[str, Any]) -> str:
    """The chain hash of ``record`` (its ``hash`` field, if any, is left out)."""
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256((record["prev"] + canonical).encode("ascii")).hexdigest()


def entry(r: Mapping[str, Any]) -> Entry:
    """A record to append, checked: ``(action, secret, key, result, details)``."""
    unknown = set(r) - {"action", "secret", "key", "result", "details"}
    if unknown:
        raise AuditError(f"audit record: unknown field(s) {', '.join(sorted(unknown))}")
    action, result = r.get("action"), r.get("result", "ok")
    secret, key, details = r.get("secret"), r.get("key"), dict(r.get("details") or {})
    if not isinstance(action, str) or not action:
        raise AuditError("audit record: action must be a non-empty string")
    if not isinstance(result, str) or not result:
        raise AuditError("audit record: result must be 'ok' or an error class name")
    for name, value in (("secret", secret), ("key", key)):
        if value is not None and not isinstance(value, str):
            raise AuditError(f"audit record: {name} must be a string or None")
    check_details(details)
    if len(json.dumps(details, ensure_ascii=True, allow_nan=False)) > MAX_RECORD_BYTES:
        raise AuditError(f"audit record: details larger than {MAX_RECORD_BYTES} bytes")
    return action, secret, key, result, details


def check_details(details: Any) -> None:
    """Refuse anything that could carry a secret: forbidden key names, bytes, odd types."""
    if isinstance(details, Mapping):
        for k, v in details.items():
            if not isinstance(k, str):
                raise AuditError("audit details: keys must be strings")
            if k.lower() in FORBIDDEN_DETAILS:
                raise AuditError(f"audit details must never hold secret material (key {k!r} refused)")
            check_details(v)
    elif isinstance(details, (list, tuple)):
        for v in details:
            check_details(v)
    elif not (details is None or isinstance(details, (str, int, float, bool))):
        raise AuditError(f"audit details: {type(details).__name__} values are not allowed")


def parse(raw: bytes) -> dict[str, Any] | None:
    """A record from one line, or None if the line is not a well-formed record."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or tuple(record) != FIELDS:
        return None
    if type(record["seq"]) is not int or not all(isinstance(record[k], str) for k in ("prev", "hash")):
        return None
    return record


def links(record: dict[str, Any], last: dict[str, Any] | None) -> bool:
    prev, seq = (last["hash"], last["seq"]) if last else (GENESIS, 0)
    return bool(record["seq"] == seq + 1 and record["prev"] == prev and record_hash(record) == record["hash"])


def chain_break(record: dict[str, Any], lineno: int, expected: int, prev: str,
                rest: list[dict[str, Any] | None]) -> tuple[int, int, str]:
    """Say why ``record`` does not follow the one before it: (first bad seq, line, problem)."""
    seq = record["seq"]
    later = [r for r in rest if r is not None]
    if any(r["hash"] == record["prev"] for r in later):  # it belongs after a record further down
        return expected, lineno, f"record {expected} is out of order (record {seq} comes before it)"
    nxt = rest[0] if rest else None
    if nxt is not None and nxt["seq"] == expected and nxt["prev"] == prev:
        return seq, lineno, f"record {seq} at line {lineno} was inserted (record {expected - 1} is followed by it)"
    if seq > expected:
        if any(r["seq"] == expected for r in later):
            return expected, lineno, f"record {expected} is out of order (record {seq} comes before it)"
        if seq == expected + 1:
            return expected, lineno, f"record {expected} is missing (deleted)"
        return expected, lineno, f"records {expected} to {seq - 1} are missing (deleted)"
    if seq < expected:
        return seq, lineno, f"record {seq} appears twice (line {lineno}): a record was inserted"
    return seq, lineno, f"record {seq} was inserted (it does not link to record {expected - 1})"


def anchor_problem(anchor: tuple[int, str] | None, last_seq: int, seen: str | None) -> str | None:
    """What is wrong with a log whose last record is ``last_seq`` against the vault database's
    anchor, ``seen`` being the hash the log holds at the anchor's seq; None if nothing."""
    if anchor is None:
        return None
    seq, digest = anchor
    if seq > last_seq:
        if last_seq == 0:
            return f"the audit log is missing or empty, but the vault database says it reached record {seq}"
        return f"records after {last_seq} were deleted (the vault database says the log reached record {seq})"
    if seen != digest:
        return f"record {seq} does not match the vault database's anchor (the log was rewritten?)"
    return None


def bad_report(last_good: int, seq: int | None, line: int | None, problem: str) -> AuditReport:
    """The report of a log that fails its check: ``last_good`` records are sound."""
    return AuditReport(ok=False, records=last_good, first_bad_seq=seq, first_bad_line=line, problem=problem)


def timestamp(now: datetime) -> str:
    return iso(now, millis=True)
