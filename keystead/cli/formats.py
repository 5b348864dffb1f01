"""Reading and writing secrets as dotenv or JSON files."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from keystead.errors import InputError


def parse_secrets_file(path: str, fmt: str = "auto") -> dict[str, str]:
    """name -> value from a dotenv file or a JSON object of strings ('-' reads stdin)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if fmt == "auto":
        fmt = "json" if text.lstrip().startswith("{") else "dotenv"
    if fmt == "json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise InputError(f"{path}: expected a JSON object of name: string value")
        return doc
    return _parse_dotenv(path, text)


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
