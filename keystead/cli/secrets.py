"""`keystead secrets ...` and `keystead run -- CMD`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from keystead.cli.app import App, deferred_interrupt, json_option, pass_app, print_json, say
from keystead.cli.formats import parse_secrets_file, render_dotenv
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
@click.argument("name")
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
@click.argument("name")
@pass_app
def rm(app: App, name: str) -> None:
    """Remove NAME."""
    app.vault.delete(name)
    say(f"removed {name}")


@secrets.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(["auto", "dotenv", "json"]), default="auto", show_default=True)
@pass_app
def import_(app: App, file: str, fmt: str) -> None:
    """Import a dotenv file or a JSON object of name: value ('-' reads standard input).

    \b
    sqlite: one transaction, all secrets or none.
    dir:    each secret's file is written atomically; the import as a whole
            is not: after a failure or Ctrl-C, the secrets written so far
            stay, and the message and the audit record say how many.
    """
    with deferred_interrupt() as stop:  # Ctrl-C ends the import between two secrets, and says so
        items = parse_secrets_file(file, fmt)
        count = app.vault.import_many({k: v.encode() for k, v in items.items()}, stop=stop.is_set)
        say(f"imported {count} secret{'s' if count != 1 else ''}")


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


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_app
def run(app: App, command: tuple[str, ...]) -> None:
    """Run COMMAND with every secret as an environment variable (`keystead run -- CMD ARGS...`)."""
    env = dict(os.environ)
    vault = app.vault
    count, used = 0, set[str]()
    try:  # one audit record for the whole run (not a secrets.export as well)
        for envelope in vault.store.iter_envelopes():
            env[envelope.name] = _text(envelope.name, vault.open_envelope(envelope.name, envelope))
            used.update(s.key for s in envelope.slots)
            count += 1
    except KeysteadError as exc:
        vault.audit.append("run", key=" ".join(sorted(used)) or None, command=command[0], count=count,
                           result=type(exc).__name__)
        raise
    vault.audit.append("run", key=" ".join(sorted(used)) or None, command=command[0], count=count)
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
