"""keystead.toml's key entries from the Pulumi stack's outputs (``keystead stack config``).

The stack (stacks/) exports ``keys``: one entry per key it created, named by
the keystead key name (the shape docs/cli.md, `stack config`, shows)::

    {"keys": {"vault": {"provider": "aws", "arn": "arn:aws:kms:us-east-1:1111:key/mrk-...",
                        "alias": "alias/vault", "region": "us-east-1",
                        "replica_regions": ["eu-west-1"], "rotation": "scheduled",
                        "rotation_period_days": 90, "purpose": "encrypt", ...},
              "gkey": {"provider": "gcp", "id": "projects/P/locations/L/keyRings/R/cryptoKeys/K",
                       "rotation": "scheduled", "rotation_period_days": 90, "purpose": "encrypt"}}}

:func:`read_outputs` turns that into :class:`StackKey` values (or one
InputError naming the field); :func:`apply` changes a tomlkit document so that
each ``[keys.NAME]`` says what the stack made, keeping every other field and
comment. An AWS key's ``ref`` is its alias ARN (the worker moves the alias to
successor keys, so the alias is the key's lasting name); its options are
``region``, ``replica_regions`` (in the stack's order), ``purpose``; a key AWS
rotates on the stack's schedule (``"rotation": "scheduled"``) gets
``manage_rotation = false``: the stack owns the schedule, and the worker only
catches up with the material AWS made. A GCP key's ``ref`` is its CryptoKey id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.toml_document import TOMLDocument

from keystead.config import PERIOD_RANGE
from keystead.config_edit import key_table
from keystead.envelope import check_name
from keystead.errors import InputError
from keystead.providers import canonical_ref
from keystead.providers.options import PURPOSES

MAX_KEY_NAME = 64
_KEY_ARN = re.compile(r"arn:(aws[a-z\-]*):kms:([a-z0-9\-]+):(\d{12}):key/([A-Za-z0-9\-]+)")
_ALIAS = re.compile(r"alias/[A-Za-z0-9:/_\-]{1,250}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
_GCP_ID = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")
ROTATIONS = ("scheduled", "successor")
OPTIONS_SET = ("region", "replica_regions", "purpose", "manage_rotation")
"""The key options this command owns; any other field of a ``[keys.X]`` table is the user's."""


@dataclass(frozen=True)
class StackKey:
    """One key the stack made, as keystead.toml should declare it."""

    name: str
    provider: str
    ref: str
    period: int
    options: dict[str, object] = field(default_factory=dict)
    """Values of :data:`OPTIONS_SET` to write; one that is absent here is removed."""


class _Fields:
    """Field access over one outputs entry; every error names ``keys.NAME.FIELD`` and the file."""

    def __init__(self, path: str, name: str, entry: Mapping[str, Any]) -> None:
        self.path, self.name, self.entry = path, name, entry

    def fail(self, name: str, message: str) -> InputError:
        return InputError(f"{self.path}: keys.{self.name}.{name}: {message}")

    def string(self, name: str, pattern: re.Pattern[str] | None = None, *, example: str = "") -> str:
        value = self.entry.get(name)
        if not isinstance(value, str) or not value:
            raise self.fail(name, f"missing or not a string (got {value!r})")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(name, f"{value!r} is not {example}")
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        value = self.entry.get(name, default)
        if value not in allowed:
            raise self.fail(name, f"{value!r} is not one of {', '.join(allowed)}")
        return str(value)

    def period(self) -> int:
        value = self.entry.get("rotation_period_days")
        lo, hi = PERIOD_RANGE
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if number is None or not float(number).is_integer() or not lo <= number <= hi:
            raise self.fail("rotation_period_days", f"must be a whole number of days {lo}..{hi}, got {value!r}")
        return int(number)

    def regions(self, name: str) -> list[str]:
        value = self.entry.get(name, [])
        if not isinstance(value, list) or not all(isinstance(r, str) and _REGION.fullmatch(r) for r in value):
            raise self.fail(name, f"must be a list of AWS regions, got {value!r}")
        return list(value)


def _aws(f: _Fields) -> StackKey:
    arn = f.string("arn", _KEY_ARN, example="a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)")
    m = _KEY_ARN.fullmatch(arn)
    assert m is not None
    partition, arn_region, account, _key_id = m.groups()
    alias = f.string("alias", _ALIAS, example="an alias name (alias/NAME)")
    region = f.string("region", _REGION, example="an AWS region")
    if region != arn_region:
        raise f.fail("region", f"{region!r} is not the region of its arn ({arn_region})")
    replicas = f.regions("replica_regions")
    if region in replicas:
        raise f.fail("replica_regions", f"holds the key's own region {region}")
    rotation = f.choice("rotation", ROTATIONS)
    purpose = f.choice("purpose", PURPOSES, "encrypt")
    options: dict[str, object] = {"region": region}
    if replicas:
        options["replica_regions"] = replicas
    options["purpose"] = purpose
    if rotation == "scheduled":
        options["manage_rotation"] = False
    ref = canonical_ref(f"arn:{partition}:kms:{region}:{account}:{alias}")
    return StackKey(f.name, "aws", ref, f.period(), options)


def _gcp(f: _Fields) -> StackKey:
    key_id = f.string("id", _GCP_ID, example="a CryptoKey id (projects/P/locations/L/keyRings/R/cryptoKeys/K)")
    f.choice("rotation", ROTATIONS, "scheduled")  # successor: an asymmetric key, which GCP cannot rotate
    purpose = f.choice("purpose", PURPOSES, "encrypt")
    return StackKey(f.name, "gcp", canonical_ref(key_id), f.period(), {"purpose": purpose})


def parse_outputs(text: str, path: str = "<outputs>") -> list[StackKey]:
    """The keys of ``pulumi stack output --json``; InputError naming the field on any other shape."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON (expected `pulumi stack output --json`): "
                         f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InputError(f"{path}: not JSON: nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
        raise InputError(f"{path}: no \"keys\" object: expected the `pulumi stack output --json` "
                         "of keystead's stack (docs/cli.md, `stack config`)")
    out = []
    for name, entry in data["keys"].items():
        try:
            check_name(name, "key name")
        except InputError:
            raise InputError(f"{path}: keys: {name!r} is not a keystead key name") from None
        if len(name) > MAX_KEY_NAME:
            raise InputError(f"{path}: keys: {name[:32]}... is longer than {MAX_KEY_NAME} characters")
        if not isinstance(entry, dict):
            raise InputError(f"{path}: keys.{name}: must be an object, got {type(entry).__name__}")
        f = _Fields(path, name, entry)
        provider = entry.get("provider")
        if provider == "aws":
            out.append(_aws(f))
        elif provider == "gcp":
            out.append(_gcp(f))
        else:
            raise f.fail("provider", f"unknown provider {provider!r} (the stack makes aws and gcp keys)")
    if not out:
        raise InputError(f"{path}: \"keys\" is empty: the stack declared no key")
    return out


def read_outputs(path: Path) -> list[StackKey]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_outputs(text, str(path))


# -- the edit ----------------------------------------------------------------------------

@dataclass
class Changes:
    """What :func:`apply` did, by key name."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    migrated: dict[str, str] = field(default_factory=dict)
    """name -> the name its old entry (and old ref) now has."""

    @property
    def any(self) -> bool:
        return bool(self.added or self.updated or self.migrated)


def retired_name(name: str, taken: set[str]) -> str:
    """A free name for the old entry of a migrated key: NAME-old, NAME-old-2, ..."""
    base = f"{name[: MAX_KEY_NAME - 4]}-old"
    candidate, n = base, 2
    while candidate in taken:
        candidate = f"{base[: MAX_KEY_NAME - 1 - len(str(n))]}-{n}"
        n += 1
    return candidate


def _set(table: Any, name: str, value: object) -> bool:
    """Set ``table[name] = value`` unless it already holds that; whether it changed."""
    current = table.get(name)
    plain = current.unwrap() if hasattr(current, "unwrap") else current  # tomlkit items: plain values
    if plain == value and type(plain) is type(value):
        return False
    table[name] = list(value) if isinstance(value, list) else value
    return True


def apply(doc: TOMLDocument, keys: list[StackKey], *, current_refs: Mapping[str, str],
          migrate: Collection[str] = ()) -> Changes:
    """Make ``doc``'s ``[keys.NAME]`` entries declare ``keys``.

    ``current_refs``: each declared key's ref as the config reads it (canonical),
    to tell a new reference from another spelling of the same one (the ref as the
    user wrote it is kept then). A key in ``migrate`` whose ref changes keeps its
    old entry under :func:`retired_name` (in every profile that lists it, too)
    and gets a new entry; any other ref change rewrites ``ref`` in place (the
    caller proved that no envelope holds it).
    """
    if "keys" not in doc:
        doc.add("keys", tomlkit.table(is_super_table=True))
    table: Any = doc["keys"]
    changes = Changes()
    for sk in keys:
        if sk.name not in table:
            table[sk.name] = key_table(sk.ref, period=sk.period, options=sk.options)
            changes.added.append(sk.name)
            continue
        entry = table[sk.name]
        moved = current_refs.get(sk.name) != sk.ref
        if moved and sk.name in migrate:
            old = retired_name(sk.name, set(table))
            table[old] = entry
            del table[sk.name]
            _rename_in_profiles(doc, sk.name, old)
            table[sk.name] = key_table(sk.ref, period=sk.period, options=sk.options)
            changes.migrated[sk.name] = old
            continue
        changed = _set(entry, "ref", sk.ref) if moved else False
        changed |= _set(entry, "rotation_period_days", sk.period)
        for option in OPTIONS_SET:
            if option in sk.options:
                changed |= _set(entry, option, sk.options[option])
            elif option in entry and option != "manage_rotation":  # a successor key: manage_rotation is inert
                del entry[option]
                changed = True
        (changes.updated if changed else changes.unchanged).append(sk.name)
    return changes


def _rename_in_profiles(doc: TOMLDocument, name: str, old: str) -> None:
    """Each profile that lists ``name`` keeps listing it (the new key) and lists ``old`` after it."""
    for entry in doc.get("profiles", {}).values():
        listed = entry.get("keys") if isinstance(entry, dict) else None
        if listed is not None and name in listed:
            listed.insert(list(listed).index(name) + 1, old)
