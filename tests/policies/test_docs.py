"""docs/policies.md stays true: its example is the shipped spec, its tables complete."""

from __future__ import annotations

import re
from pathlib import Path

from keystead.policies import actions as A
from keystead.policies.lint import RULES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "policies" / "examples" / "keystead-iam.toml"
DOC = (ROOT / "docs" / "policies.md").read_text()


def test_docs_example_is_the_shipped_spec():
    (block,) = re.findall(r"```toml\n(.*?)```", DOC, re.S)
    assert block == EXAMPLE.read_text()


def test_docs_list_every_rule_and_role():
    for rule in RULES.values():
        assert f"| {rule.id} | {rule.name} | {rule.severity} |" in DOC
    for role in A.ROLES:
        assert f"| `{role}` |" in DOC


def test_docs_separation_of_duties_message_is_real(tmp_path):
    import pytest

    from keystead.policies.spec import SeparationOfDuties, load_spec

    match = re.search(r"^iam\.toml:12: (principals\.api\.roles\.vault: .*)$", DOC, re.M)
    assert match, "docs/policies.md shows the separation-of-duties message"
    shown = match.group(1)
    spec = tmp_path / "iam.toml"
    spec.write_text("\n".join([
        "[aws]", 'account = "111122223333"', 'region = "eu-west-1"', "",
        "[keys.vault]", "", "[principals.api]", 'kind = "aws-role"',
        'arn = "arn:aws:iam::111122223333:role/api"', "", "",
        'roles = { vault = ["admin", "decrypt"] }', ""]))
    with pytest.raises(SeparationOfDuties) as caught:
        load_spec(spec)
    assert str(caught.value) == f"{spec}:12: {shown}"


RULES_DOC = (ROOT / "docs" / "iam-rules.md").read_text()


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_iam_rules_doc_explains_every_rule_and_sarif_links_to_it():
    from keystead.policies.lint import to_sarif

    headings = {github_anchor(h): h for h in re.findall(r"^### (.+)$", RULES_DOC, re.M)}
    numbered = set(re.findall(r"^## Rule (\d+):", RULES_DOC, re.M))
    driver = to_sarif([])["runs"][0]["tool"]["driver"]
    for entry in driver["rules"]:
        rule = RULES[entry["id"]]
        url, _, anchor = entry["helpUri"].partition("#")
        assert url.endswith("/docs/iam-rules.md") and anchor in headings, entry["helpUri"]
        assert headings[anchor] == f"{rule.id} {rule.name}"
        assert "docs/iam-rules.md" in entry["help"]["text"]
        assert set(re.findall(r"\d+", rule.source)) <= numbered, rule.source
