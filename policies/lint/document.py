"""A policy file read for lint: its kind, its JSON, its statements.

Kinds: ``identity`` (IAM policy), ``key-policy`` (has a Principal),
``trust`` (sts:AssumeRole*), ``gcp-policy`` (bindings), ``gcp-role``
(includedPermissions). A file that is not JSON, or none of these, is a
:class:`LintInputError` with the location of the problem.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import actions as A
from ..spec.locate import json_statement_line
from .errors import LintInputError
from .shape import check_shape

ROOT = re.compile(r"^(arn:aws[a-z-]*:iam::\d{12}:root|\d{12})$")


def _list(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (value,)


@dataclass(frozen=True)
class Statement:
    index: int
    raw: dict[str, Any]

    @property
    def label(self) -> str:
        sid = self.raw.get("Sid")
        return sid if isinstance(sid, str) and sid else f"Statement[{self.index}]"

    @property
    def allow(self) -> bool:
        return self.raw.get("Effect") == "Allow"

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(str(a) for a in _list(self.raw.get("Action")))

    @property
    def actions(self) -> frozenset[str]:
        """Every action granted, with patterns expanded (NotAction: all the others)."""
        if "NotAction" in self.raw:
            return A.ALL_KMS - A.expand_all([str(a) for a in _list(self.raw["NotAction"])])
        return A.expand_all(self.patterns)

    @property
    def resources(self) -> tuple[str, ...]:
        if "NotResource" in self.raw:
            return ("*",)
        return tuple(str(r) for r in _list(self.raw.get("Resource")))

    @property
    def principals(self) -> tuple[str, ...]:
        principal = self.raw.get("Principal")
        if principal is None:
            return ()
        if principal == "*":
            return ("*",)
        if not isinstance(principal, dict):
            return (str(principal),)
        return tuple(str(v) for values in principal.values() for v in _list(values))

    @property
    def conditions(self) -> list[tuple[str, str, tuple[Any, ...]]]:
        """(operator, key lower-cased, values) for every condition."""
        out = []
        block = self.raw.get("Condition") or {}
        if isinstance(block, dict):
            for operator, pairs in block.items():
                if isinstance(pairs, dict):
                    for name, value in pairs.items():
                        out.append((str(operator), str(name).lower(),
                                    tuple(str(v).lower() for v in _list(value))))
        return out

    def has_condition(self, key: str, value: str | None = None, *,
                      positive: bool = False) -> bool:
        """A condition on ``key`` (with ``value``); ``positive``: not a Not/negated operator."""
        key = key.lower()
        return any(name == key and (value is None or value.lower() in values)
                   and not (positive and "not" in operator.lower())
                   for operator, name, values in self.conditions)

    @property
    def root_only(self) -> bool:
        """The account-root statement of a key policy (the lockout-safe one)."""
        return bool(self.principals) and all(ROOT.match(p) for p in self.principals)


@dataclass(frozen=True)
class Document:
    path: str
    text: str
    data: dict[str, Any]
    kind: str

    @property
    def statements(self) -> list[Statement]:
        raw = self.data.get("Statement", [])
        items = raw if isinstance(raw, list) else [raw]
        return [Statement(i, s) for i, s in enumerate(items) if isinstance(s, dict)]

    def line_of(self, statement: Statement) -> int | None:
        sid = statement.raw.get("Sid")
        return json_statement_line(self.text, statement.index, sid if isinstance(sid, str) else None)

    def line_of_text(self, needle: str) -> int | None:
        found = self.text.find(needle)
        return None if found < 0 else self.text.count("\n", 0, found) + 1


def classify(data: Any) -> str | None:
    """The kind of a parsed document (a trust policy is the one with a Principal *and*
    sts:AssumeRole*: an identity policy may allow assuming roles)."""
    if not isinstance(data, dict):
        return None
    if "Statement" in data:
        raw = data["Statement"]
        statements = [s for s in (raw if isinstance(raw, list) else [raw]) if isinstance(s, dict)]
        with_principal = [s for s in statements if "Principal" in s or "NotPrincipal" in s]
        if not with_principal:
            return "identity"
        patterns = [str(a).lower() for s in with_principal for a in _list(s.get("Action"))]
        if any(p.startswith("sts:assumerole") for p in patterns):
            return "trust"
        return "key-policy"
    if "bindings" in data:
        return "gcp-policy"
    if "includedPermissions" in data:
        return "gcp-role"
    return None


def read(path: str | Path) -> Document:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LintInputError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    return parse(text, str(path))


def parse(text: str, path: str = "<input>") -> Document:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LintInputError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    except RecursionError as exc:
        raise LintInputError(f"{path}: invalid JSON: nested too deeply") from exc
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LintInputError(f"{path}: invalid JSON: a string holds a lone surrogate "
                             f"(\\u{ord(exc.object[exc.start]):04x})") from exc
    kind = classify(data)
    if kind is None:
        raise LintInputError(f"{path}: not an IAM policy, key policy, trust policy or GCP IAM "
                             f"policy (no Statement, bindings or includedPermissions)")
    problem = check_shape(data, kind)
    if problem:
        raise LintInputError(f"{path}: {problem}")
    return Document(path=path, text=text, data=data, kind=kind)
