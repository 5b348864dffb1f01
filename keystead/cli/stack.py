"""`keystead stack config --from-outputs FILE`: keystead.toml's keys from the Pulumi stack.

FILE is ``pulumi stack output --json`` of keystead's stack (``-``: standard
input). Each key the stack made gets its ``[keys.NAME]`` entry written or
updated (keystead/stack_config.py says which fields); the edit keeps comments
and layout and replaces the file atomically (keystead/config_edit.py).

A key whose reference would change is the dangerous case: every slot names
its key by reference, so a new ``ref`` would orphan the envelopes wrapped
under the old one. The command counts the slots of the old reference in
every store the config maintains (the base store and each profile's) and
refuses if any holds one, or if a store cannot be read; ``--migrate`` keeps
the old entry as ``NAME-old`` beside the new one and says how to move the
slots (``keys add ... --reseal``, then ``keys remove NAME-old``): the reseal is
left to the user, who runs it per store and can check each step.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keystead.cli.app import App, pass_app, say
from keystead.errors import ConfigError, InputError, KeysteadError

if TYPE_CHECKING:
    from tomlkit.toml_document import TOMLDocument

    from keystead.config import Config
    from keystead.stack_config import Changes, StackKey


@click.group()
def stack() -> None:
    """Connect keystead.toml to the Pulumi stack (stacks/; docs/cli.md, `stack config`)."""


@dataclass
class Held:
    """Slots of one reference across the config's stores."""

    total: int = 0
    stores: list[str] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    """store (URL without password) -> why it could not be counted."""


def _exists(url: str) -> bool:
    """Whether the store at ``url`` (resolved by the config) was ever created: one that was not holds nothing,
    and opening it would create it."""
    for prefix in ("sqlite:///", "dir:"):
        if url.startswith(prefix):
            return Path(url[len(prefix):]).exists()  # the config resolved it to an absolute path
    return True


def slots_held(config: Config, ref: str) -> Held:
    """How many envelopes hold a slot of ``ref`` in every store ``config`` maintains (damaged ones count:
    nothing may conclude they do not)."""
    from keystead.rotation.stores import redacted
    from keystead.stores import open_store

    held = Held()
    for url in config.stores or (config.store_url,):
        if not _exists(url):
            continue
        try:
            with open_store(url, base=config.root) as store:
                count = sum(store.version_counts(ref).values())
        except KeysteadError as exc:
            held.unreachable[redacted(url)] = str(exc)
            continue
        if count:
            held.total += count
            held.stores.append(redacted(url))
    return held


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _refusal(sk: StackKey, old: str, held: Held) -> InputError:
    if held.unreachable:
        store, why = next(iter(held.unreachable.items()))
        reason = f"the slots in store {store} cannot be counted ({why})"
    else:
        reason = f"{_plural(held.total, 'envelope')} in {_plural(len(held.stores), 'store')} still hold its slots"
    return InputError(f"key {sk.name}: the stack names {sk.ref} but keystead.toml's ref is {old}, and {reason}: "
                      "changing it would orphan them; nothing was changed (--migrate keeps the old key "
                      "beside the new one)")


def _read(outputs: str) -> list[StackKey]:
    from keystead.stack_config import parse_outputs, read_outputs

    if outputs == "-":
        return parse_outputs(sys.stdin.read(), "<stdin>")
    return read_outputs(Path(outputs))


def _check_refs(after: Config, keys: list[StackKey], before: dict[str, str], changes: Changes) -> None:
    """The edit changes exactly the references it means to (a guard against a ref that reads differently
    once its options change)."""
    wanted = {sk.name: sk.ref for sk in keys}
    wanted |= {old: before[name] for name, old in changes.migrated.items()}
    wanted |= {name: ref for name, ref in before.items() if name not in wanted}
    for name, ref in wanted.items():
        got = after.keys[name].ref if name in after.keys else None
        if got != ref:
            raise ConfigError(f"{after.path}: [keys.{name}] would read as {got} instead of {ref}: "
                              "fix its ref or options by hand; nothing was changed")


@stack.command("config")
@click.option("--from-outputs", "outputs", required=True, metavar="FILE",
              help="`pulumi stack output --json` of keystead's stack (- for standard input).")
@click.option("--migrate", is_flag=True,
              help="Where a key's ref changes and envelopes hold the old one: keep the old entry as NAME-old.")
@click.option("--dry-run", is_flag=True, help="Print the change to keystead.toml as a diff; write nothing.")
@pass_app
def config_cmd(app: App, outputs: str, migrate: bool, dry_run: bool) -> None:
    """Write or update keystead.toml's [keys.NAME] entries from the stack's outputs.

    \b
    pulumi stack output --json > outputs.json
    keystead stack config --from-outputs outputs.json --dry-run
    keystead stack config --from-outputs outputs.json
    """
    import tomlkit

    from keystead.config_edit import edit_config
    from keystead.stack_config import apply

    keys = _read(outputs)
    config = app.config
    before = {name: kc.ref for name, kc in config.keys.items()}
    migrating: dict[str, Held] = {}
    for sk in keys:
        old = before.get(sk.name)
        if old is None or old == sk.ref:
            continue
        held = slots_held(config, old)
        if held.total or held.unreachable:
            if not migrate:
                raise _refusal(sk, old, held)
            migrating[sk.name] = held

    result: dict[str, Any] = {}

    def change(doc: TOMLDocument) -> bool:
        result["changes"] = changes = apply(doc, keys, current_refs=before, migrate=set(migrating))
        result["doc"] = doc
        return changes.any

    check = edit_config(config.path, change, profile=config.profile, write=False)  # every error stops here
    changes: Changes = result["changes"]
    _check_refs(check.config, keys, before, changes)
    if dry_run:
        old_text = config.path.read_text(encoding="utf-8")
        new_text = tomlkit.dumps(result["doc"]) if check.changed else old_text
        sys.stdout.writelines(difflib.unified_diff(old_text.splitlines(keepends=True),
                                                   new_text.splitlines(keepends=True),
                                                   fromfile=f"{config.path.name} (now)",
                                                   tofile=f"{config.path.name} (from the stack)"))
        say(_summary(changes) + " (dry run: nothing written)")
        return
    if not check.changed:
        say(f"{config.path.name} already declares the stack's {_plural(len(keys), 'key')}: nothing to change")
        return
    edit = edit_config(config.path, change, profile=config.profile)
    changes = result["changes"]
    _check_refs(edit.config, keys, before, changes)
    _audit(edit.config, keys, changes)
    say(f"{config.path.name}: " + _summary(changes))
    for name, old in changes.migrated.items():
        new_ref = edit.config.keys[name].ref
        held = migrating[name]
        say(f"key {name} now names {new_ref}; its old entry is [keys.{old}] ({before[name]}), whose slots "
            f"{_plural(held.total, 'envelope')} still hold. Move them, per store "
            f"(--profile P for a profile's own store): `keystead keys add {new_ref} --name {name} --reseal`, "
            f"then `keystead keys remove {old}`")


def _summary(changes: Changes) -> str:
    parts = []
    for label, names in (("added", changes.added), ("updated", changes.updated),
                         ("migrated", list(changes.migrated)), ("unchanged", changes.unchanged)):
        if names:
            parts.append(f"{label} {', '.join(names)}")
    return "; ".join(parts)


def _audit(config: Config, keys: list[StackKey], changes: Changes) -> None:
    from keystead.audit import AuditLog

    kind = {**dict.fromkeys(changes.added, "added"), **dict.fromkeys(changes.updated, "updated"),
            **dict.fromkeys(changes.migrated, "migrated")}
    records = [{"action": "stack.config", "key": sk.ref, "details": {"name": sk.name, "change": kind[sk.name]}}
               for sk in keys if sk.name in kind]
    AuditLog(config.audit_path).append_many(records)
