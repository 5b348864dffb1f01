"""Each package's ``__all__`` is its deliberate public surface (httpx's
tests/test_exported_members.py is the model): every public name the package
defines (in its ``__init__`` or its modules) is listed, nothing listed is
missing, and the list is sorted as ruff's RUF022 sorts it (CONSTANTS, then
Classes, then functions).

Submodules are attributes of a package once imported; they are the private
layout, not the surface, so they are not counted. A class or function from
outside the package (``pathlib.Path``, ``keystead.errors.StoreError`` in
keystead.stores) is an import for the package's own code unless ``__all__``
lists it as a deliberate re-export. To guard another package, add its import
name to PACKAGES.
"""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

PACKAGES = [
    "keystead",
    "keystead.policies",
    "keystead.policies.generate",
    "keystead.policies.lint",
    "keystead.policies.spec",
    "keystead.providers",
    "keystead.rotation",
    "keystead.rotation.state",
    "keystead.stores",
]


def isort_style(name: str) -> tuple[int, str]:
    if name.isupper():
        return (0, name)
    return (1 if name[:1].isupper() else 2, name)


def defined_outside(value: object, package: str) -> bool:
    """A class or function that comes from outside ``package`` (and its modules)."""
    module = getattr(value, "__module__", None)
    return ((inspect.isclass(value) or inspect.isroutine(value)) and isinstance(module, str)
            and module != package and not module.startswith(package + "."))


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_every_public_name_in_order(name: str) -> None:
    package = importlib.import_module(name)
    for member in package.__all__:  # a lazy export (PEP 562 __getattr__) is an attribute once used
        getattr(package, member, None)
    public = [member for member, value in vars(package).items()
              if not member.startswith("_") and not isinstance(value, types.ModuleType)
              and type(value).__module__ != "__future__"  # `from __future__ import annotations`
              and not defined_outside(value, name)]
    assert package.__all__ == sorted(set(public) | set(package.__all__), key=isort_style)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name: str) -> None:
    package = importlib.import_module(name)
    missing = [member for member in package.__all__ if not hasattr(package, member)]
    assert not missing
