"""One envelope with an AWS slot (moto server) and a GCP slot (the loopback Cloud KMS fake):
either cloud alone opens it, through the real CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from keystead.config import load_config
from keystead.stores import open_store
from tests.conftest import Workspace
from tests.providers.aws.helpers import make_key
from tests.providers.aws.moto_server import ACCOUNT, REGION, Clients
from tests.providers.gcp_fake import FakeCloudKMS

GCP_REF = "projects/keystead-test/locations/europe-west1/keyRings/ring/cryptoKeys/app"
AWS_PART = '[keys.aws]\nref = "alias/app"\n'
GCP_PART = f'[keys.gcp]\nref = "{GCP_REF}"\n'


@pytest.fixture
def fake():
    f = FakeCloudKMS(now=datetime(2026, 1, 1, tzinfo=UTC)).start()
    f.add_key(GCP_REF)
    yield f
    f.stop()


def _config(url: str, keys: str) -> str:
    return (f'[vault]\nname = "default"\nstore = "dir:secrets"\n'
            f'[providers.aws]\nregion = "{REGION}"\naccount = "{ACCOUNT}"\n'
            f'[providers.gcp]\nendpoint = "{url}"\nanonymous = true\nretry_seconds = 0\n' + keys)


def test_an_envelope_with_an_aws_and_a_gcp_slot_opens_through_either(
        aws_env: Clients, fake: FakeCloudKMS, tmp_path: Path) -> None:
    make_key(aws_env.kms(), alias="app")
    ws = Workspace(tmp_path, "dir:secrets")
    ws.config.write_text(_config(fake.url, AWS_PART + GCP_PART))
    ws.cli("secrets", "set", "DB_URL", "postgres://u:p@db/app")
    config = load_config(ws.config)
    store = open_store(config.store_url, base=config.root)
    try:
        assert [s.provider for s in store.get("DB_URL").slots] == ["aws", "gcp"]
    finally:
        store.close()
    calls = len(fake.calls)
    ws.config.write_text(_config(fake.url, AWS_PART))  # a server with AWS only
    assert ws.cli("secrets", "get", "DB_URL").stdout == "postgres://u:p@db/app"
    assert len(fake.calls) == calls  # GCP was not asked
    ws.config.write_text(_config(fake.url, GCP_PART))  # a server with GCP only
    assert ws.cli("secrets", "get", "DB_URL").stdout == "postgres://u:p@db/app"
    assert ("POST", "decrypt") in fake.calls[calls:]
