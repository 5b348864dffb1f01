"""CloudHSM-backed KMS custom key stores: connect, status, backups to a DR region.

The calls behind ``keystead hsm connect | status | copy-backup``. Each
function takes its boto3 clients (``kms``, ``cloudhsmv2``) from the caller,
so tests hand in clients wired to botocore's Stubber (moto implements neither
custom key stores nor CreateHsm). No boto3 import here: botocore is imported
only to translate its errors, when one happens.

Connecting (ConnectCustomKeyStore) is asynchronous: AWS moves the store to
CONNECTING and, up to about 20 minutes later, CONNECTED or FAILED with a
``ConnectionErrorCode``. :func:`connect` polls DescribeCustomKeyStores until
one of the two and turns each code into what went wrong and what to do
(:data:`CONNECTION_ERRORS`, after the AWS KMS developer guide's
troubleshooting page). A FAILED store must be disconnected before it can be
connected again (ConnectCustomKeyStore refuses it otherwise); :func:`connect`
does that first and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keystead.clock import utc
from keystead.errors import InputError, KeysteadError, NotFoundError, ProviderError, ProviderUnavailable

POLL_SECONDS = 10.0
DEFAULT_WAIT_SECONDS = 1200.0
"""AWS: connecting a CloudHSM key store can take up to 20 minutes."""

CONNECTION_ERRORS: dict[str, str] = {
    "INVALID_CREDENTIALS": "the kmsuser password stored in the key store is not the password of the kmsuser crypto "
                           "user in the cluster: set the cluster's password on the key store (disconnected) with "
                           "`aws kms update-custom-key-store --key-store-password`, then connect again",
    "CLUSTER_NOT_FOUND": "AWS finds no CloudHSM cluster with the key store's cluster id (was it deleted?): create a "
                         "cluster from its latest backup and point the key store at it with "
                         "`aws kms update-custom-key-store --cloud-hsm-cluster-id`",
    "NETWORK_ERRORS": "KMS cannot reach the cluster's HSMs: check the cluster's security group (it must allow "
                      "TCP 2223-2225 from itself), the network ACLs and route tables of its subnets",
    "INTERNAL_ERROR": "KMS failed internally while connecting: run the command again later; if it keeps "
                      "failing, open a case with AWS Support",
    "INSUFFICIENT_CLOUDHSM_HSMS": "the cluster has no active HSM: add HSMs (two, in different Availability Zones), "
                                  "wait until they are ACTIVE, then connect again",
    "USER_LOCKED_OUT": "the kmsuser crypto user is locked out of the cluster after too many wrong passwords: "
                       "change kmsuser's password in the cluster (CloudHSM CLI), set the same on the key store "
                       "(`aws kms update-custom-key-store --key-store-password`), then connect again",
    "USER_NOT_FOUND": "the cluster has no kmsuser crypto user: create it (CloudHSM CLI `user create --username "
                      "kmsuser --role crypto-user`) with the key store's password, then connect again",
    "USER_LOGGED_IN": "kmsuser is logged in to the cluster (a CloudHSM CLI session), which stops KMS from "
                      "rotating its password: log kmsuser out, then connect again",
    "SUBNET_NOT_FOUND": "a subnet of the cluster's configuration no longer exists: create a cluster from a backup "
                        "in existing subnets and point the key store at it "
                        "(`aws kms update-custom-key-store --cloud-hsm-cluster-id`)",
    "INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET": "a subnet of the cluster has no free IP address left for KMS's "
                                             "network interface: free some addresses in each of the cluster's "
                                             "subnets, then connect again",
    "XKS_PROXY_ACCESS_DENIED": "the external key store proxy refused KMS's credentials: check the proxy's "
                               "authentication credential on the key store",
    "XKS_PROXY_NOT_REACHABLE": "KMS cannot reach the external key store proxy: check its URI, DNS and firewall",
    "XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND": "the VPC endpoint service of the external key store proxy is not found",
    "XKS_PROXY_INVALID_RESPONSE": "the external key store proxy answered KMS with something it cannot read",
    "XKS_PROXY_INVALID_CONFIGURATION": "the external key store proxy's configuration is invalid",
    "XKS_VPC_ENDPOINT_SERVICE_INVALID_CONFIGURATION": "the VPC endpoint service of the external key store proxy "
                                                      "is configured wrongly",
    "XKS_PROXY_TIMED_OUT": "the external key store proxy did not answer KMS in time",
    "XKS_PROXY_INVALID_TLS_CONFIGURATION": "the TLS configuration of the external key store proxy is invalid",
}

_CALL_ERRORS = {
    "CustomKeyStoreNotFoundException": "no such custom key store in region {region}: check the id "
                                       "(`keystead hsm status`) and --region",
    "CloudHsmClusterNotActiveException": "the CloudHSM cluster is not ACTIVE: initialize and activate it first "
                                         "(docs/aws.md, CloudHSM key stores, lists the steps)",
    "CloudHsmClusterInvalidConfigurationException": "the cluster does not meet KMS's requirements (HSMs in at "
                                                    "least two Availability Zones, its own security group "
                                                    "unchanged): fix the cluster, then connect again",
    "CustomKeyStoreInvalidStateException": "the key store is in a state that does not allow this "
                                           "(`keystead hsm status` shows it)",
    "AccessDeniedException": "the credentials in use may not call {api} (grant it to the operator role)",
    "CloudHsmAccessDeniedException": "the credentials in use may not call {api} (grant it to the operator role)",
    "CloudHsmResourceNotFoundException": "no such cluster or backup in region {region}",
    "CloudHsmInvalidRequestException": "CloudHSM refused the request as invalid",
    "ExpiredTokenException": "the AWS credentials have expired: refresh them (aws sso login, a new session)",
    "UnrecognizedClientException": "the AWS credentials are not valid: check AWS_PROFILE and the access key",
}
_TRANSIENT = frozenset({"KMSInternalException", "CloudHsmInternalFailureException", "CloudHsmServiceException",
                        "ThrottlingException", "Throttling", "TooManyRequestsException", "ServiceUnavailable",
                        "InternalFailure", "RequestLimitExceeded"})
_NOT_FOUND = frozenset({"CustomKeyStoreNotFoundException", "CloudHsmResourceNotFoundException"})


def explain(code: str | None) -> str:
    """What a ConnectionErrorCode means and what to do about it, in plain words."""
    if not code:
        return "AWS gave no reason (no ConnectionErrorCode): see the key store in the KMS console"
    return CONNECTION_ERRORS.get(code, f"AWS reports {code}: see the AWS KMS guide, 'Troubleshooting a custom "
                                       "key store'")


def translate(exc: Exception, api: str, region: str | None) -> KeysteadError:
    """One keystead error for a botocore failure of ``api`` (e.g. ``kms:ConnectCustomKeyStore``)."""
    import botocore.exceptions as be

    where = f"{api} in {region or 'the default region'}"
    if isinstance(exc, be.ClientError):
        code = str(exc.response.get("Error", {}).get("Code") or "Unknown")
        if code in _TRANSIENT:
            return ProviderUnavailable(f"{where}: AWS is unavailable or throttling ({code}): try again later",
                                       op=api, code=code)
        fix = _CALL_ERRORS.get(code, "AWS refused the call").format(api=api, region=region or "(SDK default)")
        if code in _NOT_FOUND:
            return NotFoundError(f"{where}: {code}: {fix}")
        return ProviderError(f"{where}: {code}: {fix}", op=api, code=code)
    if isinstance(exc, (be.NoCredentialsError, be.PartialCredentialsError)):
        return ProviderError(f"{where}: no AWS credentials found: set AWS_PROFILE, AWS_ACCESS_KEY_ID or a role",
                             op=api, code=type(exc).__name__)
    if isinstance(exc, be.NoRegionError):
        return ProviderError(f"{where}: no region: pass --region, or set [providers.aws] region or AWS_REGION",
                             op=api, code="NoRegion")
    if isinstance(exc, (be.EndpointConnectionError, be.ConnectionError, be.ConnectTimeoutError,
                        be.ReadTimeoutError)):
        return ProviderUnavailable(f"{where}: cannot reach AWS ({type(exc).__name__})", op=api,
                                   code=type(exc).__name__)
    return ProviderError(f"{where}: {type(exc).__name__}", op=api, code=type(exc).__name__)


class _Calls:
    """Every SDK call through one translation (the region is for messages)."""

    def __init__(self, region: str | None) -> None:
        self.region = region

    def __call__(self, api: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        import botocore.exceptions as be

        try:
            return fn(**kwargs)
        except (be.ClientError, be.BotoCoreError) as exc:
            raise translate(exc, api, self.region) from exc


# -- connect --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Connected:
    store_id: str
    waited: float
    notes: tuple[str, ...] = ()
    state: str = "CONNECTED"


def describe_store(kms: Any, store_id: str, region: str | None = None) -> dict[str, Any]:
    call = _Calls(region)
    stores = call("kms:DescribeCustomKeyStores", kms.describe_custom_key_stores,
                  CustomKeyStoreId=store_id)["CustomKeyStores"]
    if not stores:
        raise NotFoundError(f"no custom key store {store_id} in region {region or '(SDK default)'}")
    store: dict[str, Any] = stores[0]
    return store


def connect(kms: Any, store_id: str, *, region: str | None = None, wait: float = DEFAULT_WAIT_SECONDS,
            interval: float = POLL_SECONDS, sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> Connected:
    """Connect the key store and wait (at most ``wait`` seconds) until it is CONNECTED.

    FAILED (now, or before the call): ProviderError (exit 6) with :func:`explain`'s
    words for its ConnectionErrorCode; still CONNECTING when the wait is over:
    ProviderUnavailable (the connection goes on; ``hsm status`` shows it).
    ``wait=0`` returns as soon as AWS accepted the request (state CONNECTING)."""
    call = _Calls(region)
    start = clock()
    notes: list[str] = []
    store = describe_store(kms, store_id, region)
    state = store.get("ConnectionState")
    if store.get("CustomKeyStoreType", "AWS_CLOUDHSM") != "AWS_CLOUDHSM":
        raise InputError(f"custom key store {store_id} is an external key store "
                         f"({store.get('CustomKeyStoreType')}): `keystead hsm` connects CloudHSM key stores")
    if state == "CONNECTED":
        return Connected(store_id, 0.0, ("it was connected already",))
    if state == "FAILED":
        code = store.get("ConnectionErrorCode")
        notes.append(f"it had FAILED ({code or 'no code'}); disconnected it to connect again")
        call("kms:DisconnectCustomKeyStore", kms.disconnect_custom_key_store, CustomKeyStoreId=store_id)
        state = "DISCONNECTING"
    while state == "DISCONNECTING":
        if clock() - start >= wait:
            raise ProviderUnavailable(f"custom key store {store_id} is still DISCONNECTING after {wait:.0f} s: "
                                      "run the command again later", op="kms:ConnectCustomKeyStore")
        sleep(interval)
        state = describe_store(kms, store_id, region).get("ConnectionState")
    if state != "CONNECTING":
        call("kms:ConnectCustomKeyStore", kms.connect_custom_key_store, CustomKeyStoreId=store_id)
        state = "CONNECTING"
    if wait <= 0:
        return Connected(store_id, clock() - start, tuple(notes), state="CONNECTING")
    while True:
        if clock() - start >= wait:
            raise ProviderUnavailable(f"custom key store {store_id} is still CONNECTING after {wait:.0f} s (AWS "
                                      "may take up to 20 minutes): `keystead hsm status` shows when it is done",
                                      op="kms:ConnectCustomKeyStore")
        sleep(interval)
        store = describe_store(kms, store_id, region)
        state = store.get("ConnectionState")
        if state == "CONNECTED":
            return Connected(store_id, clock() - start, tuple(notes))
        if state == "FAILED":  # (DISCONNECTED: AWS has not started yet; CONNECTING: under way)
            code = store.get("ConnectionErrorCode")
            raise ProviderError(f"custom key store {store_id} failed to connect ({code or 'no code'}): "
                                f"{explain(code)}", op="kms:ConnectCustomKeyStore", code=code)


# -- status ---------------------------------------------------------------------------------

@dataclass
class StoreStatus:
    store_id: str
    name: str
    type: str
    state: str
    error_code: str | None
    cluster_id: str | None
    cluster_state: str | None = None
    hsms: int | None = None
    hsms_active: int | None = None
    zones: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"custom_key_store_id": self.store_id, "name": self.name, "type": self.type,
                "connection_state": self.state, "connection_error_code": self.error_code,
                "cluster_id": self.cluster_id, "cluster_state": self.cluster_state, "hsm_count": self.hsms,
                "hsms_active": self.hsms_active, "availability_zones": self.zones}


def _pages(call: _Calls, api: str, fn: Callable[..., Any], key: str, token: str, next_token: str,
           **kwargs: Any) -> Iterator[dict[str, Any]]:
    while True:
        page = call(api, fn, **kwargs)
        yield from page.get(key, [])
        marker = page.get(next_token)
        if not marker or page.get("Truncated") is False:
            return
        kwargs[token] = marker


def clusters(hsm: Any, ids: list[str], region: str | None = None) -> dict[str, dict[str, Any]]:
    """DescribeClusters for ``ids`` (all of the region's when empty), by cluster id."""
    call = _Calls(region)
    kwargs: dict[str, Any] = {"Filters": {"clusterIds": ids}} if ids else {}
    found = _pages(call, "cloudhsm:DescribeClusters", hsm.describe_clusters, "Clusters", "NextToken", "NextToken",
                   **kwargs)
    return {c["ClusterId"]: c for c in found}


def status(kms: Any, hsm: Any, region: str | None = None) -> list[StoreStatus]:
    """Each custom key store of the region, with its cluster's state and HSMs."""
    call = _Calls(region)
    stores = list(_pages(call, "kms:DescribeCustomKeyStores", kms.describe_custom_key_stores, "CustomKeyStores",
                         "Marker", "NextMarker"))
    rows = [StoreStatus(s["CustomKeyStoreId"], s.get("CustomKeyStoreName", ""),
                        s.get("CustomKeyStoreType", "AWS_CLOUDHSM"), s.get("ConnectionState", "?"),
                        s.get("ConnectionErrorCode"), s.get("CloudHsmClusterId")) for s in stores]
    ids = sorted({r.cluster_id for r in rows if r.cluster_id})
    found = clusters(hsm, ids, region) if ids else {}
    for r in rows:
        cluster = found.get(r.cluster_id or "")
        if cluster is None:
            continue
        members = cluster.get("Hsms", [])
        r.cluster_state = cluster.get("State")
        r.hsms = len(members)
        r.hsms_active = sum(h.get("State") == "ACTIVE" for h in members)
        r.zones = sorted({h["AvailabilityZone"] for h in members if h.get("AvailabilityZone")})
    return rows


# -- backups --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Copied:
    backup_id: str
    cluster_id: str
    taken: datetime
    source_region: str | None
    destination_region: str


def latest_backup(hsm: Any, cluster_id: str, region: str | None = None) -> dict[str, Any]:
    """The newest READY backup of ``cluster_id`` (NotFoundError if it has none)."""
    call = _Calls(region)
    backups = list(_pages(call, "cloudhsm:DescribeBackups", hsm.describe_backups, "Backups", "NextToken",
                          "NextToken", Filters={"clusterIds": [cluster_id], "states": ["READY"]}))
    ready = [b for b in backups if b.get("BackupState", "READY") == "READY" and b.get("CreateTimestamp")]
    if not ready:
        raise NotFoundError(f"cluster {cluster_id} has no READY backup in {region or 'the default region'} "
                            "(CloudHSM takes one every 24 hours, and when an HSM is added)")
    return max(ready, key=lambda b: b["CreateTimestamp"])


def copy_backup(hsm: Any, destination: str, *, cluster_id: str | None = None, region: str | None = None) -> Copied:
    """Copy the newest READY backup of the cluster (the region's only one when ``cluster_id`` is None)
    to ``destination`` (CopyBackupToRegion)."""
    if region is not None and destination == region:
        raise InputError(f"--to {destination} is the cluster's own region: name the DR region")
    if cluster_id is None:
        found = sorted(clusters(hsm, [], region))
        if len(found) != 1:
            listed = ", ".join(found) or "none"
            raise InputError(f"{len(found)} CloudHSM clusters in {region or 'the default region'} ({listed}): "
                             "pass --cluster ID")
        cluster_id = found[0]
    backup = latest_backup(hsm, cluster_id, region)
    call = _Calls(region)
    out = call("cloudhsm:CopyBackupToRegion", hsm.copy_backup_to_region, DestinationRegion=destination,
               BackupId=backup["BackupId"])
    dest = out.get("DestinationBackup", {})
    return Copied(backup["BackupId"], cluster_id, utc(backup["CreateTimestamp"]), dest.get("SourceRegion") or region,
                  destination)
