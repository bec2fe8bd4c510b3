"""SkillPolicy validation: every error names the field a GitOps user has to fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillwarden_operator.policy_model import parse_duration, validate_policy

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def finance() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / "skillpolicy-finance.yaml").read_text())
    return loaded


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("skillpolicy-*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        assert validate_policy(document) == []


def _mutated(change: Any) -> list[str]:
    policy = finance()
    change(policy["spec"])
    return validate_policy(policy)


CASES = [
    ("bad regex", lambda s: s["rules"][1]["when"].__setitem__("promptMatches", ["ok", "(?<=x)y"]),
     "spec.rules[1].when.promptMatches[1]: not a valid RE2 pattern: invalid perl operator"),
    ("backreference", lambda s: s["rules"][0]["when"].__setitem__("promptMatches", [r"(a)\1"]),
     "spec.rules[0].when.promptMatches[0]: not a valid RE2 pattern"),
    ("unknown entity", lambda s: s["masking"]["upstream"].append("SOCIAL_SECURITY"),
     'spec.masking.upstream[5]: Unsupported value: "SOCIAL_SECURITY": unknown entity type'),
    ("unknown entity operator", lambda s: s["masking"]["operators"].__setitem__("PASSPORT", "redact"),
     'spec.masking.operators.PASSPORT: Unsupported value: "PASSPORT"'),
    ("negative retention", lambda s: s["recording"].__setitem__("retentionDays", -1),
     "spec.recording.retentionDays: Invalid value: -1: should be greater than or equal to 1"),
    ("unknown action", lambda s: s["rules"][0].__setitem__("action", "permit"),
     'spec.rules[0].action: Unsupported value: "permit": '
     'supported values: "allow", "deny", "requireApproval"'),
    ("bad custom pattern", lambda s: s["masking"]["custom"].append({"name": "BAD", "pattern": "(unclosed"}),
     "spec.masking.custom[1].pattern: not a valid RE2 pattern: missing )"),
    ("custom matches empty", lambda s: s["masking"]["custom"].append({"name": "EMPTY", "pattern": "x*"}),
     "spec.masking.custom[1].pattern: Invalid value: matches the empty string"),
    ("custom clashes builtin", lambda s: s["masking"]["custom"].append({"name": "US_SSN", "pattern": "x+"}),
     'spec.masking.custom[1].name: Invalid value: "US_SSN": clashes with a built-in entity type'),
    ("duplicate rule", lambda s: s["rules"].append(copy.deepcopy(s["rules"][0])),
     'spec.rules[3].name: Duplicate value: "no-credential-dumps" (also spec.rules[0])'),
    ("conflicting rules",
     lambda s: s["rules"].append({**copy.deepcopy(s["rules"][0]), "name": "x", "action": "allow"}),
     "spec.rules[3].when: conflicting rules: same conditions as spec.rules[0]"),
    ("approval without approvers", lambda s: s.pop("approval"),
     "spec.approval.approvers: Required value: spec.rules[1] requires approval"),
    ("subject without principals", lambda s: s["subjects"].append({"name": "nobody", "models": ["*"]}),
     "spec.subjects[2]: Required value: a subject needs at least one of groups, users, serviceAccounts"),
    ("unknown field", lambda s: s["rules"][0]["when"].__setitem__("promptMatch", ["x"]),
     'spec.rules[0].when.promptMatch: Unknown field "promptMatch"'),
    ("wrong type", lambda s: s["subjects"][0].__setitem__("maxTokens", "8k"),
     "spec.subjects[0].maxTokens: Invalid value: must be of type integer"),
    ("bad skill type", lambda s: s["subjects"][0]["skills"].append({"type": "builtin", "id": "x"}),
     'spec.subjects[0].skills[2].type: Unsupported value: "builtin"'),
    ("empty when", lambda s: s["rules"][0].__setitem__("when", {}),
     "spec.rules[0].when: Invalid value: should have at least 1 properties"),
    ("bad ttl", lambda s: s["approval"].__setitem__("ttl", "30 minutes"),
     'spec.approval.ttl: Invalid value: "30 minutes"'),
    ("ttl too long", lambda s: s["approval"].__setitem__("ttl", "200h"),
     'spec.approval.ttl: Invalid value: "200h": must be between 1s and 168h'),
    ("bad mode", lambda s: s["recording"].__setitem__("mode", "compliance"),
     'spec.recording.mode: Unsupported value: "compliance"'),
    ("model glob with brackets", lambda s: s["subjects"][0]["models"].append("claude-[a-z]"),
     'spec.subjects[0].models[2]: Invalid value: "claude-[a-z]"'),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_policy_error_names_the_field(change: Any, expected: str) -> None:
    errors = _mutated(change)
    assert any(expected in error for error in errors), errors


def test_retention_floor_is_configurable() -> None:
    policy = finance()
    policy["spec"]["recording"]["retentionDays"] = 30
    assert validate_policy(policy, min_retention_days=30) == []
    errors = validate_policy(policy, min_retention_days=90)
    assert errors == ["spec.recording.retentionDays: Invalid value: 30: below the retention floor of 90 days "
                      "set by the operator"]


def test_missing_spec_and_wrong_kind() -> None:
    errors = validate_policy({"apiVersion": "skillwarden.io/v1", "kind": "SkillPolicy",
                              "metadata": {"name": "x"}})
    assert 'apiVersion: Unsupported value: "skillwarden.io/v1"' in errors[0]
    assert "spec: Required value" in errors


def test_durations() -> None:
    assert parse_duration("30m") == 1800
    assert parse_duration("1h30m") == 5400
    assert parse_duration("45s") == 45
    for bad in ("", "m", "30", "1d", "1h-"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
