"""The GCP lint rules over IAM policies and custom roles (docs/iam-rules.md, rules 13-14)."""

from __future__ import annotations

from .. import actions as A
from .document import Document
from .rules import Finding, finding, shorten


def lint_gcp(doc: Document) -> list[Finding]:
    if doc.kind == "gcp-role":
        return _role(doc)
    out: list[Finding] = []
    roles_of: dict[str, set[str]] = {}
    bindings = doc.data.get("bindings") or []
    for index, binding in enumerate(bindings if isinstance(bindings, list) else []):
        if not isinstance(binding, dict):
            continue
        role = str(binding.get("role", ""))
        label = f"bindings[{index}] {role}"
        line = doc.line_of_text(f'"{role}"') if role else None
        members = binding.get("members") or []
        for member in members if isinstance(members, list) else []:
            member = str(member)
            roles_of.setdefault(member, set()).add(role)
            if member in A.GCP_PUBLIC_MEMBERS:
                out.append(finding("KS017", doc.path, label, f"{member} holds {role}", line))
        if role == "roles/cloudkms.cryptoOperator":
            out.append(finding("KS019", doc.path, label, "cryptoOperator is bound", line))
    for member, roles in sorted(roles_of.items()):
        crypto = roles & A.GCP_CRYPTO_ROLES
        if A.GCP_ADMIN_ROLE in roles and crypto:
            out.append(finding("KS018", doc.path, "bindings",
                               f"{member} holds {A.GCP_ADMIN_ROLE} and {', '.join(sorted(crypto))}",
                               doc.line_of_text(member)))
    return out


def _role(doc: Document) -> list[Finding]:
    permissions = {str(p) for p in doc.data.get("includedPermissions") or []}
    if "cloudkms.cryptoKeyVersions.create" not in permissions:
        return []
    extra = sorted(permissions - set(A.GCP_ROTATOR_PERMISSIONS))
    if not extra:
        return []
    return [finding("KS020", doc.path, str(doc.data.get("name", "role")),
                    f"rotation role also grants {shorten(extra)}",
                    doc.line_of_text(f'"{extra[0]}"'))]
