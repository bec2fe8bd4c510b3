"""Compiled data documents the Rego unit tests run against (`rego/testdata/<name>/data.json`).

They are generated from the SkillPolicies in `examples/` by the real compiler, so `opa test`
exercises exactly what the operator ships; a unit test fails when they are stale.
Regenerate: `python -m skillwarden_operator.fixtures`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from skillwarden_operator import bundle, compiler

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TESTDATA = bundle.REGO_DIR / "testdata"

# Second policy in the finance namespace: shows how several policies combine.
_FINANCE_EXTRA: dict[str, Any] = {
    "apiVersion": "skillwarden.io/v1alpha1", "kind": "SkillPolicy",
    "metadata": {"name": "finance-audit", "namespace": "finance"},
    "spec": {
        "defaultAction": "allow",
        "subjects": [{"name": "auditors", "groups": ["finance-auditors"], "models": ["claude-opus-*"]}],
        "rules": [{"name": "no-payroll", "action": "deny", "message": "Payroll is off limits",
                   "when": {"promptMatches": ["(?i)payroll"]}}],
        "masking": {"upstream": ["EMAIL_ADDRESS"], "operators": {"CREDIT_CARD": "redact"}},
        "recording": {"bucket": "skillwarden-audit-long", "prefix": "finance-audit/", "retentionDays": 3650,
                      "mode": "GOVERNANCE"},
    },
}


def _example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return loaded


def fixtures() -> dict[str, bytes]:
    finance = _example("skillpolicy-finance.yaml")
    broken = _example("skillpolicy-finance.yaml")
    broken["metadata"]["name"] = "finance-broken"
    broken["spec"]["rules"][0]["when"]["promptMatches"] = ["(?<=lookbehind)"]
    sets: dict[str, tuple[str, list[dict[str, Any]]]] = {
        "finance": ("finance", [finance]),
        "support": ("support", [_example("skillpolicy-support-users.yaml")]),
        "sandbox": ("platform-sandbox", [_example("skillpolicy-platform-blocklist.yaml")]),
        "combined": ("finance", [finance, _FINANCE_EXTRA]),
        "broken": ("finance", [finance, broken]),
        "empty": ("empty", []),
    }
    return {name: bundle.canonical_json(compiler.compile_namespace(namespace, policies).document)
            for name, (namespace, policies) in sets.items()}


def write() -> list[Path]:
    written = []
    for name, content in fixtures().items():
        path = TESTDATA / name / "data.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content + b"\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(path)
    sys.exit(0)
