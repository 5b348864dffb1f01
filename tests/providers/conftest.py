"""Provider fixtures: a moto server for the session (AWS), reset for every test that uses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.providers.aws.moto_server import CREDENTIALS, REGION, Clients, MotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer) -> Clients:
    """An empty KMS (every key and alias of earlier tests forgotten) and a client factory for it."""
    moto_server.reset()
    return Clients(moto_server.url)


@pytest.fixture
def aws_env(aws: Clients, monkeypatch: pytest.MonkeyPatch) -> Clients:
    """The SDK's own environment pointed at the server, for the real CLI (dummy credentials)."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": aws.url, "AWS_REGION": REGION,
                       "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": "/dev/null",
                       "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(var, value)
    return aws


@pytest.fixture
def iam_enforced(moto_server: MotoServer) -> Iterator[MotoServer]:
    """moto's IAM enforcement on for one test (off again whatever happens): request it after the
    test's setup calls, which use the dummy credentials (see MotoServer.enforce_iam)."""
    moto_server.enforce_iam(True)
    try:
        yield moto_server
    finally:
        moto_server.enforce_iam(False)
