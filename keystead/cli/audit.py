"""`keystead audit ...`: verify the hash chain, show records."""

from __future__ import annotations

import click

from keystead.audit import AuditLog
from keystead.cli.app import App, Table, json_option, pass_app, print_json
from keystead.errors import AuditError


@click.group()
def audit() -> None:
    """Verify and read the hash-chained audit log."""


@audit.command("verify")
@json_option
@pass_app
def verify(app: App, as_json: bool) -> None:
    """Check every record's hash and the chain; exit 9 at the first bad record."""
    report = AuditLog(app.config.audit_path).verify()
    if as_json:
        print_json({"ok": report.ok, "records": report.records, "problem": report.problem})
        if not report.ok:
            raise SystemExit(AuditError.exit_code)
        return
    if not report.ok:
        raise AuditError(f"audit log {app.config.audit_path}: {report.problem}")
    click.echo(f"audit log ok: {report.records} records, chain intact")


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
