"""Every file path that the code and the docs name exists.

Scans the *.py and *.md files of the shipped folders, docs/, benchmarks/ and
README.md for repository paths such as ``tests/test_envelope.py``,
``docs/iam-rules.md``, ``policies/lint/`` or ``keystead/envelope.py``, and
fails on any that is not in the repository. A path inside a URL, after a
``-``/``.``/``/`` (``aws/key-policies/…``, ``~/.keystead/``) or holding a
placeholder (``<key>``, ``*``) is cut where the path stops being literal.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("keystead", "rotation", "policies", "stacks", "docs", "benchmarks", "README.md")
TOPS = ("tests", "docs", "policies", "keystead", "rotation", "stacks", "benchmarks")
ALTERNATIVES = "|".join(TOPS)
PATH = re.compile(rf"(?<![\w./~-])((?:{ALTERNATIVES})/[\w./-]*)")


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        files += [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.suffix in (".py", ".md") and "__pycache__" not in p.parts)
    return files


def references(text: str) -> set[str]:
    found = set()
    for match in PATH.finditer(text):
        path = match.group(1).rstrip(".-")
        if path.endswith("/") or "." in path.rsplit("/", 1)[-1] or path.count("/") > 1:
            found.add(path)
    return found


def test_every_referenced_path_exists() -> None:
    missing = sorted(f"{file.relative_to(ROOT)}: {ref}"
                     for file in scanned_files()
                     for ref in references(file.read_text(encoding="utf-8"))
                     if not (ROOT / ref).exists())
    assert not missing, "references to files that do not exist:\n" + "\n".join(missing)


def test_the_scan_finds_the_kinds_of_path_it_promises() -> None:
    text = ("see tests/test_envelope.py, docs/iam-rules.md and policies/lint/; "
            "https://example.org/docs/x.md and aws/key-policies/k.json are not ours")
    assert references(text) == {"tests/test_envelope.py", "docs/iam-rules.md", "policies/lint/"}
