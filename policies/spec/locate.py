"""Find the line of a field in TOML or JSON text, for error messages.

tomllib and json give values, not positions. These helpers look the field up
in the text again: good enough to point a user at the right line, and they
return None rather than guess when they cannot tell.
"""

from __future__ import annotations

import re

_PART = re.compile(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)')


def _split_dotted(name: str) -> tuple[str, ...]:
    return tuple(a or b or c for a, b, c in _PART.findall(name))


def _headers(lines: list[str]) -> list[tuple[int, tuple[str, ...]]]:
    out = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text.startswith("[") and text.endswith("]"):
            out.append((number, _split_dotted(text.strip("[]").strip())))
    return out


def toml_line(text: str, path: tuple[str, ...]) -> int | None:
    """The line that defines ``path`` (or the nearest enclosing table)."""
    lines = text.splitlines()
    headers = _headers(lines)
    for depth in range(len(path), -1, -1):
        prefix, rest = path[:depth], path[depth:]
        if depth:
            starts = [n for n, name in headers if name == prefix]
            if not starts:
                continue
            start = starts[0]
        else:
            start = 0
        if not rest:
            return start or None
        following = [n for n, _ in headers if n > start]
        end = following[0] if following else len(lines) + 1
        key = re.compile(r'^\s*["\']?' + re.escape(rest[0]) + r'["\']?\s*[=.]')
        for number in range(start + 1, end):
            if key.match(lines[number - 1]):
                return number
        if start:
            return start
    return None


def json_statement_line(text: str, index: int, sid: str | None) -> int | None:
    """The line where statement ``index`` (with ``sid`` if it has one) starts."""
    if sid:
        found = re.search(r'"Sid"\s*:\s*"' + re.escape(sid) + '"', text)
        if found:
            return text.count("\n", 0, found.start()) + 1
    match = re.search(r'"Statement"\s*:\s*([\[{])', text)
    if not match:
        return None
    if match.group(1) == "{":
        return text.count("\n", 0, match.start(1)) + 1
    depth, seen, in_string, escaped = 0, -1, False, False
    for pos in range(match.end(1), len(text)):
        char = text[pos]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            if depth == 0 and char == "{":
                seen += 1
                if seen == index:
                    return text.count("\n", 0, pos) + 1
            depth += 1
        elif char in "]}":
            if depth == 0:
                return None
            depth -= 1
    return None
