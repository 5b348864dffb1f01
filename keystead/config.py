"""keystead.toml: the vault, its keys, profiles and rotation settings.

Paths and relative ``sqlite:///`` / ``dir:`` URLs are relative to the folder
of keystead.toml. Every error names the file, the field and what is allowed.
See docs/cli.md (Configuration) for the full reference.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

from keystead.envelope import check_name
from keystead.errors import ConfigError, KeysteadError
from keystead.providers.options import EXCLUSIVE_BY_DEFAULT, KEY_OPTIONS, PROVIDER_OPTIONS, check

CONFIG_NAME = "keystead.toml"
DEFAULT_PERIOD_DAYS = 90
PERIOD_RANGE = (1, 2560)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class KeyConfig:
    name: str
    ref: str
    """Canonical (see :func:`keystead.providers.canonical_ref`): the identity of the key's slots."""
    rotation_period_days: int = DEFAULT_PERIOD_DAYS
    exclusive: bool = True
    """Only keystead uses this key, so keystead may retire its old versions once no store it
    maintains needs them. Default: true for local keys, false for cloud keys."""
    options: Mapping[str, object] = field(default_factory=dict)
    """Provider options of this key (region, replica_regions, endpoint, purpose, ...)."""

    @property
    def provider(self) -> str:
        from keystead.providers import provider_of

        return provider_of(self.ref)


@dataclass(frozen=True, slots=True)
class RotationConfig:
    interval_minutes: int = 60
    grace_days: int = 7
    batch_size: int = 5000
    verify_sample_above: int = 200_000
    verify_sample_size: int = 10_000
    misfire_grace_seconds: int = 300
    parallel: int = 2
    parallel_above: int = 200_000
    lane_size: int = 50_000
    lease_seconds: int = 60


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    root: Path
    vault_name: str
    store_url: str = field(repr=False)  # URLs may hold a password: never in a repr
    state_url: str = field(repr=False)
    audit_path: Path
    key_file: Path
    age_identity_file: Path | None
    keys: dict[str, KeyConfig]
    slot_keys: tuple[KeyConfig, ...]
    profile: str | None
    profiles: tuple[str, ...]
    rotation: RotationConfig = field(default_factory=RotationConfig)
    stores: tuple[str, ...] = field(default=(), repr=False)
    """Every vault store this config names, the base store first, then each profile's own:
    the stores the worker keeps rotated and counts before it retires anything."""
    providers: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """``[providers.NAME]`` settings, validated."""


def find_config(path: Path | str | None = None) -> Path:
    """``path``, else $KEYSTEAD_CONFIG, else ./keystead.toml."""
    chosen = Path(path or os.environ.get("KEYSTEAD_CONFIG") or CONFIG_NAME)
    if not chosen.is_file():
        raise ConfigError(f"no config file at {chosen}: run `keystead init`, or pass --config PATH")
    return chosen.resolve()


class _Reader:
    """Typed field access that names the file and the field in every error."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {message}")

    def table(self, doc: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(f"{where}{name}", "must be a table")
        return value

    @overload
    def get(self, doc: Mapping[str, Any], name: str, kind: type[_T], where: str) -> _T | None: ...
    @overload
    def get(self, doc: Mapping[str, Any], name: str, kind: type[_T], where: str, default: _T) -> _T: ...
    def get(self, doc: Mapping[str, Any], name: str, kind: type[_T], where: str,
            default: _T | None = None) -> _T | None:
        value = doc.get(name, default)
        if value is None:
            return None
        if type(value) is not kind:
            raise self.fail(f"{where}.{name}", f"must be {kind.__name__}, got {type(value).__name__}")
        return value

    def int_in(self, doc: Mapping[str, Any], name: str, where: str, default: int, lo: int, hi: int) -> int:
        value = self.get(doc, name, int, where, default)
        if not lo <= value <= hi:
            raise self.fail(f"{where}.{name}", f"must be {lo}..{hi}, got {value}")
        return value

    def unknown(self, doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
        extra = sorted(set(doc) - allowed)
        if extra:
            raise self.fail(where, f"unknown field(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})")


def _resolve_url(url: str, root: Path, kind: str) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str((root / url[len("sqlite:///") :]).resolve())
    if url.startswith("dir:") and kind == "store":
        return "dir:" + str((root / url[4:]).resolve())
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


_KEY_FIELDS = {"ref", "rotation_period_days", "exclusive"}


def _options(r: _Reader, doc: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> dict[str, object]:
    out = {}
    for name, kind in allowed.items():
        if name in doc:
            expected = check(doc[name], kind)
            if expected is not None:
                raise r.fail(f"{where}.{name}", f"must be {expected}, got {doc[name]!r}")
            out[name] = doc[name]
    return out


def _key(r: _Reader, name: str, doc: object, providers: Mapping[str, Mapping[str, object]]) -> KeyConfig:
    from keystead.providers import canonical_ref, provider_of

    where = f"[keys.{name}]"
    if not isinstance(doc, dict):
        raise r.fail(where, "must be a table with ref = \"...\"")
    ref = r.get(doc, "ref", str, where)
    if not ref:
        raise r.fail(f"{where}.ref", "is required (e.g. ref = \"local:main\")")
    try:
        provider = provider_of(ref.strip())
    except KeysteadError as exc:
        raise r.fail(f"{where}.ref", str(exc)) from None
    allowed = KEY_OPTIONS.get(provider, {})
    r.unknown(doc, _KEY_FIELDS | set(allowed), where)
    options = _options(r, doc, allowed, where)
    period = r.int_in(doc, "rotation_period_days", where, DEFAULT_PERIOD_DAYS, *PERIOD_RANGE)
    exclusive = r.get(doc, "exclusive", bool, where, provider in EXCLUSIVE_BY_DEFAULT)
    canonical = canonical_ref(ref, options, providers.get(provider))
    return KeyConfig(name, canonical, period, exclusive, options)


def _providers(r: _Reader, doc: Mapping[str, Any]) -> dict[str, dict[str, object]]:
    table = r.table(doc, "providers", "")
    r.unknown(table, set(PROVIDER_OPTIONS), "[providers]")
    out = {}
    for name, allowed in PROVIDER_OPTIONS.items():
        entry = r.table(table, name, "[providers].")
        where = f"[providers.{name}]"
        r.unknown(entry, set(allowed), where)
        out[name] = _options(r, entry, allowed, where)
    rps, share = out["aws"].get("requests_per_second"), out["aws"].get("quota_share")
    if isinstance(rps, (int, float)) and not rps > 0:  # the rotation's rate limit (keystead.providers.limits)
        raise r.fail("[providers.aws].requests_per_second", f"must be above 0 (the account's KMS quota), got {rps}")
    if isinstance(share, (int, float)) and not 0 < share <= 1:
        raise r.fail("[providers.aws].quota_share", f"must be above 0 and at most 1, got {share}")
    return out


def _profile(r: _Reader, name: str, entry: object, keys: Mapping[str, KeyConfig]) -> tuple[list[str], str | None]:
    where = f"[profiles.{name}]"
    if not isinstance(entry, dict):
        raise r.fail(where, "must be a table")
    r.unknown(entry, {"keys", "store"}, where)
    names = entry.get("keys", list(keys))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise r.fail(f"{where}.keys", "must be a list of key names")
    missing = [n for n in names if n not in keys]
    if missing:
        raise r.fail(f"{where}.keys", f"unknown key(s) {', '.join(missing)} (declared: {', '.join(keys) or 'none'})")
    store = _from_env(r, r.get(entry, "store", str, where), f"{where}.store")
    if store is not None:
        _check_store(r, store, f"{where}.store")
    return names, store


ENV_URL = "env:"
"""``store = "env:NAME"``: the URL is the value of the environment variable NAME (the password stays
out of the file: a Kubernetes Secret, a systemd EnvironmentFile)."""


def _from_env(r: _Reader, url: str | None, where: str) -> str | None:
    """``url``, or the value of the variable an ``env:NAME`` URL names."""
    if url is None or not url.startswith(ENV_URL):
        return url
    name = url[len(ENV_URL):].strip()
    value = os.environ.get(name, "").strip() if name else ""
    if not value:
        raise r.fail(where, f"{url!r}: the environment variable {name or '(no name)'} is not set or empty")
    if value.startswith(ENV_URL):
        raise r.fail(where, f"{url!r}: the environment variable {name} names another variable")
    return value


def _check_store(r: _Reader, store: str, where: str) -> None:
    if not store.startswith(("dir:", "sqlite:///", "postgresql://", "postgresql+psycopg://")):
        raise r.fail(where, f"{store!r} is not a store URL (dir:PATH, sqlite:///PATH, postgresql://...)")


def load_config(path: Path | str | None = None, *, profile: str | None = None) -> Config:
    """Read and validate keystead.toml; ``profile`` (else $KEYSTEAD_PROFILE) picks the slot keys."""
    path = find_config(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(path, text, profile=profile)


def parse_config(path: Path, text: str, *, profile: str | None = None) -> Config:
    """Validate ``text`` as the keystead.toml at ``path`` (an edit is checked this way before it is written)."""
    r = _Reader(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    root = path.parent
    r.unknown(doc, {"vault", "keys", "profiles", "providers", "rotation"}, "top level")

    vault = r.table(doc, "vault", "")
    r.unknown(vault, {"name", "store", "state", "audit_log", "key_file", "default_profile"}, "[vault]")
    vault_name = r.get(vault, "name", str, "[vault]", "default")
    try:
        check_name(vault_name, "vault name")
    except KeysteadError as exc:
        raise r.fail("[vault].name", str(exc)) from None
    store = _from_env(r, r.get(vault, "store", str, "[vault]", "sqlite:///.keystead/vault.db"), "[vault].store")
    assert store is not None  # it has a default
    _check_store(r, store, "[vault].store")
    state = _from_env(r, r.get(vault, "state", str, "[vault]", "sqlite:///.keystead/state.db"), "[vault].state")
    assert state is not None

    providers = _providers(r, doc)
    keys_doc = r.table(doc, "keys", "")
    keys = {name: _key(r, name, entry, providers) for name, entry in keys_doc.items()}
    seen: dict[str, str] = {}
    for kc in keys.values():
        if kc.ref in seen:
            raise r.fail(f"[keys.{kc.name}].ref", f"names the same key as [keys.{seen[kc.ref]}] ({kc.ref})")
        seen[kc.ref] = kc.name
    identity = providers["age"].get("identity_file")

    profiles_doc = r.table(doc, "profiles", "")
    profiles = {name: _profile(r, name, entry, keys) for name, entry in profiles_doc.items()}
    chosen = profile or os.environ.get("KEYSTEAD_PROFILE") or r.get(vault, "default_profile", str, "[vault]")
    slot_keys = tuple(keys.values())
    base_store = store
    if chosen is not None:
        if chosen not in profiles:
            known = ", ".join(sorted(profiles)) or "none defined"
            raise ConfigError(f"{path}: unknown profile {chosen!r} (profiles: {known})")
        names, own_store = profiles[chosen]
        slot_keys = tuple(keys[n] for n in names)
        store = own_store or store
    stores: list[str] = []
    for url in [base_store, *(s for _n, (_k, s) in sorted(profiles.items()) if s)]:
        resolved = _resolve_url(url, root, "store")
        if resolved not in stores:
            stores.append(resolved)

    rot = r.table(doc, "rotation", "")
    r.unknown(rot, set(RotationConfig.__dataclass_fields__), "[rotation]")
    rotation = RotationConfig(
        interval_minutes=r.int_in(rot, "interval_minutes", "[rotation]", 60, 1, 10080),
        grace_days=r.int_in(rot, "grace_days", "[rotation]", 7, 0, 365),
        batch_size=r.int_in(rot, "batch_size", "[rotation]", 5000, 1, 100_000),
        verify_sample_above=r.int_in(rot, "verify_sample_above", "[rotation]", 200_000, 0, 10**9),
        verify_sample_size=r.int_in(rot, "verify_sample_size", "[rotation]", 10_000, 1, 10**9),
        misfire_grace_seconds=r.int_in(rot, "misfire_grace_seconds", "[rotation]", 300, 1, 86400),
        parallel=r.int_in(rot, "parallel", "[rotation]", 2, 1, 64),
        parallel_above=r.int_in(rot, "parallel_above", "[rotation]", 200_000, 0, 10**9),
        lane_size=r.int_in(rot, "lane_size", "[rotation]", 50_000, 1, 10**9),
        lease_seconds=r.int_in(rot, "lease_seconds", "[rotation]", 60, 2, 3600),
    )
    if "vault" not in doc and "keys" not in doc:  # an empty (or all-comment) file is a mistake, not a vault
        raise ConfigError(f"{path}: has no [vault] and no [keys] table: run `keystead init` to write one")
    return Config(
        path=path,
        root=root,
        vault_name=vault_name,
        store_url=_resolve_url(store, root, "store"),
        state_url=_resolve_url(state, root, "state"),
        audit_path=(root / r.get(vault, "audit_log", str, "[vault]", ".keystead/audit.log")).resolve(),
        key_file=(root / r.get(vault, "key_file", str, "[vault]", ".keystead/keys.json")).resolve(),
        age_identity_file=Path(str(identity)).expanduser() if identity else None,
        keys=keys,
        slot_keys=slot_keys,
        profile=chosen,
        profiles=tuple(sorted(profiles_doc)),
        rotation=rotation,
        stores=tuple(stores),
        providers=providers,
    )
