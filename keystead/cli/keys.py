"""`keystead keys ...`: list, show and create keys (add, remove, export and import: slots.py, keyshare.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from keystead.cli.app import App, Table, complete_key, console, err_console, json_option, pass_app, print_json
from keystead.config import KeyConfig
from keystead.envelope import check_name
from keystead.errors import InputError, KeysteadError, NotFoundError
from keystead.providers import KeyInfo, RotationKind

MAX_LOCAL_NAME = 64


@click.group()
def keys() -> None:
    """List, show and create keys."""


def _summary(kc: KeyConfig, info: KeyInfo | None, error: str | None) -> dict[str, Any]:  # a JSON row
    row = {"name": kc.name, "ref": kc.ref, "rotation_period_days": kc.rotation_period_days}
    if info is not None:
        row.update(
            provider=info.provider,
            primary=info.primary,
            versions=[{"id": v.id, "state": v.state, "created_at": v.created_at.isoformat()} for v in info.versions],
            last_rotated=info.last_rotated.isoformat() if info.last_rotated else None,
            rotation=str(info.rotation),
            next_due=(info.last_rotated + timedelta(days=kc.rotation_period_days)).isoformat()
            if info.rotation in (RotationKind.IN_PLACE, RotationKind.SUCCESSOR) and info.last_rotated is not None
            else None,
            exclusive=kc.exclusive,
        )
    if error is not None:
        row["error"] = error
    return row


def _describe_all(app: App) -> list[dict[str, Any]]:
    vault = app.vault
    rows = []
    for kc in app.config.keys.values():
        if kc.name in vault.key_errors:
            rows.append(_summary(kc, None, str(vault.key_errors[kc.name])))
            continue
        try:
            rows.append(_summary(kc, vault.keys[kc.name].describe(), None))
        except Exception as exc:  # one broken key must not hide the others
            # A keystead error says what to fix; anything else (an SDK's) is named by type only.
            rows.append(_summary(kc, None, str(exc) if isinstance(exc, KeysteadError) else type(exc).__name__))
    return rows


def _public_keys(app: App, kc: KeyConfig, versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A signing key's public keys, one per key id of its versions (the cache, else GetPublicKey)."""
    from keystead.cli.sign import public_key_cache, signing_key
    from keystead.providers.aws_sign import fingerprint

    _kc, key = signing_key(app.config, kc.name)
    cache = public_key_cache(app.config)
    out: list[dict[str, Any]] = []
    for v in versions:
        kid = v["id"].split(":", 1)[0]
        entry: dict[str, Any] = {"key_id": kid, "state": v["state"], "file": str(cache.path(kid))}
        try:
            pem = cache.get(key, kid)
            entry.update(sha256=fingerprint(pem), public_key=pem.decode("ascii"))
        except KeysteadError as exc:  # e.g. a disabled key never cached: GetPublicKey refuses it
            entry["error"] = str(exc)
        out.append(entry)
    return out


def _never(rotation: str) -> str:
    return {"none": "never (does not rotate)", "scheduled": "by the provider"}.get(rotation, "never")


@keys.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """Every key of keystead.toml: provider, primary version, last rotation, next due."""
    rows = _describe_all(app)
    if as_json:
        print_json(rows)
        return
    table = Table("name", "ref", "provider", "primary", "versions", "last rotated", "next due")
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], r["ref"], "-", "-", "-", "-", f"[red]{r['error']}[/]")
            continue
        live = sum(v["state"] in ("enabled", "superseded") for v in r["versions"])
        table.add_row(
            r["name"], r["ref"], r["provider"], r["primary"], f"{live} live / {len(r['versions'])}",
            (r["last_rotated"] or "-")[:10], r["next_due"][:10] if r["next_due"] else _never(r["rotation"]),
        )
    table.print()


@keys.command("show")
@click.argument("ref", shell_complete=complete_key)
@json_option
@pass_app
def show(app: App, ref: str, as_json: bool) -> None:
    """Details and versions of one key, by config name or reference."""
    rows = [r for r in _describe_all(app) if ref in (r["name"], r["ref"])]
    if not rows:
        raise NotFoundError(f"no key {ref!r} in {app.config.path} (see `keystead keys list`)")
    row = rows[0]
    kc = app.config.keys[row["name"]]
    if kc.signs and kc.provider == "aws" and "error" not in row:
        row["public_keys"] = _public_keys(app, kc, row["versions"])
    if as_json:
        print_json(row)
        return
    if "error" in row:
        raise NotFoundError(f"key {ref!r}: {row['error']}")
    out = console()
    out.print(f"[bold]{row['name']}[/]  {row['ref']}  provider={row['provider']}  primary={row['primary']}")
    out.print(f"rotation period {row['rotation_period_days']} days, next due {row['next_due'] or 'never'}")
    table = Table("version", "state", "created")
    for v in row["versions"]:
        table.add_row(v["id"] + (" (primary)" if v["id"] == row["primary"] else ""), v["state"], v["created_at"])
    table.print()
    if "public_keys" in row:
        keys = Table("key id", "state", "public key (SHA-256 of its DER)", "file")
        for p in row["public_keys"]:
            keys.add_row(p["key_id"], p["state"], p.get("sha256") or f"[red]{p.get('error')}[/]", p["file"])
        keys.print()


@keys.command("create")
@click.argument("name")
@click.option("--period", "period_days", type=click.IntRange(1, 2560), default=90, show_default=True,
              help="Rotation period in days.")
@pass_app
def create(app: App, name: str, period_days: int) -> None:
    """Create local key NAME in the key file and add it to keystead.toml as local:NAME."""
    if len(name) > MAX_LOCAL_NAME:
        # local:NAME takes at most 64 characters; a longer one would write a ref the config then refuses.
        raise InputError(f"key name {name[:32]}... is too long: "
                         f"a local key name takes at most {MAX_LOCAL_NAME} characters")
    try:
        check_name(name, "key name")
    except InputError:  # its message gives the secret-name limit (255); a local key name takes 64
        raise InputError(f"invalid key name {name!r}: use 1-{MAX_LOCAL_NAME} characters A-Z a-z 0-9 _ . - "
                         "(not starting with '.' or '-', no '/')") from None
    config = app.config
    if name in config.keys:
        raise InputError(f"key {name!r} is already declared in {config.path}")
    from keystead.audit import AuditLog
    from keystead.config_edit import add_key
    from keystead.providers.local import LocalKeyFile

    add_key(config.path, name, f"local:{name}", period=period_days, write=False)  # a bad edit stops here
    keyfile = LocalKeyFile(config.key_file)
    if not keyfile.exists() or name not in keyfile.load():  # present: left by an earlier run that stopped
        keyfile.create(name)
    add_key(config.path, name, f"local:{name}", period=period_days)  # tomlkit: comments and order kept
    AuditLog(config.audit_path).append("keys.create", key=f"local:{name}")
    hint = ("add it to a profile's keys to seal new secrets with it" if config.profiles
            else "every new secret gets a slot for it")
    err_console().print(f"created local:{name} ({hint})", soft_wrap=True)


@keys.command("restore")
@click.argument("name", shell_complete=complete_key)
@click.argument("version")
@pass_app
def restore(app: App, name: str, version: str) -> None:
    """Bring back VERSION of key NAME that rotation disabled (or scheduled for deletion),
    while the provider still can."""
    if name not in app.config.keys:
        raise NotFoundError(f"no key {name!r} in {app.config.path} (see `keystead keys list`)")
    from keystead.rotation import restore_version

    err_console().print(restore_version(app.config, name, version), soft_wrap=True)


# Commands of the team workflow (issue 10), kept in their own modules.
from keystead.cli.keyshare import export_key, import_key  # noqa: E402
from keystead.cli.slots import add, remove  # noqa: E402

for _command in (add, remove, export_key, import_key):
    keys.add_command(_command)
