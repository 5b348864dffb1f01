"""`keystead dr status|drill|promote`: disaster recovery of multi-region AWS keys (docs/aws.md).

Exit codes (docs/cli.md): 0 healthy / drill passed / promoted (or already
primary); 1 promotion not confirmed at the prompt; 2 bad input (a key
without replicas, a region that is no replica, no ``--yes`` without a
terminal); 4 unknown key, or no multi-region key in keystead.toml; 6 KMS
refused a check or the promotion (AccessDenied...); 8 ``dr status`` found a
problem (a configured DR region without a replica, a key not Enabled, a
region unreachable) or ``dr drill`` failed a step.
"""

from __future__ import annotations

import sys

import click

from keystead.cli.app import App, Table, complete_key, json_option, pass_app, print_json, say
from keystead.errors import InputError, KeysteadError, ProviderError, RotationError

key_option = click.option("--key", "only", metavar="NAME", shell_complete=complete_key,
                          help="Only this key (config name or reference).")


@click.group()
def dr() -> None:
    """Disaster recovery: replicas of multi-region keys, drills, promotion."""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@dr.command()
@key_option
@json_option
@pass_app
def status(app: App, only: str | None, as_json: bool) -> None:
    """Primary and replicas of every multi-region key, their state and rotation settings."""
    from keystead.rotation import dr as checks

    vault = app.vault
    reports = [checks.check(kc, key) for kc, key in checks.dr_keys(app.config, vault.keys, vault.key_errors, only)]
    if as_json:
        print_json([r.as_dict() for r in reports])
    else:
        table = Table("key", "region", "role", "state", "rotation", title="multi-region keys")
        for r in reports:
            rotation = "-"
            if r.rotation is not None:
                period = r.rotation.get("period_days")
                rotation = ("on" + (f", every {period} days" if period else "")) if r.rotation["enabled"] else "off"
            if r.error or not r.regions:
                table.add_row(r.name, "-", "-", f"[red]{r.error or '; '.join(r.problems)}[/]", "-")
            for i, region in enumerate(r.regions):
                state = region.state if region.state == checks.ENABLED else f"[red]{region.state}[/]"
                table.add_row(r.name if i == 0 else "", region.region, region.role, state,
                              rotation if region.role == "primary" else "")
        table.print()
    refused = [r for r in reports if r.error]
    if refused:
        raise ProviderError(f"dr status: key {refused[0].name}: {refused[0].error}")
    sick = [(r.name, p) for r in reports for p in r.problems]
    if sick:
        more = f" (and {len(sick) - 1} more)" if len(sick) > 1 else ""
        raise RotationError(f"dr status: key {sick[0][0]}: {sick[0][1]}{more}")


@dr.command()
@key_option
@json_option
@pass_app
def drill(app: App, only: str | None, as_json: bool) -> None:
    """Encrypt a random canary in the primary, decrypt it in every replica region and the reverse."""
    from keystead.rotation import dr as checks

    vault = app.vault
    reports = []
    for kc, key in checks.dr_keys(app.config, vault.keys, vault.key_errors, only):
        report = checks.drill(kc, key, vault=vault.name)
        reports.append(report)
        failed = [s for s in report.steps if not s.ok]
        vault.audit.append("dr.drill", key=kc.ref, result="ok" if report.passed else "RotationError",
                           primary=report.primary, steps=len(report.steps), failed=len(failed),
                           latency_ms=dict(report.latency_ms), error=report.error)
    if as_json:
        print_json([r.as_dict() for r in reports])
    else:
        table = Table("key", "encrypt in", "decrypt in", "encrypt ms", "decrypt ms", "result", title="dr drill")
        for r in reports:
            if r.error:
                table.add_row(r.name, "-", "-", "-", "-", f"[red]{r.error}[/]")
            for s in r.steps:
                table.add_row(r.name, s.source, s.target, _ms(s.encrypt_ms), _ms(s.decrypt_ms),
                              "[green]pass[/]" if s.ok else f"[red]FAIL: {s.error}[/]")
        table.print()
    failed_reports = [r for r in reports if not r.passed]
    if failed_reports:
        first = failed_reports[0]
        step = next((s for s in first.steps if not s.ok), None)
        why = first.error or (f"{step.source} -> {step.target}: {step.error}" if step else "no step ran")
        raise RotationError(f"dr drill failed for key {first.name}: {why}")


@dr.command()
@click.argument("key_name", metavar="KEY", shell_complete=complete_key)
@click.argument("region")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def promote(app: App, key_name: str, region: str, yes: bool) -> None:
    """Make the replica of KEY in REGION its primary (KMS UpdatePrimaryRegion)."""
    from keystead.rotation import dr as checks

    vault = app.vault
    ((kc, key),) = checks.dr_keys(app.config, vault.keys, vault.key_errors, key_name)
    layout = checks.promotion(kc, key, region)
    if layout is None:
        say(f"{region} is already the primary region of key {kc.name}: nothing to do")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise InputError(f"dr promote {kc.name} {region}: confirmation needed; standard input is not a "
                             "terminal: pass --yes")
        if not click.confirm(f"Make {region} the primary region of key {kc.name} ({layout.key_id}, now primary "
                             f"in {layout.primary})?", default=False, err=True):
            raise KeysteadError(f"key {kc.name} not promoted (not confirmed): nothing changed")
    try:
        checks.promote(key, layout, region)
    except KeysteadError as exc:
        vault.audit.append("dr.promote", key=kc.ref, result=type(exc).__name__, source=layout.primary,
                           target=region)
        raise
    vault.audit.append("dr.promote", key=kc.ref, source=layout.primary, target=region)
    say(f"key {kc.name}: primary region is now {region} (was {layout.primary}); KMS finishes the update "
        "within seconds (key state Updating). keystead.toml needs no change: unwrap asks the ref's region first "
        "and its replicas after it")
