"""The README's main job, end to end: `skillwarden dev demo` on a fresh stack shows every promise,
and the real Prometheus scraping it evaluates every dashboard query and alert rule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from skillwarden_devstack import dashboard, demo
from skillwarden_devstack import stack as devstack


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[demo.DemoResult, dict[str, Any]]]:
    state_dir = tmp_path_factory.mktemp("demo")
    try:
        result = demo.run(state_dir)
        yield result, devstack.status(state_dir)
    finally:
        devstack.down(state_dir)


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?query={urllib.parse.quote(expr)}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        answer = json.load(reply)
    assert answer["status"] == "success", (expr, answer)
    return list(answer["data"]["result"])


def test_the_session_shows_every_promise(demo_run: tuple[demo.DemoResult, dict[str, Any]]) -> None:
    result, _ = demo_run
    outcomes = result.outcomes
    assert "promptMatches[0]: not a valid RE2 pattern" in outcomes["invalid_policy"]
    assert outcomes["bundle_revision"].startswith("sha256:")
    assert outcomes["allowed"]
    assert "no-credential-dumps" in outcomes["denied"]
    assert "[US_SSN]" in outcomes["upstream_saw"] and "536-22-8143" not in outcomes["upstream_saw"]
    assert "****1111" in outcomes["stream"] and "4111" not in outcomes["stream"]
    assert outcomes["approved_reply"]
    # The record of the released request names the approval and who approved it.
    assert outcomes["approval"] in outcomes["audit_show"] and "approver=Approve" in outcomes["audit_show"]
    assert "Quarterly audit export, ticket FIN-1042" in outcomes["audit_show"]


def test_auditor_verify_passes_over_locked_records(demo_run: tuple[demo.DemoResult, dict[str, Any]]) -> None:
    result, _ = demo_run
    assert result.verify_exit_code == 0, result.verify_report
    report = result.verify_report
    assert report["ok"] is True and report["findings"] == [] and report["retention_checked"] is True
    entries = sum(stream["entries"] for stream in report["streams"].values())
    assert entries == result.metrics_summary["records spooled"] > 0
    assert result.metrics_summary["records shipped"] == result.metrics_summary["records spooled"]


def test_status_shows_the_running_demo(demo_run: tuple[demo.DemoResult, dict[str, Any]]) -> None:
    result, status = demo_run
    assert status["sidecar"] == result.sidecar and status["metrics"] == result.metrics
    assert {"admin", "requester", "approver", "outsider"} <= set(status["kubeconfigs"])
    assert {"endpoint", "bucket", "access_key", "secret_key"} <= set(status["s3"])


def test_every_dashboard_query_and_alert_evaluates_with_demo_data(
        demo_run: tuple[demo.DemoResult, dict[str, Any]]) -> None:
    _, status = demo_run
    promtool = status["binaries"]["promtool"]
    empty = []
    for where, expr in dashboard.all_exprs():
        checked = subprocess.run([promtool, "query", "instant", status["prometheus"], expr],
                                 capture_output=True, text=True, timeout=30, check=False)
        assert checked.returncode == 0, f"{where}: {expr}: {checked.stderr}"
        if where.startswith("panel") and not _query(status["prometheus"], expr):
            empty.append(where)
    # Panels about things the demo session never does (a failed injection, an expired approval,
    # a webhook the API server could not call) may be empty; everything the session did shows.
    allowed_empty = {w for w, e in dashboard.all_exprs() if any(m in e for m in (
        'result="failed"', 'state="Expired"', "apiserver_admission", "records_failed"))}
    assert set(empty) <= allowed_empty, sorted(set(empty) - allowed_empty)


def test_an_alert_fires_when_s3_is_stopped(demo_run: tuple[demo.DemoResult, dict[str, Any]]) -> None:
    result, status = demo_run
    dashboard.install_rules(Path(status["prometheus_rules_dir"]), status["prometheus"], pending_for="0s")
    os.kill(status["processes"]["s3"]["pid"], signal.SIGKILL)
    sdk = anthropic.Anthropic(base_url=result.sidecar, api_key="workload-identity", max_retries=0, timeout=60)
    deadline = time.monotonic() + 90
    firing: set[str] = set()
    while time.monotonic() < deadline and not firing & {"SkillwardenRecordShippingFailing",
                                                        "SkillwardenRecordingUnavailable"}:
        try:  # traffic keeps the shipper trying; a refusal is the fail-closed answer
            sdk.messages.create(model="claude-haiku-4-5", max_tokens=32,
                                messages=[{"role": "user", "content": "status check"}])
        except anthropic.APIError:
            pass
        with urllib.request.urlopen(f"{status['prometheus']}/api/v1/alerts", timeout=10) as reply:
            alerts = json.load(reply)["data"]["alerts"]
        firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
        time.sleep(2)
    assert firing & {"SkillwardenRecordShippingFailing", "SkillwardenRecordingUnavailable"}, firing
