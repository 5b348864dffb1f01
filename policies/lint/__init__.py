"""The lint for IAM policies: the rules, reading documents, reports.

``lint_paths(paths)`` returns ``(documents, findings)``; ``against`` adds the
findings of a policy broader than the spec; ``format_text`` / ``format_json``
/ ``format_sarif`` render findings. An unreadable input raises
:class:`LintInputError`. ``RULES`` holds every rule by id (docs/iam-rules.md).
"""

from .against import against
from .document import Document, Statement, parse, read
from .errors import LintInputError
from .rules import RULES, Finding, Rule
from .run import format_json, format_text, lint_document, lint_paths
from .sarif import format_sarif, to_sarif

__all__ = [
    "RULES",
    "Document",
    "Finding",
    "LintInputError",
    "Rule",
    "Statement",
    "against",
    "format_json",
    "format_sarif",
    "format_text",
    "lint_document",
    "lint_paths",
    "parse",
    "read",
    "to_sarif",
]
