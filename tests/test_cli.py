"""The command line, end to end, on both stores: through click's runner and as a real process."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from keystead.errors import EXIT_CODES
from tests.conftest import Workspace


def test_set_get_list_rm(ws: Workspace) -> None:
    ws.cli("secrets", "set", "DB_URL", "--from-file", "/dev/null")
    ws.cli("secrets", "set", "API_KEY", input="k-123")
    assert ws.cli("secrets", "get", "API_KEY").stdout == "k-123"
    assert ws.cli("secrets", "get", "DB_URL").stdout == ""
    assert ws.cli("secrets", "list").stdout.split() == ["API_KEY", "DB_URL"]
    assert json.loads(ws.cli("secrets", "list", "--json").stdout) == ["API_KEY", "DB_URL"]
    ws.cli("secrets", "rm", "DB_URL")
    assert json.loads(ws.cli("secrets", "list", "--json").stdout) == ["API_KEY"]
    assert ws.cli("audit", "verify").exit_code == 0


def test_value_argument_warns_about_shell_history(ws: Workspace) -> None:
    result = ws.cli("secrets", "set", "TOKEN", "t0k3n")
    assert "shell history" in result.stderr
    assert "t0k3n" not in result.stderr
    assert ws.cli("secrets", "get", "TOKEN").stdout == "t0k3n"


def test_overwrite_keeps_one_secret(ws: Workspace) -> None:
    ws.cli("secrets", "set", "A", input="1")
    ws.cli("secrets", "set", "A", input="2")
    assert ws.cli("secrets", "get", "A").stdout == "2"
    assert ws.cli("secrets", "list").stdout.split() == ["A"]


def test_real_process_set_get_and_run_env(ws: Workspace) -> None:
    assert ws.run("secrets", "set", "GREETING", input=b"hello world").returncode == 0
    got = ws.run("secrets", "get", "GREETING")
    assert got.returncode == 0 and got.stdout == b"hello world"
    env = ws.run("run", "--", "env")
    assert env.returncode == 0
    assert "GREETING=hello world" in env.stdout.decode().splitlines()
    code = ws.run("run", "--", sys.executable, "-c", "import os,sys; sys.exit(len(os.environ['GREETING']))")
    assert code.returncode == len("hello world")
    missing = ws.run("run", "--", "no-such-command-keystead")
    assert missing.returncode == 127 and b"command not found" in missing.stderr
    assert ws.run("audit", "verify").returncode == 0


def test_import_export_round_trip(ws: Workspace, tmp_path) -> None:
    src = tmp_path / "in.env"
    src.write_text('A=1\nB="two words"\nC="line1\\nline2 \\"quoted\\""\n# comment\nexport D=4\n')
    ws.cli("secrets", "import", str(src))
    exported = ws.cli("secrets", "export", "--format", "json").stdout
    assert json.loads(exported) == {"A": "1", "B": "two words", "C": 'line1\nline2 "quoted"', "D": "4"}
    dotenv = tmp_path / "out.env"
    dotenv.write_text(ws.cli("secrets", "export").stdout)
    jsonfile = tmp_path / "in.json"
    jsonfile.write_text(json.dumps({"E": "é ✓", "F": "=x="}))
    ws.cli("secrets", "import", str(jsonfile))
    ws.cli("secrets", "rm", "A")
    ws.cli("secrets", "import", str(dotenv))
    assert json.loads(ws.cli("secrets", "export", "--format", "json").stdout) == {
        "A": "1", "B": "two words", "C": 'line1\nline2 "quoted"', "D": "4", "E": "é ✓", "F": "=x="}


def test_import_thousands_in_one_call(sqlite_ws: Workspace, tmp_path) -> None:
    src = tmp_path / "many.json"
    src.write_text(json.dumps({f"S{i:05d}": f"value-{i}" for i in range(3000)}))
    result = sqlite_ws.cli("secrets", "import", str(src))
    assert "imported 3000 secrets" in result.stderr
    assert sqlite_ws.cli("secrets", "get", "S02999").stdout == "value-2999"
    assert len(json.loads(sqlite_ws.cli("secrets", "list", "--json").stdout)) == 3000


def test_import_with_a_bad_name_changes_nothing(ws: Workspace, tmp_path) -> None:
    ws.cli("secrets", "set", "KEEP", input="x")
    src = tmp_path / "bad.json"
    src.write_text(json.dumps({"OK": "1", "../escape": "2"}))
    before = ws.snapshot()
    result = ws.cli("secrets", "import", str(src), ok=False)
    assert result.exit_code == EXIT_CODES["InputError"]
    assert ws.snapshot() == before


def test_keys_list_show_create(ws: Workspace) -> None:
    rows = json.loads(ws.cli("keys", "list", "--json").stdout)
    assert [(r["name"], r["ref"], r["provider"], r["primary"]) for r in rows] == [("main", "local:main", "local", "1")]
    shown = json.loads(ws.cli("keys", "show", "local:main", "--json").stdout)
    assert shown["versions"][0]["state"] == "enabled" and shown["rotation_period_days"] == 90
    assert "material" not in json.dumps(shown)
    ws.cli("keys", "create", "billing", "--period", "30")
    rows = json.loads(ws.cli("keys", "list", "--json").stdout)
    assert {r["name"]: r["rotation_period_days"] for r in rows} == {"main": 90, "billing": 30}
    assert ws.cli("keys", "show", "nope", ok=False).exit_code == EXIT_CODES["NotFoundError"]
    assert ws.cli("keys", "create", "billing", ok=False).exit_code == EXIT_CODES["InputError"]
    ws.cli("audit", "verify")


def test_key_file_is_0600_and_unsafe_mode_is_refused_cleanly(ws: Workspace) -> None:
    key_file = ws.root / ".keystead" / "keys.json"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key_file.parent).st_mode) == 0o700
    ws.cli("secrets", "set", "A", input="1")
    os.chmod(key_file, 0o644)
    result = ws.run("secrets", "get", "A")
    assert result.returncode == EXIT_CODES["ProviderError"]
    assert b"chmod 600" in result.stderr and b"Traceback" not in result.stderr
    assert len(result.stderr.decode().strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "-flag", "x" * 256])
def test_bad_secret_names_are_refused_and_nothing_escapes(ws: Workspace, name: str) -> None:
    before = ws.snapshot()
    result = ws.run("secrets", "set", "--", name, input=b"v")
    assert result.returncode == EXIT_CODES["InputError"], result.stderr
    assert b"invalid secret name" in result.stderr and b"Traceback" not in result.stderr
    assert ws.snapshot() == before
    assert not (ws.root.parent / "x.json").exists() and not (ws.root / "x.json").exists()


def test_unknown_secret(ws: Workspace) -> None:
    result = ws.run("secrets", "get", "NOPE")
    assert result.returncode == EXIT_CODES["NotFoundError"] and b"NOPE" in result.stderr


def test_zero_and_ten_mib_values(ws: Workspace, tmp_path) -> None:
    big = os.urandom(10 * 1024 * 1024)
    (tmp_path / "big").write_bytes(big)
    ws.cli("secrets", "set", "BIG", "--from-file", str(tmp_path / "big"))
    assert ws.run("secrets", "get", "BIG").stdout == big
    ws.cli("secrets", "set", "EMPTY", input="")
    assert ws.run("secrets", "get", "EMPTY").stdout == b""


def test_missing_and_malformed_config(tmp_path) -> None:
    ws = Workspace(tmp_path, "")
    result = ws.run("secrets", "list")
    assert result.returncode == EXIT_CODES["ConfigError"] and b"keystead init" in result.stderr
    (tmp_path / "keystead.toml").write_text("[vault\n")
    result = ws.run("secrets", "list")
    assert result.returncode == EXIT_CODES["ConfigError"] and b"not valid TOML" in result.stderr
    assert b"Traceback" not in result.stderr


def test_debug_shows_the_traceback(ws: Workspace) -> None:
    result = ws.run("--debug", "secrets", "get", "NOPE")
    assert result.returncode != 0 and b"Traceback" in result.stderr


def test_init_twice_is_refused(ws: Workspace) -> None:
    result = ws.cli("init", "--dir", str(ws.root), ok=False)
    assert result.exit_code == EXIT_CODES["InputError"] and "already" in result.stderr


def test_keys_create_with_a_dotted_name_keeps_the_config_valid(ws: Workspace) -> None:
    # check_name allows '.', and a bare [keys.a.b] header is a nested TOML table.
    ws.cli("keys", "create", "team.billing", "--period", "30")
    rows = json.loads(ws.cli("keys", "list", "--json").stdout)
    assert {r["name"]: (r["ref"], r["rotation_period_days"]) for r in rows} == {
        "main": ("local:main", 90),
        "team.billing": ("local:team.billing", 30),
    }


def test_keys_create_refuses_a_name_too_long_for_a_local_ref(ws: Workspace) -> None:
    before = ws.snapshot()
    result = ws.cli("keys", "create", "k" * 65, ok=False)
    assert result.exit_code == EXIT_CODES["InputError"] and "too long" in result.stderr
    assert ws.snapshot() == before
    ws.cli("keys", "create", "k" * 64)
    assert len(json.loads(ws.cli("keys", "list", "--json").stdout)) == 2


def test_an_internal_error_is_one_line_and_exit_70(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    # docs/cli.md: 70 is an internal error (a bug), one line unless --debug.
    from keystead.vault import Vault

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(Vault, "names", broken)
    result = ws.cli("secrets", "list", ok=False)
    assert result.exit_code == 70
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "--debug" in result.stderr
    debug = ws.cli("--debug", "secrets", "list", ok=False)
    assert debug.exit_code == 70 and "Traceback" in debug.stderr


PEM = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"


@pytest.mark.parametrize("text, line, what", [
    (f"A=1\nKEY=-----BEGIN PRIVATE KEY-----\n{PEM}\n-----END PRIVATE KEY-----\n", 3, "has no '='"),
    ("A=1\nSINGLE='it''s'\n", 2, "is not NAME=VALUE"),
    ('A=1\nUNTERMINATED="abc\n', 2, "is not NAME=VALUE"),
    ("A=1\n=novalue\n", 2, "is not NAME=VALUE"),
    ("A=1\nBAD NAME=x\n", 2, "is not NAME=VALUE"),
    ("A=1\nDUP=1\nDUP=2\n", 3, "sets DUP again (first set on line 2)"),
])
def test_a_bad_dotenv_line_is_named_by_number_quotes_nothing_and_imports_nothing(
        ws: Workspace, tmp_path, text: str, line: int, what: str) -> None:
    src = tmp_path / "in.env"
    src.write_text(text)
    before = ws.snapshot()
    result = ws.run("secrets", "import", str(src))
    err = result.stderr.decode()
    assert result.returncode == EXIT_CODES["InputError"], err
    assert f"line {line}" in err and what in err and "nothing was imported" in err
    assert PEM not in err and "BEGIN" not in err and "novalue" not in err and "it''s" not in err
    assert ws.snapshot() == before
