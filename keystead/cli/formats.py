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
    from dotenv import dotenv_values  # only when a dotenv file is read

    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    empty = [k for k, v in values.items() if v is None]
    if empty:
        raise InputError(f"{path}: line for {empty[0]!r} has no '=' and no value")
    return dict(values)


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render_dotenv(items: dict[str, str]) -> str:
    """A dotenv file that python-dotenv (and most shells' dotenv loaders) read back exactly."""
    return "".join(f"{name}={_quote(value)}\n" for name, value in items.items())
