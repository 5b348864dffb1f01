"""`keystead audit ...`: verify the hash chain, show records."""

from __future__ import annotations

from typing import Any

import click

from keystead.audit import AuditLog
from keystead.cli.app import App, Table, json_option, pass_app, print_json, say
from keystead.errors import AuditError, InputError


@click.group()
def audit() -> None:
    """Verify and read the hash-chained audit log."""


@audit.command("verify")
@json_option
@pass_app
def verify(app: App, as_json: bool) -> None:
    """Check every record's hash and the chain; exit 9 at the first bad record."""
    report = app.vault.audit.verify()  # the vault's log: with its anchor in a SQLite vault database
    if as_json:
        print_json({"ok": report.ok, "records": report.records, "problem": report.problem, "note": report.note})
        if not report.ok:
            raise SystemExit(AuditError.exit_code)
        return
    if not report.ok:
        raise AuditError(f"audit log {app.config.audit_path}: {report.problem} "
                         "(once you know why: keystead audit reset --reason TEXT starts a new chain)")
    click.echo(f"audit log ok: {report.records} records, chain intact")
    if report.note:
        say(f"note: {report.note}")


@audit.command("reset")
@click.option("--reason", required=True, help="Why the old chain is abandoned (recorded in the new chain).")
@pass_app
def reset(app: App, reason: str) -> None:
    """Start a new audit chain; the old log is kept beside it (audit.log.<time>.old).

    The new chain's first record, audit.reset, names the reason, the old
    log's last record, its head file and the vault database's anchor. For a
    chain that cannot be trusted any more (a lost head on a dir store,
    records deleted), after you have found out why.
    """
    record = app.vault.audit.reset(reason)
    details = record["details"]
    old = details["old_last"] or details["old_anchor"]
    say(f"started a new audit chain at {app.config.audit_path}: record 1 (audit.reset) names the old head "
        f"({'record ' + str(old['seq']) if old else 'none: the old log was empty'}) and your reason"
        + (f"; the old log is kept as {record['details']['old_log']}" if record["details"]["old_log"] else ""))


@audit.command("show")
@click.option("--last", type=click.IntRange(1), default=20, show_default=True,
              help="How many records (the last ones matching the filters).")
@click.option("--secret", help="Only records of this secret.")
@click.option("--actor", help="Only records by this actor (user@host).")
@click.option("--action", help="Only this action (secrets.get), or a family ending in a dot (secrets.).")
@click.option("--since", metavar="DATE", help="Only records at or after DATE (YYYY-MM-DD or an ISO 8601 time, UTC).")
@json_option
@pass_app
def show(app: App, last: int, secret: str | None, actor: str | None, action: str | None, since: str | None,
         as_json: bool) -> None:
    """The last records of the audit log, optionally filtered."""
    from keystead.clock import parse_iso

    try:
        when = parse_iso(since) if since is not None else None
    except ValueError:
        raise InputError(f"--since {since!r} is not a date: use YYYY-MM-DD or an ISO 8601 time") from None

    def wanted(r: dict[str, Any]) -> bool:
        if secret is not None and r.get("secret") != secret:
            return False
        if actor is not None and r.get("actor") != actor:
            return False
        if action is not None and r["action"] != action and not (action.endswith(".")
                                                                  and r["action"].startswith(action)):
            return False
        return when is None or parse_iso(r["ts"]) >= when

    records = [r for r in AuditLog(app.config.audit_path).records() if wanted(r)][-last:]
    if as_json:
        print_json(records)
        return
    table = Table("seq", "time", "actor", "action", "secret", "key", "result")
    for r in records:
        table.add_row(str(r["seq"]), r["ts"], r["actor"], r["action"], r.get("secret") or "-", r.get("key") or "-",
                      r["result"])
    table.print()
