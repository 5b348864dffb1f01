"""`keystead keys export|import`: a local key onto a second machine, encrypted to an age recipient.

The export is an armored age file (age-encryption.org/v1) holding one key of
the key file, all its versions, as JSON::

    {"format": "keystead-key-export/1", "name": "main", "primary": "2",
     "versions": [{"id": "1", "created_at": "...", "state": "enabled", "material": "<base64>"}, ...]}

It is never written in plaintext: only the holder of the recipient's
identity opens it. An import merges the key into the key file under its lock:
a key the file does not have is added; one it has gains the versions it
lacks (and the newer primary); a different key under the same name (a
version id with other material) is refused and nothing is written.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from keystead.cli.app import App, complete_key, pass_app, say
from keystead.errors import DecryptError, FormatError, InputError, KeyFileError, NotFoundError

if TYPE_CHECKING:  # for annotations only: the key file module loads when a command runs
    from keystead.config import Config
    from keystead.providers.local import _Version

FORMAT = "keystead-key-export/1"
MAX_EXPORT_BYTES = 1024 * 1024


def _local_name(app: App, name: str) -> str:
    config = app.config
    kc = config.keys.get(name) or next((k for k in config.keys.values() if k.ref == name), None)
    if kc is None:
        raise NotFoundError(f"no key {name!r} in {config.path} (see `keystead keys list`)")
    if kc.provider != "local":
        raise InputError(f"key {kc.name} is an {kc.provider} key: only local keys have material to export "
                         "(age and cloud keys are shared by adding each person's recipient or IAM)")
    return kc.ref.split(":", 1)[1]


@click.command("export")
@click.argument("name", shell_complete=complete_key)
@click.option("--to", "recipients", required=True, multiple=True,
              help="age recipient (age1...) to encrypt the key to (repeatable).")
@click.option("--out", type=click.Path(dir_okay=False), help="Write here (mode 0600) instead of standard output.")
@pass_app
def export_key(app: App, name: str, recipients: tuple[str, ...], out: str | None) -> None:
    """Export local key NAME, encrypted to an age recipient, for `keystead keys import` on another machine."""
    import pyrage
    from pyrage import x25519

    from keystead.clock import iso
    from keystead.files import write_atomic
    from keystead.providers import provider_of
    from keystead.providers.local import LocalKeyFile

    local = _local_name(app, name)
    parsed = []
    for r in recipients:
        for one in r.split(","):
            if provider_of(one.strip()) != "age" or "," in one.strip():
                raise InputError(f"--to {one!r} is not an age recipient (age1...)")
            try:
                parsed.append(x25519.Recipient.from_str(one.strip()))
            except pyrage.RecipientError:
                raise InputError(f"--to {one.strip()!r}: invalid age recipient (checksum or encoding)") from None
    target = Path(out) if out else None
    if target is not None and target.exists():
        raise InputError(f"{target} already exists: choose another --out (an export never overwrites a file)")
    keys = LocalKeyFile(app.config.key_file).load()
    if local not in keys:
        raise NotFoundError(f"no material for local:{local} in {app.config.key_file}")
    primary, versions = keys[local]
    doc = {"format": FORMAT, "name": local, "primary": primary, "versions": [
        {"id": v.id, "created_at": iso(v.created_at), "state": str(v.state),
         "material": base64.b64encode(v.material).decode() if v.has_material else "",
         **({"token": v.token} if v.token else {})}
        for v in versions]}
    sealed = pyrage.encrypt(json.dumps(doc).encode(), parsed, armored=True)
    if target is not None:
        try:
            write_atomic(target.resolve(), sealed, mode=0o600)
        except OSError as exc:
            raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
    else:
        sys.stdout.buffer.write(sealed)
        sys.stdout.flush()
    app.vault.audit.append("keys.export", key=f"local:{local}", to=",".join(recipients))
    say(f"exported local:{local} ({len(versions)} version(s)) encrypted to {len(parsed)} age recipient(s)"
        + (f": {target} (mode 0600)" if target else ""))
    say(f"on the other machine: KEYSTEAD_AGE_IDENTITY_FILE=<identity> keystead keys import {target or 'FILE'}")


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@pass_app
def import_key(app: App, file: str) -> None:
    """Import a key written by `keystead keys export` (needs the age identity: KEYSTEAD_AGE_IDENTITY_FILE)."""
    import pyrage

    from keystead.providers.age import load_identities

    config = app.config
    env = os.environ.get("KEYSTEAD_AGE_IDENTITY_FILE")
    identity_file = Path(env) if env else config.age_identity_file
    if identity_file is None:
        raise KeyFileError("keys import needs your age identity: set KEYSTEAD_AGE_IDENTITY_FILE "
                           "(or [providers.age] identity_file)")
    identities = load_identities(identity_file)
    if not identities:
        raise KeyFileError(f"age identity file {identity_file} holds no identity (AGE-SECRET-KEY-1...)")
    try:
        data = sys.stdin.buffer.read(MAX_EXPORT_BYTES + 1) if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror or exc}") from None
    if len(data) > MAX_EXPORT_BYTES:
        raise InputError(f"{file} is larger than a key export can be")
    if not data.lstrip().startswith((b"-----BEGIN AGE ENCRYPTED FILE-----", b"age-encryption.org/")):
        raise FormatError(f"{file} is not an age file written by `keystead keys export`")
    try:
        plain = pyrage.decrypt(data, identities)
    except pyrage.DecryptError:
        raise DecryptError(f"{file} does not open with the identity in {identity_file} "
                           "(not a key export, or encrypted to another recipient)") from None
    except Exception:  # pyrage raises plain errors for input that is not age at all
        raise FormatError(f"{file} is not an age file written by `keystead keys export`") from None
    name, primary, versions = _parse(plain, file)
    added = _merge(config, name, primary, versions)
    _gitignore(config.key_file.parent)
    app.vault.audit.append("keys.import", key=f"local:{name}", versions=len(versions), added=added)
    if added:
        say(f"imported local:{name}: {added} version(s) added to {config.key_file}")
    else:
        say(f"local:{name} is already in {config.key_file}: nothing to add")
    if not any(k.ref == f"local:{name}" for k in config.keys.values()):
        say(f"local:{name} is not declared in {config.path.name}: `keystead keys add local:{name}` declares it")


def _parse(plain: bytes, file: str) -> tuple[str, str, tuple[_Version, ...]]:
    from keystead.clock import parse_iso
    from keystead.providers.base import VersionState
    from keystead.providers.local import _Version  # the key file's own version record

    try:
        doc = json.loads(plain)
        if doc.get("format") != FORMAT:
            raise ValueError
        name = doc["name"]
        if not isinstance(name, str) or not name:
            raise ValueError
        versions = []
        for v in doc["versions"]:
            state = VersionState(v["state"])
            material = base64.b64decode(v["material"], validate=True) if state is not VersionState.RETIRED else b""
            if state is not VersionState.RETIRED and len(material) != 32:
                raise ValueError
            versions.append(_Version(str(v["id"]), parse_iso(v["created_at"]), state, material, v.get("token")))
        primary = str(doc["primary"])
        if primary not in {v.id for v in versions}:
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise FormatError(f"{file} is not a key export of this keystead ({FORMAT})") from None
    return name, primary, tuple(versions)


def _merge(config: Config, name: str, primary: str, versions: tuple[_Version, ...]) -> int:
    """Merge one key into the key file under its lock; return how many versions were added."""
    from keystead.providers.local import LocalKeyFile

    keyfile = LocalKeyFile(config.key_file)
    # The key file's own lock and atomic write (LocalKeyFile keeps its format in one place).
    with keyfile._locked() as keys:
        if name not in keys:
            keys[name] = (primary, versions)
            keyfile._write(keys)
            return len(versions)
        have_primary, have = keys[name]
        by_id = {v.id: v for v in have}
        for v in versions:
            mine = by_id.get(v.id)
            if mine is not None and mine.has_material and v.has_material and mine.material != v.material:
                raise InputError(f"{config.key_file} already holds a different key local:{name} "
                                 f"(version {v.id} differs): nothing was imported; remove or rename one of them")
        new = [v for v in versions if v.id not in by_id]
        newest = max(have_primary, primary, key=int)
        if not new and newest == have_primary:
            return 0
        keys[name] = (newest, tuple(sorted((*have, *new), key=lambda v: int(v.id))))
        keyfile._write(keys)
        return len(new)


def _gitignore(folder: Path) -> None:
    from keystead.cli.setup import _private_folder

    if folder.name == ".keystead":
        _private_folder(folder)
