"""The alert rules are valid for promtool, and each alert fires on the condition it names (and
stays quiet otherwise), proven with promtool's rule unit tests on synthetic series."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from skillwarden_devstack import dashboard
from skillwarden_devstack.tools import Binaries

W = {"namespace": "finance", "pod": "report-7f9c"}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _expected(alertname: str, labels: dict[str, str], description: str) -> dict[str, Any]:
    spec = next(a for a in dashboard.ALERTS if a.name == alertname)
    return {"exp_labels": {"severity": spec.severity, **labels},
            "exp_annotations": {"summary": spec.summary, "description": description}}


# (alert, input series, eval time, expected firing alerts): one firing and one quiet case each.
CASES: list[tuple[str, list[dict[str, str]], str, list[dict[str, Any]]]] = [
    ("SkillwardenRecordShippingFailing",
     [_series("skillwarden_records_failed_total", {"cause": "s3_error", **W}, "0 1 2 3 4 5 6")], "5m",
     [_expected("SkillwardenRecordShippingFailing", W,
                "finance/report-7f9c failed to ship or spool records in the last 2 minutes. Requests "
                "are refused once the spool bound is reached (fail closed). Check S3 reachability and "
                "credentials.")]),
    ("SkillwardenRecordShippingFailing",  # fail-open admissions are counted, but are not shipping failures
     [_series("skillwarden_records_failed_total", {"cause": "admitted_unavailable", **W}, "0 1 2 3 4 5 6")],
     "5m", []),
    ("SkillwardenRecordingUnavailable",
     [_series("skillwarden_recording_available", W, "1 1 0 0 0 0")], "5m",
     [_expected("SkillwardenRecordingUnavailable", W,
                "finance/report-7f9c cannot make records durable, so it refuses every request "
                "(fail closed).")]),
    ("SkillwardenRecordingUnavailable", [_series("skillwarden_recording_available", W, "1x6")], "5m", []),
    ("SkillwardenSpoolFilling",
     [_series("skillwarden_spool_oldest_unshipped_age_seconds", W, "0+60x10")], "10m",
     [_expected("SkillwardenSpoolFilling", W,
                "The oldest unshipped record of finance/report-7f9c is 10m 0s old; the spool is filling.")]),
    ("SkillwardenSpoolFilling",
     [_series("skillwarden_spool_oldest_unshipped_age_seconds", W, "0 30 0 45 0 20 0 10 0 5 0")], "10m", []),
    ("SkillwardenOpaBundleStale",
     [_series("skillwarden_errors_total", {"cause": "policy_unavailable", **W}, "0 1 2 3 4 5")], "5m",
     [_expected("SkillwardenOpaBundleStale", W,
                "finance/report-7f9c denied requests because OPA had no loaded bundle or did not answer. "
                "Check the operator's bundle service and the opa container.")]),
    ("SkillwardenOpaBundleStale",
     [_series("skillwarden_errors_total", {"cause": "policy_deny", **W}, "0 1 2 3 4 5")], "5m", []),
    ("SkillwardenPolicyNotReady",
     [_series("skillwarden_operator_policies", {"namespace": "finance", "state": "invalid"}, "2x15")], "12m",
     [_expected("SkillwardenPolicyNotReady", {"namespace": "finance"},
                "2 SkillPolicies in finance are invalid and not in the served bundle, so enforcement no "
                "longer matches Git. See `kubectl get skp -n finance`.")]),
    ("SkillwardenPolicyNotReady",
     [_series("skillwarden_operator_policies", {"namespace": "finance", "state": "ready"}, "2x15"),
      _series("skillwarden_operator_policies", {"namespace": "finance", "state": "invalid"}, "0x15")],
     "12m", []),
    ("SkillwardenDenySpike",
     [_series("skillwarden_requests_total", {"decision": "deny", "namespace": "finance"},
              "0+1x70 70+60x20")],
     "85m",
     [_expected("SkillwardenDenySpike", {"namespace": "finance"},
                "Denials in finance are more than three times the previous hour's rate: a misbehaving "
                "workload, or a policy change that blocks legitimate use.")]),
    ("SkillwardenDenySpike",  # steady high traffic is not a spike
     [_series("skillwarden_requests_total", {"decision": "deny", "namespace": "finance"}, "0+60x90")],
     "85m", []),
    ("SkillwardenWebhookErrors",
     [_series("skillwarden_injections_total", {"namespace": "finance", "result": "failed", "reason": "error"},
              "0 0 0 1 1 1")], "4m",
     [_expected("SkillwardenWebhookErrors", {"namespace": "finance"},
                "The injection webhook failed for pods in finance; with failurePolicy=Fail those pods are "
                "not created. See the operator's log and the pods' owner Events.")]),
    ("SkillwardenWebhookErrors",  # a denial names what to fix: not an outage
     [_series("skillwarden_injections_total",
              {"namespace": "finance", "result": "denied", "reason": "invalid"},
              "0 0 0 1 1 1")], "4m", []),
    ("SkillwardenWebhookUnreachable",
     [_series("apiserver_admission_webhook_rejection_count",
              {"name": "inject.pods.skillwarden.io", "error_type": "calling_webhook_error",
               "operation": "CREATE", "rejection_code": "500", "type": "admit"}, "0 0 1 1")], "3m",
     [_expected("SkillwardenWebhookUnreachable", {"name": "inject.pods.skillwarden.io"},
                "The API server could not call inject.pods.skillwarden.io in the last 5 minutes: with "
                "failurePolicy=Fail the requests were refused, with Ignore they passed unchecked. Check the "
                "operator pods, the webhook Service and the certificate (caBundle).")]),
    ("SkillwardenWebhookUnreachable",  # a policy the webhook rejected is the webhook working
     [_series("apiserver_admission_webhook_rejection_count",
              {"name": "validate.skillpolicies.skillwarden.io", "error_type": "no_error",
               "operation": "CREATE", "rejection_code": "422", "type": "validating"}, "0 0 1 1"),
      _series("apiserver_admission_webhook_fail_open_count",
              {"name": "validate.other.example.com", "type": "validating"}, "0 0 1 1")], "3m", []),
    ("SkillwardenApprovalsExpiringUnreviewed",
     [_series("skillwarden_approvals_total", {"state": "Expired", **W}, "0 0 1 1")], "3m",
     [_expected("SkillwardenApprovalsExpiringUnreviewed", {"namespace": "finance"},
                "1 SkillApprovals in finance expired unreviewed in the last hour: reviewers are not "
                "seeing them.")]),
    ("SkillwardenApprovalsExpiringUnreviewed",
     [_series("skillwarden_approvals_total", {"state": "Used", **W}, "0 0 1 1")], "3m", []),
]


def _promtool(bins: Binaries, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bins.promtool), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_promtool_accepts_the_rules_file(bins: Binaries) -> None:
    result = _promtool(bins, "check", "rules", str(dashboard.ALERTS_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(dashboard.ALERTS)} rules found" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing = {name for name, _, _, expected in CASES if expected}
    quiet = {name for name, _, _, expected in CASES if not expected}
    assert firing == quiet == {a.name for a in dashboard.ALERTS}


def test_each_alert_fires_on_its_condition_and_only_then(bins: Binaries, tmp_path: Path) -> None:
    tests = [{"interval": "1m", "input_series": series,
              "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": expected}]}
             for name, series, at, expected in CASES]
    test_file = tmp_path / "alerts_test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(dashboard.ALERTS_FILE)],
                                         "evaluation_interval": "1m", "tests": tests}))
    result = _promtool(bins, "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
