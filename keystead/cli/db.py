"""`keystead db ...`: the schema versions of the vault store(s) and the rotation state database.

``keystead db status`` reads them; ``keystead db upgrade`` creates or migrates
them. A PostgreSQL vault is created on first open but never migrated by an
ordinary command: a migration may lock tables that ``secrets set`` needs, so
the operator runs it once, when it suits (docs/postgresql.md). SQLite and dir
vaults have nothing to migrate. The state database migrates itself on open
(rotation/state/schema.py); ``db upgrade`` does that step too, so one
command leaves every database current.
"""

from __future__ import annotations

from typing import Any

import click

from keystead.cli.app import App, json_option, pass_app, print_json, say
from keystead.config import Config
from keystead.stores import redact_url


@click.group()
def db() -> None:
    """Schema versions of the vault store(s) and the rotation state database."""


def _store_urls(config: Config) -> list[str]:
    urls = list(config.stores) or [config.store_url]
    if config.store_url not in urls:
        urls.insert(0, config.store_url)
    return urls


def _is_pg(url: str) -> bool:
    return url.startswith(("postgresql:", "postgresql+", "postgres:"))


@db.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Show each database's schema version beside the one this keystead uses."""
    from keystead.rotation.state import schema as state_schema
    from keystead.stores import pgschema
    from keystead.stores.postgres import PostgresStore

    rows: list[dict[str, Any]] = []
    for url in _store_urls(app.config):
        if not _is_pg(url):
            rows.append(dict(database="vault store", url=redact_url(url), version=None, current=None,
                             note="schema kept by the store itself"))
            continue
        with PostgresStore(url, check=False) as store:
            found = store.schema_version()
        rows.append(dict(database="vault store", url=redact_url(url), version=found,
                         current=pgschema.SCHEMA_VERSION, note=_note(found, pgschema.SCHEMA_VERSION)))
    rows.append(_state_status(app.config.state_url, state_schema.SCHEMA_VERSION))
    if as_json:
        print_json(rows)
        return
    for r in rows:
        version = "-" if r["version"] is None else f"{r['version']} (this keystead: {r['current']})"
        click.echo(f"{r['database']}  {r['url']}  schema {version}  {r['note']}")


def _note(found: int, current: int) -> str:
    if found == 0:
        return "empty: created on first use"
    if found < current:
        return "older: run `keystead db upgrade`"
    if found > current:
        return "newer than this keystead: upgrade keystead"
    return "current"


def _state_status(url: str, current: int) -> dict[str, Any]:
    from keystead.rotation.state import StateDB, StateDBError

    shown = redact_url(url)
    try:
        state = StateDB.open(url, create=False)  # opening migrates a version 1 state database (schema.py)
    except StateDBError as exc:  # a newer one, or none reachable: its own one-line reason
        return dict(database="state database", url=shown, version=None, current=current, note=str(exc))
    found = 0
    if state is not None:
        try:
            found = state.schema_version()
        finally:
            state.close()
    return dict(database="state database", url=shown, version=found, current=current, note=_note(found, current))


@db.command()
@pass_app
def upgrade(app: App) -> None:
    """Create or migrate every PostgreSQL vault store and the state database to this keystead's schema."""
    from keystead.rotation.state import StateDB
    from keystead.stores.postgres import PostgresStore

    for url in _store_urls(app.config):
        if not _is_pg(url):
            say(f"vault store {redact_url(url)}: nothing to upgrade (the store keeps its own schema)")
            continue
        before, after = PostgresStore.upgrade(url)
        say(f"vault store {redact_url(url)}: schema version {before} -> {after}" if before != after
            else f"vault store {redact_url(url)}: schema version {after}, already current")
    state = StateDB.open(app.config.state_url, create=True)
    assert state is not None  # create=True always opens
    try:
        say(f"state database {redact_url(app.config.state_url)}: schema version {state.schema_version()}, current")
    finally:
        state.close()
