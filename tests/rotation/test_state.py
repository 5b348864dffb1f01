"""The state database on its own: schema versions and migrations, per-store rows, the
retirement ledger, file mode; on SQLite and (where the server runs) PostgreSQL."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from keystead.errors import RotationBusy
from keystead.rotation import state as st
from keystead.rotation.state import Batch, FailedSlot, StateDB, StateDBError, UnreadableSlot
from keystead.stores.base import SlotRow

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "pg"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def db(url):
    db = StateDB.open(url)
    yield db
    db.close()


# -- version 1: today's tables, as the code before keystead_schema created them ---------

v1 = sa.MetaData()
sa.Table("keystead_rotations", v1,
         sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
         sa.Column("key", sa.String(255), nullable=False), sa.Column("ref", sa.String(2048), nullable=False),
         sa.Column("state", sa.String(16), nullable=False), sa.Column("reason", sa.String(32), nullable=False),
         sa.Column("from_version", sa.String(128)), sa.Column("to_version", sa.String(128)),
         sa.Column("cursor", sa.String(255), nullable=False, default=""),
         *(sa.Column(c, sa.Integer, nullable=False, default=0)
           for c in ("total", "rewrapped", "unreadable", "verified", "passes")),
         sa.Column("planned_at", sa.Float, nullable=False),
         *(sa.Column(c, sa.Float) for c in ("rotated_at", "verified_at", "retired_at", "done_at")),
         sa.Column("updated_at", sa.Float, nullable=False), sa.Column("error", sa.Text),
         sa.Index("ix_keystead_rotations_key", "key", "id"))
sa.Table("keystead_backups", v1,
         sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
         sa.Column("rotation_id", sa.Integer, nullable=False),
         sa.Column("first", sa.String(255), nullable=False), sa.Column("last", sa.String(255), nullable=False),
         sa.Column("count", sa.Integer, nullable=False), sa.Column("slots", sa.LargeBinary, nullable=False),
         sa.Index("ix_keystead_backups_rotation", "rotation_id", "first"))
sa.Table("keystead_unreadable", v1,
         sa.Column("rotation_id", sa.Integer, primary_key=True), sa.Column("secret", sa.String(255), primary_key=True),
         sa.Column("version", sa.String(128), nullable=False), sa.Column("reason", sa.Text, nullable=False))
sa.Table("keystead_lanes", v1,
         sa.Column("rotation_id", sa.Integer, primary_key=True), sa.Column("lane", sa.Integer, primary_key=True),
         sa.Column("start", sa.String(255), nullable=False), sa.Column("until", sa.String(255)),
         sa.Column("cursor", sa.String(255), nullable=False), sa.Column("done", sa.Boolean, nullable=False))
sa.Table("keystead_lock_owners", v1,
         sa.Column("name", sa.String(2048), primary_key=True), sa.Column("owner", sa.String(255), nullable=False),
         sa.Column("acquired_at", sa.Float, nullable=False))

OLD_BACKUPS = [SlotRow("A9", "1", b"w-A9"), SlotRow("Alpha_2", "1", b"w-Alpha_2"), SlotRow("_x", "1", b"w-_x"),
               SlotRow("a-b", "1", b"w-a-b")]


def make_v1(url: str) -> None:
    """A version 1 database with a rotation in the middle of its rewrap: lanes, backups, an unreadable slot."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    t = v1.tables
    with engine.begin() as conn:
        v1.create_all(conn)
        conn.execute(sa.insert(t["keystead_rotations"]).values(
            id=1, key="main", ref="local:main", state="rewrapping", reason="due", from_version="1", to_version="2",
            cursor="", total=10, rewrapped=4, unreadable=1, verified=0, passes=1, planned_at=1.0, rotated_at=2.0,
            updated_at=3.0))
        conn.execute(sa.insert(t["keystead_backups"]).values(
            rotation_id=1, first="A9", last="a-b", count=4, slots=st.pack_backups(OLD_BACKUPS)))
        conn.execute(sa.insert(t["keystead_lanes"]), [
            dict(rotation_id=1, lane=0, start="", until="M", cursor="Alpha_2", done=False),
            dict(rotation_id=1, lane=1, start="M", until=None, cursor="a-b", done=True)])
        conn.execute(sa.insert(t["keystead_unreadable"]).values(
            rotation_id=1, secret="BROKEN", version="1", reason="DecryptError"))
    engine.dispose()


def make_v2(url: str) -> None:
    """A version 2 database (as keystead made it before lane leases) with a rotation mid-rewrap
    and a lock owner row of the session lock of that time."""
    make_v1(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        (st.schema._v1_to_v2_sqlite if sqlite else st.schema._v1_to_v2_postgresql)(conn)
        for table in ("keystead_schema", "keystead_retirements"):
            st.schema.metadata.tables[table].create(conn)
        conn.execute(sa.insert(st.schema.schema_table).values(version=2))
        conn.exec_driver_sql("INSERT INTO keystead_lock_owners (name, owner, acquired_at) "
                             "VALUES ('rotation:local:main', 'pid 1 on gone', 5.0)")
    engine.dispose()


def test_new_database_is_created_at_the_current_version(db):
    assert db.schema_version() == st.SCHEMA_VERSION == 3
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(st.schema.schema_table.c.version)).scalars().all() == [3]


def test_version_2_with_a_rotation_in_flight_migrates_to_version_3(url):
    make_v2(url)
    db = StateDB.open(url)
    try:
        assert db.schema_version() == 3
        assert [(x.lane, x.cursor, x.done, x.owner, x.lease_until, x.rewrapped) for x in db.lanes(1)] == [
            (0, "Alpha_2", False, None, None, 0), (1, "a-b", True, None, None, 0)]
        # The v2 lock row named a session lock that died with its process: free, and taken at once.
        assert db.holder("rotation:local:main") == st.Holder("rotation:local:main", "pid 1 on gone", 5.0, None)
        lease = db.lease("rotation:local:main", what="rotation of key main", owner="w1", clock=lambda: NOW)
        assert lease.acquire() and db.holder("rotation:local:main").owner == "w1"
        # Version 3 at work on the migrated rows: a claimed lane, a fenced batch, the lane log.
        lane = db.claim_lane(1, owner="w1", now=100.0, seconds=30)
        assert lane is not None
        assert (lane.lane, lane.cursor, lane.owner, lane.lease_until) == (0, "Alpha_2", "w1", 130.0)
        db.record_batch(1, backups=[("B", "1", b"w")], done=Batch("B", 1), now=NOW, lane=0, owner="w1",
                        lease_until=140.0, at=110.0)
        assert [(b.lane, b.owner, b.first, b.last, b.at) for b in db.lane_log(1)] == [(0, "w1", "B", "B", 110.0)]
        assert db.get(1).rewrapped == 5 and db.lanes(1)[0].rewrapped == 1
    finally:
        db.close()
    again = StateDB.open(url)  # version 3: nothing to do
    assert again.schema_version() == 3 and again.lanes(1)[0].lease_until == 140.0
    again.close()


def test_version_1_with_a_rotation_in_flight_migrates_to_version_3(url):
    make_v1(url)
    db = StateDB.open(url)
    try:
        assert db.schema_version() == 3
        rot = db.get(1)
        assert (rot.state, rot.cursor, rot.rewrapped, rot.unreadable, rot.held, rot.active) == (
            "rewrapping", "", 4, 1, 0, True)
        assert [(x.lane, x.store, x.start, x.until, x.cursor, x.done) for x in db.lanes(1)] == [
            (0, "", "", "M", "Alpha_2", False), (1, "", "M", None, "a-b", True)]
        assert list(db.backup_rows(1)) == OLD_BACKUPS == list(db.backup_rows(1, store=""))
        assert all(db.backup(1, r.secret) == (r.version, r.wrapped) for r in OLD_BACKUPS)
        assert db.unreadable(1) == [UnreadableSlot("", "BROKEN", "1", "DecryptError")]
        assert db.unreadable_slots(1) == [("BROKEN", "1", "DecryptError")]
        # Version 2 at work on the migrated rows: another store's slot of the same name, the ledger.
        db.record_batch(1, backups=[("BROKEN", "1", b"w")], done=Batch("BROKEN", 0, (FailedSlot("BROKEN", "1", "x"),)),
                        now=NOW, lane=0, store="s2")
        assert [u.store for u in db.unreadable(1)] == ["", "s2"] and db.get(1).unreadable == 2
        db.update(1, now=NOW, held=3)
        assert db.get(1).held == 3
        db.record_retirement("local:main", "1", state="disabled", rotation_id=1, now=NOW)
        assert [r.state for r in db.retirements("local:main")] == ["disabled"]
    finally:
        db.close()
    again = StateDB.open(url)  # current: nothing to do
    assert again.schema_version() == 3 and again.get(1).held == 3
    again.close()


def test_read_only_open_migrates_version_1_too(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    make_v1(url)
    db = StateDB.open(url, create=False)
    assert db is not None and db.latest("main").held == 0
    db.close()


def test_a_newer_schema_is_refused(db, url):
    with db.engine.begin() as conn:
        conn.execute(sa.update(st.schema.schema_table).values(version=4))
    with pytest.raises(StateDBError, match=r"has schema version 4; this keystead knows up to 3 \(upgrade keystead\)"):
        StateDB.open(url)


_OPEN = ("import sys; from keystead.rotation.state import StateDB; "
         "db = StateDB.open(sys.argv[1]); print(db.schema_version()); db.close()")


@pytest.mark.parametrize("start", ["empty", "v1", "v2"])
def test_concurrent_opens_create_or_migrate_once(url, start):
    if start == "v1":
        make_v1(url)
    elif start == "v2":
        make_v2(url)
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert [(rc, out.strip()) for rc, out, _err in results] == [(0, "3")] * 4, [err for _rc, _out, err in results]
    db = StateDB.open(url)
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(st.schema.schema_table)).scalar_one() == 1
    assert len(db.lanes(1)) == (0 if start == "empty" else 2)
    db.close()


def test_state_db_is_created_0600_under_umask_022(tmp_path):
    old = os.umask(0o022)
    try:
        db = StateDB.open(f"sqlite:///{tmp_path / 'state.db'}")
        db.create("main", "local:main", reason="due", from_version="1", now=NOW)
        with db.lock("rotation:local:main", what="rotation of key main"):
            pass
        db.close()
    finally:
        os.umask(old)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        if (tmp_path / name).exists():
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert sorted(p.name for p in tmp_path.iterdir()) <= ["state.db", "state.db-shm", "state.db-wal"]  # leases: rows


def test_lanes_per_store_numbered_across_the_rotation(db):
    rid = db.create("main", "local:main", reason="due", from_version="1", now=NOW).id
    a = db.create_lanes(rid, ["G", "P"], store="a")
    b = db.create_lanes(rid, ["_x"], store="b")
    assert [(x.lane, x.store, x.start, x.until) for x in a] == [
        (0, "a", "", "G"), (1, "a", "G", "P"), (2, "a", "P", None)]
    assert [(x.lane, x.store, x.start, x.until) for x in b] == [(3, "b", "", "_x"), (4, "b", "_x", None)]
    assert db.create_lanes(rid, ["X", "Y", "Z"], store="a") == a  # a resumed rotation keeps its lanes
    assert [x.lane for x in db.lanes(rid)] == [0, 1, 2, 3, 4]
    assert db.lanes(rid, store="b") == b
    db.record_batch(rid, backups=(), done=Batch("K", 2), now=NOW, lane=4, store="b")
    assert [x.cursor for x in db.lanes(rid, store="b")] == ["", "K"]
    db.drop_lanes(rid, store="a")
    assert db.lanes(rid) == db.lanes(rid, store="b")
    db.create_lanes(rid, [])  # the default store, as today's engine calls it
    assert [(x.lane, x.store) for x in db.lanes(rid, store="")] == [(5, "")]


def test_backups_per_store_in_byte_order(db):
    """The names include case and punctuation: lookups by range must compare bytes (COLLATE "C" on PG)."""
    rid = db.create("main", "local:main", reason="due", from_version="1", now=NOW).id
    names = sorted(["Zeta", "alpha", "Alpha_2", "a.b", "a-b", "a_b", "A9", "_x"], key=str.encode)
    rows_a = [SlotRow(n, "1", b"a-" + n.encode()) for n in names]
    rows_b = [SlotRow(n, "7", b"b-" + n.encode()) for n in names[:3]]
    db.record_batch(rid, backups=rows_a[:4], done=None, now=None, store="a")
    db.record_batch(rid, backups=rows_a[4:], done=None, now=None, store="a")
    db.save_backups(rid, rows_b, store="b")
    assert list(db.backup_rows(rid, store="a")) == rows_a
    assert list(db.backup_rows(rid, store="b")) == rows_b
    assert list(db.backup_rows(rid)) == rows_a + rows_b
    for r in rows_a:
        assert db.backup(rid, r.secret, store="a") == (r.version, r.wrapped), r.secret
    assert db.backup(rid, names[0], store="b") == ("7", b"b-" + names[0].encode())
    assert db.backup(rid, names[-1], store="b") is None and db.backup(rid, names[0]) is None
    assert db.backup_batches(rid) == 3 and db.delete_backups(rid) == 3


def test_retirement_ledger(db):
    assert db.retirements("local:main") == []
    r = db.record_retirement("local:main", "1", state="disabled", rotation_id=7, now=NOW)
    assert (r.state, r.rotation_id, r.disabled_at, r.deleted_at) == ("disabled", 7, NOW.timestamp(), None)
    later = NOW.replace(day=20)
    r = db.record_retirement("local:main", "1", state="deleted", rotation_id=7, now=later)
    assert (r.state, r.disabled_at, r.deleted_at, r.updated_at) == (
        "deleted", NOW.timestamp(), later.timestamp(), later.timestamp())
    db.record_retirement("local:main", "2", state="disabled", rotation_id=None, now=NOW)
    db.record_retirement("local:other", "1", state="disabled", rotation_id=None, now=NOW)
    assert [x.version for x in db.retirements("local:main")] == ["1", "2"]
    assert db.forget_retirement("local:main", "2") and not db.forget_retirement("local:main", "2")
    assert [x.version for x in db.retirements("local:main")] == ["1"]
    with pytest.raises(ValueError):
        db.record_retirement("local:main", "3", state="gone", rotation_id=None, now=NOW)


def test_abandoned_is_terminal(db):
    rot = db.create("main", "local:main", reason="due", from_version="1", now=NOW)
    assert rot.active and rot.held == 0
    assert not db.update(rot.id, now=NOW, state=st.ABANDONED).active
    assert not db.update(rot.id, now=NOW, state=st.DONE).active
    assert st.ABANDONED in st.STATES


def test_lock_is_exclusive_and_names_its_holder(db):
    with db.lock("rotation:local:main", what="rotation of key main"):
        other = db.lease("rotation:local:main", what="rotation of key main", owner="pid 2 on elsewhere #b")
        assert not other.acquire()
        busy = r"already running in another worker \(pid \d+ on .* #\w+, since \d{4}-\d\d-\d\dT"
        with pytest.raises(RotationBusy, match=busy):
            raise other.busy()
    assert db.holder("rotation:local:main") is None  # released on leaving the block
    with db.lock("rotation:local:main", what="rotation of key main"):
        pass


class Clock:
    """An injected lease clock: tests move it, nothing sleeps."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_key_lease_expires_and_the_old_holder_cannot_renew(db):
    clock = Clock()
    a = db.lease("rotation:local:main", what="rotation of key main", owner="A", seconds=30, clock=clock)
    b = db.lease("rotation:local:main", what="rotation of key main", owner="B", seconds=30, clock=clock)
    assert a.acquire() and not b.acquire()
    clock.advance(29)
    assert a.renew() and not b.acquire()  # renewed to now + 30
    clock.advance(29)
    assert not b.acquire()
    clock.advance(2)  # A's lease has run out (A was killed, say)
    assert b.acquire()
    assert not a.renew() and not a.acquire()
    a.release()  # releasing what A no longer holds leaves B's lease alone
    assert db.holder("rotation:local:main").owner == "B"
    b.release()
    assert db.holder("rotation:local:main") is None and a.acquire()


def test_lane_leases_expire_and_a_stale_owner_is_fenced_out(db):
    rid = db.create("main", "local:main", reason="due", from_version="1", to_version="2", now=NOW).id
    db.create_lanes(rid, ["M"])
    t = 1000.0
    first = db.claim_lane(rid, owner="A", now=t, seconds=10)
    second = db.claim_lane(rid, owner="B", now=t, seconds=10)
    assert (first.lane, first.owner, second.lane, second.owner) == (0, "A", 1, "B")
    assert db.claim_lane(rid, owner="C", now=t + 5, seconds=10) is None  # both held
    assert db.claim_lane(rid, owner="A", now=t + 5, seconds=10).lane == 0  # its own, after a reconnect
    db.record_batch(rid, backups=[("B1", "1", b"w")], done=None, now=NOW, lane=1, owner="B", lease_until=t + 20,
                    at=t + 6)
    taken = db.claim_lane(rid, owner="C", now=t + 16, seconds=10)  # A's lease (to t+15) ran out; B's did not
    assert (taken.lane, taken.owner, taken.cursor) == (0, "C", "")
    with pytest.raises(st.LeaseLost):  # A wakes up: its next commit is fenced out, nothing written
        db.record_batch(rid, backups=[("A1", "1", b"w")], done=Batch("A0", 3), now=NOW, lane=0, owner="A",
                        lease_until=t + 30, at=t + 17)
    assert db.get(rid).rewrapped == 0 and db.backup(rid, "A1") is None
    with pytest.raises(st.LeaseLost):
        db.finish_lane(rid, 0, owner="A")
    db.finish_lane(rid, 0, owner="C")
    db.release_lane(rid, 1, owner="B")
    assert [(x.lane, x.done, x.owner) for x in db.lanes(rid)] == [(0, True, None), (1, False, None)]
    assert db.lanes_left(rid) == 1 and db.claim_lane(rid, owner="C", now=t + 17, seconds=10).lane == 1
    assert [(b.lane, b.owner) for b in db.lane_log(rid)] == [(1, "B")]


def test_concurrent_claims_take_different_lanes(url):
    """Eight processes claim at once from one rotation of eight lanes: each gets its own."""
    db = StateDB.open(url)
    rid = db.create("main", "local:main", reason="due", from_version="1", to_version="2", now=NOW).id
    db.create_lanes(rid, [f"N{i}" for i in range(7)])
    db.close()
    claim = ("import sys; from keystead.rotation.state import StateDB; db = StateDB.open(sys.argv[1]); "
             "lane = db.claim_lane(int(sys.argv[2]), owner=sys.argv[3], now=1.0, seconds=60); "
             "print(lane.lane if lane else None); db.close()")
    procs = [subprocess.Popen([sys.executable, "-c", claim, url, str(rid), f"w{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(8)]
    got = [p.communicate(timeout=120) for p in procs]
    assert sorted(out.strip() for out, _err in got) == [str(i) for i in range(8)], [err for _o, err in got]


def test_sqlite_errors_are_chosen_by_code(tmp_path):
    bad = tmp_path / "state.db"
    bad.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StateDBError, match="is corrupt"):
        StateDB.open(f"sqlite:///{bad}")


NAME_COLUMNS = [("keystead_rotations", "cursor"), ("keystead_backups", "first"), ("keystead_backups", "last"),
                ("keystead_unreadable", "secret"), ("keystead_lanes", "start"), ("keystead_lanes", "until"),
                ("keystead_lanes", "cursor")]


@pytest.mark.parametrize("start", ["empty", "v1"])
def test_postgresql_name_columns_compare_bytes(pg_url, start):
    """The server's default collation may order case and punctuation otherwise (en_US does)."""
    if start == "v1":
        make_v1(pg_url)
    db = StateDB.open(pg_url)
    with db.engine.connect() as conn:
        found = dict(conn.execute(sa.text(
            "SELECT table_name || '.' || column_name, collation_name FROM information_schema.columns "
            "WHERE table_name LIKE 'keystead_%' AND collation_name IS NOT NULL")).all())
    db.close()
    assert {f"{t}.{c}": found.get(f"{t}.{c}") for t, c in NAME_COLUMNS} == {f"{t}.{c}": "C" for t, c in NAME_COLUMNS}


def test_postgresql_lease_survives_its_connection_being_killed(pg_url):
    """A lease is a row, not a session lock: terminating every connection leaves it held."""
    db = StateDB.open(pg_url)
    try:
        with db.lock("rotation:local:main", what="rotation of key main"):
            with db.engine.connect() as conn:
                conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            other = db.lease("rotation:local:main", what="rotation of key main", owner="another")
            assert not other.acquire()
        assert db.holder("rotation:local:main") is None
    finally:
        db.close()


@pytest.mark.parametrize("url", ["postgresql://app:hunter2@db:notaport/state", "nonsense://app:hunter2@db/x"])
def test_a_bad_state_url_is_one_error_without_its_password(url):
    with pytest.raises(StateDBError) as caught:
        StateDB.open(url)
    assert "hunter2" not in str(caught.value)
    assert "app:***@db" in str(caught.value)
