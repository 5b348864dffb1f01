"""`keystead plan`: the stack's resource graph offline, a preview without credentials.

    keystead plan [--stack NAME] [--dir PROJECT] [--json]

Runs the same program ``pulumi up`` runs (stacks/), under Pulumi's mocks in this process:
no Pulumi CLI, plugin, network or cloud account. Reads Pulumi.yaml and Pulumi.<stack>.yaml
from the project directory, prints every resource (type, name, the properties that matter,
parent, protect) as a tree or as JSON, then the policy checks of the CrossGuard pack.
``secure:`` values show as ``[secret]`` (they cannot be decrypted offline anyway).
A configuration error is one line and its exit code (3: stack config, 10: IAM spec).
pulumi is imported only when the command runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keystead.errors import KeysteadError, PolicyError

if TYPE_CHECKING:
    from keystead.stacks.offline import Record

#: documents shown as a statement count in the tree (the JSON has them whole)
DOCUMENTS = ("policy", "assumeRolePolicy")
HIDDEN = ("tags", "tagsAll", "labels", "description", "displayName", "trustAnchorCertificate")


@click.command("plan")
@click.option("--stack", "stack_name", default="dev", show_default=True, help="Stack: reads Pulumi.<stack>.yaml.")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False),
              help="The Pulumi project directory (where Pulumi.yaml is), or a folder below it.")
@click.option("--json", "as_json", is_flag=True, help="Print the graph and the checks as JSON.")
def plan(stack_name: str, directory: str, as_json: bool) -> None:
    """Show what the stack would create, offline (a preview without credentials)."""
    try:
        from keystead.stacks import offline, program
    except ImportError as exc:  # pulumi, pulumi-aws or pulumi-gcp missing
        raise KeysteadError(f"keystead plan needs the Pulumi SDKs ({exc.name} is not installed): "
                            "pip install 'keystead[stacks]'") from exc

    base = program.project_dir(Path(directory))
    project, values, secrets = offline.load_stack_config(base, stack_name)
    graph = offline.run(lambda: program.main(base), stack=stack_name, project=project, config=values,
                        secret_keys=secrets)
    records = graph.records
    violations = _violations(records)
    if as_json:
        click.echo(json.dumps({
            "project": project, "stack": stack_name,
            "resources": [_as_dict(r) for r in records],
            "notes": list(graph.notes),
            "outputs": graph.exports,  # what `pulumi stack output --json` would print (mock ids and ARNs)
            "violations": violations,
        }, indent=2, sort_keys=True))
    else:
        _print_tree(project, stack_name, records, violations, graph.notes)
    if violations:
        raise PolicyError(f"{len(violations)} policy violation(s) in stack {stack_name}")


def _violations(records: Sequence[Record]) -> list[dict[str, str]]:
    """The CrossGuard pack's checks (policies/pack/checks.py, pure Python) on the declared graph."""
    from keystead.policies.pack import checks

    resources = [checks.Resource(type=r.type, name=r.name, props=r.props, protect=r.protect)
                 for r in records if r.custom]
    found = checks.check_stack(resources, checks.Settings())
    return [{"resource": v.resource, "rule": v.rule, "message": v.message} for v in found]


def _as_dict(record: Record) -> dict[str, Any]:
    return {"type": record.type, "name": record.name, "parent": record.parent, "protect": record.protect,
            "custom": record.custom, "ignore_changes": list(record.ignore_changes), "props": dict(record.props)}


def _summary(props: Mapping[str, Any]) -> str:
    parts = []
    for name, value in sorted(props.items()):
        if name in HIDDEN or value in (None, "", [], {}):
            continue
        if name in DOCUMENTS and isinstance(value, str):
            try:
                statements = json.loads(value).get("Statement", [])
                value = f"<{len(statements)} statements>"
            except (ValueError, AttributeError):
                value = "<document>"
        elif not isinstance(value, str):
            value = json.dumps(value, sort_keys=True)
        parts.append(f"{name}={value}")
    return " ".join(parts)


def _print_tree(project: str, stack: str, records: Sequence[Record], violations: list[dict[str, str]] | None,
                notes: Sequence[str] = ()) -> None:
    from rich.markup import escape
    from rich.tree import Tree

    from keystead.cli.app import console as make_console

    console = make_console()  # ends quietly when the reader closes the pipe (`| head`), as every command does
    children: dict[str | None, list[Record]] = {}
    for record in records:
        children.setdefault(record.parent_urn, []).append(record)
    roots = children.get(None, [])
    label = f"[bold]{escape(project)}-{escape(stack)}[/] (offline plan: mocks, nothing is created)"
    tree = Tree(label)

    def add(node: Tree, record: Record) -> None:
        flags = []
        if record.protect:
            flags.append("[yellow]protect[/]")
        if record.ignore_changes:
            flags.append(f"ignore_changes={escape(','.join(record.ignore_changes))}")
        head = f"[cyan]{escape(record.type)}[/] [bold]{escape(record.name)}[/] {' '.join(flags)}".rstrip()
        summary = _summary(record.props)
        branch = node.add(head + (f"\n[dim]{escape(summary)}[/]" if summary else ""))
        for child in sorted(children.get(record.urn, []), key=lambda r: (r.type, r.name)):
            add(branch, child)

    for root in roots:  # the stack resource; everything hangs below it
        for record in sorted(children.get(root.urn, []), key=lambda r: (r.type, r.name)):
            add(tree, record)
    console.print(tree)
    console.print(f"{sum(r.custom for r in records)} resources, "
                  f"{sum(not r.custom for r in records) - len(roots)} components")
    for note in notes:
        console.print(escape(note))
    if not violations:
        console.print("policy checks: no violations")
    else:
        console.print(f"[red]policy checks: {len(violations)} violation(s)[/]")
        for v in violations:
            console.print(f"  {escape(v['resource'])}: {escape(v['rule'])}: {escape(v['message'])}")
