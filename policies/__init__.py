"""keystead.policies: least-privilege IAM from a spec, and a lint for any policy.

Pure Python, no cloud SDK. Three subpackages, one concern each, and two
modules that all of them share or that build on all of them::

    spec/        the IAM spec: model, TOML reader, principals, SpecError
    generate/    the documents a spec needs (AWS and GCP)
    lint/        the rules, documents read back, reports (text, JSON, SARIF)
    actions.py   what each role may do, per key type: the action tables
    from_audit.py  the least-privilege policy for what an audit log shows

Arrows inside: ``generate -> spec``, ``lint -> generate, spec``; all three
read ``actions``. The public surface, re-exported here::

    load_spec(path) / parse_spec(mapping)  -> Spec        (SpecError names the field)
    documents(spec, arns=None)             -> {relative path: document}
    write(spec, out_dir, arns=None)        -> [paths written]
    lint_paths([file or dir, ...])         -> (documents, findings)
    against(spec, documents)               -> (findings, paths not compared)
    format_text / format_json / format_sarif(findings)
    propose(read_records(log), principal)  -> a policy for what was done
    RULES                                  the lint rules by id (docs/iam-rules.md)
"""

from .from_audit import propose, read_records
from .generate import documents, render, write
from .lint import (
    RULES,
    Finding,
    LintInputError,
    against,
    format_json,
    format_sarif,
    format_text,
    lint_document,
    lint_paths,
)
from .spec import SeparationOfDuties, Spec, SpecError, load_spec, parse_spec

__all__ = [
    "RULES",
    "Finding",
    "LintInputError",
    "SeparationOfDuties",
    "Spec",
    "SpecError",
    "against",
    "documents",
    "format_json",
    "format_sarif",
    "format_text",
    "lint_document",
    "lint_paths",
    "load_spec",
    "parse_spec",
    "propose",
    "read_records",
    "render",
    "write",
]
