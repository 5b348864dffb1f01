"""The exception tree drawn in keystead/errors.py's docstring is complete and true.

Every subclass of KeysteadError defined anywhere in the package (keystead/,
rotation/, policies/, stacks/) appears in the drawing, under its real parent.
The classes are found by reading the source, so no module has to be imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import keystead.errors

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("keystead", "rotation", "policies", "stacks")


def defined_bases() -> dict[str, tuple[str, str]]:
    """Class name -> (its first base's name, the file that defines it)."""
    out: dict[str, tuple[str, str]] = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.bases:
                    base = node.bases[0]
                    name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                    out[node.name] = (name, str(path.relative_to(ROOT)))
    return out


def keystead_errors(classes: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Every class that derives from KeysteadError -> its parent's name."""
    def derives(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == "KeysteadError":
            return True
        if name not in classes or name in seen:
            return False
        return derives(classes[name][0], seen | {name})
    return {name: base for name, (base, _) in classes.items()
            if name != "KeysteadError" and derives(name)}


def drawn_parents() -> dict[str, str]:
    """The docstring's tree as class name -> parent name, read by indentation."""
    doc = keystead.errors.__doc__ or ""
    stack: list[tuple[int, str]] = []
    out: dict[str, str] = {}
    for line in doc.splitlines():
        match = re.match(r"^[\s│]*(?:[├└]── )?([A-Z]\w+)\s{2,}\d+\s", line)
        if not match:
            continue
        depth = match.start(1)  # the column where the name starts
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            out[match.group(1)] = stack[-1][1]
        stack.append((depth, match.group(1)))
    return out


def test_every_keystead_error_is_in_the_tree_under_its_parent() -> None:
    classes = defined_bases()
    errors = keystead_errors(classes)
    assert {"StateDBError", "SpecError", "LintInputError"} <= set(errors)
    drawn = drawn_parents()
    missing = {f"{name} ({classes[name][1]})" for name in errors if name not in drawn}
    assert not missing, f"add to keystead/errors.py's docstring: {sorted(missing)}"
    wrong = {name: (drawn[name], base) for name, base in errors.items() if drawn[name] != base}
    assert not wrong, f"drawn under the wrong parent (drawn, real): {wrong}"


def test_the_tree_draws_no_class_that_does_not_exist() -> None:
    errors = keystead_errors(defined_bases())
    assert set(drawn_parents()) <= set(errors)
