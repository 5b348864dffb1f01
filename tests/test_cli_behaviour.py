"""The command line under pipes, signals, terminals and careless input (issue 11), as real processes."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keystead.errors import EXIT_CODES
from tests.conftest import Workspace

KEYSTEAD = [sys.executable, "-m", "keystead.cli"]


def piped_to_head(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    """``keystead ARGS | head -1`` with pipefail: keystead's own exit code and stderr."""
    env = {**os.environ, "KEYSTEAD_CONFIG": str(ws.config)}
    proc = subprocess.Popen([*KEYSTEAD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ws.root)
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, as head does
    err = proc.stderr.read()
    proc.stderr.close()
    return subprocess.CompletedProcess(args, proc.wait(timeout=60), b"", err)


def on_a_terminal(ws: Workspace, *args: str, columns: int = 40) -> str:
    """Run keystead with its standard output on a pseudo-terminal ``columns`` wide."""
    leader, follower = pty.openpty()
    env = {**os.environ, "KEYSTEAD_CONFIG": str(ws.config), "COLUMNS": str(columns), "TERM": "xterm"}
    proc = subprocess.Popen([*KEYSTEAD, *args], stdout=follower, stderr=subprocess.PIPE, env=env, cwd=ws.root)
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 0, err
    return out.decode()


# -- pipes and terminals ---------------------------------------------------------------

def test_a_closed_pipe_ends_every_command_quietly(sqlite_ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "many.json"
    src.write_text(json.dumps({f"S{i:05d}": "v" for i in range(3000)}))
    sqlite_ws.cli("secrets", "import", str(src))
    root = Path(__file__).resolve().parents[1]  # the repository: its Pulumi.yaml and Pulumi.dev.yaml
    for args in (("secrets", "list"), ("audit", "show", "--last", "3000"), ("secrets", "export"),
                 ("keys", "list"), ("secrets", "list", "--json"), ("plan", "--dir", str(root))):
        result = piped_to_head(sqlite_ws, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stderr == b"", (args, result.stderr)


def test_piped_tables_print_full_values_in_plain_columns(sqlite_ws: Workspace) -> None:
    out = sqlite_ws.run("keys", "list").stdout.decode()
    header, row = out.splitlines()
    assert header.split() == ["name", "ref", "provider", "primary", "versions", "last", "rotated", "next", "due"]
    assert "local:main" in row and "…" not in out and "─" not in out
    assert len(row.split()[-1]) == len("2027-03-01")  # a whole date, not 2026-12-…
    status = sqlite_ws.run("status").stdout.decode()
    assert "…" not in status and "up to date" in status
    shown = sqlite_ws.run("audit", "show").stdout.decode().splitlines()
    assert shown[0].split() == ["seq", "time", "actor", "action", "secret", "key", "result"]
    assert "tester@keystead" in shown[1] and "keys.create" in shown[1]


def test_a_narrow_terminal_folds_long_cells_instead_of_cutting_them(sqlite_ws: Workspace) -> None:
    import re

    out = re.sub(r"\x1b\[[0-9;]*m", "", on_a_terminal(sqlite_ws, "keys", "list", columns=40))
    assert "…" not in out
    rows = [line.split("│") for line in out.splitlines() if line.startswith("│")]
    assert "".join(r[2].strip() for r in rows) == "local:main"  # the ref column, folded over lines
    assert "".join(r[7].strip() for r in rows) == "2027-03-01" or "-" in "".join(r[7] for r in rows)


@pytest.mark.parametrize("flag", ["--profile", "--config", "--debug"])
def test_global_options_work_after_the_subcommand(sqlite_ws: Workspace, flag: str) -> None:
    sqlite_ws.cli("secrets", "set", "A", input="1")
    if flag == "--profile":
        bad = sqlite_ws.run("secrets", "list", "--profile", "nope")
        assert bad.returncode == EXIT_CODES["ConfigError"] and b"unknown profile 'nope'" in bad.stderr
    elif flag == "--config":
        r = subprocess.run([*KEYSTEAD, "secrets", "list", "--config", str(sqlite_ws.config)], capture_output=True,
                           cwd="/", env={k: v for k, v in os.environ.items() if k != "KEYSTEAD_CONFIG"})
        assert r.returncode == 0 and r.stdout.split() == [b"A"]
    else:
        r = sqlite_ws.run("secrets", "get", "NOPE", "--debug")
        assert r.returncode == EXIT_CODES["NotFoundError"] and b"Traceback" in r.stderr


# -- signals ---------------------------------------------------------------------------

def _start(ws: Workspace, *args: str) -> subprocess.Popen:
    env = {**os.environ, "KEYSTEAD_CONFIG": str(ws.config)}
    return subprocess.Popen([*KEYSTEAD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ws.root)


def test_interrupted_dir_import_records_and_says_how_many(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, "dir:secrets")
    ws.cli("init", "--dir", str(tmp_path), "--store", ws.store)
    src = tmp_path / "big.env"
    src.write_text("".join(f"S{i:05d}=v{i}\n" for i in range(20000)))
    proc = _start(ws, "secrets", "import", str(src))
    secrets = tmp_path / "secrets"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(secrets.glob("*.json"))) < 200:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    on_disk = len(list(secrets.glob("*.json")))
    assert proc.returncode == 130, err
    assert err.decode().strip() == f"keystead: interrupted after {on_disk} of 20000 secrets"
    last = json.loads(ws.cli("audit", "show", "--last", "1", "--json").stdout)[0]
    assert last["action"] == "secrets.import" and last["result"] == "Interrupted"
    assert last["details"] == {"count": 20000, "written": on_disk}
    assert ws.run("audit", "verify").returncode == 0


def test_an_import_is_either_finished_or_interrupted_never_both(sqlite_ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "big.env"
    src.write_text("".join(f"S{i:05d}=v{i}\n" for i in range(5000)))
    for delay in (0.35, 0.5, 0.7):
        proc = _start(sqlite_ws, "secrets", "import", str(src))
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        text = err.decode()
        if "imported 5000 secrets" in text:
            assert proc.returncode == 0 and "interrupted" not in text, text
        else:
            assert proc.returncode == 130 and text.count("\n") == 1 and "Traceback" not in text, text
    assert sqlite_ws.run("audit", "verify").returncode == 0


@pytest.mark.parametrize("delay", [0.005, 0.015, 0.03, 0.06, 0.1, 0.15])
def test_ctrl_c_during_start_up_prints_one_line(sqlite_ws: Workspace, delay: float) -> None:
    # A real SIGINT, timed from inside the process so that it lands while keystead is still
    # importing. The interpreter's own start-up and the search for the keystead package on
    # sys.path (a long site-packages listing) come before any keystead code: they are Python's to
    # handle, so the clock starts once the (empty) package is found. An interval timer, not a
    # timer thread: starting a thread waits for it, and a SIGINT landing in that wait would be
    # the test's own, not keystead's (seen on a loaded machine).
    code = ("import os, signal, keystead;"
            "signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT));"
            f"signal.setitimer(signal.ITIMER_REAL, {delay!r}); from keystead.cli import main; main()")
    env = {**os.environ, "KEYSTEAD_CONFIG": str(sqlite_ws.config)}
    r = subprocess.run([sys.executable, "-c", code, "secrets", "list"], capture_output=True, env=env, timeout=30)
    if r.returncode == 0:  # finished first: nothing to say
        return
    assert r.returncode == 130 and r.stderr == b"keystead: interrupted\n", r.stderr


def test_import_help_says_what_is_atomic(sqlite_ws: Workspace) -> None:
    text = sqlite_ws.cli("secrets", "import", "--help").stdout
    assert "one transaction, all secrets or none" in text and "written atomically" in text


# -- messages --------------------------------------------------------------------------

def test_policy_lint_errors_use_the_keystead_prefix(sqlite_ws: Workspace, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = sqlite_ws.run("policy", "lint", str(bad))
    assert r.returncode == 2 and r.stderr.startswith(b"keystead: error: ")


def test_keys_create_names_the_real_limit_and_no_profile_hint(sqlite_ws: Workspace) -> None:
    r = sqlite_ws.run("keys", "create", "bad name/x")
    assert r.returncode == EXIT_CODES["InputError"] and b"1-64" in r.stderr and b"255" not in r.stderr
    ok = sqlite_ws.run("keys", "create", "billing")
    assert ok.returncode == 0 and b"profile" not in ok.stderr and b"every new secret" in ok.stderr


def test_an_empty_config_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "keystead.toml").write_text("# nothing here\n")
    r = subprocess.run([*KEYSTEAD, "secrets", "list"], capture_output=True, cwd=tmp_path,
                       env={k: v for k, v in os.environ.items() if k != "KEYSTEAD_CONFIG"})
    assert r.returncode == EXIT_CODES["ConfigError"] and b"keystead.toml" in r.stderr
    assert not (tmp_path / ".keystead").exists()


# -- init ------------------------------------------------------------------------------

def test_init_keeps_the_private_folder_out_of_git_and_tight(tmp_path: Path) -> None:
    private = tmp_path / ".keystead"
    private.mkdir(mode=0o755)
    private.chmod(0o755)
    r = subprocess.run([*KEYSTEAD, "init", "--store", "dir:secrets"], capture_output=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (private / ".gitignore").read_text().splitlines()[-1] == "*"
    assert private.stat().st_mode & 0o777 == 0o700
    assert b"tightened to 0700" in r.stderr and b".gitignore" in r.stderr


# -- the audit trail -------------------------------------------------------------------

def _audit_files(ws: Workspace) -> tuple[Path, Path]:
    log = ws.root / ".keystead" / "audit.log"
    return log, log.with_name("audit.log.head")


def test_sqlite_vault_anchors_the_chain(sqlite_ws: Workspace) -> None:
    sqlite_ws.cli("secrets", "set", "A", input="1")
    log, head = _audit_files(sqlite_ws)
    head.unlink()  # only the head lost: the anchor vouches for the log
    assert sqlite_ws.run("secrets", "get", "A").stdout == b"1"
    assert sqlite_ws.run("audit", "verify").returncode == 0
    log.unlink()
    head.unlink()  # the whole trail deleted: no longer passes
    r = sqlite_ws.run("audit", "verify")
    assert r.returncode == EXIT_CODES["AuditError"] and b"vault database says it reached record" in r.stderr
    assert sqlite_ws.run("secrets", "get", "A").returncode == EXIT_CODES["AuditError"]
    lines = log.read_bytes().splitlines() if log.exists() else []
    assert lines == []  # a refused append writes nothing


def test_a_shorter_log_is_reported_by_the_anchor(sqlite_ws: Workspace) -> None:
    for name in ("A", "B", "C"):
        sqlite_ws.cli("secrets", "set", name, input="x")
    log, head = _audit_files(sqlite_ws)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-2]))
    record = json.loads(lines[-3])
    head.write_text(json.dumps({"seq": record["seq"], "hash": record["hash"]}))  # both files forged
    r = sqlite_ws.run("audit", "verify")
    assert r.returncode == EXIT_CODES["AuditError"] and b"records after" in r.stderr


def test_audit_reset_is_the_documented_way_out(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, "dir:secrets")
    ws.cli("init", "--dir", str(tmp_path), "--store", ws.store)
    ws.cli("secrets", "set", "A", input="1")
    log, head = _audit_files(ws)
    head.unlink()
    assert ws.run("secrets", "get", "A").returncode == EXIT_CODES["AuditError"]
    verify = ws.run("audit", "verify")
    assert verify.returncode == EXIT_CODES["AuditError"] and b"audit reset --reason" in verify.stderr
    last = json.loads(log.read_bytes().splitlines()[-1])
    r = ws.run("audit", "reset", "--reason", "head lost in a disk move")
    assert r.returncode == 0, r.stderr
    first = json.loads(log.read_bytes().splitlines()[0])
    assert first["seq"] == 1 and first["action"] == "audit.reset"
    assert first["details"]["reason"] == "head lost in a disk move"
    assert first["details"]["old_last"] == {"seq": last["seq"], "hash": last["hash"]}
    assert first["details"]["secrets"] == 1
    assert (log.parent / first["details"]["old_log"]).is_file()
    assert ws.run("secrets", "get", "A").stdout == b"1"
    assert ws.run("audit", "verify").returncode == 0


def test_a_dir_store_chain_that_starts_late_says_how_many_secrets(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, "dir:secrets")
    ws.cli("init", "--dir", str(tmp_path), "--store", ws.store)
    ws.cli("secrets", "set", "A", input="1")
    ws.cli("secrets", "set", "B", input="2")
    for f in _audit_files(ws):
        f.unlink()  # a fresh clone: secrets from git, no log of its own
    verify = ws.run("audit", "verify")
    assert verify.returncode == 0 and b"holds 2 secret(s)" in verify.stderr
    ws.run("secrets", "get", "A")
    first = json.loads(_audit_files(ws)[0].read_bytes().splitlines()[0])
    assert first["action"] == "audit.start" and first["details"] == {"secrets": 2}


def test_run_writes_one_record_naming_its_keys(sqlite_ws: Workspace) -> None:
    sqlite_ws.cli("secrets", "set", "A", input="1")
    before = len(json.loads(sqlite_ws.cli("audit", "show", "--last", "1000", "--json").stdout))
    assert sqlite_ws.run("run", "--", "true").returncode == 0
    records = json.loads(sqlite_ws.cli("audit", "show", "--last", "1000", "--json").stdout)
    assert len(records) == before + 1
    assert records[-1]["action"] == "run" and records[-1]["key"] == "local:main"


def test_from_audit_reads_a_log_of_a_real_rotation_and_real_reads(sqlite_ws: Workspace) -> None:
    sqlite_ws.cli("secrets", "set", "A", input="1")
    assert sqlite_ws.run("secrets", "get", "A").returncode == 0
    rotated = sqlite_ws.run("rotate", "main", "--force")
    assert rotated.returncode == 0, rotated.stderr
    log = _audit_files(sqlite_ws)[0]
    records = [json.loads(line) for line in log.read_bytes().splitlines()]
    actions = {r["action"] for r in records}
    assert {"rotation.rotate", "rotation.rewrap", "secrets.get", "secrets.set"} <= actions
    assert all(r["key"] == "local:main" for r in records if r["action"] in ("secrets.get", "secrets.set"))
    out = sqlite_ws.run("policy", "from-audit", "--audit", str(log), "--principal", "tester@keystead")
    assert out.returncode == 0, out.stderr
    proposal = json.loads(out.stdout)
    assert proposal["records"] == len([r for r in records if r["result"] == "ok"])
    assert proposal["unmapped"] == []  # every record keystead wrote is understood
