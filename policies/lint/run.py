"""Lint policy files: read them, apply every rule, report.

``lint_paths`` expands directories to their *.json files (sorted) and returns
the findings sorted by file, line and rule; an unreadable file raises
:class:`LintInputError` (exit code 2 on the command line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .aws import lint_aws
from .document import Document, read
from .errors import LintInputError
from .gcp import lint_gcp
from .rules import Finding


def expand_paths(paths: list[str | Path]) -> list[Path]:
    out: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            out.append(path)
            continue
        found = sorted(path.rglob("*.json"))
        if not found:  # a wrong directory must not pass as a clean one
            raise LintInputError(f"{path}: no *.json files to lint")
        out += found
    return out


def lint_document(doc: Document) -> list[Finding]:
    findings = lint_gcp(doc) if doc.kind.startswith("gcp-") else lint_aws(doc)
    return sorted(set(findings), key=_order)


def lint_paths(paths: list[str | Path]) -> tuple[list[Document], list[Finding]]:
    docs = [read(p) for p in expand_paths(paths)]
    findings = [f for doc in docs for f in lint_document(doc)]
    return docs, sorted(findings, key=_order)


def _order(f: Finding) -> tuple[Any, ...]:
    return (f.file, f.line or 0, f.rule, f.statement, f.message)


def format_text(findings: list[Finding], checked: int) -> str:
    lines = []
    for f in findings:
        where = f"{f.file}:{f.line}" if f.line else f.file
        lines.append(f"{where}: {f.severity} {f.rule} [{f.statement}] {f.message} "
                     f"-- fix: {f.fix}")
    lines.append(f"{len(findings)} finding(s) in {checked} file(s)")
    return "\n".join(lines) + "\n"


def format_json(findings: list[Finding], checked: int) -> str:
    rows = [{"rule": f.rule, "severity": f.severity, "file": f.file, "line": f.line,
             "statement": f.statement, "message": f.message, "fix": f.fix} for f in findings]
    return json.dumps({"files": checked, "findings": rows}, indent=2, sort_keys=True) + "\n"
