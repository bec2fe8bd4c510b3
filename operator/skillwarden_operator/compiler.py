"""All SkillPolicies of a namespace -> the one data document the static Rego evaluates.

The Rego is vetted and fixed; only this data changes. Everything that can be decided before a
request arrives is decided here: namespace-wide masking and recording (union, longest retention),
the default action, and indexes so OPA looks rules and grants up by key (skill, tool, model,
group, user, service account, matched prompt pattern, model prefix) instead of scanning them.
Decision latency then depends on the rules that could apply to a request, not on how many rules
the namespace has.

Prompt patterns: every distinct `promptMatches` pattern gets an id in one table
(`prompt_patterns`, with a fingerprint of its content). The sidecar runs the whole table over the
prompt in one RE2 set pass and sends OPA the ids that matched with the table's fingerprint, so OPA
looks rules up by id instead of running each rule's regex; when the fingerprints differ (a sidecar
holding an older table) the Rego matches the table against `prompt_text` itself.

Output is a pure function of the input policies (sorted by name, no timestamps), so every
operator replica produces the same bytes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from skillwarden_operator import policy_model, schema

# Most protective first: redact reveals nothing, hmac reveals linkability, partial reveals a tail.
_OPERATOR_STRENGTH = {"redact": 3, "hmac": 2, "partial": 1}
_PRINCIPALS = (("group", "groups"), ("user", "users"), ("serviceaccount", "serviceAccounts"))
_ACTION_RANK = {"allow": 0, "require_approval": 1, "deny": 2}
_INDEX_KINDS = ("skill", "tool", "pattern", "model", "model_prefix")
_GLOB_CHARS = ("*", "?")  # the CRD admits no other glob syntax in model names


@dataclass
class Compiled:
    document: dict[str, Any]
    invalid: dict[str, list[str]] = field(default_factory=dict)  # policy key -> errors
    included: list[str] = field(default_factory=list)  # policy keys compiled into the document


def _skill_key(skill: dict[str, Any]) -> str:
    return f"{skill['type']}/{skill['id']}"


def _skills(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """{type/id: {any: bool, versions: {v: true}}}: O(1) lookups in Rego."""
    merged: dict[str, dict[str, Any]] = {}
    for skill in entries:
        entry = merged.setdefault(_skill_key(skill), {"any": False, "versions": {}})
        if "versions" in skill:
            for version in skill["versions"]:
                entry["versions"][version] = True
        else:
            entry["any"] = True
    return {key: merged[key] for key in sorted(merged)}


def _literal_prefix(glob: str) -> str:
    """The part of a model glob before its first wildcard: every model the glob matches starts
    with it."""
    cut = min((glob.index(char) for char in _GLOB_CHARS if char in glob), default=len(glob))
    return glob[:cut]


def _pattern_table(valid: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Distinct promptMatches patterns, sorted; a pattern's id is its position as a decimal
    string (Rego object keys are strings)."""
    return sorted({pattern for _, spec in valid for rule in spec.get("rules", [])
                   for pattern in rule["when"].get("promptMatches", [])})


def prompt_pattern_table(patterns: list[str]) -> dict[str, Any]:
    """The table the sidecar and the Rego share. The fingerprint names the exact list (order
    included, since ids are positions), so ids are only ever read against the table they index."""
    digest = hashlib.sha256(orjson.dumps(patterns)).hexdigest()
    return {"fingerprint": f"sha256:{digest}", "patterns": patterns}


def _default_operations() -> list[str]:
    """Omitted `operations`: every operation the API offers (the skills/models/tools of the grant
    still bound what can be used); list them to restrict a subject, e.g. to keep it from
    changing custom skills."""
    subject = schema.policy_schema()["properties"]["spec"]["properties"]["subjects"]["items"]
    every: list[str] = subject["properties"]["operations"]["items"]["enum"]
    return every


def _recording_defaults() -> dict[str, Any]:
    props = schema.policy_schema()["properties"]["spec"]["properties"]["recording"]["properties"]
    return {"retentionDays": props["retentionDays"]["default"], "mode": props["mode"]["default"]}


def compile_namespace(namespace: str, policies: list[dict[str, Any]],
                      min_retention_days: int = policy_model.DEFAULT_MIN_RETENTION_DAYS,
                      entities: frozenset[str] | None = None) -> Compiled:
    ordered = sorted(policies, key=lambda p: str(p.get("metadata", {}).get("name", "")))
    valid: list[tuple[str, dict[str, Any]]] = []
    invalid: dict[str, list[str]] = {}
    for policy in ordered:
        key = f"{namespace}/{policy.get('metadata', {}).get('name', '')}"
        errors, spec = _validated(policy, min_retention_days, entities)
        if errors:
            invalid[key] = errors
        else:
            valid.append((key, spec))

    grants: list[dict[str, Any]] = []
    grant_index: dict[str, dict[str, list[int]]] = {"group": defaultdict(list), "user": defaultdict(list),
                                                     "serviceaccount": defaultdict(list)}
    rules: list[dict[str, Any]] = []
    table = _pattern_table(valid)
    patterns = {pattern: str(position) for position, pattern in enumerate(table)}  # pattern -> id
    rule_index: dict[str, Any] = {"skill": defaultdict(list), "tool": defaultdict(list),
                                  "pattern": defaultdict(list), "model": defaultdict(list),
                                  "model_prefix": defaultdict(list), "any": []}
    approvals: dict[str, Any] = {}
    defaults: list[tuple[str, str]] = []
    for key, spec in valid:
        defaults.append((policy_model.ACTION_TO_DECISION[spec["defaultAction"]], key))
        for subject in spec.get("subjects", []):
            index = len(grants)
            grant: dict[str, Any] = {
                "policy": key, "subject": subject["name"],
                "skills": _skills(subject.get("skills", [])),
                "models": sorted(set(subject.get("models", []))),
                "tools": {tool: True for tool in sorted(set(subject.get("tools", [])))},
            }
            if "maxTokens" in subject:
                grant["maxTokens"] = subject["maxTokens"]
            operations = subject.get("operations", _default_operations())
            grant["operations"] = {op: True for op in sorted(set(operations))}
            grants.append(grant)
            for kind, field_name in _PRINCIPALS:
                for name in sorted(set(subject.get(field_name, []))):
                    grant_index[kind][name].append(index)
        for rule in spec.get("rules", []):
            index = len(rules)
            compiled = _compile_rule(key, rule, patterns)
            rules.append(compiled)
            _index_rule(rule["when"], compiled["when"].get("promptPatterns", []), index, rule_index)
        if "approval" in spec:
            approvals[key] = _compile_approval(spec["approval"])

    document = {
        "namespace": namespace,
        "default_action": _default_action(defaults),
        "default_policy": _default_policy(defaults),
        "grants": grants,
        "grant_index": {kind: _sorted_map(entries) for kind, entries in grant_index.items()},
        "rules": rules,
        "rule_index": {**{kind: _sorted_map(rule_index[kind]) for kind in _INDEX_KINDS},
                       "any": rule_index["any"]},
        "rule_index_has_model_prefix": bool(rule_index["model_prefix"]),
        "prompt_patterns": prompt_pattern_table(table),
        "approvals": approvals,
        "masking": _merge_masking([spec.get("masking", {}) for _, spec in valid]),
        "recording": _merge_recording(namespace, [(key, spec["recording"]) for key, spec in valid
                                                  if "recording" in spec]),
        "invalid": [{"policy": key, "errors": errors} for key, errors in invalid.items()],
    }
    return Compiled(document=document, invalid=invalid, included=[key for key, _ in valid])


_VALIDATED: OrderedDict[str, tuple[list[str], dict[str, Any]]] = OrderedDict()
_VALIDATED_MAX = 8192


def _validated(policy: dict[str, Any], floor: int,
               entities: frozenset[str] | None) -> tuple[list[str], dict[str, Any]]:
    """Validation and defaulting, memoised by content: recompiling a namespace after one policy
    changed re-validates that one policy, not all of them (RE2 compiles dominate the cost)."""
    content = {key: policy.get(key) for key in ("apiVersion", "kind", "spec")}
    known = sorted(entities) if entities is not None else None
    try:
        encoded = orjson.dumps([content, floor, known], option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits (YAML allows one; the JSON bundle cannot hold it)
        return ["spec: a number is outside the 64-bit integer range"], {}
    memo_key = hashlib.sha256(encoded).hexdigest()
    cached = _VALIDATED.get(memo_key)
    if cached is None:
        errors = policy_model.validate_policy(policy, floor, entities)
        cached = (errors, {} if errors else policy_model.normalized_spec(policy))
        _VALIDATED[memo_key] = cached
        while len(_VALIDATED) > _VALIDATED_MAX:
            _VALIDATED.popitem(last=False)
    else:
        _VALIDATED.move_to_end(memo_key)
    return list(cached[0]), cached[1]  # the compiler only reads specs: shared, never mutated


def clear_validation_cache() -> None:
    _VALIDATED.clear()


def _sorted_map(entries: dict[str, list[int]]) -> dict[str, list[int]]:
    return {key: entries[key] for key in sorted(entries)}


def _compile_rule(policy: str, rule: dict[str, Any], patterns: dict[str, str]) -> dict[str, Any]:
    when = rule["when"]
    compiled: dict[str, Any] = {}
    if "promptMatches" in when:
        compiled["promptMatches"] = list(when["promptMatches"])  # for people reading the bundle
        compiled["promptPatterns"] = sorted({patterns[p] for p in when["promptMatches"]}, key=int)
    if "skills" in when:
        compiled["skills"] = _skills(when["skills"])
    if "tools" in when:
        compiled["tools"] = {tool: True for tool in sorted(set(when["tools"]))}
    if "models" in when:
        compiled["models"] = sorted(set(when["models"]))
    if "maxTokensAbove" in when:
        compiled["maxTokensAbove"] = when["maxTokensAbove"]
    if "operations" in when:
        compiled["operations"] = {op: True for op in sorted(set(when["operations"]))}
    return {"policy": policy, "name": rule["name"], "action": policy_model.ACTION_TO_DECISION[rule["action"]],
            "message": rule.get("message", f"rule {rule['name']} of {policy}"), "when": compiled}


def _index_rule(when: dict[str, Any], pattern_ids: list[str], index: int,
                rule_index: dict[str, Any]) -> None:
    """Put the rule under the most selective key it REQUIRES: a rule with a skills condition can
    only match a request carrying one of those skills, so it is only looked at for them; a rule
    with promptMatches only when one of its patterns matched; a rule with model globs only for
    models starting with a glob's literal prefix."""
    if when.get("skills"):
        for key in sorted({_skill_key(skill) for skill in when["skills"]}):
            rule_index["skill"][key].append(index)
    elif when.get("tools"):
        for tool in sorted(set(when["tools"])):
            rule_index["tool"][tool].append(index)
    elif pattern_ids:
        for pattern_id in pattern_ids:
            rule_index["pattern"][pattern_id].append(index)
    elif when.get("models") and all(_literal_prefix(model) for model in when["models"]):
        for model in sorted(set(when["models"])):
            prefix = _literal_prefix(model)
            kind = "model" if prefix == model else "model_prefix"
            if index not in rule_index[kind][prefix]:  # two globs with one prefix: listed once
                rule_index[kind][prefix].append(index)
    else:
        rule_index["any"].append(index)


def _compile_approval(approval: dict[str, Any]) -> dict[str, Any]:
    approvers = approval.get("approvers", {})
    return {
        "approvers": {"groups": sorted(set(approvers.get("groups", []))),
                      "users": sorted(set(approvers.get("users", [])))},
        "required": approval["required"],
        "ttlSeconds": policy_model.parse_duration(approval["ttl"]),
        "holdSeconds": approval["holdSeconds"],
    }


def _default_action(defaults: list[tuple[str, str]]) -> str:
    # No policy at all: deny. Several policies: the most restrictive default wins.
    if not defaults:
        return "deny"
    return max((action for action, _ in defaults), key=lambda action: _ACTION_RANK[action])


def _default_policy(defaults: list[tuple[str, str]]) -> str | None:
    winner = _default_action(defaults)
    return next((key for action, key in defaults if action == winner), None)


def _merge_masking(sections: list[dict[str, Any]]) -> dict[str, Any]:
    upstream: set[str] = set()
    client: set[str] = set()
    operators: dict[str, str] = {}
    custom: set[tuple[str, str]] = set()
    for section in sections:
        upstream.update(section.get("upstream", []))
        client.update(section.get("client", []))
        for entity, operator in section.get("operators", {}).items():
            current = operators.get(entity)
            if current is None or _OPERATOR_STRENGTH[operator] > _OPERATOR_STRENGTH[current]:
                operators[entity] = operator
        custom.update((entry["name"], entry["pattern"]) for entry in section.get("custom", []))
    return {"upstream": sorted(upstream), "client": sorted(client),
            "operators": {entity: operators[entity] for entity in sorted(operators)},
            "custom": [{"name": name, "pattern": pattern} for name, pattern in sorted(custom)]}


def _merge_recording(namespace: str, sections: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    defaults = _recording_defaults()
    if not sections:
        return {"bucket": "", "prefix": f"{namespace}/", "retentionDays": defaults["retentionDays"],
                "mode": defaults["mode"], "policy": None}
    # Longest retention wins; on a tie COMPLIANCE (cannot be shortened) beats GOVERNANCE.
    key, chosen = max(sections, key=lambda item: (item[1]["retentionDays"], item[1]["mode"] == "COMPLIANCE",
                                                  item[0]))
    mode = "COMPLIANCE" if any(section["mode"] == "COMPLIANCE" for _, section in sections) else chosen["mode"]
    return {"bucket": chosen.get("bucket", ""), "prefix": chosen.get("prefix", f"{namespace}/"),
            "retentionDays": chosen["retentionDays"], "mode": mode, "policy": key}
