"""`keystead init`: a keystead.toml, a local key, an empty vault."""

from __future__ import annotations

import stat
from pathlib import Path

import click

from keystead.cli.app import App, pass_app, say
from keystead.config import CONFIG_NAME, load_config
from keystead.envelope import check_name
from keystead.errors import InputError

TEMPLATE = """\
# keystead configuration: docs/cli.md (Configuration) describes every field.
[vault]
name = "{vault}"
store = "{store}"
# state = "sqlite:///.keystead/state.db"   # rotation state; postgresql://... for several workers
# audit_log = ".keystead/audit.log"
# key_file = ".keystead/keys.json"         # local key material, mode 0600

[keys.{key}]
ref = "local:{key}"
rotation_period_days = 90
{age}
[rotation]
interval_minutes = 60
grace_days = 7
"""

PRIVATE_DIR = ".keystead"
GITIGNORE = """\
# Written by `keystead init`: the key file, rotation state, audit log and locks
# are this machine's own. Never commit the key file: it opens every secret.
*
"""

AGE_KEY = """
[keys.team]
ref = "{recipient}"     # developers open secrets offline with their age identity
"""


@click.command()
@click.option("--dir", "folder", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where to create keystead.toml.")
@click.option("--store", default="sqlite:///.keystead/vault.db", show_default=True,
              help="Vault store URL: sqlite:///PATH, dir:PATH or postgresql://USER@HOST/DATABASE.")
@click.option("--vault", "vault_name", default="default", show_default=True,
              help="Vault name (bound into every envelope).")
@click.option("--key", "key_name", default="main", show_default=True, help="Name of the local key to create.")
@click.option("--age-recipient", help="Also give every secret an age slot for this recipient (age1...).")
@pass_app
def init(app: App, folder: str, store: str, vault_name: str, key_name: str, age_recipient: str | None) -> None:
    """Create keystead.toml, a local key (0600 key file) and an empty vault."""
    check_name(vault_name, "vault name")
    check_name(key_name, "key name")
    path = Path(app.config_path) if app.config_path else Path(folder) / CONFIG_NAME
    if path.exists():
        raise InputError(f"{path} already exists: keystead is already initialised here")
    if age_recipient is not None:
        from keystead.providers import provider_of

        if provider_of(age_recipient) != "age":
            raise InputError(f"--age-recipient {age_recipient!r} is not an age recipient (age1...)")
    text = TEMPLATE.format(
        vault=vault_name, store=store, key=key_name,
        age=AGE_KEY.format(recipient=age_recipient) if age_recipient else "",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    private = path.parent / PRIVATE_DIR
    tightened = _private_folder(private)
    from keystead.stores import redact_url

    shown = redact_url(store)
    if shown != store:  # the URL carries a password: the config is as private as the key file
        path.touch(mode=0o600)
        path.chmod(0o600)
    path.write_text(text, encoding="utf-8")
    try:
        config = load_config(path)
        from keystead.providers.local import LocalKeyFile
        from keystead.vault import Vault

        keyfile = LocalKeyFile(config.key_file)
        if not keyfile.exists() or key_name not in keyfile.load():
            keyfile.create(key_name)
        with Vault.open(config) as vault:
            held = vault.store.count()
            vault.audit.append("keys.create", key=f"local:{key_name}")
            vault.audit.append("vault.init", store=config.store_url.split(":", 1)[0])
    except Exception:
        path.unlink(missing_ok=True)  # leave nothing half-initialised
        raise
    if tightened is not None:
        say(f"[yellow]warning:[/] {private} was mode {tightened:04o}: tightened to 0700 (it holds the key file)")
    say(f"initialised vault {vault_name!r}: {path} (key local:{key_name}, store {shown})")
    if held:
        say(f"[yellow]warning:[/] store {shown} already holds {held} secret(s) of another keystead config: "
            f"this config opens them only with the same vault name and keys (copy that config's key file, "
            f"or give this vault a database or schema of its own)")
    if shown != store:
        say(f"{path} holds the database password: it is mode 0600 (PGPASSWORD or ~/.pgpass keep it out of the file)")
    say(f"{private}/ holds the key that opens every secret: {private / '.gitignore'} keeps all of it out of git")


def _private_folder(folder: Path) -> int | None:
    """Create ``folder`` 0700 with a .gitignore that ignores everything in it.

    An existing folder readable or writable by others is tightened to 0700;
    its old mode is returned (None when nothing had to change).
    """
    old = None
    if folder.is_dir():
        mode = stat.S_IMODE(folder.stat().st_mode)
        if mode & 0o077:
            folder.chmod(0o700)
            old = mode
    else:
        folder.mkdir(mode=0o700, parents=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text(GITIGNORE, encoding="utf-8")
    return old
