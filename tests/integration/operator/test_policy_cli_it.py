"""`skillwarden policy compile | test` as a GitOps CI job runs them (real opa binary)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from skillwarden_cli.policy import load_policies
from skillwarden_operator.bundle import build_bundle
from skillwarden_operator.fixtures import EXAMPLES

AUTHOR_TEST = """package finance_author_test

import data.skillwarden

bot := {"namespace": "finance", "service_account": "report-bot"}

test_report_bot_builds_spreadsheets if {
    d := skillwarden.decision with input as {"workload": bot, "request": {
        "model": "claude-sonnet-4-5", "max_tokens": 100,
        "skills": [{"type": "anthropic", "skill_id": "xlsx", "version": "latest"}], "tools": []}}
    d.action == "allow"
}

test_customer_exports_need_a_lead if {
    d := skillwarden.decision with input as {"workload": bot, "request": {
        "model": "claude-sonnet-4-5", "prompt_text": "customer export",
        "skills": [{"type": "anthropic", "skill_id": "xlsx", "version": "latest"}], "tools": []}}
    d.action == "require_approval"
    d.approval.approvers.groups == ["finance-leads"]
}
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skillwarden_cli.main", "policy", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_compile_writes_the_operator_bundle(tmp_path: Path) -> None:
    out = tmp_path / "bundle.tar.gz"
    source = EXAMPLES / "skillpolicy-finance.yaml"
    result = cli("compile", "-f", str(source), "-o", str(out))
    assert result.returncode == 0, result.stderr
    expected = build_bundle("finance", load_policies([source]))
    assert out.read_bytes() == expected.data
    assert expected.revision in result.stdout


def test_compile_rejects_invalid_policy_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((EXAMPLES / "skillpolicy-finance.yaml").read_text().replace("retentionDays: 2555",
                                                                                  "retentionDays: 0"))
    result = cli("compile", "-f", str(bad), "-o", str(tmp_path / "x.tar.gz"))
    assert result.returncode == 1
    assert "finance/finance-reporting: spec.recording.retentionDays: Invalid value: 0" in result.stderr
    assert not (tmp_path / "x.tar.gz").exists()
    several = cli("compile", "-f", str(EXAMPLES / "skillpolicy-finance.yaml"),
                  "-f", str(EXAMPLES / "skillpolicy-support-users.yaml"), "-o", str(tmp_path / "y.tar.gz"))
    assert several.returncode == 2 and "pass --namespace" in several.stderr


def test_policy_test_runs_shipped_and_author_tests(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "finance_test.rego").write_text(AUTHOR_TEST)
    source = str(EXAMPLES / "skillpolicy-finance.yaml")
    passed = cli("test", "-f", source, "--tests", str(tests), "-v")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "test_customer_exports_need_a_lead: PASS" in passed.stdout
    assert "data.skillwarden_test.test_deny_beats_require_approval: PASS" in passed.stdout
    (tests / "finance_test.rego").write_text(AUTHOR_TEST.replace('d.action == "allow"', 'd.action == "deny"'))
    failed = cli("test", "-f", source, "--tests", str(tests))
    assert failed.returncode != 0
    assert "test_report_bot_builds_spreadsheets" in failed.stdout
    invalid = tmp_path / "invalid.yaml"
    text = (EXAMPLES / "skillpolicy-finance.yaml").read_text()
    invalid.write_text(text.replace("action: deny", "action: block"))
    refused = cli("test", "-f", str(invalid))
    assert refused.returncode == 1
    assert 'spec.rules[0].action: Unsupported value: "block"' in refused.stderr
