"""The hash-chained audit log: records, chain, head, tampering, crashes, concurrency."""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import stat
from datetime import UTC, datetime, timedelta

import pytest

from keystead import audit as audit_module
from keystead.audit import FIELDS, GENESIS, AuditLog
from keystead.errors import AuditError


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 15, 8, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def log(tmp_path):
    return AuditLog(tmp_path / ".keystead" / "audit.log", actor="alice@laptop", clock=Clock())


def _fill(log: AuditLog, n: int = 5) -> None:
    for i in range(n):
        log.append("secrets.set", secret=f"S{i}", key="local:main", version="1")


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def _write_lines(log: AuditLog, lines: list[bytes]) -> None:
    log.path.write_bytes(b"".join(lines))


def _rehash(record: dict) -> bytes:
    """A forged record with a correct hash of its own (what a careful attacker writes)."""
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    record["hash"] = hashlib.sha256((record["prev"] + canonical).encode()).hexdigest()
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def test_append_and_verify(log):
    first = log.append("keys.create", key="local:main")
    second = log.append("secrets.get", secret="DB_URL", key="local:main", result="NotFoundError", count=1)
    assert list(first) == list(FIELDS)
    assert first["seq"] == 1 and second["seq"] == 2
    assert first["ts"] == "2026-11-23T15:08:01.000Z"
    assert first["actor"] == "alice@laptop"
    assert first["prev"] == GENESIS and second["prev"] == first["hash"]
    assert second["details"] == {"count": 1} and second["result"] == "NotFoundError"
    body = json.dumps({k: v for k, v in second.items() if k != "hash"}, sort_keys=True, separators=(",", ":"))
    assert second["hash"] == hashlib.sha256((second["prev"] + body).encode()).hexdigest()
    assert [json.loads(line) for line in _lines(log)] == [first, second]
    assert list(log.records()) == [first, second]
    report = log.verify()
    assert report.ok and report.records == 2 and report.problem is None
    assert json.loads(log.head_path.read_text()) == {"seq": 2, "hash": second["hash"]}
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.head_path.stat().st_mode) == 0o600


def test_append_many_is_one_write(log, monkeypatch):
    log.append("keys.create", key="local:main")
    writes = []
    real_write = os.write
    monkeypatch.setattr(audit_module.os, "write", lambda fd, data: writes.append(len(data)) or real_write(fd, data))
    records = log.append_many(
        [{"action": "rewrap", "secret": f"S{i}", "key": "local:main", "details": {"version": "2"}} for i in range(100)]
    )
    monkeypatch.undo()
    assert [r["seq"] for r in records] == list(range(2, 102))
    assert len(writes) == 2  # the records, then the head
    assert log.verify().ok
    assert log.append_many([]) == []


def test_default_actor(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYSTEAD_ACTOR", "ci@runner-7")
    assert AuditLog(tmp_path / "a.log").actor == "ci@runner-7"
    monkeypatch.delenv("KEYSTEAD_ACTOR")
    assert "@" in AuditLog(tmp_path / "a.log").actor


def test_missing_log_is_empty_and_valid(log):
    assert log.verify() == audit_module.AuditReport(ok=True, records=0)
    assert list(log.records()) == []


@pytest.mark.parametrize("bad", ["value", "plaintext", "dek", "material", "wrapped", "Value", "DEK"])
def test_secret_looking_details_refused(log, bad):
    with pytest.raises(AuditError, match="secret material"):
        log.append("secrets.set", secret="A", **{bad: "hunter2"})
    with pytest.raises(AuditError, match="secret material"):
        log.append("secrets.set", secret="A", nested={"inner": [{bad: "x"}]})
    assert not log.path.exists()


def test_bytes_and_bad_records_refused(log):
    with pytest.raises(AuditError, match="bytes"):
        log.append("rewrap", blob=b"\x00\x01")
    with pytest.raises(AuditError, match="action"):
        log.append("")
    with pytest.raises(AuditError, match="unknown field"):
        log.append_many([{"action": "x", "plaintext": "y"}])
    assert not log.path.exists()


def _check(log, seq, line, problem):
    report = log.verify()
    assert not report.ok
    assert (report.first_bad_seq, report.first_bad_line) == (seq, line)
    assert problem in report.problem
    return report


def test_edited_record(log):
    _fill(log)
    lines = _lines(log)
    lines[2] = lines[2].replace(b'"version":"1"', b'"version":"9"')
    _write_lines(log, lines)
    report = _check(log, 3, 3, "record 3 was edited")
    assert report.records == 2


def test_deleted_middle_record(log):
    _fill(log)
    lines = _lines(log)
    del lines[2]
    _write_lines(log, lines)
    _check(log, 3, 3, "record 3 is missing (deleted)")


def test_deleted_several_middle_records(log):
    _fill(log)
    lines = _lines(log)
    del lines[1:3]
    _write_lines(log, lines)
    _check(log, 2, 2, "records 2 to 3 are missing (deleted)")


def test_inserted_copy_of_a_record(log):
    _fill(log)
    lines = _lines(log)
    lines.insert(2, lines[1])
    _write_lines(log, lines)
    _check(log, 2, 3, "record 2 at line 3 was inserted")


def test_inserted_forged_record_that_links(log):
    _fill(log)
    lines = _lines(log)
    forged = json.loads(lines[2])  # record 3, rewritten to look like a fresh record 3
    forged["action"], forged["details"] = "secrets.rm", {}
    lines.insert(2, _rehash(forged))
    _write_lines(log, lines)
    _check(log, 3, 4, "record 3 appears twice")


def test_inserted_forged_record_out_of_sequence(log):
    _fill(log)
    lines = _lines(log)
    forged = dict(json.loads(lines[1]), seq=99, action="keys.retire")
    lines.insert(2, _rehash(forged))
    _write_lines(log, lines)
    _check(log, 99, 3, "record 99 at line 3 was inserted")


@pytest.mark.parametrize(
    "order, seq, line",
    [([0, 1, 3, 2, 4], 3, 3), ([0, 4, 1, 2, 3], 2, 2), ([0, 2, 3, 1, 4], 2, 2), ([1, 0, 2, 3, 4], 1, 1)],
)
def test_reordered_records(log, order, seq, line):
    _fill(log)
    lines = _lines(log)
    _write_lines(log, [lines[i] for i in order])
    _check(log, seq, line, f"record {seq} is out of order")


def test_truncated_tail_is_caught_by_the_head(log):
    _fill(log)
    _write_lines(log, _lines(log)[:3])
    report = _check(log, 4, None, "records after 3 were deleted")
    assert "reached record 5" in report.problem
    with pytest.raises(AuditError, match="does not match its head"):
        log.append("secrets.get", secret="A")


def test_emptied_log_is_caught_by_the_head(log):
    _fill(log, 2)
    log.path.unlink()
    _check(log, 1, None, "records after 0 were deleted")


def test_missing_head(log):
    _fill(log, 3)
    log.head_path.unlink()
    _check(log, None, None, "head file")
    with pytest.raises(AuditError, match=r"head file .* is missing"):
        log.append("secrets.get", secret="A")


def test_head_may_lag_after_a_crash(log):
    _fill(log, 2)
    head = log.head_path.read_bytes()
    log.append_many([{"action": "rewrap", "secret": f"S{i}"} for i in range(3)])
    log.head_path.write_bytes(head)  # killed between the record write and the head write
    assert log.verify().ok
    log.append("secrets.get", secret="A")
    report = log.verify()
    assert report.ok and report.records == 6


def test_head_that_does_not_match(log):
    _fill(log, 3)
    log.head_path.write_text(json.dumps({"seq": 2, "hash": "f" * 64}))
    _check(log, None, None, "record 2 does not match the head")


def test_torn_final_line_reported_then_repaired(log):
    _fill(log, 3)
    with open(log.path, "ab") as fh:
        fh.write(b'{"seq":4,"ts":"2026-11-23T15:0')  # SIGKILL (or power loss) mid-write
    _check(log, 4, 4, "line 4 is torn")
    assert [r["seq"] for r in log.records()] == [1, 2, 3]
    record = log.append("secrets.get", secret="A")
    assert record["seq"] == 5 and record["action"] == "secrets.get"
    repair = list(log.records())[3]
    assert (repair["seq"], repair["action"], repair["details"]) == (4, "audit.repair", {"dropped_bytes": 30})
    assert log.verify().ok


def test_whole_record_missing_only_its_newline_is_kept(log):
    _fill(log, 2)
    data = log.path.read_bytes()
    log.path.write_bytes(data[:-1])
    assert "torn" in log.verify().problem
    log.append("secrets.get", secret="A")
    assert [r["seq"] for r in log.records()] == [1, 2, 3]
    assert log.verify().ok


def test_a_line_that_is_not_a_record(log):
    _fill(log, 3)
    lines = _lines(log)
    lines.insert(1, b"hello\n")
    _write_lines(log, lines)
    _check(log, 2, 2, "line 2 is not a record")
    with pytest.raises(AuditError, match="line 2 is not a record"):
        list(log.records())


def test_disk_full_appends_nothing(log, monkeypatch):
    _fill(log, 2)
    before = log.path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(audit_module.os, "fsync", full)
        with pytest.raises(AuditError, match="disk full; nothing was appended"):
            log.append("secrets.get", secret="A")
    assert log.path.read_bytes() == before
    assert log.verify().ok


def test_unreadable_log(tmp_path):
    (tmp_path / "audit.log").mkdir()
    log = AuditLog(tmp_path / "audit.log")
    with pytest.raises(AuditError, match="cannot read audit log"):
        log.verify()
    with pytest.raises(AuditError, match="cannot open audit log"):
        log.append("x")


def _append_from_process(path: str, worker: int, count: int) -> None:
    log = AuditLog(path, actor=f"worker-{worker}")
    for i in range(count):
        if i % 10 == 0:
            log.append_many([{"action": "rewrap", "details": {"worker": worker, "i": i, "j": j}} for j in range(3)])
        else:
            log.append("secrets.get", secret=f"S{worker}", i=i)


def test_concurrent_appends_from_four_processes(tmp_path):
    path = tmp_path / "audit.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_from_process, args=(str(path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = AuditLog(path)
    report = log.verify()
    assert report.ok, report.problem
    seqs = [r["seq"] for r in log.records()]
    per_worker = 36 + 4 * 3
    assert seqs == list(range(1, 4 * per_worker + 1))
    assert report.records == 4 * per_worker
