"""Typed access to a raw spec mapping that fails with the field's dotted path and line."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NoReturn

from .errors import SpecError
from .locate import toml_line

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class Reader:
    """Typed access to the raw mapping that fails with field and line."""

    def __init__(self, text: str | None, source: str | None) -> None:
        self.text, self.source = text, source

    def fail(self, path: tuple[str, ...], message: str, cls: type[SpecError] = SpecError) -> NoReturn:
        line = toml_line(self.text, path) if self.text else None
        raise cls(".".join(path) or "spec", message, line=line, source=self.source)

    def get(self, data: Mapping[str, Any], path: tuple[str, ...], name: str, kind: type | tuple[type, ...],
            default: Any = None, required: bool = False) -> Any:
        if name not in data:
            if required:
                self.fail(path, f"missing required field '{name}'")
            return default
        value = data[name]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            self.fail(path + (name,), f"must be {_kind_name(kind)}, got {value!r}")
        return value

    def table(self, data: Mapping[str, Any], path: tuple[str, ...], name: str) -> dict[str, Any]:
        value: dict[str, Any] = self.get(data, path, name, dict, default={})
        for key in value:  # YAML allows 123 or yes as a name; TOML never does
            if not isinstance(key, str):
                self.fail(path + (name, str(key)), "names are strings: quote this name")
        return value

    def strings(self, data: Mapping[str, Any], path: tuple[str, ...], name: str) -> tuple[str, ...]:
        value = self.get(data, path, name, (list, str), default=[])
        items = [value] if isinstance(value, str) else value
        for item in items:
            if not isinstance(item, str):
                self.fail(path + (name,), f"must be a list of strings, got {item!r}")
        return tuple(items)

    def entry(self, path: tuple[str, ...], raw: Any, known: set[str]) -> None:
        """A named table under keys, principals or workers: its name, type and fields."""
        if path[0] != "workers" and not NAME.match(path[-1]):
            self.fail(path, "names are letters, digits, '-' and '_'")
        if not isinstance(raw, dict):
            self.fail(path, "must be a table")
        self.no_unknown(raw, path, known)

    def no_unknown(self, data: Mapping[str, Any], path: tuple[str, ...], known: set[str]) -> None:
        for name in data:
            if name not in known:
                self.fail(path + (str(name),), f"unknown field (known: {', '.join(sorted(known))})")


def _kind_name(kind: Any) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", dict: "a table",
             list: "a list"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
