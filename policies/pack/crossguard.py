"""The CrossGuard validations: keystead's checks (``checks.py``) as pulumi-policy policies.

One ResourceValidationPolicy per resource rule (named by the rule's id, so a
violation says which rule it broke and each can be configured or disabled on
its own) and one StackValidationPolicy for the replicas. ``__main__.py``
hands :func:`policies` to ``PolicyPack``; tests call the validate functions
here directly with pulumi-policy's own argument objects, since building the
PolicyPack starts a gRPC server and blocks.

Configuration (``pulumi preview --policy-pack policies/pack --policy-pack-config
pack-config.json``), per policy, with these defaults::

    {"kms-rotation": {"maxRotationDays": 90}, "gcp-rotation": {"maxRotationDays": 90},
     "kms-deletion-window": {"minDeletionWindowDays": 7}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from .checks import RESOURCE_RULES, STACK_RULES, Resource, Rule, Settings, StackRule, check_rule

PACK_NAME = "keystead"
ENFORCEMENT = EnforcementLevel.MANDATORY
MAX_ROTATION = "maxRotationDays"
MIN_DELETION = "minDeletionWindowDays"

_DEFAULTS = Settings()
_SCHEMAS: dict[str, dict[str, dict[str, Any]]] = {
    "kms-rotation": {MAX_ROTATION: {"type": "integer", "minimum": 90, "maximum": 2560,
                                    "default": _DEFAULTS.max_rotation_days}},
    "gcp-rotation": {MAX_ROTATION: {"type": "integer", "minimum": 1, "maximum": 36500,
                                    "default": _DEFAULTS.max_rotation_days}},
    "kms-deletion-window": {MIN_DELETION: {"type": "integer", "minimum": 1, "maximum": 30,
                                           "default": _DEFAULTS.min_deletion_window_days}},
}


def settings_from(config: Mapping[str, Any]) -> Settings:
    """The checks' settings from a policy's configuration (absent values: the defaults)."""
    def number(name: str, default: int) -> int:
        value = config.get(name)
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default

    return Settings(max_rotation_days=number(MAX_ROTATION, _DEFAULTS.max_rotation_days),
                    min_deletion_window_days=number(MIN_DELETION, _DEFAULTS.min_deletion_window_days))


def resource_of(args: ResourceValidationArgs | PolicyResource) -> Resource:
    """A check's resource from CrossGuard's (its props stay the proxy: unknown values raise only when read)."""
    return Resource(type=args.resource_type, name=args.name, props=args.props, protect=bool(args.opts.protect))


def resource_validation(rule: Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    """The validate callback of ``rule``'s ResourceValidationPolicy."""
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for v in check_rule(rule, resource_of(args), settings_from(args.get_config())):
            report_violation(v.message, None)

    validate.__name__ = f"validate_{rule.id.replace('-', '_')}"
    return validate


def stack_validation(rule: StackRule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    """The validate callback of ``rule``'s StackValidationPolicy: each violation names its resource's URN."""
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        urns = {r.name: r.urn for r in args.resources}
        resources = [resource_of(r) for r in args.resources]
        for v in rule.check(resources, settings_from(args.get_config())):
            report_violation(v.message, urns.get(v.resource))

    validate.__name__ = f"validate_{rule.id.replace('-', '_')}"
    return validate


def _schema(rule_id: str) -> PolicyConfigSchema | None:
    properties = _SCHEMAS.get(rule_id)
    return PolicyConfigSchema(properties=properties) if properties else None


def policies() -> list[Policy]:
    """Every policy of the pack, resource rules first."""
    out: list[Policy] = [
        ResourceValidationPolicy(name=rule.id, description=rule.description, validate=resource_validation(rule),
                                 config_schema=_schema(rule.id))
        for rule in RESOURCE_RULES
    ]
    out += [StackValidationPolicy(name=rule.id, description=rule.description, validate=stack_validation(rule),
                                  config_schema=_schema(rule.id))
            for rule in STACK_RULES]
    return out
