"""PostgresStore beyond the contract suite: schema and upgrades, concurrent creation, foreign
databases, passwords, and connections that die mid-batch (pg_terminate_backend, statement timeout).

Every test has a database (``pg_url``) or a schema (``pg_schema_url``) of its own on the
server at 127.0.0.1:5432 (tests/conftest.py): skipped with the reason when it is unreachable,
failed under KEYSTEAD_REQUIRE_PG=1.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from keystead.errors import ConfigError, StoreError, StoreUnavailable
from keystead.rotation.state import SCHEMA_VERSION as STATE_SCHEMA_VERSION
from keystead.rotation.state import StateDB
from keystead.stores import SlotUpdate, open_store, pgschema
from keystead.stores.postgres import PostgresStore

pytestmark = pytest.mark.pg
KEY = "local:main"
REPO = Path(__file__).resolve().parents[2]


def admin(url: str) -> psycopg.Connection:
    """A plain autocommit connection to the test's database (its search_path, when the URL sets one)."""
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def backends(conn: psycopg.Connection, *, waiting: bool = False) -> list[int]:
    """The pids of keystead's connections to this database (only those waiting on a lock)."""
    sql = ("SELECT pid FROM pg_stat_activity WHERE application_name = 'keystead' AND datname = current_database()"
           + (" AND wait_event_type = 'Lock'" if waiting else ""))
    return [pid for (pid,) in conn.execute(sql)]


def kill_when_waiting(url: str, *, timeout: float = 20) -> threading.Thread:
    """A thread that pg_terminate_backend()s the store's connection once it waits on a row lock."""

    def run() -> None:
        with admin(url) as conn:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                pids = backends(conn, waiting=True)
                if pids:
                    for pid in pids:
                        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    return
                time.sleep(0.02)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.fixture
def pg(pg_schema_url):
    s = PostgresStore(pg_schema_url)
    yield s
    s.close()


# -- the schema ----------------------------------------------------------------

def test_schema_tables_version_and_byte_order_collation(pg, pg_schema_url):
    with admin(pg_schema_url) as conn:
        tables = {t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
        assert tables == {"keystead_vault_schema", "keystead_vault_meta", "keystead_vault_secrets",
                          "keystead_vault_slots"}
        collations = dict(conn.execute(
            "SELECT table_name || '.' || column_name, collation_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND column_name IN ('name', 'secret')"))
        assert collations == {"keystead_vault_secrets.name": "C", "keystead_vault_slots.secret": "C"}
        assert conn.execute("SELECT version, keystead FROM keystead_vault_schema").fetchall() == [(1, "0.1.0")]
    assert pg.schema_version() == pgschema.SCHEMA_VERSION == 1


def test_vault_and_rotation_state_share_one_database(pg_url, make_env):
    state = StateDB.open(pg_url)
    with PostgresStore(pg_url) as s:
        s.put(make_env("A"))
        assert s.schema_version() == 1
    assert state.schema_version() == STATE_SCHEMA_VERSION  # each keeps its own version table
    state.close()
    with PostgresStore(pg_url) as s:  # the state's keystead_* tables are not "another application's"
        assert s.names() == ["A"]


def test_newer_vault_schema_is_refused_and_left_alone(pg_schema_url, make_env):
    with PostgresStore(pg_schema_url) as s:
        s.put(make_env("A"))
    with admin(pg_schema_url) as conn:
        conn.execute("INSERT INTO keystead_vault_schema VALUES (2, 0, '9.9')")
    with pytest.raises(StoreError, match=r"has vault schema version 2; this keystead .* knows up to 1: upgrade"):
        PostgresStore(pg_schema_url)
    with pytest.raises(StoreError, match="knows up to 1"):
        PostgresStore.upgrade(pg_schema_url)
    with admin(pg_schema_url) as conn:
        assert conn.execute("SELECT max(version), count(*) FROM keystead_vault_schema").fetchone() == (2, 2)
        assert conn.execute("SELECT count(*) FROM keystead_vault_secrets").fetchone() == (1,)


def _with_v2(monkeypatch, step):
    monkeypatch.setattr(pgschema, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(pgschema.MIGRATIONS, 2, step)


def test_older_schema_is_refused_until_db_upgrade_migrates_it(pg_schema_url, make_env, monkeypatch):
    env = make_env("A")
    with PostgresStore(pg_schema_url) as s:
        s.put(env)

    def add_index(conn: sa.Connection) -> None:
        conn.exec_driver_sql("CREATE INDEX keystead_vault_slots_by_version ON keystead_vault_slots (key, version)")

    _with_v2(monkeypatch, add_index)
    with pytest.raises(StoreError, match="has vault schema version 1, older than this keystead's 2: "
                                         "run `keystead db upgrade`"):
        PostgresStore(pg_schema_url)
    assert PostgresStore.upgrade(pg_schema_url) == (1, 2)
    assert PostgresStore.upgrade(pg_schema_url) == (2, 2)  # again: nothing to do
    with PostgresStore(pg_schema_url) as s:
        assert s.get("A") == env and s.schema_version() == 2
    with admin(pg_schema_url) as conn:
        assert [v for (v,) in conn.execute("SELECT version FROM keystead_vault_schema ORDER BY version")] == [1, 2]
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'keystead_vault_slots_by_version'"
                            ).fetchone() == (1,)


def test_an_empty_database_gets_every_version_at_once(pg_schema_url, monkeypatch):
    _with_v2(monkeypatch, lambda conn: conn.exec_driver_sql("ALTER TABLE keystead_vault_meta ADD COLUMN note TEXT"))
    with PostgresStore(pg_schema_url) as s:
        assert s.schema_version() == 2


def test_a_failing_migration_leaves_the_old_schema_whole(pg_schema_url, make_env, monkeypatch):
    with PostgresStore(pg_schema_url) as s:
        s.put(make_env("A"))

    def half(conn: sa.Connection) -> None:
        conn.exec_driver_sql("ALTER TABLE keystead_vault_secrets ADD COLUMN extra TEXT")
        conn.exec_driver_sql("ALTER TABLE keystead_vault_secrets ADD COLUMN extra TEXT")  # fails: exists

    _with_v2(monkeypatch, half)
    with pytest.raises(StoreError, match="upgrading failed"):
        PostgresStore.upgrade(pg_schema_url)
    with admin(pg_schema_url) as conn:
        assert conn.execute("SELECT max(version) FROM keystead_vault_schema").fetchone() == (1,)
        columns = {c for (c,) in conn.execute("SELECT column_name FROM information_schema.columns"
                                              " WHERE table_name = 'keystead_vault_secrets'"
                                              " AND table_schema = current_schema()")}
        assert "extra" not in columns  # the DDL was rolled back with the transaction


@pytest.mark.slow
def test_processes_starting_at_once_on_an_empty_database_create_it_once(pg_url):
    n = 6
    start = time.time() + 3  # every process imports first, then all open at this instant
    script = (
        "import os, sys, time\n"
        "from keystead.envelope import Envelope, Slot\n"
        "from keystead.stores.postgres import PostgresStore\n"
        "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
        "with PostgresStore(sys.argv[1]) as s:\n"
        "    s.put(Envelope('default', 'P' + sys.argv[3], 1, os.urandom(12), b'c',"
        " (Slot('local:main', 'local', '1', 1, b'w'),)))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, pg_url, str(start), str(i)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=120)]]
    assert all(rc == 0 for rc, _ in results), results
    with PostgresStore(pg_url) as s:
        assert s.names() == [f"P{i}" for i in range(n)]
    with admin(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM keystead_vault_schema").fetchone() == (1,)


# -- databases that are not (yet) a keystead vault -------------------------------

def test_another_applications_database_is_refused_untouched(pg_schema_url):
    with admin(pg_schema_url) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("CREATE TABLE users (id int)")
    with pytest.raises(StoreError, match=r"holds tables of another application \(orders, users\), not a keystead"):
        PostgresStore(pg_schema_url)
    with pytest.raises(StoreError, match="another application"):
        PostgresStore.upgrade(pg_schema_url)
    with admin(pg_schema_url) as conn:
        assert {t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
                } == {"orders", "users"}


def test_vault_tables_without_a_version_are_refused(pg_schema_url):
    with admin(pg_schema_url) as conn:
        conn.execute("CREATE TABLE keystead_vault_secrets (name text)")
    with pytest.raises(StoreError, match="vault tables but no schema version"):
        PostgresStore(pg_schema_url)


def test_missing_database_is_one_clear_line(pg_url):
    with pytest.raises(StoreError) as exc:
        PostgresStore(pg_url + "_missing")
    assert str(exc.value) == f"vault database '{pg_url.rsplit('/', 1)[1]}_missing' on 127.0.0.1:5432 does not exist " \
                             "(create it, or fix the store URL)"
    assert type(exc.value) is StoreError  # not transient: retrying will not create it


# -- passwords ---------------------------------------------------------------------

def test_unreachable_server_names_host_and_database_never_the_password():
    url = "postgresql://app:hunter2@127.0.0.1:1/vault"  # nothing listens on port 1
    with pytest.raises(StoreUnavailable) as exc:
        open_store(url)
    message = str(exc.value)
    assert message.startswith("vault database 'vault' on 127.0.0.1:1 unavailable while opening: ")
    assert "hunter2" not in message and "\n" not in message


def test_refused_login_names_host_and_database_never_the_password(pg_url):
    # The test server trusts every login, so a wrong password cannot be shown; a role that
    # does not exist is refused the same way (SQLSTATE 28000, the login class).
    url = pg_url.replace("postgres@", "nobody_here:hunter2@")
    with pytest.raises(StoreError) as exc:
        PostgresStore(url)
    assert "the server refused the login" in str(exc.value) and "on 127.0.0.1:5432" in str(exc.value)
    assert not isinstance(exc.value, StoreUnavailable)
    assert "hunter2" not in str(exc.value) and "hunter2" not in repr(exc.value)


def test_repr_and_url_hide_the_password(pg_url):
    url = pg_url.replace("postgres@", "postgres:hunter2@")  # trust auth: any password is accepted
    with PostgresStore(url) as s:
        assert "hunter2" not in repr(s) and "hunter2" not in s.url and "postgres:***@" in s.url
        assert "hunter2" not in repr(s.engine.url)


def test_open_store_opens_every_postgresql_url_form(pg_url, make_env):
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    for url in (pg_url, plain, plain.replace("postgresql://", "postgres://")):
        with open_store(url) as s:
            assert isinstance(s, PostgresStore) and s.url == url
            s.put(make_env("A"))
            assert s.names() == ["A"]


def test_bad_urls_are_config_errors():
    for bad, why in [("postgresql+asyncpg://db/v", "psycopg 3"), ("postgresql://app:hunter2@db", "names no database"),
                     ("postgresql://app:hunter2@db:notaport/v", "not a valid PostgreSQL URL")]:
        with pytest.raises(ConfigError, match=why) as exc:
            PostgresStore(bad)
        assert "hunter2" not in str(exc.value)


# -- connections that die ------------------------------------------------------------

def _vault(store, make_env, n=300):
    envs = [make_env(f"K{i:04d}") for i in range(n)]
    store.put_many(envs)
    return envs


def test_connection_killed_mid_replace_slots_leaves_no_slot_half_written(pg, pg_schema_url, make_env):
    _vault(pg, make_env)
    rows = pg.slots_behind(KEY, "2", limit=1000)
    updates = [SlotUpdate(r.secret, r.version, "2", 5, b"new", r.wrapped) for r in rows]
    with admin(pg_schema_url) as locker:
        locker.autocommit = False
        locker.execute("SELECT 1 FROM keystead_vault_slots WHERE secret = 'K0150' FOR UPDATE")  # the batch waits here
        killer = kill_when_waiting(pg_schema_url)
        with pytest.raises(StoreUnavailable, match="unavailable while writing"):
            pg.replace_slots(KEY, updates)
        killer.join()
        locker.rollback()
    assert pg.version_counts(KEY) == {"1": 300}  # the next call works, and no slot was swapped
    assert pg.replace_slots(KEY, updates) == 300


def test_connection_killed_mid_put_many_writes_nothing(pg, pg_schema_url, make_env):
    _vault(pg, make_env, n=10)
    newer = [make_env(f"K{i:04d}", slots=[(KEY, "7")]) for i in range(2000)]
    with admin(pg_schema_url) as locker:
        locker.autocommit = False
        locker.execute("SELECT 1 FROM keystead_vault_secrets WHERE name = 'K0005' FOR UPDATE")
        killer = kill_when_waiting(pg_schema_url)
        with pytest.raises(StoreUnavailable):
            pg.put_many(newer)
        killer.join()
        locker.rollback()
    assert pg.count() == 10 and pg.version_counts(KEY) == {"1": 10}
    assert pg.put_many(newer) == 2000 and pg.version_counts(KEY) == {"7": 2000}


def test_idle_connections_killed_between_calls_are_replaced(pg, pg_schema_url, make_env):
    envs = _vault(pg, make_env, n=5)
    with admin(pg_schema_url) as conn:
        pids = backends(conn)
        assert pids  # the pool keeps the store's connection
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert pg.get("K0003") == envs[3]  # pool_pre_ping: a fresh connection
    pg.put(make_env("NEW"))
    assert pg.count() == 6


def test_statement_timeout_is_transient(pg_schema_url, make_env):
    with PostgresStore(pg_schema_url + "%20-cstatement_timeout%3D300") as s:
        envs = _vault(s, make_env, n=20)
        with admin(pg_schema_url) as locker:
            locker.autocommit = False
            locker.execute("SELECT 1 FROM keystead_vault_slots WHERE secret = 'K0010' FOR UPDATE")
            with pytest.raises(StoreUnavailable, match="statement timeout"):
                s.replace_slots(KEY, [SlotUpdate(e.name, "1", "2", 5, b"new") for e in envs])
            locker.rollback()
        assert s.version_counts(KEY) == {"1": 20}


# -- privileges (docs/postgresql.md) -------------------------------------------------

@pytest.fixture
def app_role(pg_url):
    """A login role with no privileges of its own on the test database's tables (dropped after)."""
    import secrets as random

    role = f"keystead_app_{random.token_hex(3)}"
    with admin(pg_url) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    yield role
    with admin(pg_url) as conn:
        conn.execute(f'DROP OWNED BY "{role}"')
        conn.execute(f'DROP ROLE "{role}"')


def test_the_documented_privileges_are_enough_and_fewer_are_one_clear_line(pg_url, app_role, make_env):
    with PostgresStore(pg_url) as s:  # created by the owner (the postgres user here)
        s.put(make_env("A"))
    as_app = pg_url.replace("postgres@", f"{app_role}@")
    with pytest.raises(StoreError, match=r"permission denied opening \(permission denied for table "
                                         r"keystead_vault_schema\); see docs/postgresql.md"):
        PostgresStore(as_app)
    with admin(pg_url) as conn:  # the grants docs/postgresql.md lists, and no more
        conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON keystead_vault_secrets, keystead_vault_slots,'
                     f' keystead_vault_meta TO "{app_role}"')
        conn.execute(f'GRANT SELECT ON keystead_vault_schema TO "{app_role}"')
    with PostgresStore(as_app) as s:
        env = make_env("B", slots=[(KEY, "1")])
        assert s.put_many([env] + [make_env(f"C{i:05d}") for i in range(10_000)]) == 10_001  # ANALYZE: a warning
        rows = s.slots_behind(KEY, "2", limit=5)
        assert s.replace_slots(KEY, [SlotUpdate(r.secret, r.version, "2", 5, b"new") for r in rows]) == 5
        assert s.swap([(s.get("B"), env)]) == {"B"}
        s.delete("A")
        assert s.version_counts(KEY) == {"1": 9_998, "2": 3}  # A deleted, B swapped back to version 1
    with pytest.raises(StoreError, match="permission denied upgrading"), admin(pg_url) as conn:
        conn.execute("INSERT INTO keystead_vault_schema VALUES (0, 0, 'x')")  # make the schema look older
        conn.execute("DELETE FROM keystead_vault_schema WHERE version = 1")
        PostgresStore.upgrade(as_app)


def test_a_batch_chosen_as_a_deadlock_victim_is_retried_whole(pg, pg_schema_url, make_env):
    _vault(pg, make_env, n=2)  # K0000, K0001
    rows = pg.slots_behind(KEY, "2")
    updates = [SlotUpdate(r.secret, r.version, "2", 5, b"new", r.wrapped) for r in rows]
    outcome: list[str] = []

    def other_writer() -> None:
        with admin(pg_schema_url) as conn:
            conn.autocommit = False
            conn.execute("SET deadlock_timeout = '20s'")  # the store's session detects the cycle: it is the victim
            conn.execute("SELECT 1 FROM keystead_vault_slots WHERE secret = 'K0001' FOR UPDATE")
            ready.set()
            end = time.monotonic() + 20
            while not backends(conn, waiting=True) and time.monotonic() < end:
                time.sleep(0.02)
            conn.execute("SELECT 1 FROM keystead_vault_slots WHERE secret = 'K0000' FOR UPDATE")  # the cycle
            outcome.append("other writer got both rows")
            conn.rollback()

    ready = threading.Event()
    t = threading.Thread(target=other_writer, daemon=True)
    t.start()
    ready.wait(10)
    assert pg.replace_slots(KEY, updates) == 2  # aborted once by the server, then redone
    t.join(30)
    assert outcome == ["other writer got both rows"]
    assert pg.version_counts(KEY) == {"2": 2}
