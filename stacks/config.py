"""The stack's configuration, checked whole before any resource is declared.

Two inputs, each naming its own errors:

- the IAM spec (``keystead:spec``, the file ``keystead policy generate`` reads): keys,
  principals, workers and HSM stores, declared once. Its errors are
  :class:`~keystead.policies.SpecError` (exit 10) and name the spec field and line;
- the stack's own settings in ``Pulumi.<stack>.yaml`` (namespace ``keystead``). Their errors
  are :class:`StackConfigError` (a ConfigError, exit 3) and name the config key.

``parse(values)`` is pure (no pulumi import): the program hands it ``pulumi.Config``'s raw
values, the tests and ``keystead plan`` a plain mapping. Every check runs here, including
the lockout check on each key policy, so an error leaves nothing half-declared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keystead.errors import ConfigError, PolicyError
from keystead.policies import Spec, load_spec
from keystead.policies.generate import check_admin_access
from keystead.policies.generate.aws import key_policy
from keystead.policies.generate.lockout import principal_arn
from keystead.policies.spec.model import Key, Principal

NAMESPACE = "keystead"
#: config key (without the namespace) -> what it holds; docs/stacks.md lists the same.
KEYS = {
    "spec": "the IAM spec file (required), relative to the project directory",
    "deployer": "the IAM role that runs pulumi up (default: the account root)",
    "keys": "the spec keys this stack creates (default: every key without an arn)",
    "workers": "the workers whose identities this stack creates (default: all)",
    "hsmPassword": "secret: the kmsuser password of the HSM key stores",
    "hsmTrustAnchors": "store -> the cluster's trust anchor (customerCA.crt PEM or a path to it)",
    "hsmConnected": "the key stores `keystead hsm connect` has connected: their keys are declared",
}
WORKER_TABLES = {"rotation": "rotation-worker", "replicator": "dr-replicator"}
PEM_BEGIN = "-----BEGIN CERTIFICATE-----"


class StackConfigError(ConfigError):
    """A Pulumi.<stack>.yaml setting is wrong; the message starts with the config key (exit 3)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = f"{NAMESPACE}:{key}"
        super().__init__(f"{self.key}: {message}")


@dataclass(frozen=True)
class StackConfig:
    """What the program declares, fully checked."""

    spec: Spec
    spec_path: Path
    deployer: str
    keys: tuple[Key, ...]  # the keys this stack creates, spec order
    workers: tuple[Principal, ...]
    trust_anchors: Mapping[str, str]  # store -> PEM; a store without one gets no key store yet
    has_hsm_password: bool
    connected: frozenset[str] = frozenset()  # stores whose keys are declared (CreateKey needs CONNECTED)

    def keys_in(self, store: str) -> tuple[Key, ...]:
        return tuple(k for k in self.keys if k.key_store == store)


def parse(values: Mapping[str, str], *, base_dir: Path, secret_keys: frozenset[str] = frozenset()) -> StackConfig:
    """Check the ``keystead:*`` values (strings, as Pulumi stores them) and the spec they name.

    ``base_dir`` is the project directory (where Pulumi.yaml is): a relative spec path is
    read from there. ``secret_keys`` are the config keys set with ``--secret``.
    """
    ours = {k.partition(":")[2]: v for k, v in values.items() if k.startswith(f"{NAMESPACE}:")}
    for name in sorted(ours):
        if name not in KEYS:
            raise StackConfigError(name, f"unknown setting (known: {', '.join(sorted(KEYS))})")
    if "spec" not in ours or not ours["spec"].strip():
        raise StackConfigError("spec", "missing: name the IAM spec file, e.g. "
                                       "`pulumi config set spec keystead-iam.toml`")
    spec_path = Path(ours["spec"])
    if not spec_path.is_absolute():
        spec_path = base_dir / spec_path
    if not spec_path.is_file():
        raise StackConfigError("spec", f"no such file: {spec_path}")
    spec = load_spec(spec_path)  # SpecError names the spec field and line
    deployer = _deployer(ours.get("deployer"), spec)
    keys = _keys(_names(ours, "keys"), spec)
    workers = _workers(_names(ours, "workers"), spec)
    anchors = _anchors(ours.get("hsmTrustAnchors"), spec, base_dir)
    connected = _names(ours, "hsmConnected") or ()
    for store in connected:
        if store not in anchors:
            declared = "declared" if store in {s.name for s in spec.hsm_stores} else "not declared under [hsm_stores]"
            raise StackConfigError("hsmConnected", f"key store {store!r} ({declared}) has no trust anchor in "
                                                   "keystead:hsmTrustAnchors: it cannot have been connected yet")
    has_password = "hsmPassword" in ours and bool(ours["hsmPassword"])
    if "hsmPassword" in ours and f"{NAMESPACE}:hsmPassword" not in secret_keys:
        raise StackConfigError("hsmPassword", "must be a secret: `pulumi config set --secret hsmPassword`")
    if anchors and not has_password:  # a trust anchor declares the key store, which logs in as kmsuser
        raise StackConfigError("hsmPassword", f"missing: the key store of {', '.join(sorted(anchors))} needs the "
                                              "kmsuser password (`pulumi config set --secret hsmPassword`)")
    for key in keys:  # AWS refuses a policy that locks its caller out; catch it here, offline
        if key.cloud == "aws":
            check_admin_access(key_policy(spec, key.name), deployer=deployer, where=f"keys.{key.name}")
    return StackConfig(spec=spec, spec_path=spec_path, deployer=deployer, keys=keys, workers=workers,
                       trust_anchors=anchors, has_hsm_password=has_password, connected=frozenset(connected))


def _names(ours: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    if name not in ours:
        return None
    try:
        value: Any = json.loads(ours[name])
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StackConfigError(name, f"must be a list of names, got {ours[name]!r}")
    if len(set(value)) != len(value):
        raise StackConfigError(name, "lists a name twice")
    return tuple(value)


def _deployer(value: str | None, spec: Spec) -> str:
    if value is None:
        if spec.aws is None:
            return "arn:aws:iam::000000000000:root"  # no AWS key: nothing checks it
        return f"arn:{spec.aws.partition}:iam::{spec.aws.account}:root"
    try:
        return principal_arn(value)
    except PolicyError as exc:  # the ARN parser's error, said as the config key's
        raise StackConfigError("deployer", f"not an IAM role, user or root ARN: {value!r}") from exc


def _keys(names: tuple[str, ...] | None, spec: Spec) -> tuple[Key, ...]:
    declared = {k.name: k for k in spec.keys}
    if names is None:
        chosen = [k for k in spec.keys if k.created_by_stack]
    else:
        for name in names:
            if name not in declared:
                raise StackConfigError("keys", f"key {name!r} is not declared in the spec "
                                               f"(declared: {', '.join(sorted(declared))})")
            if not declared[name].created_by_stack:
                raise StackConfigError("keys", f"key {name!r} has an arn in the spec: it exists already "
                                               "and the stack does not create it")
        chosen = [declared[n] for n in names]
    for key in chosen:
        if key.type == "hmac":
            raise StackConfigError("keys", f"key {key.name!r} is an HMAC key: the stack creates symmetric "
                                           "and sign keys; create it outside and give its arn in the spec")
        if key.hsm and key.key_store is None:
            raise StackConfigError("keys", f"key {key.name!r} is HSM-backed but names no key_store: declare "
                                           "[hsm_stores.NAME] in the spec and set key_store = \"NAME\"")
    order = {k.name: i for i, k in enumerate(spec.keys)}
    return tuple(sorted(chosen, key=lambda k: order[k.name]))


def _workers(names: tuple[str, ...] | None, spec: Spec) -> tuple[Principal, ...]:
    declared = {p.name: p for p in spec.workers}
    if names is None:
        return spec.workers
    out = []
    for name in names:
        principal = declared.get(WORKER_TABLES.get(name, name))
        if principal is None:
            raise StackConfigError("workers", f"worker {name!r} is not declared in the spec "
                                              f"(declared: {', '.join(sorted(declared)) or 'none'})")
        out.append(principal)
    return tuple(out)


def _anchors(value: str | None, spec: Spec, base_dir: Path) -> dict[str, str]:
    if value is None:
        return {}
    try:
        raw: Any = json.loads(value)
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raise StackConfigError("hsmTrustAnchors", "must be a map of key store name -> certificate")
    stores = {s.name for s in spec.hsm_stores}
    out = {}
    for store, given in sorted(raw.items()):
        here = f"hsmTrustAnchors.{store}"
        if store not in stores:
            raise StackConfigError(here, f"key store {store!r} is not declared under [hsm_stores] in the spec")
        if not isinstance(given, str) or not given.strip():
            raise StackConfigError(here, "give the trust anchor PEM or a path to customerCA.crt")
        pem = given
        if PEM_BEGIN not in given:
            path = Path(given) if Path(given).is_absolute() else base_dir / given
            try:
                pem = path.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise StackConfigError(here, f"cannot read the certificate file {path}") from exc
        if PEM_BEGIN not in pem:
            raise StackConfigError(here, "not a PEM certificate (no BEGIN CERTIFICATE line)")
        out[store] = pem.strip() + "\n"
    return out
