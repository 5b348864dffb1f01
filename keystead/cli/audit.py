"""`keystead audit ...`: verify the hash chain, show records."""

from __future__ import annotations

import click

from keystead.audit import AuditLog
from keystead.cli.app import App, Table, json_option, pass_app, print_json, say
from keystead.errors import AuditError


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
@click.option("--last", type=click.IntRange(1), default=20, show_default=True)
@json_option
@pass_app
def show(app: App, last: int, as_json: bool) -> None:
    """The last records of the audit log."""
    records = list(AuditLog(app.config.audit_path).records())[-last:]
    if as_json:
        print_json(records)
        return
    table = Table("seq", "time", "actor", "action", "secret", "key", "result")
    for r in records:
        table.add_row(str(r["seq"]), r["ts"], r["actor"], r["action"], r.get("secret") or "-", r.get("key") or "-",
                      r["result"])
    table.print()
