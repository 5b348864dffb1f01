"""Run the stack offline under Pulumi's mocks and record the declared graph.

No Pulumi CLI, engine, plugin or cloud call: ``pulumi.runtime.set_mocks`` stands in for the
engine, :class:`FakeCloud` invents the ids and ARNs a provider would return, and
:class:`RecordingMonitor` keeps each registration with what the mocks alone do not show
(parent, protect, ignoreChanges, dependencies). ``keystead plan`` and tests/stacks/ use it.
Facts this relies on: docs/stacks.md and the shared cloud-libraries notes (§1).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime.settings
import yaml
from pulumi.runtime import mocks as runtime_mocks
from pulumi.runtime import rpc

from keystead.errors import ConfigError

ACCOUNT = "111122223333"
SECRET = "[secret]"
SECURE_PLACEHOLDER = "offline-placeholder"  # secure: values cannot be decrypted without the CLI


@dataclass(frozen=True)
class Record:
    """One declared resource: its inputs as the provider would get them (secrets redacted)."""

    urn: str
    type: str
    name: str
    parent: str | None  # the parent's name (None for the stack itself)
    parent_urn: str | None
    custom: bool
    protect: bool
    props: Mapping[str, Any]
    ignore_changes: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    provider: str = ""  # "" for the default provider (the stack declares no other)
    outputs: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)  # what FakeCloud returned
    raw_props: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Graph:
    """What a run declared (sorted by URN) and what the stack exported."""

    records: list[Record]
    exports: Mapping[str, Any]
    notes: tuple[str, ...] = ()  # what the program logged (pulumi.log), "level: message"

    def of_type(self, typ: str) -> list[Record]:
        return [r for r in self.records if r.type == typ]

    def named(self, typ: str, name: str) -> Record:
        (found,) = [r for r in self.records if r.type == typ and r.name == name]
        return found


def _hex(*parts: str, n: int = 32) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


def _uuid(*parts: str) -> str:
    h = _hex(*parts)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class FakeCloud(pulumi.runtime.Mocks):
    """Outputs a provider would return: stable ids and ARNs derived from the resource's name."""

    def __init__(self, region: str = "us-east-1") -> None:
        self.region = region

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs, name, typ = dict(args.inputs), args.name, args.typ
        region = str(inputs.get("region") or self.region)
        out: dict[str, Any] = dict(inputs)
        rid = f"{name}-id"
        if typ == "aws:kms/key:Key":
            rid = f"mrk-{_hex(name)}" if inputs.get("multiRegion") else _uuid(name)
            out.update(keyId=rid, arn=f"arn:aws:kms:{region}:{ACCOUNT}:key/{rid}")
        elif typ == "aws:kms/replicaKey:ReplicaKey":
            rid = str(inputs.get("primaryKeyArn", "")).rsplit("/", 1)[-1] or f"mrk-{_hex(name)}"
            out.update(keyId=rid, arn=f"arn:aws:kms:{region}:{ACCOUNT}:key/{rid}")
        elif typ == "aws:kms/alias:Alias":
            out["arn"] = f"arn:aws:kms:{region}:{ACCOUNT}:{inputs.get('name')}"
        elif typ == "aws:cloudhsmv2/cluster:Cluster":
            rid = f"cluster-{_hex(name, n=11)}"
            out.update(clusterId=rid, clusterState="UNINITIALIZED")
        elif typ == "aws:cloudhsmv2/hsm:Hsm":
            rid = f"hsm-{_hex(name, n=11)}"
            out["hsmId"] = rid
        elif typ == "aws:kms/customKeyStore:CustomKeyStore":
            rid = f"cks-{_hex(name, n=17)}"
        elif typ == "aws:iam/role:Role":
            out["arn"] = f"arn:aws:iam::{ACCOUNT}:role{inputs.get('path', '/')}{inputs.get('name', name)}"
            rid = str(inputs.get("name", name))
        elif typ == "gcp:kms/keyRing:KeyRing":
            rid = f"projects/{inputs.get('project')}/locations/{inputs.get('location')}/keyRings/{inputs.get('name')}"
        elif typ == "gcp:kms/cryptoKey:CryptoKey":
            rid = f"{inputs.get('keyRing')}/cryptoKeys/{inputs.get('name')}"
        elif typ == "gcp:serviceaccount/account:Account":
            out["email"] = f"{inputs.get('accountId')}@{inputs.get('project')}.iam.gserviceaccount.com"
            rid = f"projects/{inputs.get('project')}/serviceAccounts/{out['email']}"
        elif typ == "gcp:projects/iAMCustomRole:IAMCustomRole":
            rid = f"projects/{inputs.get('project')}/roles/{inputs.get('roleId')}"
            out["name"] = rid
        out["id"] = rid
        return rid, out

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, []  # (outputs, failures): the base class's ({}, None) crashes MockMonitor.Invoke


def _close_thread_loop() -> None:
    """Close the event loop pulumi made on this executor thread, or interpreter exit warns about it."""
    if threading.current_thread() is threading.main_thread():
        return
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        return
    if not loop.is_running():
        asyncio.set_event_loop(None)
        loop.close()


def redact(value: Any) -> Any:
    """Secrets as ``[secret]``; the integers the mocks turn into floats back to integers."""
    if rpc.is_rpc_secret(value):
        return SECRET
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def unwrap(value: Any) -> Any:
    """The plain value (secrets unwrapped, floats as integers): for tests comparing documents."""
    if rpc.is_rpc_secret(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RecordingMonitor(runtime_mocks.MockMonitor):
    """Keeps every RegisterResourceRequest (executor threads: under a lock, keyed by URN)."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.requests: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:
        try:
            response = super().RegisterResource(request)  # type: ignore[no-untyped-call]  # untyped in pulumi
            props = rpc.deserialize_properties(request.object, keep_unknowns=True)
            with self._lock:
                self.requests[response.urn] = (request, props)
            return response
        finally:
            _close_thread_loop()

    def Invoke(self, request: Any) -> Any:
        try:
            return super().Invoke(request)  # type: ignore[no-untyped-call]  # untyped in pulumi
        finally:
            _close_thread_loop()

    def records(self) -> list[Record]:
        with self._lock:
            items = sorted(self.requests.items())
        names = {urn: request.name for urn, (request, _) in items}
        out = []
        for urn, (request, props) in items:
            out.append(Record(
                urn=urn, type=request.type, name=request.name, parent=names.get(request.parent) if request.parent
                else None, parent_urn=request.parent or None, custom=request.custom,
                protect=bool(request.protect) if request.HasField("protect") else False,
                props=redact(props), ignore_changes=tuple(request.ignoreChanges),
                depends_on=tuple(sorted(names.get(d, d) for d in request.dependencies)),
                provider=request.provider,
                outputs=unwrap(dict(self.resources[urn].state)) if urn in self.resources else {},
                raw_props=props))
        return out


def run(program: Callable[[], object], *, stack: str = "dev", project: str = "keystead",
        config: Mapping[str, str] | None = None, secret_keys: list[str] | None = None) -> Graph:
    """Run ``program`` under mocks (the engine's role, offline) and return what it declared.

    Errors the program raises propagate unchanged. ``config`` replaces the whole config map.
    """
    pulumi.runtime.set_all_config(dict(config or {}), list(secret_keys or []))
    cloud = FakeCloud()
    monitor = RecordingMonitor(cloud)
    # else a second run reuses the first run's Stack; pulumi's annotation does not admit the None it accepts
    pulumi.runtime.settings.set_root_resource(None)  # type: ignore[arg-type]
    notes = _Notes()
    logger = logging.Logger("keystead.stacks.offline")  # not registered: nothing else sees these records
    logger.addHandler(notes)
    pulumi.runtime.set_mocks(cloud, project=project, stack=stack, preview=False, monitor=monitor, logger=logger)
    failure: list[BaseException] = []
    exports: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]  # runs fn in the Pulumi runtime, waits for every RPC
    def _run() -> pulumi.Output[None]:
        try:
            program()
        except BaseException as exc:  # kept: pulumi would otherwise log it and wrap it
            failure.append(exc)
            raise
        root = pulumi.runtime.settings.get_root_resource()
        declared = dict(getattr(root, "outputs", None) or {})  # what pulumi.export put on the Stack
        return pulumi.Output.from_input(declared).apply(exports.update)  # awaited by pulumi.runtime.test

    try:
        _run()
    except BaseException:
        if failure:
            raise failure[0] from None
        raise
    return Graph(records=monitor.records(), exports=unwrap(exports), notes=tuple(notes.lines))


class _Notes(logging.Handler):
    """Keeps what the program logs through pulumi.log (the mock engine hands it to a logger)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)  # not the runtime's own debug chatter
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")


def load_stack_config(directory: Path, stack: str) -> tuple[str, dict[str, str], list[str]]:
    """Pulumi.yaml's project name and Pulumi.<stack>.yaml's config, as ``set_all_config`` takes it.

    Values become strings (lists and maps as JSON, as ``pulumi.Config().get_object`` reads them);
    ``secure:`` values are ciphertext only the CLI can decrypt, so they become a placeholder and
    are marked secret (the plan shows them as ``[secret]``).
    """
    project_file = directory / "Pulumi.yaml"
    stack_file = directory / f"Pulumi.{stack}.yaml"
    try:
        project_doc = yaml.safe_load(project_file.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{project_file}: cannot read the Pulumi project file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{project_file}: invalid YAML: {exc}") from exc
    if not stack_file.is_file():
        raise ConfigError(f"{stack_file}: no such stack config (create it with `pulumi stack init {stack}`)")
    try:
        doc = yaml.safe_load(stack_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{stack_file}: invalid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("config") or {}, dict):
        raise ConfigError(f"{stack_file}: expected a mapping with a config: section")
    project = str(project_doc.get("name") or "project") if isinstance(project_doc, dict) else "project"
    values: dict[str, str] = {}
    secrets: list[str] = []
    for key, value in (doc.get("config") or {}).items():
        full = key if ":" in key else f"{project}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            secrets.append(full)
            values[full] = SECURE_PLACEHOLDER
        else:
            values[full] = value if isinstance(value, str) else json.dumps(value)
    return project, values, secrets
