"""The PostgreSQL vault end to end: the real CLI (init --store postgresql://, secrets, rotate,
db status/upgrade, errors) and a rotation whose store connection is killed mid-rewrap.

The server at 127.0.0.1:5432 trusts every login, so a URL may carry any password: the tests
give one (``hunter2``) and check it appears in no output, no file but keystead.toml (0600).
"""

from __future__ import annotations

import stat

import pytest

from keystead.rotation.engine import Engine
from tests.conftest import Workspace
from tests.rotation.conftest import DUE, make_env
from tests.rotation.test_engine import latest
from tests.stores.test_postgres import admin, kill_when_waiting

pytestmark = pytest.mark.pg
PASSWORD = "hunter2"


def _with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@")


def _clean(*results) -> None:
    for r in results:
        text = (r.stdout if isinstance(r.stdout, str) else r.stdout.decode()) + (
            r.stderr if isinstance(r.stderr, str) else r.stderr.decode())
        assert PASSWORD not in text, text


@pytest.fixture
def pg_ws(tmp_path, pg_url) -> Workspace:
    w = Workspace(tmp_path, _with_password(pg_url))
    r = w.cli("init", "--dir", str(tmp_path), "--store", w.store)
    _clean(r)
    assert "postgres:***@" in r.stderr
    return w


def test_cli_round_trip_on_postgresql(pg_ws: Workspace, pg_url: str) -> None:
    ws = pg_ws
    assert stat.S_IMODE(ws.config.stat().st_mode) == 0o600  # it holds the password
    outputs = [ws.cli("secrets", "set", "DB_URL", input="postgres://x\n"),
               ws.cli("secrets", "set", "API_KEY", input="k-1\n")]
    get = ws.cli("secrets", "get", "DB_URL")
    assert get.stdout.rstrip("\n") == "postgres://x"
    listed = ws.cli("secrets", "list")
    assert listed.stdout.split() == ["API_KEY", "DB_URL"]
    rotated = ws.cli("rotate", "--force", "main")
    worker = ws.run("worker", "--once")  # a real process: the sweep finds nothing due, exit 0
    assert worker.returncode == 0, worker.stderr
    assert ws.cli("secrets", "get", "API_KEY").stdout.rstrip("\n") == "k-1"
    status = ws.cli("db", "status")
    assert "schema 1 (this keystead: 1)  current" in status.stdout
    upgrade = ws.cli("db", "upgrade")
    assert "already current" in upgrade.stderr
    _clean(*outputs, get, listed, rotated, worker, status, upgrade)
    with admin(pg_url) as conn:  # the rotation rewrapped both slots in the database
        assert conn.execute("SELECT version, count(*) FROM keystead_vault_slots GROUP BY version").fetchall() == [
            ("2", 2)]
    for path in ws.root.rglob("*"):
        if path.is_file() and path != ws.config:
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_newer_vault_schema_stops_every_command_with_exit_7(pg_ws: Workspace, pg_url: str) -> None:
    pg_ws.cli("secrets", "set", "A", input="v\n")
    with admin(pg_url) as conn:
        conn.execute("INSERT INTO keystead_vault_schema VALUES (2, 0, '9.9')")
    for args in (("secrets", "get", "A"), ("secrets", "set", "B"), ("db", "upgrade")):
        r = pg_ws.run(*args, input=b"v\n")
        assert r.returncode == 7, r
        lines = r.stderr.decode().splitlines()
        assert len(lines) == 1 and "has vault schema version 2; this keystead" in lines[0], lines
    with admin(pg_url) as conn:
        assert conn.execute("SELECT name FROM keystead_vault_secrets").fetchall() == [("A",)]


def test_unreachable_server_is_one_line_without_the_password_even_with_debug(tmp_path) -> None:
    ws = Workspace(tmp_path, f"postgresql://app:{PASSWORD}@127.0.0.1:1/vault")
    ws.config.write_text(f'[vault]\nstore = "{ws.store}"\n[keys.main]\nref = "local:main"\n')
    r = ws.run("secrets", "list")
    assert r.returncode == 7
    assert r.stderr.decode().splitlines() == [
        "keystead: error: vault database 'vault' on 127.0.0.1:1 unavailable while opening: connection failed: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused']
    debug = ws.run("--debug", "secrets", "list")
    assert debug.returncode == 7 and "Traceback" in debug.stderr.decode()
    _clean(r, debug)


def test_two_configs_with_different_keys_on_one_database(tmp_path, pg_url: str) -> None:
    a = Workspace(tmp_path / "a", pg_url)
    a.cli("init", "--dir", str(a.root), "--store", pg_url)
    a.cli("secrets", "set", "SHARED", input="from-a\n")
    b = Workspace(tmp_path / "b", pg_url)
    r = b.cli("init", "--dir", str(b.root), "--store", pg_url)  # its own key file: another local:main
    assert "already holds 1 secret(s) of another keystead config" in r.stderr
    got = b.run("secrets", "get", "SHARED")
    assert got.returncode == 6 and len(got.stderr.decode().splitlines()) == 1, got
    assert a.cli("secrets", "get", "SHARED").stdout.rstrip("\n") == "from-a"  # nothing was changed


def test_rotation_paused_by_a_killed_store_connection_resumes_with_nothing_half_written(
        tmp_path, pg_schema_url: str) -> None:
    env = make_env(tmp_path / "ws", store=pg_schema_url)  # 40 secrets, batches of 7
    with admin(pg_schema_url) as locker:
        locker.autocommit = False
        locker.execute("SELECT 1 FROM keystead_vault_slots WHERE secret = 'S000010' FOR UPDATE")  # batch 2 waits
        killer = kill_when_waiting(pg_schema_url)
        with env.vault() as vault:
            state = env.state()
            r = Engine(vault, state, now=DUE).run_key("main")
            state.close()
        killer.join()
        locker.rollback()
    assert r.outcome == "paused" and "vault store is unavailable" in r.message, r
    rot = latest(env)
    state = env.state()
    cursors = [lane.cursor for lane in state.lanes(rot.id)] or [rot.cursor]
    state.close()
    assert rot.rewrapped == 7 and cursors == ["S000006"]  # the durable cursor: after batch 1
    assert env.check_all_open() == {"2": 7, "1": 33}  # batch 1 whole, batch 2 not a slot of it
    with env.vault() as vault:
        state = env.state()
        assert Engine(vault, state, now=DUE).run_key("main").outcome == "done"
        state.close()
    assert env.check_all_open() == {"2": 40}


def test_db_upgrade_migrates_an_older_vault_that_commands_refuse(pg_ws: Workspace, pg_url: str, monkeypatch) -> None:
    from keystead.stores import pgschema

    pg_ws.cli("secrets", "set", "A", input="v\n")
    monkeypatch.setattr(pgschema, "SCHEMA_VERSION", 2)  # this keystead is one vault schema ahead of the database
    monkeypatch.setitem(pgschema.MIGRATIONS, 2, lambda conn: conn.exec_driver_sql(
        "CREATE INDEX keystead_vault_slots_by_version ON keystead_vault_slots (key, version)"))
    refused = pg_ws.cli("secrets", "get", "A", ok=False)
    assert refused.exit_code == 7 and "older than this keystead's 2: run `keystead db upgrade`" in refused.stderr
    assert "older: run `keystead db upgrade`" in pg_ws.cli("db", "status").stdout
    upgraded = pg_ws.cli("db", "upgrade")
    assert "schema version 1 -> 2" in upgraded.stderr
    assert pg_ws.cli("secrets", "get", "A").stdout.rstrip("\n") == "v"
    assert "schema 2 (this keystead: 2)  current" in pg_ws.cli("db", "status").stdout
    _clean(refused, upgraded)
