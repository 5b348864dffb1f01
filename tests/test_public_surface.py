"""Each package's ``__all__`` is its deliberate public surface (httpx's
tests/test_exported_members.py is the model): every public name the package
defines or re-exports is listed, nothing listed is missing, and the list is
sorted as ruff's RUF022 sorts it (CONSTANTS, then Classes, then functions).

Submodules are attributes of a package once imported; they are the private
layout, not the surface, so they are not counted. To guard another package,
add its import name to PACKAGES.
"""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = [
    "keystead.policies",
    "keystead.policies.generate",
    "keystead.policies.lint",
    "keystead.policies.spec",
]


def isort_style(name: str) -> tuple[int, str]:
    if name.isupper():
        return (0, name)
    return (1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_every_public_name_in_order(name: str) -> None:
    package = importlib.import_module(name)
    public = [member for member, value in vars(package).items()
              if not member.startswith("_") and not isinstance(value, types.ModuleType)
              and type(value).__module__ != "__future__"]  # `from __future__ import annotations`
    assert package.__all__ == sorted(public, key=isort_style)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name: str) -> None:
    package = importlib.import_module(name)
    missing = [member for member in package.__all__ if not hasattr(package, member)]
    assert not missing
