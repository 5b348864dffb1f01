"""Findings as SARIF 2.1.0, so code-scanning UIs show them on the policy file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .rules import RULES, Finding

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
#: Where each rule is explained for users; a rule's anchor is its heading there.
RULES_DOC = "https://github.com/keystead/keystead/blob/main/docs/iam-rules.md"


def _uri(path: str) -> str:
    """A URI reference: relative to the working directory when the file is below it."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(Path.cwd())
        except ValueError:
            return p.as_uri()
    return quote(p.as_posix())


def rule_anchor(rule_id: str) -> str:
    """The anchor of a rule's heading "### KS001 kms-wildcard-action" in docs/iam-rules.md."""
    return f"{rule_id.lower()}-{RULES[rule_id].name}"


def to_sarif(findings: list[Finding], version: str = "0.1.0") -> dict[str, Any]:
    rule_ids = sorted(RULES)
    rules = [{
        "id": rid,
        "name": RULES[rid].name,
        "shortDescription": {"text": RULES[rid].summary},
        "help": {"text": f"{RULES[rid].fix} (docs/iam-rules.md, {rid}: {RULES[rid].source})"},
        "helpUri": f"{RULES_DOC}#{rule_anchor(rid)}",
        "defaultConfiguration": {"level": RULES[rid].severity},
    } for rid in rule_ids]
    results = []
    for f in findings:
        location: dict[str, Any] = {"artifactLocation": {"uri": _uri(f.file)}}
        if f.line:
            location["region"] = {"startLine": f.line}
        results.append({
            "ruleId": f.rule,
            "ruleIndex": rule_ids.index(f.rule),
            "level": f.severity,
            "message": {"text": f"[{f.statement}] {f.message}. Fix: {f.fix}"},
            "locations": [{"physicalLocation": location}],
        })
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "keystead-policy-lint", "version": version,
                                "informationUri": "https://github.com/keystead/keystead",
                                "rules": rules}},
            "results": results,
        }],
    }


def format_sarif(findings: list[Finding]) -> str:
    return json.dumps(to_sarif(findings), indent=2, sort_keys=True) + "\n"
