"""`keystead secrets show|edit|mv|cp`: inspect a secret, edit it in $EDITOR, rename or copy it."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click

from keystead.cli.app import App, Table, complete_secret, console, json_option, pass_app, print_json, say
from keystead.envelope import TAG_LEN, check_name
from keystead.errors import InputError, Interrupted, KeysteadError, NotFoundError

SHM = "/dev/shm"


def _when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.command("show")
@click.argument("name", shell_complete=complete_secret)
@json_option
@pass_app
def show(app: App, name: str, as_json: bool) -> None:
    """Metadata of NAME: its slots (key, provider, version, wrapped at), created at, size. Never the value."""
    check_name(name)
    env = app.vault.store.get(name)
    keys_by_ref = {kc.ref: kc.name for kc in app.config.keys.values()}
    doc: dict[str, Any] = {
        "name": env.name, "vault": env.vault, "created_at": _when(env.created_at),
        "size": len(env.ciphertext) - TAG_LEN,
        "slots": [{"key": s.key, "name": keys_by_ref.get(s.key), "provider": s.provider, "version": s.version,
                   "wrapped_at": _when(s.wrapped_at)} for s in env.slots],
    }
    if as_json:
        print_json(doc)
        return
    line = f"{doc['name']}  vault {doc['vault']}  created {doc['created_at']}  {doc['size']} bytes"
    if os.isatty(1):
        console().print(line, soft_wrap=True, markup=False)
    else:
        click.echo(line)
    table = Table("key", "name", "provider", "version", "wrapped at")
    for s in doc["slots"]:
        table.add_row(s["key"], s["name"] or "(not declared)", s["provider"], s["version"], s["wrapped_at"])
    table.print()


@contextlib.contextmanager
def _signals_while_editing() -> Iterator[dict[str, bool]]:
    """Ctrl-C, SIGTERM and SIGHUP while the editor runs: noted (the editor gets its own), not raised,
    so the file is always removed and the value left as it was."""
    seen = {"interrupted": False}

    def note(_signum: int, _frame: FrameType | None) -> None:
        seen["interrupted"] = True

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread: no signals to catch
            previous[sig] = signal.signal(sig, note)
    try:
        yield seen
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _private_folder() -> str:
    """A fresh 0700 folder, on /dev/shm (memory, never disk) where it exists."""
    base = SHM if os.path.isdir(SHM) and os.access(SHM, os.W_OK) else None
    return tempfile.mkdtemp(prefix="keystead-edit-", dir=base)


@click.command("edit")
@click.argument("name", shell_complete=complete_secret)
@pass_app
def edit(app: App, name: str) -> None:
    """Edit NAME in $VISUAL or $EDITOR; store it again only if it changed.

    \b
    The value is written to a 0600 file in a 0700 folder (on /dev/shm
    where it exists), removed however the edit ends, Ctrl-C included.
    The file's bytes are stored as they are (editors often add a final newline).
    """
    check_name(name)
    vault = app.vault
    before = vault.store.get(name)
    value = vault.get(name)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    folder = _private_folder()
    try:
        path = os.path.join(folder, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, value)
        finally:
            os.close(fd)
        with _signals_while_editing() as seen:
            try:
                code = subprocess.call([*shlex.split(editor), path])
            except FileNotFoundError:
                raise InputError(f"editor {editor!r} not found: set $VISUAL or $EDITOR") from None
            except PermissionError:
                raise InputError(f"editor {editor!r} is not executable: set $VISUAL or $EDITOR") from None
        if seen["interrupted"]:
            raise Interrupted(f"interrupted: the edit of {name} was discarded")
        if code != 0:
            raise KeysteadError(f"editor {editor!r} exited with {code}: {name} was not changed")
        with open(path, "rb") as fh:
            new = fh.read()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if new == value:
        say(f"{name}: no change")
        return
    with vault._audited("secrets.edit", secret=name, key=" ".join(kc.ref for kc in vault.config.slot_keys)):
        sealed = vault.seal(name, new)
        if not vault.store.swap([(before, sealed)]):
            raise KeysteadError(f"{name} was changed or removed by someone else while you edited it: "
                                "your edit was not stored; run the edit again")
    say(f"stored {name} ({len(sealed.slots)} slot{'s' if len(sealed.slots) != 1 else ''})")


def _copy(app: App, old: str, new: str, *, move: bool) -> None:
    check_name(old)
    check_name(new, "new secret name")
    if old == new:
        raise InputError(f"{old} and {new} are the same name")
    vault = app.vault
    source = vault.store.get(old)
    try:
        vault.store.get(new)
    except NotFoundError:
        pass
    else:
        raise InputError(f"secret {new} already exists: remove it first (`keystead secrets rm {new}`)")
    value = vault.open_envelope(old, source)
    action = "secrets.mv" if move else "secrets.cp"
    with vault._audited(action, secret=old, key=" ".join(kc.ref for kc in vault.config.slot_keys), to=new):
        sealed = vault.seal(new, value)  # the name is bound into the envelope: sealed again under the new one
        vault.store.put(sealed)
        if vault.open_envelope(new, vault.store.get(new)) != value:
            raise KeysteadError(f"{new} did not read back as {old}: {old} was left as it was")
        if move:
            if not vault.store.swap([(source, source)]):  # unchanged since read: only then does the old go
                raise KeysteadError(f"{old} changed meanwhile: {new} holds the value read before; {old} was kept")
            vault.store.delete(old)
    say(f"{'moved' if move else 'copied'} {old} to {new}")


@click.command("mv")
@click.argument("old", shell_complete=complete_secret)
@click.argument("new")
@pass_app
def mv(app: App, old: str, new: str) -> None:
    """Rename secret OLD to NEW (sealed again under NEW; OLD goes only once NEW is stored)."""
    _copy(app, old, new, move=True)


@click.command("cp")
@click.argument("old", shell_complete=complete_secret)
@click.argument("new")
@pass_app
def cp(app: App, old: str, new: str) -> None:
    """Copy secret OLD to NEW (sealed again under NEW)."""
    _copy(app, old, new, move=False)
