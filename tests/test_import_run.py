"""secrets import --dry-run/--no-overwrite, YAML and sops files; run --only/--prefix/--no-override (issue 10)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pyrage import x25519

from keystead.cli import formats
from keystead.errors import EXIT_CODES
from tests.conftest import Workspace

SOPS = formats.sops_binary()


def exported(ws: Workspace) -> dict[str, str]:
    return json.loads(ws.cli("secrets", "export", "--format", "json").stdout)


def test_import_dry_run_and_no_overwrite(ws: Workspace, tmp_path: Path) -> None:
    ws.cli("secrets", "set", "A", input="old")
    src = tmp_path / "in.env"
    src.write_text("A=new\nB=2\n")
    snapshot = ws.snapshot()
    dry = ws.cli("secrets", "import", str(src), "--dry-run")
    assert dry.stdout.splitlines() == ["A: overwrite", "B: new"]
    assert "would import 2 secrets (1 new, 1 overwritten)" in dry.stderr
    assert ws.snapshot() == snapshot
    kept = ws.cli("secrets", "import", str(src), "--no-overwrite")
    assert "imported 1 secret; kept 1 that already existed" in kept.stderr
    assert exported(ws) == {"A": "old", "B": "2"}


def test_yaml_import(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "s.yaml"
    src.write_text("# comment\nDB_URL: postgres://x\nPORT: 5432\nMULTI: |\n  line1\n  line2\n")
    ws.cli("secrets", "import", str(src))
    assert exported(ws) == {"DB_URL": "postgres://x", "PORT": "5432", "MULTI": "line1\nline2\n"}


@pytest.mark.parametrize("text,words", [
    ("A: 1\nA: 2\n", "line 3 sets A again (first set on line 2)"),
    ("A: [1, 2\n", "is not valid YAML"),
    ("- a\n- b\n", "expected a YAML mapping"),
    ("A: true\n", "not a string"),
    ("bad/name: x\n", "not a valid secret name"),
])
def test_bad_yaml_imports_nothing(ws: Workspace, tmp_path: Path, text, words) -> None:
    src = tmp_path / "bad.yml"
    src.write_text("OK: fine\n" + text if not text.startswith("-") else text)
    snapshot = ws.snapshot()
    result = ws.run("secrets", "import", str(src))
    err = result.stderr.decode()
    assert result.returncode == EXIT_CODES["InputError"] and words in err and len(err.strip().splitlines()) == 1
    assert ws.snapshot() == snapshot


def _sops_files(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    ident = x25519.Identity.generate()
    key = tmp_path / "sops-age.txt"
    key.write_text(str(ident) + "\n")
    plain = {"dotenv": ("plain.env", "SOPS_A=alpha\nSOPS_B=two words\n"),
             "json": ("plain.json", json.dumps({"SOPS_J": "jay"})),
             "yaml": ("plain.yaml", "SOPS_Y: why\n")}
    out = {}
    for fmt, (name, text) in plain.items():
        (tmp_path / name).write_text(text)
        enc = subprocess.run([SOPS, "--encrypt", "--age", str(ident.to_public()), "--input-type", fmt,
                              "--output-type", fmt, str(tmp_path / name)], capture_output=True, check=True).stdout
        out[fmt] = tmp_path / f"enc.{ {'dotenv': 'env', 'json': 'json', 'yaml': 'yaml'}[fmt] }"
        out[fmt].write_bytes(enc)
    return key, out


@pytest.mark.skipif(SOPS is None, reason="the sops binary (bench extra: sops-binary) is not installed")
def test_sops_files_are_decrypted_through_sops(ws: Workspace, tmp_path: Path) -> None:
    key, files = _sops_files(tmp_path)
    env = {"SOPS_AGE_KEY_FILE": str(key)}
    for fmt, path in files.items():
        result = ws.run("secrets", "import", str(path), env=env)
        assert result.returncode == 0, (fmt, result.stderr)
        assert b"decrypted through sops" in result.stderr
    assert exported(ws) == {"SOPS_A": "alpha", "SOPS_B": "two words", "SOPS_J": "jay", "SOPS_Y": "why"}
    records = [json.loads(line) for line in (ws.root / ".keystead" / "audit.log").read_text().splitlines()]
    imports = [r for r in records if r["action"] == "secrets.import"]
    assert [r["details"]["source"] for r in imports] == ["sops"] * 3
    assert imports[0]["details"]["file"] == str(files["dotenv"])
    # Without the identity sops cannot decrypt: one line, exit 2, nothing imported.
    snapshot = ws.snapshot()
    refused = ws.run("secrets", "import", str(files["dotenv"]), env={"SOPS_AGE_KEY_FILE": str(tmp_path / "none")})
    assert refused.returncode == EXIT_CODES["InputError"] and b"sops could not decrypt" in refused.stderr
    assert ws.snapshot() == snapshot


@pytest.mark.skipif(SOPS is None, reason="the sops binary (bench extra: sops-binary) is not installed")
def test_sops_file_without_the_binary_says_how_to_proceed(ws: Workspace, tmp_path: Path, monkeypatch) -> None:
    _key, files = _sops_files(tmp_path)
    monkeypatch.setattr(formats, "sops_binary", lambda: None)
    snapshot = ws.snapshot()
    for path in files.values():
        result = ws.cli("secrets", "import", str(path), ok=False)
        assert result.exit_code == EXIT_CODES["InputError"]
        assert "encrypted with sops" in result.stderr and "sops --decrypt" in result.stderr
    assert ws.snapshot() == snapshot


def env_of(ws: Workspace, *args: str, env: dict | None = None) -> dict[str, str]:
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    result = ws.run("run", *args, "--", sys.executable, "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_run_only_prefix_and_no_override(ws: Workspace) -> None:
    for name, value in {"APP_DB": "db", "APP_KEY": "k", "OTHER": "o"}.items():
        ws.cli("secrets", "set", name, input=value)
    got = env_of(ws, "--only", "APP_DB")
    assert got["APP_DB"] == "db" and "APP_KEY" not in got and "OTHER" not in got
    got = env_of(ws, "--prefix", "APP_")
    assert got["APP_DB"] == "db" and got["APP_KEY"] == "k" and "OTHER" not in got
    assert env_of(ws, env={"OTHER": "from-shell"})["OTHER"] == "o"  # by default the secret wins
    assert env_of(ws, "--no-override", env={"OTHER": "from-shell"})["OTHER"] == "from-shell"


def test_run_refuses_names_a_shell_cannot_use(ws: Workspace) -> None:
    ws.cli("secrets", "set", "A-B", input="x")
    ws.cli("secrets", "set", "a.b", input="y")
    ws.cli("secrets", "set", "FINE", input="z")
    refused = ws.run("run", "--", "true")
    assert refused.returncode == EXIT_CODES["InputError"]
    assert b"A-B, a.b" in refused.stderr and b"--allow-odd-names" in refused.stderr
    assert env_of(ws, "--allow-odd-names")["A-B"] == "x"
    assert env_of(ws, "--only", "FINE")["FINE"] == "z"


@pytest.mark.parametrize("args,code", [
    (("--only", "NOPE"), "NotFoundError"),
    (("--only", "../x"), "InputError"),
    (("--only", "A", "--prefix", "A"), "InputError"),
])
def test_run_bad_input(ws: Workspace, args, code) -> None:
    ws.cli("secrets", "set", "A", input="a")
    result = ws.run("run", *args, "--", "true")
    assert result.returncode == EXIT_CODES[code], result.stderr


def test_audit_show_filters(ws: Workspace) -> None:
    ws.cli("secrets", "set", "A", input="a")
    ws.cli("secrets", "get", "A")
    ws.run("secrets", "set", "B", input=b"b", env={"KEYSTEAD_ACTOR": "ci@runner"})

    def show(*args: str) -> list[dict]:
        return json.loads(ws.cli("audit", "show", "--json", *args).stdout)

    assert [r["action"] for r in show("--secret", "A")] == ["secrets.set", "secrets.get"]
    assert [r["secret"] for r in show("--actor", "ci@runner")] == ["B"]
    assert [r["secret"] for r in show("--action", "secrets.set")] == ["A", "B"]
    assert {r["action"] for r in show("--action", "secrets.")} == {"secrets.set", "secrets.get"}
    assert show("--since", "2999-01-01") == []
    assert len(show("--since", "2000-01-01", "--last", "2")) == 2
    bad = ws.run("audit", "show", "--since", "yesterday")
    assert bad.returncode == EXIT_CODES["InputError"] and b"--since" in bad.stderr


def test_shell_completion_of_secret_and_key_names(ws: Workspace) -> None:
    ws.cli("secrets", "set", "APP_DB", input="x")
    ws.cli("secrets", "set", "OTHER", input="y")
    env = {"_KEYSTEAD_COMPLETE": "bash_complete", "COMP_CWORD": "3"}
    got = ws.run(env={**env, "COMP_WORDS": "keystead secrets get AP"})
    assert got.stdout.decode().split() == ["plain,APP_DB"]
    keys = ws.run(env={**env, "COMP_WORDS": "keystead keys show m"})
    assert keys.stdout.decode().split() == ["plain,main"]
