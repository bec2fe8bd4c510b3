"""SkillPolicy validation: the CRD schema (shape, enums, minimums) plus what a schema cannot say —
RE2 patterns, entity names known to the masking engine, conflicting rules, the retention floor.

Every error names the field: `spec.rules[1].when.promptMatches[0]: not a valid RE2 pattern: ...`,
so `kubectl apply` and GitOps tools show the author exactly what to fix.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import re2

from skillwarden_operator import schema

GROUP = "skillwarden.io"
VERSION = "v1alpha1"
PLURAL = "skillpolicies"
KIND = "SkillPolicy"

DEFAULT_MIN_RETENTION_DAYS = 1

MAX_APPROVAL_TTL_SECONDS = 7 * 24 * 3600

# Rego's action names (the decision contract) for the CRD's camelCase ones.
ACTION_TO_DECISION = {"allow": "allow", "deny": "deny", "requireApproval": "require_approval"}


def builtin_entities() -> frozenset[str]:
    """The masking engine's entity names: its module is the single source of truth."""
    module = importlib.import_module("skillwarden_sidecar.masking.entities")
    entities: frozenset[str] = frozenset(module.BUILTIN_ENTITIES)
    return entities


def _masker_refusal(name: str, pattern: str) -> str | None:
    """The masking engine's own verdict (e.g. it needs a length bound to stream safely): a
    pattern admitted here must be one every sidecar can load."""
    module = importlib.import_module("skillwarden_sidecar.masking.custom")
    try:
        module.validate_custom_pattern(name, pattern)
    except ValueError as error:
        return str(error)
    return None


def parse_duration(text: str) -> int:
    """`1h30m`, `30m`, `90s` -> seconds. The CRD pattern admits exactly this grammar."""
    total, number = 0, ""
    units = {"h": 3600, "m": 60, "s": 1}
    for char in text:
        if char.isdigit():
            number += char
        elif char in units and number:
            total += int(number) * units[char]
            number = ""
        else:
            raise ValueError(f"not a duration like 30m or 1h30m: {text!r}")
    if number or not text:
        raise ValueError(f"not a duration like 30m or 1h30m: {text!r}")
    return total


def _quiet() -> Any:
    options = re2.Options()
    options.log_errors = False  # a bad pattern is the author's error, reported by field; not a log line
    return options


def compile_re2(pattern: str) -> Any:
    return re2.compile(pattern, _quiet())


def re2_error(pattern: str) -> str | None:
    """Why RE2 (the engine behind OPA's regex.match) rejects the pattern, or None."""
    try:
        compile_re2(pattern)
    except re2.error as error:
        detail = error.args[0] if error.args else "invalid pattern"
        return detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
    except (TypeError, ValueError) as error:
        return str(error)
    return None


def validate_policy(obj: dict[str, Any], min_retention_days: int = DEFAULT_MIN_RETENTION_DAYS,
                    entities: frozenset[str] | None = None) -> list[str]:
    """All problems with a SkillPolicy object (as applied: apiVersion, kind, metadata, spec)."""
    errors: list[str] = []
    if obj.get("apiVersion") not in (None, f"{GROUP}/{VERSION}"):
        errors.append(f'apiVersion: Unsupported value: "{obj.get("apiVersion")}": '
                      f'supported values: "{GROUP}/{VERSION}"')
    if obj.get("kind") not in (None, KIND):
        errors.append(f'kind: Unsupported value: "{obj.get("kind")}": supported values: "{KIND}"')
    schema.validate(obj, schema.policy_schema(), "", errors)
    if errors:
        return errors  # semantic checks assume the shape is right
    spec = schema.apply_defaults(obj, schema.policy_schema())["spec"]
    known = entities if entities is not None else builtin_entities()
    _check_subjects(spec, errors)
    _check_rules(spec, errors)
    _check_masking(spec, known, errors)
    _check_approval(spec, errors)
    _check_recording(spec, min_retention_days, errors)
    return errors


def _check_subjects(spec: dict[str, Any], errors: list[str]) -> None:
    seen: dict[str, int] = {}
    for index, subject in enumerate(spec.get("subjects", [])):
        path = f"spec.subjects[{index}]"
        if subject["name"] in seen:
            errors.append(f'{path}.name: Duplicate value: "{subject["name"]}" '
                          f"(also spec.subjects[{seen[subject['name']]}])")
        seen.setdefault(subject["name"], index)
        if not any(subject.get(key) for key in ("groups", "users", "serviceAccounts")):
            errors.append(f"{path}: Required value: a subject needs at least one of groups, users, "
                          "serviceAccounts")


def _check_rules(spec: dict[str, Any], errors: list[str]) -> None:
    names: dict[str, int] = {}
    conditions: dict[str, int] = {}
    rules = spec.get("rules", [])
    for index, rule in enumerate(rules):
        path = f"spec.rules[{index}]"
        if rule["name"] in names:
            errors.append(f'{path}.name: Duplicate value: "{rule["name"]}" '
                          f'(also spec.rules[{names[rule["name"]]}])')
        names.setdefault(rule["name"], index)
        for position, pattern in enumerate(rule["when"].get("promptMatches", [])):
            problem = re2_error(pattern)
            if problem is not None:
                errors.append(f"{path}.when.promptMatches[{position}]: not a valid RE2 pattern: {problem}")
        key = json.dumps(_canonical_when(rule["when"]), sort_keys=True)
        if key in conditions:
            other = rules[conditions[key]]
            if other["action"] != rule["action"]:
                errors.append(f"{path}.when: conflicting rules: same conditions as "
                              f"spec.rules[{conditions[key]}] "
                              f'("{other["name"]}") with action {other["action"]}, here {rule["action"]}')
            else:
                errors.append(f"{path}.when: Duplicate value: same conditions and action as "
                              f'spec.rules[{conditions[key]}] ("{other["name"]}")')
        conditions.setdefault(key, index)


def _canonical_when(when: dict[str, Any]) -> dict[str, Any]:
    canonical: dict[str, Any] = {}
    for key, value in when.items():
        if isinstance(value, list):
            canonical[key] = sorted(json.dumps(item, sort_keys=True) for item in value)
        else:
            canonical[key] = value
    return canonical


def _check_masking(spec: dict[str, Any], known: frozenset[str], errors: list[str]) -> None:
    masking = spec.get("masking", {})
    custom_names: dict[str, int] = {}
    for index, custom in enumerate(masking.get("custom", [])):
        path = f"spec.masking.custom[{index}]"
        if custom["name"] in known:
            errors.append(f'{path}.name: Invalid value: "{custom["name"]}": '
                          "clashes with a built-in entity type")
        if custom["name"] in custom_names:
            errors.append(f'{path}.name: Duplicate value: "{custom["name"]}" '
                          f"(also spec.masking.custom[{custom_names[custom['name']]}])")
        custom_names.setdefault(custom["name"], index)
        problem = re2_error(custom["pattern"])
        if problem is not None:
            errors.append(f"{path}.pattern: not a valid RE2 pattern: {problem}")
        elif compile_re2(custom["pattern"]).search("") is not None:
            errors.append(f"{path}.pattern: Invalid value: matches the empty string")
        else:
            usable = _masker_refusal(custom["name"], custom["pattern"])
            if usable is not None:
                errors.append(f"{path}.pattern: Invalid value: {usable}")
    names = known | set(custom_names)
    for direction in ("upstream", "client"):
        for index, entity in enumerate(masking.get(direction, [])):
            if entity not in names:
                errors.append(f'spec.masking.{direction}[{index}]: Unsupported value: "{entity}": '
                              f"unknown entity type (built-in: {', '.join(sorted(known))}; "
                              "or declare it in spec.masking.custom)")
    for entity in masking.get("operators", {}):
        if entity not in names:
            errors.append(f'spec.masking.operators.{entity}: Unsupported value: "{entity}": '
                          "unknown entity type")


def _check_approval(spec: dict[str, Any], errors: list[str]) -> None:
    approval = spec.get("approval")
    asking = [f"spec.rules[{i}]" for i, rule in enumerate(spec.get("rules", []))
              if rule["action"] == "requireApproval"]
    if spec.get("defaultAction") == "requireApproval":
        asking.insert(0, "spec.defaultAction")
    approvers = (approval or {}).get("approvers", {})
    if asking and not (approvers.get("groups") or approvers.get("users")):
        errors.append(f"spec.approval.approvers: Required value: {asking[0]} requires approval but no "
                      "approver groups or users are named")
    if approval is not None and "ttl" in approval:
        try:
            seconds = parse_duration(approval["ttl"])
        except ValueError as error:
            errors.append(f"spec.approval.ttl: Invalid value: {error}")
        else:
            if not 0 < seconds <= MAX_APPROVAL_TTL_SECONDS:
                errors.append(f'spec.approval.ttl: Invalid value: "{approval["ttl"]}": '
                              "must be between 1s and 168h")


def _check_recording(spec: dict[str, Any], floor: int, errors: list[str]) -> None:
    recording = spec.get("recording")
    if recording is not None and recording.get("retentionDays", floor) < floor:
        errors.append(f"spec.recording.retentionDays: Invalid value: {recording['retentionDays']}: "
                      f"below the retention floor of {floor} days set by the operator")


def normalized_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The spec with CRD defaults applied (as the API server stores it)."""
    defaulted = schema.apply_defaults(obj, schema.policy_schema())
    spec: dict[str, Any] = defaulted.get("spec", {})
    return spec


def policy_key(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata", {})
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
