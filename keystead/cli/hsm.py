"""`keystead hsm connect | status | copy-backup`: the CloudHSM key stores of AWS KMS (docs/aws.md).

The work is keystead/providers/aws_hsm.py; this module reads the flags,
builds the clients the way every AWS key does (keystead.providers.aws
make_client: ``[providers.aws]`` region and profile from keystead.toml when
there is one, ``--region`` over it, else the SDK's environment) and reports.
boto3 is imported only when one of these commands runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from keystead.cli.app import App, Table, json_option, pass_app, print_json, say
from keystead.config import CONFIG_NAME


def _make_client(service: str, options: Mapping[str, object]) -> Any:
    from keystead.providers.aws import make_client

    return make_client(service, options)


client_factory = _make_client
"""``(service, options) -> client``: the one place clients come from (tests put a Stubber's clients here)."""


def _settings(app: App, region: str | None) -> dict[str, object]:
    """``[providers.aws]`` of keystead.toml when one is in use (these commands need none), ``--region`` over it."""
    chosen = app.config_path or os.environ.get("KEYSTEAD_CONFIG") or CONFIG_NAME
    shared = dict(app.config.providers.get("aws", {})) if Path(chosen).is_file() else {}
    if region:
        shared["region"] = region
    return shared


def _client(service: str, settings: Mapping[str, object]) -> Any:
    keep = ("region", "profile", "endpoint") if service == "kms" else ("region", "profile")  # a KMS endpoint only
    return client_factory(service, {k: v for k, v in settings.items() if k in keep})


def _region(settings: Mapping[str, object], client: Any) -> str | None:
    region = settings.get("region") or getattr(getattr(client, "meta", None), "region_name", None)
    return str(region) if region else None


@click.group()
def hsm() -> None:
    """CloudHSM-backed KMS key stores: connect, status, copy backups to a DR region."""


@hsm.command("connect")
@click.argument("store_id")
@click.option("--region", help="The key store's region (default: [providers.aws] region, else the SDK's).")
@click.option("--wait", "wait_seconds", type=click.FloatRange(0, 7200), default=1200, show_default=True,
              help="Seconds to wait for CONNECTED (0: return once AWS accepted the request).")
@click.option("--interval", type=click.FloatRange(0, 600), default=10, hidden=True, help="Seconds between polls.")
@pass_app
def connect(app: App, store_id: str, region: str | None, wait_seconds: float, interval: float) -> None:
    """Connect custom key store STORE_ID (ConnectCustomKeyStore) and wait until it is CONNECTED.

    A failed connection is explained in plain words with what to do (exit 6).
    """
    from keystead.providers import aws_hsm

    settings = _settings(app, region)
    kms = _client("kms", settings)
    done = aws_hsm.connect(kms, store_id, region=_region(settings, kms), wait=wait_seconds, interval=interval)
    for note in done.notes:
        say(f"{store_id}: {note}")
    if done.state == "CONNECTED":
        say(f"custom key store {store_id} is CONNECTED ({done.waited:.0f} s)")
    else:
        say(f"custom key store {store_id} is {done.state}: `keystead hsm status` shows when it is done")


@hsm.command("status")
@click.option("--region", help="Region (default: [providers.aws] region, else the SDK's).")
@json_option
@pass_app
def status(app: App, region: str | None, as_json: bool) -> None:
    """Each custom key store: connection state, cluster, HSMs (DescribeCustomKeyStores, DescribeClusters)."""
    from keystead.providers import aws_hsm

    settings = _settings(app, region)
    kms, cloudhsm = _client("kms", settings), _client("cloudhsmv2", settings)
    rows = aws_hsm.status(kms, cloudhsm, _region(settings, kms))
    if as_json:
        print_json([r.as_dict() for r in rows])
        return
    table = Table("store", "name", "state", "cluster", "cluster state", "HSMs", "zones")
    for r in rows:
        state = r.state if not r.error_code else f"[red]{r.state} ({r.error_code})[/]"
        hsms = "-" if r.hsms is None else f"{r.hsms_active} active / {r.hsms}"
        table.add_row(r.store_id, r.name, state, r.cluster_id or "-", r.cluster_state or "-", hsms,
                      ", ".join(r.zones) or "-")
    table.print()
    for r in rows:
        if r.error_code:
            say(f"{r.store_id}: {r.error_code}: {aws_hsm.explain(r.error_code)}")
    if not rows:
        say("no custom key store in this region")


@hsm.command("copy-backup")
@click.option("--to", "destination", required=True, metavar="REGION", help="The DR region to copy the backup to.")
@click.option("--cluster", "cluster_id", help="Cluster id (default: the region's only cluster).")
@click.option("--region", help="The cluster's region (default: [providers.aws] region, else the SDK's).")
@pass_app
def copy_backup(app: App, destination: str, cluster_id: str | None, region: str | None) -> None:
    """Copy the cluster's newest READY backup to REGION (CopyBackupToRegion), for a cluster there in a disaster."""
    from keystead.providers import aws_hsm

    settings = _settings(app, region)
    cloudhsm = _client("cloudhsmv2", settings)
    done = aws_hsm.copy_backup(cloudhsm, destination, cluster_id=cluster_id, region=_region(settings, cloudhsm))
    say(f"copying backup {done.backup_id} of cluster {done.cluster_id} (taken {done.taken:%Y-%m-%d %H:%M} UTC) "
        f"from {done.source_region or 'its region'} to {done.destination_region}; "
        f"`aws cloudhsmv2 describe-backups --region {done.destination_region}` shows the copy")
