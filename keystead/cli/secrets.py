"""`keystead secrets ...` and `keystead run -- CMD`."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from keystead.cli.app import App, complete_secret, deferred_interrupt, json_option, pass_app, print_json, say
from keystead.cli.formats import render_dotenv
from keystead.errors import InputError, KeysteadError

COMMAND_NOT_FOUND = 127


@click.group()
def secrets() -> None:
    """Set, get, list, remove, import and export secrets."""


def _read_value(value: str | None, from_file: str | None) -> bytes:
    if value is not None and from_file is not None:
        raise InputError("give the value as an argument or with --from-file, not both")
    if from_file is not None:
        try:
            return Path(from_file).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {from_file}: {exc.strerror}") from None
    if value is not None:
        say(
            "[yellow]warning:[/] a value given as an argument lands in your shell history; "
            "prefer --from-file or standard input"
        )
        return value.encode()
    if sys.stdin.isatty():
        return click.prompt("value", hide_input=True, err=True).encode()
    return sys.stdin.buffer.read()


@secrets.command("set")
@click.argument("name")
@click.argument("value", required=False)
@click.option("--from-file", type=click.Path(dir_okay=False), help="Read the value from this file.")
@pass_app
def set_(app: App, name: str, value: str | None, from_file: str | None) -> None:
    """Store NAME (value from VALUE, --from-file, or standard input)."""
    envelope = app.vault.set(name, _read_value(value, from_file))
    say(f"stored {name} ({len(envelope.slots)} slot{'s' if len(envelope.slots) != 1 else ''})")


@secrets.command("get")
@click.argument("name", shell_complete=complete_secret)
@pass_app
def get(app: App, name: str) -> None:
    """Print the value of NAME."""
    value = app.vault.get(name)
    out = sys.stdout.buffer
    out.write(value)
    if sys.stdout.isatty() and not value.endswith(b"\n"):
        out.write(b"\n")
    out.flush()


@secrets.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """List secret names (never values)."""
    names = app.vault.names()
    if as_json:
        print_json(names)
    else:
        for name in names:
            click.echo(name)


@secrets.command("rm")
@click.argument("name", shell_complete=complete_secret)
@pass_app
def rm(app: App, name: str) -> None:
    """Remove NAME."""
    app.vault.delete(name)
    say(f"removed {name}")


@secrets.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(["auto", "dotenv", "json", "yaml"]), default="auto",
              show_default=True, help="auto: .yaml/.yml is YAML, a file starting with '{' JSON, else dotenv.")
@click.option("--dry-run", is_flag=True, help="Say what would be imported (new, overwritten); change nothing.")
@click.option("--no-overwrite", is_flag=True, help="Keep secrets that already exist; import only new names.")
@pass_app
def import_(app: App, file: str, fmt: str, dry_run: bool, no_overwrite: bool) -> None:
    """Import a dotenv file, a JSON object or a YAML mapping of name: value ('-' reads standard input).

    \b
    A sops-encrypted file is decrypted through `sops --decrypt` (sops on PATH),
    never imported as its ciphertext.
    sqlite: one transaction, all secrets or none.
    dir:    each secret's file is written atomically; the import as a whole
            is not: after a failure or Ctrl-C, the secrets written so far
            stay, and the message and the audit record say how many.
    """
    from keystead.cli.formats import read_secrets_file
    from keystead.envelope import check_name

    with deferred_interrupt() as stop:  # Ctrl-C ends the import between two secrets, and says so
        items, source = read_secrets_file(file, fmt)
        for name in items:
            check_name(name)
        existing = set(app.vault.names()) if dry_run or no_overwrite else set()
        kept = [n for n in items if n in existing] if no_overwrite else []
        if kept:
            items = {k: v for k, v in items.items() if k not in existing}
        if dry_run:
            for name in items:
                click.echo(f"{name}: {'overwrite' if name in existing else 'new'}")
            for name in kept:
                click.echo(f"{name}: kept (exists)")
            over = sum(n in existing for n in items)
            say(f"would import {len(items)} secret{'s' if len(items) != 1 else ''} ({len(items) - over} new, "
                f"{over} overwritten{f', {len(kept)} kept' if kept else ''}) (dry run: nothing changed)")
            return
        extra = {"source": source, "file": "-" if file == "-" else os.path.abspath(file)} if source else {}
        count = app.vault.import_many({k: v.encode() for k, v in items.items()}, stop=stop.is_set, **extra)
        say(f"imported {count} secret{'s' if count != 1 else ''}"
            + (" (decrypted through sops)" if source else "")
            + (f"; kept {len(kept)} that already existed" if kept else ""))


@secrets.command("export")
@click.option("--format", "fmt", type=click.Choice(["dotenv", "json"]), default="dotenv", show_default=True)
@pass_app
def export(app: App, fmt: str) -> None:
    """Print every secret decrypted, as dotenv or JSON."""
    items = {name: _text(name, value) for name, value in app.vault.export()}
    if fmt == "json":
        print_json(items)
    else:
        sys.stdout.write(render_dotenv(items))


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"secret {name!r} is binary, not UTF-8 text: read it with `keystead secrets get`") from None


_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--only", "only", multiple=True, metavar="NAME", shell_complete=complete_secret,
              help="Only this secret (repeatable).")
@click.option("--prefix", "prefixes", multiple=True, metavar="P", help="Only secrets named P... (repeatable).")
@click.option("--no-override", is_flag=True, help="A variable already in the environment wins over the secret.")
@click.option("--allow-odd-names", is_flag=True, help="Also pass names a shell cannot use as variables (A-B, a.b).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_app
def run(app: App, only: tuple[str, ...], prefixes: tuple[str, ...], no_override: bool, allow_odd_names: bool,
        command: tuple[str, ...]) -> None:
    """Run COMMAND with the secrets as environment variables (`keystead run [--only N | --prefix P] -- CMD ARGS...`).

    A secret overrides a variable of the same name already in the
    environment, unless --no-override.
    """
    from keystead.envelope import check_name

    if only and prefixes:
        raise InputError("give --only or --prefix, not both")
    for n in only:
        check_name(n)
    env = dict(os.environ)
    vault = app.vault
    chosen = sorted(set(only), key=str.encode) if only else [
        n for n in vault.store.names() if not prefixes or n.startswith(prefixes)]
    if only:
        for n in chosen:
            vault.store.get(n)  # NotFoundError (exit 4) before anything runs
    odd = [n for n in chosen if not _SHELL_NAME.fullmatch(n)]
    if odd and not allow_odd_names:
        shown = ", ".join(odd[:10]) + (f" and {len(odd) - 10} more" if len(odd) > 10 else "")
        raise InputError(f"{len(odd)} secret name(s) a shell cannot use as a variable: {shown}; "
                         "leave them out with --only/--prefix, rename them (keystead secrets mv), "
                         "or pass --allow-odd-names")
    wanted = {n for n in chosen if not (no_override and n in os.environ)}
    count, used = 0, set[str]()
    try:  # one audit record for the whole run (not a secrets.export as well)
        envelopes = (vault.store.get(n) for n in chosen) if only else vault.store.iter_envelopes()
        for envelope in envelopes:
            if envelope.name not in wanted:
                continue
            env[envelope.name] = _text(envelope.name, vault.open_envelope(envelope.name, envelope))
            used.update(s.key for s in envelope.slots)
            count += 1
    except KeysteadError as exc:
        vault.audit.append("run", key=" ".join(sorted(used)) or None, command=command[0], count=count,
                           result=type(exc).__name__)
        raise
    kept = len(chosen) - len(wanted)
    extra: dict[str, Any] = {"kept_from_environment": kept} if kept else {}
    vault.audit.append("run", key=" ".join(sorted(used)) or None, command=command[0], count=count, **extra)
    app.close()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), env)
    except FileNotFoundError:
        click.echo(f"keystead: error: command not found: {command[0]}", err=True)
        raise SystemExit(COMMAND_NOT_FOUND) from None
    except PermissionError:
        click.echo(f"keystead: error: permission denied: {command[0]}", err=True)
        raise SystemExit(126) from None


# Commands of the team workflow (issue 10), kept in their own modules.
from keystead.cli.everyday import cp, edit, mv, show  # noqa: E402
from keystead.cli.slots import reseal_cmd  # noqa: E402

for _command in (show, edit, mv, cp):
    secrets.add_command(_command)
secrets.add_command(reseal_cmd, "reseal")
