"""Every document a spec needs, as relative path -> document, and writing them.

Layout under the output directory (docs/policies.md lists it)::

    aws/key-policies/<key>.json            one per AWS key
    aws/key-policies/<key>.<region>.json   the same policy for each replica
    aws/identity-policies/<principal>.json one per AWS / IRSA principal
    aws/trust-policies/<principal>.json    one per IRSA principal, and per worker with a trust
    aws/workers/<worker>.json              rotation-worker, dr-replicator
    gcp/bindings/<key>.json                one per GCP CryptoKey
    gcp/roles/keysteadRotator.json         when a GCP key has a rotator
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keystead.errors import PolicyError

from ..spec.model import Spec
from . import aws, gcp


def documents(spec: Spec, arns: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    spec = aws.with_arns(spec, arns)
    out: dict[str, dict[str, Any]] = {}
    for key in spec.keys:
        if key.cloud == "aws":
            policy = aws.key_policy(spec, key.name)
            out[f"aws/key-policies/{key.name}.json"] = policy
            for region in key.replica_regions:
                out[f"aws/key-policies/{key.name}.{region}.json"] = policy
        else:
            out[f"gcp/bindings/{key.name}.json"] = gcp.bindings(spec, key.name)
    for principal in spec.principals:
        identity = aws.identity_policy(spec, principal.name)
        if identity is not None:
            folder = "workers" if principal.kind == "worker" else "identity-policies"
            out[f"aws/{folder}/{principal.name}.json"] = identity
        if principal.kind == "irsa" or (principal.trust is not None and principal.arn):
            out[f"aws/trust-policies/{principal.name}.json"] = aws.trust_policy(
                spec, principal.name)
    if gcp.needs_rotator_role(spec):
        out["gcp/roles/keysteadRotator.json"] = gcp.rotator_role(spec)
    return dict(sorted(out.items()))


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write(spec: Spec, out_dir: str | Path, arns: Mapping[str, str] | None = None) -> list[Path]:
    """Write every document; files are only rewritten when their content changes."""
    out_dir = Path(out_dir)
    written = []
    for relative, document in documents(spec, arns).items():
        path = out_dir / relative
        text = render(document)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"cannot write {path}: {exc.strerror}") from exc
        written.append(path)
    return written
