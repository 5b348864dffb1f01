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

    from keystead.policies.spec import SeparationOfDuties
    from keystead.policies.spec import load_spec

    shown = re.search(r"^iam\.toml:12: (principals\.api\.roles\.vault: .*)$", DOC, re.M).group(1)
    spec = tmp_path / "iam.toml"
    spec.write_text("\n".join([
        "[aws]", 'account = "111122223333"', 'region = "eu-west-1"', "",
        "[keys.vault]", "", "[principals.api]", 'kind = "aws-role"',
        'arn = "arn:aws:iam::111122223333:role/api"', "", "",
        'roles = { vault = ["admin", "decrypt"] }', ""]))
    with pytest.raises(SeparationOfDuties) as caught:
        load_spec(spec)
    assert str(caught.value) == f"{spec}:12: {shown}"
