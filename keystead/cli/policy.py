"""`keystead policy …`: generate least-privilege IAM from a spec, lint policies.

    keystead policy generate SPEC [--out DIR] [--key-arn NAME=ARN] [--format json]
    keystead policy lint FILE... [--format text|json|sarif] [--fail-on SEVERITY]
                                 [--against SPEC [--principal NAME] [--key NAME]]
    keystead policy from-audit --audit LOG.jsonl --principal ACTOR [--min-deletion-window DAYS]

lint exits 0 when clean, 1 when a finding is at or above --fail-on, 2 when
an input cannot be read or parsed. Spec errors are PolicyError (one line).
"""

from __future__ import annotations

import json

import click

from keystead.errors import PolicyError

SEVERITIES = ("note", "warning", "error")


@click.group("policy")
def policy() -> None:
    """Generate and lint least-privilege IAM for keystead's keys."""


def _arns(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, arn = value.partition("=")
        if not sep or not name or not arn:
            raise PolicyError(f"--key-arn: expected NAME=ARN, got {value!r}")
        out[name] = arn
    return out


@policy.command("generate")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", default="iam", show_default=True,
              type=click.Path(file_okay=False), help="Directory to write the documents into.")
@click.option("--key-arn", "key_arns", multiple=True, metavar="NAME=ARN",
              help="ARN of a key the stack created (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["json"]), default="json", show_default=True,
              help="Document format.")
def generate(spec_path: str, out_dir: str, key_arns: tuple[str, ...], fmt: str) -> None:
    """Write every IAM document SPEC's keys need into --out."""
    from keystead.policies import load_spec, write

    spec = load_spec(spec_path)
    paths = write(spec, out_dir, _arns(key_arns))  # checks each ARN against its key
    click.echo(f"wrote {len(paths)} documents to {out_dir}")


@policy.command("lint")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text",
              show_default=True)
@click.option("--fail-on", type=click.Choice(SEVERITIES), default="warning", show_default=True,
              help="Exit 1 when a finding has this severity or higher.")
@click.option("--against", "against_spec", type=click.Path(dir_okay=False),
              help="Also report permissions broader than this IAM spec grants.")
@click.option("--principal", help="With --against: the spec principal of an identity policy.")
@click.option("--key", "key_name", help="With --against: the spec key of a key/GCP policy.")
@click.pass_context
def lint(ctx: click.Context, files: tuple[str, ...], fmt: str, fail_on: str,
         against_spec: str | None, principal: str | None, key_name: str | None) -> None:
    """Lint IAM identity, key and trust policies and GCP IAM policies (JSON)."""
    from keystead.policies import LintInputError, format_json, format_sarif, format_text, lint_paths

    try:
        docs, findings = lint_paths(list(files))
    except LintInputError as exc:
        click.echo(f"keystead: error: {exc}", err=True)
        ctx.exit(2)
    if against_spec:
        from keystead.policies import against, load_spec

        extra, skipped = against(load_spec(against_spec), docs, principal=principal, key=key_name)
        findings = sorted(findings + extra, key=lambda f: (f.file, f.line or 0, f.rule))
        for path in skipped:
            click.echo(f"keystead: note: {path}: matches no principal or key in {against_spec}; "
                       f"not compared", err=True)
    if fmt == "sarif":
        click.echo(format_sarif(findings), nl=False)
    elif fmt == "json":
        click.echo(format_json(findings, len(docs)), nl=False)
    else:
        click.echo(format_text(findings, len(docs)), nl=False)
    ctx.exit(1 if any(f.at_least(fail_on) for f in findings) else 0)


@policy.command("from-audit")
@click.option("--audit", "audit_path", required=True, type=click.Path(dir_okay=False),
              help="keystead audit log, JSON lines.")
@click.option("--principal", required=True, help="The actor whose records to use.")
@click.option("--min-deletion-window", "window", type=click.IntRange(7, 30), default=30,
              show_default=True, help="ScheduleKeyDeletion only with at least this many days.")
def from_audit(audit_path: str, principal: str, window: int) -> None:
    """Propose the least-privilege policy for what PRINCIPAL actually did."""
    from keystead.policies import propose, read_records

    proposal = propose(read_records(audit_path), principal, min_deletion_window_days=window)
    if not proposal["records"]:
        raise PolicyError(f"--principal: no successful records for {principal!r} in {audit_path}")
    click.echo(json.dumps(proposal, indent=2, sort_keys=True))
