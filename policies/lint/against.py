"""``policy lint --against SPEC``: live permissions broader than the spec grants.

A live file is matched to the spec by its file name, as ``generate`` writes
them: identity policies by principal (``api.json``), key policies by key
(``vault.json``, ``vault.eu-central-1.json``), GCP policies by key; or by
``--principal`` / ``--key``. The comparison is over actions x resources
(identity), actions per principal (key policy) and members per role (GCP):
anything granted that the spec's documents do not grant is a KS021 finding.
Conditions are not compared (a missing condition is the other rules' job).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from ..generate import aws, gcp
from ..generate.output import render
from ..spec.model import Spec
from .document import Document, Statement, parse
from .rules import Finding, finding, shorten


def _expected(doc_kind: str, name: str, spec: Spec) -> dict[str, Any] | None:
    if doc_kind == "identity" and any(p.name == name for p in spec.principals):
        return aws.identity_policy(spec, name) or {"Statement": []}
    keys = {k.name: k for k in spec.keys}
    if doc_kind == "key-policy" and name in keys and keys[name].cloud == "aws":
        return aws.key_policy(spec, name)
    if doc_kind == "gcp-policy" and name in keys and keys[name].cloud == "gcp":
        return gcp.bindings(spec, name)
    if doc_kind == "gcp-role":
        return gcp.rotator_role(spec)
    return None


def against(spec: Spec, docs: list[Document], *, principal: str | None = None,
            key: str | None = None) -> tuple[list[Finding], list[str]]:
    """Findings, and the files that matched nothing in the spec (skipped)."""
    findings: list[Finding] = []
    skipped: list[str] = []
    for doc in docs:
        if doc.kind == "trust":
            continue  # who may assume a role is not a permission the spec ranks
        stem = Path(doc.path).name.removesuffix(".json")
        name = (principal if doc.kind == "identity" else key) or stem.split(".")[0]
        expected = _expected(doc.kind, name, spec)
        if expected is None:
            skipped.append(doc.path)
            continue
        want = parse(render(expected), f"spec:{name}")
        if doc.kind == "identity":
            findings += _identity(doc, want, name)
        elif doc.kind == "key-policy":
            findings += _key_policy(doc, want, name)
        elif doc.kind == "gcp-policy":
            findings += _gcp(doc, want, name)
        else:
            extra = sorted(set(doc.data.get("includedPermissions") or [])
                           - set(expected["includedPermissions"]))
            if extra:
                findings.append(finding("KS021", doc.path, "includedPermissions",
                                        f"grants {', '.join(extra)} beyond the rotator role"))
    return findings, skipped


def _pairs(stmt: Statement) -> set[tuple[str, str]]:
    return {(a, r) for a in stmt.actions for r in stmt.resources}


def _identity(doc: Document, want: Document, name: str) -> list[Finding]:
    allowed = set().union(*(_pairs(s) for s in want.statements if s.allow))
    out = []
    for stmt in doc.statements:
        if not stmt.allow:
            continue
        extra = sorted({(a, r) for a, r in _pairs(stmt)
                        if not any(a == wa and fnmatch.fnmatchcase(r, wr) for wa, wr in allowed)})
        if extra:
            shown = shorten([f"{a} on {r}" for a, r in extra], most=3)
            out.append(finding("KS021", doc.path, stmt.label,
                               f"grants {shown}: the spec gives principal {name!r} no such "
                               f"permission", doc.line_of(stmt)))
    return out


def _by_principal(doc: Document) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for stmt in doc.statements:
        if stmt.allow:
            for principal in stmt.principals:
                out.setdefault(principal, set()).update(stmt.actions)
    return out


def _key_policy(doc: Document, want: Document, name: str) -> list[Finding]:
    expected = _by_principal(want)
    out = []
    for stmt in doc.statements:
        if not stmt.allow:
            continue
        for principal in stmt.principals:
            extra = sorted(stmt.actions - expected.get(principal, set()))
            if extra:
                out.append(finding("KS021", doc.path, stmt.label,
                                   f"{principal} may {shorten(extra)} on key {name!r}; "
                                   f"the spec does not grant it",
                                   doc.line_of(stmt)))
    return out


def _members(data: dict[str, Any]) -> set[tuple[str, str]]:
    return {(str(b.get("role")), str(m)) for b in data.get("bindings") or []
            if isinstance(b, dict) for m in b.get("members") or []}


def _gcp(doc: Document, want: Document, name: str) -> list[Finding]:
    extra = sorted(_members(doc.data) - _members(want.data))
    return [finding("KS021", doc.path, role, f"{member} holds {role} on key {name!r}; "
                    f"the spec does not grant it", doc.line_of_text(member))
            for role, member in extra]
