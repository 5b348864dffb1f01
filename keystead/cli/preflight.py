"""`keystead rotate --preflight [KEY] [--spec SPEC]`: may the worker's credentials rotate these keys?

Per AWS key, the checks of keystead/providers/aws_preflight.py (DryRun where KMS
offers it, a read-only call where the action only reads, an explicit "cannot
check without doing it" otherwise). Each denied action comes with the statement
of `keystead policy generate` that grants it: the rotation worker's identity
policy (aws/workers/rotation-worker.json) generated from SPEC when given, else
from the key as KMS describes it (the same generator, for a spec of this one
key and the rotation worker). Local and age keys need no cloud permission.

Exit codes: 0 nothing denied (unchecked lines do not count), 10 a permission
is missing, 6 KMS failed otherwise (unreachable, unknown key), 4 unknown KEY.
Nothing is changed: no key, no envelope, no state.
"""

from __future__ import annotations

import fnmatch
import json
from typing import TYPE_CHECKING, Any

from keystead.cli.app import App, print_json, say
from keystead.errors import KeysteadError, PolicyError, ProviderError

if TYPE_CHECKING:
    from keystead.config import Config, KeyConfig
    from keystead.policies import Spec
    from keystead.providers.aws import AwsKey
    from keystead.providers.aws_preflight import Check

WORKER = "rotation-worker"
WORKER_FILE = f"aws/workers/{WORKER}.json"
_STYLE = {"allowed": "green", "denied": "red", "error": "red", "unchecked": "yellow", "not needed": "dim"}


def run(app: App, only: str | None, spec_path: str | None, as_json: bool) -> None:
    from keystead.providers import open_key
    from keystead.providers.aws import AwsKey

    config = app.config
    spec = None
    if spec_path is not None:
        from keystead.policies import load_spec

        spec = load_spec(spec_path)
    names = [only] if only else list(config.keys)
    report: list[dict[str, Any]] = []
    for name in names:
        kc = config.keys[name]
        row: dict[str, Any] = {"key": kc.name, "ref": kc.ref, "provider": kc.provider, "checks": []}
        report.append(row)
        if kc.provider != "aws":
            row["note"] = ("GCP permissions are not checked by preflight" if kc.provider == "gcp"
                           else "needs no cloud permission")
            continue
        key = open_key(kc.ref, config, options=kc.options)
        assert isinstance(key, AwsKey)
        try:
            kind, checks = _checks(config, kc, key)
        except KeysteadError as exc:
            row["error"] = str(exc)
            continue
        row["rotation"] = str(kind) if kind else None
        grants = _grants(spec, kc, key)
        if grants is None:
            row["grants_note"] = ("the statements cannot be generated without the key's description "
                                  "(kms:DescribeKey): pass --spec SPEC")
        for check in checks:
            item = check.as_dict()
            if check.status == "denied":
                item["grant"] = [_grant_for(action, grants or []) for action in check.actions]
            row["checks"].append(item)
    if as_json:
        print_json({"keys": report})
    else:
        _print(report, spec_path)
    denied = [(r["key"], a) for r in report for c in r["checks"] if c["status"] == "denied" for a in c["actions"]]
    failed = [r["key"] for r in report if "error" in r or any(c["status"] == "error" for c in r["checks"])]
    if denied:
        listed = ", ".join(f"{a} on {k}" for k, a in denied)
        raise PolicyError(f"preflight: the credentials in use may not {listed}: grant the statements shown "
                          f"({WORKER_FILE} of `keystead policy generate`); nothing was changed")
    if failed:
        raise ProviderError(f"preflight: could not check {', '.join(dict.fromkeys(failed))} (see above); "
                            "nothing was changed")


def _checks(config: Config, kc: KeyConfig, key: AwsKey) -> tuple[Any, list[Check]]:
    from keystead.providers.aws_preflight import preflight

    sample = None if kc.signs else _sample(config, kc.ref)
    with key._translated("describe"):
        return preflight(key, sample)


def _sample(config: Config, ref: str) -> tuple[str, str, str, bytes] | None:
    """One slot of ``ref`` in the base store (its ReEncrypt is the real rewrap), or None."""
    from keystead.stores import open_store
    from keystead.stores.base import DAMAGED

    store = open_store(config.store_url, base=config.root)
    try:
        for row in store.slots_behind(ref, "", limit=16):
            if row.version != DAMAGED:
                return config.vault_name, row.secret, row.version, row.wrapped
    finally:
        store.close()
    return None


# -- the statement that grants an action ---------------------------------------------------------
def _grants(spec: Spec | None, kc: KeyConfig, key: AwsKey) -> list[dict[str, Any]] | None:
    """The Allow statements of the rotation worker's generated identity policy for this key
    (SPEC's when it declares the worker and a key of this name, else generated for the key as
    KMS describes it); None when neither can be had."""
    from keystead.policies.generate.aws import identity_policy, pascal

    if spec is None or not any(p.name == WORKER for p in spec.principals) \
            or not any(k.name == kc.name for k in spec.keys):
        try:
            with key._translated("describe"):
                spec = _one_key_spec(kc, key)
        except KeysteadError:
            return None
    doc = identity_policy(spec, WORKER) or {"Statement": []}
    own = "Rotator" + pascal(kc.name)  # Sids are role + key + label; the wildcard-only actions are shared
    return [s for s in doc["Statement"] if s.get("Effect") == "Allow"
            and (str(s.get("Sid", "")).startswith(own) or s.get("Sid") == "WildcardOnlyActions")]


def _one_key_spec(kc: KeyConfig, key: AwsKey) -> Spec:
    from keystead.policies.spec.model import Aws, Grant, Key, Principal, Spec

    meta = key.client().describe_key(KeyId=key.ref)["KeyMetadata"]  # (allowed: preflight checked it first)
    _arn, _p, _svc, region, account, _rest = meta["Arn"].split(":", 5)
    usage = meta.get("KeyUsage", "ENCRYPT_DECRYPT")
    kind = {"SIGN_VERIFY": "sign", "GENERATE_VERIFY_MAC": "hmac"}.get(usage, "symmetric")
    replicas = key.replica_regions or [r["Region"] for r in
                                       meta.get("MultiRegionConfiguration", {}).get("ReplicaKeys", [])]
    spec_key = Key(name=kc.name, cloud="aws", type=kind,
                   key_spec=meta.get("KeySpec") or meta.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT",
                   arn=meta["Arn"], alias=key.parsed.alias, region=region, account=account,
                   multi_region=bool(meta.get("MultiRegion")),
                   replica_regions=tuple(r for r in replicas if r != region),
                   hsm=meta.get("Origin") == "AWS_CLOUDHSM", rotation_days=min(max(kc.rotation_period_days, 90), 2560))
    worker = Principal(name=WORKER, kind="worker", grants=(Grant(kc.name, "rotator"),),
                       arn=f"arn:aws:iam::{account}:role/keystead-rotation")
    return Spec(keys=(spec_key,), principals=(worker,), aws=Aws(account=account, region=region))


def _grant_for(action: str, statements: list[dict[str, Any]]) -> dict[str, Any] | None:
    for statement in statements:
        listed = statement.get("Action", [])
        for pattern in [listed] if isinstance(listed, str) else listed:
            if fnmatch.fnmatchcase(action.lower(), str(pattern).lower()):
                return statement
    return None


def _print(report: list[dict[str, Any]], spec_path: str | None) -> None:
    source = f"{WORKER_FILE} from {spec_path}" if spec_path else f"{WORKER_FILE} (generated for this key)"
    for row in report:
        head = f"[bold]{row['key']}[/] {row['ref']}"
        if "note" in row:
            say(f"{head}: {row['provider']}: {row['note']}")
            continue
        if "error" in row:
            say(f"{head}: [red]error:[/] {row['error']}")
            continue
        say(f"{head}: rotation {row.get('rotation') or 'unknown'}")
        if "grants_note" in row:
            say(f"  [yellow]note:[/] {row['grants_note']}")
        for c in row["checks"]:
            style = _STYLE.get(c["status"], "")
            detail = f": {c['detail']}" if c["detail"] else ""
            say(f"  [{style}]{c['status']:<10}[/] {' '.join(c['actions'])} ({c['how']}{detail})")
            for action, statement in zip(c["actions"], c.get("grant", []), strict=False):
                if statement is None:
                    say(f"             {action}: no statement of `keystead policy generate` grants it to the "
                        "rotation worker: add it to the worker's policy yourself")
                else:
                    say(f"             {action}: granted by {statement['Sid']} in {source}: "
                        f"{json.dumps(statement, sort_keys=True)}")

