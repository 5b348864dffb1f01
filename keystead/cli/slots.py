"""`keystead keys add|remove` and `keystead secrets reseal`: slots across the vault.

The walks themselves are keystead/reseal.py; this module reads the flags,
edits keystead.toml (keystead/config_edit.py) and reports.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import click

from keystead.cli.app import App, complete_key, complete_secret, deferred_interrupt, pass_app, progress_bar, say
from keystead.errors import FormatError, InputError, KeysteadError, NotFoundError, ProviderError

if TYPE_CHECKING:  # for annotations only: the walks and the vault load when a command runs
    from keystead.config import Config
    from keystead.reseal import Report
    from keystead.vault import Vault

#: flag -> option name in keystead.toml (keystead/providers/options.py KEY_OPTIONS)
_OPTION_FLAGS = {"region": "--region", "replica_regions": "--replica-region", "role_arn": "--role-arn",
                 "endpoint": "--endpoint", "purpose": "--purpose"}


def default_name(ref: str, provider: str) -> str:
    """A config name for ``ref`` when --name is not given."""
    if provider == "local":
        return ref.split(":", 1)[1]
    if provider == "age":
        return "age-" + ref[4:12]
    tail = ref.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", tail).lstrip(".-")[:64] or provider


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def raise_left(report: Report, what: str) -> None:
    """The secrets a walk could not do, as the error of the most telling family."""
    from keystead.reseal import names_list

    if report.unopened:
        raise ProviderError(f"{_plural(len(report.unopened), 'secret')} not {what}: no slot of theirs opens on this "
                            f"machine ({names_list(report.unopened)}); run it where one does")
    if report.damaged:
        raise FormatError(f"{_plural(len(report.damaged), 'secret')} not {what}: unreadable envelope(s) "
                          f"({names_list(report.damaged)}); restore them from a backup or remove them")
    if report.busy:
        raise KeysteadError(f"{_plural(len(report.busy), 'secret')} not {what}: changed again and again meanwhile "
                            f"({names_list(report.busy)}); run the same command again")


@click.command("add")
@click.argument("ref")
@click.option("--name", help="Name in keystead.toml (default: from the reference, e.g. local:NAME -> NAME).")
@click.option("--exclusive/--no-exclusive", default=None,
              help="Only keystead uses this key, so it may retire old versions (default: local yes, cloud no).")
@click.option("--period", "period_days", type=click.IntRange(1, 2560), help="Rotation period in days (default 90).")
@click.option("--region", help="AWS: the key's region.")
@click.option("--replica-region", "replica_regions", multiple=True, help="AWS: a replica region (repeatable).")
@click.option("--role-arn", help="AWS: role to assume for this key.")
@click.option("--endpoint", help="AWS/GCP: API endpoint URL.")
@click.option("--purpose", type=click.Choice(["encrypt", "sign"]), help="AWS/GCP: what the key is for.")
@click.option("--reseal", is_flag=True, help="Also give every existing secret a slot for the key.")
@click.option("--batch", type=click.IntRange(1, 100_000), default=500, show_default=True, help="Secrets per batch.")
@pass_app
def add(app: App, ref: str, name: str | None, exclusive: bool | None, period_days: int | None, region: str | None,
        replica_regions: tuple[str, ...], role_arn: str | None, endpoint: str | None, purpose: str | None,
        reseal: bool, batch: int) -> None:
    """Declare key REF in keystead.toml (in the active --profile's keys too); --reseal adds its slot to every secret.

    \b
    REF: local:NAME | age1... | arn:aws:kms:... | alias/NAME | mrk-... | projects/.../cryptoKeys/K
    """
    from keystead.config_edit import add_key
    from keystead.providers import canonical_ref, provider_of
    from keystead.providers.options import KEY_OPTIONS

    config = app.config
    ref = ref.strip()
    provider = provider_of(ref)
    name = name if name is not None else default_name(ref, provider)
    _check_key_name(name, provider)
    given = {"region": region, "replica_regions": list(replica_regions) or None, "role_arn": role_arn,
             "endpoint": endpoint, "purpose": purpose}
    options = {k: v for k, v in given.items() if v is not None}
    allowed = KEY_OPTIONS.get(provider, {})
    refused = [_OPTION_FLAGS[k] for k in options if k not in allowed]
    if refused:
        accepted = ", ".join(_OPTION_FLAGS[k] for k in allowed) or "none"
        raise InputError(f"{', '.join(refused)}: not an option of {provider} keys (accepted: {accepted})")
    canonical = lambda r: canonical_ref(r, options, config.providers.get(provider))
    signing = purpose == "sign"
    if signing and reseal:
        raise InputError("--reseal: a signing key (--purpose sign) holds no envelope slots; "
                         "it signs files (`keystead sign KEY FILE`)")
    profile = None if signing else config.profile  # profiles list the keys that hold slots
    check = add_key(config.path, name, ref, period=period_days, exclusive=exclusive, options=options,
                    profile=profile, canonical=canonical, write=False)  # a bad edit stops here, before any change
    if provider == "local":
        _ensure_local_material(config, ref.split(":", 1)[1])
    edit = add_key(config.path, name, ref, period=period_days, exclusive=exclusive, options=options,
                   profile=profile, canonical=canonical) if check.changed else check
    from keystead.vault import Vault

    with Vault.open(edit.config) as vault:
        kc = edit.config.keys[name]
        if edit.changed:
            vault.audit.append("keys.add", key=kc.ref, name=name, profile=profile)
            where = f" and to profile {profile!r}" if profile else ""
            say(f"declared key {name} ({kc.ref}) in {config.path.name}{where}")
        else:
            say(f"key {name} ({kc.ref}) is already declared in {config.path.name}")
        if signing:
            say(f"a signing key holds no slots: `keystead sign {name} FILE` signs, `keystead verify {name} FILE SIG` "
                "verifies")
            return
        if not reseal:
            if vault.names():
                say(f"existing secrets have no slot for it yet: `keystead keys add {ref} --reseal` adds it")
            return
        if name in vault.key_errors:
            raise vault.key_errors[name]
        from keystead.reseal import add_slot

        with deferred_interrupt() as stop, progress_bar(vault.store.count(), f"adding {name}") as advance:
            report = add_slot(vault, vault.keys[name], batch=batch, progress=advance, stop=stop.is_set)
        say(f"added a slot for {name} to {_plural(report.changed, 'secret')}"
            + (f" ({report.unchanged} had one already)" if report.unchanged else ""))
        raise_left(report, "given a slot")


def _check_key_name(name: str, provider: str) -> None:
    from keystead.envelope import check_name

    try:
        check_name(name, "key name")
    except InputError:
        raise InputError(f"invalid key name {name!r}: use 1-64 characters A-Z a-z 0-9 _ . - "
                         "(not starting with '.' or '-', no '/'); pass --name") from None
    if len(name) > 64:
        raise InputError(f"key name {name[:32]}... is too long: at most 64 characters (pass --name)")


def _ensure_local_material(config: Config, local_name: str) -> None:
    from keystead.providers.local import LocalKeyFile

    keyfile = LocalKeyFile(config.key_file)
    if not keyfile.exists() or local_name not in keyfile.load():
        keyfile.create(local_name)
        say(f"created key material for local:{local_name} in {config.key_file}")


@click.command("remove")
@click.argument("name", shell_complete=complete_key)
@click.option("--reseal", is_flag=True,
              help="Re-seal every secret (fresh data keys) for the remaining keys, instead of only dropping the slot.")
@click.option("--batch", type=click.IntRange(1, 100_000), default=500, show_default=True, help="Secrets per batch.")
@pass_app
def remove(app: App, name: str, reseal: bool, batch: int) -> None:
    """Remove key NAME from keystead.toml and its slot from every secret of the store.

    Refuses, changing nothing, when the key holds the only slot of a secret.
    With --reseal every secret gets a fresh data key for the remaining keys
    (what to run when a person leaves: a data key they kept opens nothing).
    """
    from keystead.config_edit import remove_key
    from keystead.reseal import names_list, only_slot_of, remove_slot
    from keystead.reseal import reseal as reseal_all
    from keystead.vault import Vault

    config = app.config
    if name not in config.keys:
        raise NotFoundError(f"no key {name!r} in {config.path} (see `keystead keys list`)")
    kc = config.keys[name]
    after = remove_key(config.path, name, profile=config.profile, write=False).config  # a bad edit stops here
    with Vault.open(config) as vault:
        alone = only_slot_of(vault, kc.ref)
        if alone:
            raise InputError(f"key {name} holds the only slot of {_plural(len(alone), 'secret')} "
                             f"({names_list(alone)}): give them another key first "
                             f"(`keystead keys add REF --reseal`); nothing was changed")
        total = vault.store.count()
        with deferred_interrupt() as stop, progress_bar(total, f"removing {name}") as advance:
            if reseal:
                targets = [vault.keys[k.name] for k in after.slot_keys if k.name in vault.keys]
                missing = [k.name for k in after.slot_keys if k.name in vault.key_errors]
                if missing:
                    raise vault.key_errors[missing[0]]
                report = reseal_all(vault, targets, batch=batch, progress=advance, stop=stop.is_set)
                done = f"re-sealed {_plural(report.changed, 'secret')} for {', '.join(k.name for k in after.slot_keys)}"
            else:
                report = remove_slot(vault, kc.ref, batch=batch, progress=advance, stop=stop.is_set)
                done = f"removed its slot from {_plural(report.changed, 'secret')}"
        raise_left(report, "re-sealed" if reseal else "changed")
        remove_key(config.path, name, profile=config.profile)
        vault.audit.append("keys.remove", key=kc.ref, name=name, reseal=reseal)
    say(f"removed key {name} ({kc.ref}) from {config.path.name}; {done}")
    if kc.provider == "local":
        say(f"its material stays in {config.key_file} (older backups may need it)")
    if not reseal:
        say("[yellow]note:[/] whoever held this key may have kept data keys: "
            "`keystead secrets reseal --all` gives every secret a fresh one")


@click.command("reseal")
@click.argument("names", nargs=-1, shell_complete=complete_secret)
@click.option("--all", "all_", is_flag=True, help="Every secret of the store.")
@click.option("--dry-run", is_flag=True, help="Say what would be re-sealed; change nothing.")
@click.option("--batch", type=click.IntRange(1, 100_000), default=500, show_default=True, help="Secrets per batch.")
@pass_app
def reseal_cmd(app: App, names: tuple[str, ...], all_: bool, dry_run: bool, batch: int) -> None:
    """Give secrets a fresh data key, wrapped for exactly the keys of the profile now.

    \b
    Each secret is replaced atomically; a re-seal that was killed or
    interrupted is resumed by running the same command again.
    """
    from keystead.envelope import check_name
    from keystead.reseal import reseal

    if bool(names) == all_:
        raise InputError("give secret names or --all (not both)")
    for n in names:
        check_name(n)
    vault = app.vault
    for n in names:
        vault.store.get(n)  # NotFoundError (exit 4) before anything is changed
    targets = vault.slot_keys()
    refs = [k.ref for k in targets]
    if dry_run:
        _dry_run(vault, list(names) or None, refs)
        return
    total = len(set(names)) if names else vault.store.count()
    with deferred_interrupt() as stop, progress_bar(total, "re-sealing") as advance:
        report = reseal(vault, targets, names=list(names) or None, batch=batch, progress=advance, stop=stop.is_set)
    resumed = f" (resumed after {report.resumed_after})" if report.resumed_after else ""
    say(f"re-sealed {_plural(report.changed, 'secret')} for {', '.join(k.name for k in app.config.slot_keys)}"
        f" in {_plural(report.batches, 'batch')}{resumed}".replace("batchs", "batches"))
    raise_left(report, "re-sealed")


def _dry_run(vault: Vault, names: list[str] | None, refs: list[str]) -> None:
    import click as _click

    envelopes = (vault.store.iter_envelopes(on_damaged=lambda n, _e: _click.echo(f"{n}: unreadable envelope"))
                 if names is None else (vault.store.get(n) for n in sorted(set(names), key=str.encode)))
    count = 0
    for env in envelopes:
        count += 1
        old = [s.key for s in env.slots]
        change = "same keys, fresh data key" if sorted(old) == sorted(refs) else \
            f"slots {', '.join(old)} -> {', '.join(refs)}"
        _click.echo(f"{env.name}: {change}")
    say(f"would re-seal {_plural(count, 'secret')} for {', '.join(refs)} (dry run: nothing changed)")
