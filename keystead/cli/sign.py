"""`keystead sign KEY FILE` and `keystead verify KEY FILE SIG`: AWS KMS signing keys.

The work is keystead/providers/aws_sign.py (formats, modes, which keys verify);
this module finds the key in keystead.toml, reads and writes the files, audits a
signature and reports. Exit codes: 0 signed / the signature is good, 1 a bad
signature, 2 bad input (not a signing key, unreadable file), 4 unknown key,
5 an unreadable signature file, 6 KMS refused or failed (docs/cli.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from keystead.cli.app import App, complete_key, pass_app, say
from keystead.errors import InputError, NotFoundError

if TYPE_CHECKING:
    from keystead.config import Config, KeyConfig
    from keystead.providers.aws import AwsKey
    from keystead.providers.aws_sign import PublicKeyCache

PUBLIC_KEYS = Path(".keystead") / "public-keys"
"""Where public keys are cached, relative to keystead.toml's folder (docs/aws.md, Signing keys)."""


def signing_key(config: Config, name: str) -> tuple[KeyConfig, AwsKey]:
    """The signing key NAME (config name or reference) of keystead.toml, opened (no network call)."""
    kc = config.keys.get(name) or next((k for k in config.keys.values() if name == k.ref), None)
    if kc is None:
        raise NotFoundError(f"no key {name!r} in {config.path} (see `keystead keys list`)")
    if kc.provider != "aws" or not kc.signs:
        raise InputError(f"key {kc.name} ({kc.ref}) is not a signing key: declare an AWS ECC_NIST_P256 SIGN_VERIFY "
                         "key with `keystead keys add REF --purpose sign`")
    from keystead.providers import open_key
    from keystead.providers.aws import AwsKey

    key = open_key(kc.ref, config, options=kc.options)
    assert isinstance(key, AwsKey)
    return kc, key


def public_key_cache(config: Config) -> PublicKeyCache:
    from keystead.providers.aws_sign import PublicKeyCache

    return PublicKeyCache(config.root / PUBLIC_KEYS)


def _file(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    return p


@click.command()
@click.argument("key", shell_complete=complete_key)
@click.argument("file", metavar="FILE")
@click.option("--out", "out", metavar="SIG", help="Where to write the signature (default FILE.sig; - for stdout).")
@click.option("--json", "as_json", is_flag=True,
              help="Write keystead's JSON signature (records the key id) instead of the DER signature.")
@pass_app
def sign(app: App, key: str, file: str, out: str | None, as_json: bool) -> None:
    """Sign FILE with signing key KEY (AWS KMS, ECDSA_SHA_256; files over 4 KB by their SHA-256 digest)."""
    from keystead.audit import AuditLog
    from keystead.providers.aws_sign import encode_signature, sign_file

    config = app.config
    kc, signer = signing_key(config, key)
    path = _file(file)
    signature, digest = sign_file(signer, path)
    data = encode_signature(signature, as_json=as_json)
    target = out or f"{file}.sig"
    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        try:
            Path(target).write_bytes(data)
        except OSError as exc:
            raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
    AuditLog(config.audit_path).append("keys.sign", key=kc.ref, name=kc.name, key_id=signature.key_id,
                                       file=path.name, sha256=digest.hex())
    if target != "-":
        say(f"signed {file} with {kc.name} ({signature.key_id}): {target}")


@click.command()
@click.argument("key", shell_complete=complete_key)
@click.argument("file", metavar="FILE")
@click.argument("sig", metavar="SIG")
@pass_app
def verify(app: App, key: str, file: str, sig: str) -> None:
    """Check signature SIG of FILE offline against KEY's public key (or a predecessor's still in grace)."""
    from keystead.providers.aws_sign import decode_signature, verify_file

    config = app.config
    kc, verifier = signing_key(config, key)
    path = _file(file)
    sig_path = _file(sig)
    from keystead.providers.aws_sign import MAX_SIGNATURE_FILE

    try:
        with sig_path.open("rb") as f:
            raw = f.read(MAX_SIGNATURE_FILE + 1)  # a signature is small: never read a large file whole
    except OSError as exc:
        raise InputError(f"cannot read {sig}: {exc.strerror or exc}") from None
    signature = decode_signature(raw, sig)
    kid = verify_file(verifier, path, signature, public_key_cache(config))
    say(f"good signature: {file} signed by {kc.name} (key {kid})")
