"""Run the real stack program under pulumi.runtime.set_mocks (no Pulumi CLI, engine or plugins).

``stack(edit=..., config=...)`` starts from the repository's own example (Pulumi.dev.yaml and
the keystead-iam.toml it names), applies an edit to the spec (a tomlkit document) and config
overrides, runs the program and returns the declared graph (keystead.stacks.offline.Graph).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomlkit

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "keystead-iam.toml"


def _runner(tmp_path: Path) -> Callable[..., Any]:
    from keystead.stacks import offline, program

    def run(edit: Callable[[Any], None] | None = None, config: dict[str, str | None] | None = None,
            secret_keys: list[str] | None = None, stack_name: str = "dev") -> offline.Graph:
        _, values, secrets = offline.load_stack_config(ROOT, "dev")
        spec = tomlkit.parse(SPEC.read_text())
        if edit is not None:
            edit(spec)
        path = tmp_path / "keystead-iam.toml"
        path.write_text(tomlkit.dumps(spec))
        values["keystead:spec"] = str(path)
        for key, value in (config or {}).items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        return offline.run(lambda: program.main(ROOT), stack=stack_name, config=values,
                           secret_keys=secrets if secret_keys is None else secret_keys)

    return run


@pytest.fixture
def stack(tmp_path: Path) -> Callable[..., Any]:
    return _runner(tmp_path)


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The example stack as shipped (run once per session: the graph is only read)."""
    return _runner(tmp_path_factory.mktemp("dev"))()


@pytest.fixture
def spec_of(tmp_path: Path) -> Callable[[], Any]:
    """The spec the last ``stack`` run read, parsed by policies/ (the generators' input)."""
    from keystead.policies import load_spec

    return lambda: load_spec(tmp_path / "keystead-iam.toml")


@pytest.fixture
def declared(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The type of every resource the mock monitor is asked to register, in order."""
    from keystead.stacks import offline

    seen: list[str] = []
    original = offline.RecordingMonitor.RegisterResource

    def spy(self: Any, request: Any) -> Any:
        seen.append(request.type)
        return original(self, request)

    monkeypatch.setattr(offline.RecordingMonitor, "RegisterResource", spy)
    return seen
