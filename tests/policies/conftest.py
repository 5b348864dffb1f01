"""Fixtures for the policies tests: the docs' example spec, its documents, a moto server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from policy_cases import MATRIX_KEYS, matrix_spec

from keystead.policies.generate import documents
from keystead.policies.spec import Spec, load_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "policies" / "examples" / "keystead-iam.toml"


@pytest.fixture(scope="session")
def example_path() -> Path:
    return EXAMPLE


@pytest.fixture(scope="session")
def example_spec() -> Spec:
    return load_spec(EXAMPLE)


@pytest.fixture(scope="session")
def example_docs(example_spec: Spec) -> dict[str, dict]:
    return documents(example_spec)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_url():
    """A real moto server on loopback, spoken to over HTTP by boto3."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def all_docs(example_docs) -> dict[str, dict]:
    """The example's documents and every accepted cell of the matrix."""
    from keystead.policies import actions
    from keystead.policies.spec import SpecError

    out = dict(example_docs)
    for role in actions.ROLES:
        for key_type in MATRIX_KEYS:
            try:
                spec = matrix_spec(role, key_type)
            except SpecError:
                continue
            for path, doc in documents(spec).items():
                out[f"matrix/{role}/{key_type}/{path}"] = doc
    return out
