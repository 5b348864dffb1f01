"""Helpers for the AWS tests: a workspace whose keystead.toml names AWS keys (written directly:
``keys add`` is another issue's), and keys made in the moto server."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import STORES, Workspace
from tests.providers.aws.moto_server import ACCOUNT, REGION

LOCAL = '[keys.main]\nref = "local:main"\nrotation_period_days = 90\n'


def alias_arn(name: str, region: str = REGION) -> str:
    return f"arn:aws:kms:{region}:{ACCOUNT}:alias/{name}"


def make_key(kms, alias: str | None = None, **create) -> dict:
    """A key in moto (and its alias); returns its KeyMetadata."""
    meta = kms.create_key(**create)["KeyMetadata"]
    if alias:
        kms.create_alias(AliasName=f"alias/{alias}", TargetKeyId=meta["KeyId"])
    return meta


def workspace(root: Path, keys: str, *, local: bool = True, extra: str = "") -> Workspace:
    """``keystead init``, then keystead.toml's [keys] replaced by ``keys`` (plus the local key)."""
    w = Workspace(root, STORES["sqlite"])
    w.cli("init", "--dir", str(root), "--store", w.store)
    text = w.config.read_text()
    assert LOCAL in text
    text = text.replace(LOCAL, (LOCAL if local else "") + keys)
    w.config.write_text(text + extra)
    return w


def aws_key_toml(name: str, ref: str, **options: object) -> str:
    lines = [f"[keys.{name}]", f'ref = "{ref}"']
    for k, v in options.items():
        value = str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int) else f'"{v}"'
        lines.append(f"{k} = {value}")
    return "\n".join(lines) + "\n"
