"""Fixtures of the AWS tests beside tests/providers/conftest.py's moto server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.providers.aws.regions import RefusingPort


@pytest.fixture
def refusing() -> Iterator[RefusingPort]:
    """An endpoint that refuses every connection: route the primary region to it to take it down."""
    port = RefusingPort()
    yield port
    port.close()
