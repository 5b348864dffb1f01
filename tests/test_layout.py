"""The dependency arrows of DESIGN.md, and the wheel that ships the four import names."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLOUD_SDKS = ("boto3", "botocore", "google", "pulumi", "pulumi_aws", "pulumi_gcp")


def imports_of(folder: Path, *, skip: tuple[str, ...] = ()) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if any(part in skip for part in rel.parts):
            continue
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(rel)] = names
    return found


def test_core_imports_none_of_the_other_folders() -> None:
    for module, names in imports_of(ROOT / "keystead", skip=("cli",)).items():
        bad = {n for n in names if n.startswith(("keystead.rotation", "keystead.policies", "keystead.stacks"))}
        assert not bad, f"{module} imports {bad}: only keystead/cli may"


def test_policies_import_no_cloud_sdk() -> None:
    for module, names in imports_of(ROOT / "policies").items():
        bad = {n for n in names if n.split(".")[0] in CLOUD_SDKS}
        assert not bad, f"{module} imports {bad}"


def test_rotation_builds_on_core_only() -> None:
    for module, names in imports_of(ROOT / "rotation").items():
        bad = {n for n in names if n.startswith(("keystead.policies", "keystead.stacks", "keystead.cli"))}
        assert not bad, f"{module} imports {bad}"


def test_cli_start_loads_no_cloud_sdk() -> None:
    code = f"import sys, keystead.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in {CLOUD_SDKS!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_wheel_ships_every_subpackage(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("keystead-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(ROOT)) for p in ROOT.glob("*/**/__init__.py")
                if p.parts[len(ROOT.parts)] in ("keystead", "rotation", "policies", "stacks")}
    for folder in packages:
        top, _, rest = folder.partition("/")
        installed = ("keystead" if top == "keystead" else f"keystead/{top}") + (f"/{rest}" if rest else "")
        assert f"{installed}/__init__.py" in names, f"{folder} is missing from the wheel as {installed}"


def _policies_imports(sub: str) -> dict[str, set[str]]:
    """keystead.policies modules each file of policies/<sub>/ imports, relative imports resolved."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "policies" / sub).rglob("*.py"):
        package = ["keystead", *path.relative_to(ROOT).parent.parts]
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                names |= {module} | {f"{module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
        found[str(path.relative_to(ROOT))] = {n for n in names if n.startswith("keystead.policies")}
    return found


@pytest.mark.parametrize(("sub", "forbidden"), [
    ("spec", ("keystead.policies.generate", "keystead.policies.lint", "keystead.policies.from_audit")),
    ("generate", ("keystead.policies.lint", "keystead.policies.from_audit")),
    ("lint", ("keystead.policies.from_audit",)),
])
def test_policies_subpackages_point_one_way(sub: str, forbidden: tuple[str, ...]) -> None:
    """spec <- generate <- lint; all may read keystead.policies.actions."""
    for module, names in _policies_imports(sub).items():
        bad = {n for n in names if n.startswith(forbidden)}
        assert not bad, f"{module} imports {bad}"
