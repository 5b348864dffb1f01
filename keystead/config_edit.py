"""Edits of keystead.toml that keep its comments, layout and order (tomlkit).

Every edit goes the same way: under a lock on the config's folder, read the
file, change the document, validate the new text as keystead.toml would be
read (:func:`keystead.config.parse_config`) and only then replace the file
atomically (:func:`keystead.files.write_atomic`, keeping its mode). An edit
that would make an invalid config raises that ConfigError and leaves the file
as it was; a crash leaves the old file or the new one, never half. An edit
that finds its change already made changes nothing, so re-running a command
never breaks the file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Table
from tomlkit.toml_document import TOMLDocument

from keystead.config import Config, parse_config
from keystead.errors import ConfigError, InputError, NotFoundError, StoreError
from keystead.files import locked, write_atomic


@dataclass(frozen=True, slots=True)
class Edit:
    """What an edit did: whether the file changed, and the config as it now reads."""

    changed: bool
    config: Config


def edit_config(path: Path, change: Callable[[TOMLDocument], bool], *, profile: str | None = None,
                write: bool = True) -> Edit:
    """Apply ``change`` (which returns whether it changed anything) to keystead.toml at ``path``.

    ``write=False`` checks the edit (its errors and the config it would make) and writes nothing."""
    path = Path(path)
    try:
        with locked(path.parent):
            try:
                text = path.read_text(encoding="utf-8")
                mode = stat.S_IMODE(os.stat(path).st_mode)
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: cannot read: {exc}") from None
            parse_config(path, text, profile=profile)  # a broken file is reported as it is, not edited
            try:
                doc = tomlkit.parse(text)
            except TOMLKitError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from None
            if not change(doc):
                return Edit(False, parse_config(path, text, profile=profile))
            new_text = tomlkit.dumps(doc)
            config = parse_config(path, new_text, profile=profile)  # refused before anything is written
            if not write:
                return Edit(True, config)
            try:
                write_atomic(path, new_text.encode("utf-8"), mode=mode)
            except OSError as exc:
                raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
            return Edit(True, config)
    except OSError as exc:
        raise ConfigError(f"cannot lock the folder of {path}: {exc.strerror or exc}") from exc


def _keys_table(doc: TOMLDocument) -> Any:
    if "keys" not in doc:
        doc.add("keys", tomlkit.table(is_super_table=True))
    return doc["keys"]


def key_table(ref: str, *, period: int | None = None, exclusive: bool | None = None,
              options: Mapping[str, object] | None = None) -> Table:
    table = tomlkit.table()
    table.add("ref", ref)
    if period is not None:
        table.add("rotation_period_days", period)
    if exclusive is not None:
        table.add("exclusive", exclusive)
    for name, value in (options or {}).items():
        table.add(name, list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value)
    table.add(tomlkit.nl())
    return table


def add_key(path: Path, name: str, ref: str, *, period: int | None = None, exclusive: bool | None = None,
            options: Mapping[str, object] | None = None, profile: str | None = None,
            canonical: Callable[[str], str] = lambda r: r, write: bool = True) -> Edit:
    """Declare ``[keys.NAME] ref = REF`` (and add NAME to ``[profiles.PROFILE].keys`` when that
    profile lists its keys). Already declared with the same reference: nothing changes;
    with another: InputError. ``canonical`` compares references as the config reads them."""

    def change(doc: TOMLDocument) -> bool:
        keys = _keys_table(doc)
        changed = False
        if name in keys:
            existing = keys[name].get("ref") if isinstance(keys[name], dict) else None
            if not isinstance(existing, str) or canonical(existing) != canonical(ref):
                raise InputError(f"key {name!r} is already declared in {path} with ref {existing!r}: "
                                 "choose another --name")
        else:
            keys[name] = key_table(ref, period=period, exclusive=exclusive, options=options)
            changed = True
        if profile is not None:
            entry = doc.get("profiles", {}).get(profile)
            if entry is None:
                raise ConfigError(f"{path}: unknown profile {profile!r}")
            listed = entry.get("keys")
            if listed is not None and name not in listed:
                listed.append(name)
                changed = True
        return changed

    return edit_config(path, change, profile=profile, write=write)


def remove_key(path: Path, name: str, *, profile: str | None = None, write: bool = True) -> Edit:
    """Remove ``[keys.NAME]`` and NAME from every profile's ``keys``. Refuses to leave the
    config without a key, or a profile that lists its keys with none left."""

    def change(doc: TOMLDocument) -> bool:
        keys = doc.get("keys", {})
        if name not in keys:
            raise NotFoundError(f"no key {name!r} in {path} (see `keystead keys list`)")
        if len(keys) == 1:
            raise InputError(f"key {name!r} is the only key of {path}: add another key before removing it")
        for pname, entry in doc.get("profiles", {}).items():
            listed = entry.get("keys") if isinstance(entry, dict) else None
            if listed is not None and name in listed:
                if len(listed) == 1:
                    raise InputError(f"key {name!r} is the only key of profile {pname!r}: "
                                     "add another key to it before removing this one")
                del listed[list(listed).index(name)]
        del keys[name]
        return True

    return edit_config(path, change, profile=profile, write=write)
