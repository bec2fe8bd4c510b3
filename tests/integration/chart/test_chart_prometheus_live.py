"""The alert rules loaded into the stack's real Prometheus: every rule evaluates without error, and
an alert fires from a really scraped series (recording unavailable), then resolves."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from skillwarden_devstack import dashboard
from skillwarden_devstack.processes import free_port
from skillwarden_sidecar.recording.metrics import RECORDING_AVAILABLE

TARGET_LABELS = {"namespace": "chart-live", "pod": "report-0"}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


@pytest.fixture
def scraped_gauge(stack: dict[str, Any]) -> Iterator[Gauge]:
    """A sidecar-like /metrics endpoint (the real metric name) added to the stack's file_sd targets."""
    registry = CollectorRegistry()
    gauge = Gauge(RECORDING_AVAILABLE.describe()[0].name, "recording admits requests", registry=registry)
    gauge.set(1)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    targets = Path(stack["prometheus_targets"])
    entry = {"targets": [f"127.0.0.1:{port}"], "labels": TARGET_LABELS}
    targets.write_text(json.dumps([*json.loads(targets.read_text() or "[]"), entry]))
    try:
        yield gauge
    finally:
        targets.write_text(json.dumps([e for e in json.loads(targets.read_text()) if e != entry]))
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def rules(stack: dict[str, Any]) -> Iterator[Path]:
    path = dashboard.install_rules(Path(stack["prometheus_rules_dir"]), stack["prometheus"],
                                   pending_for="0s", file_name="chart-test-alerts.yaml")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        dashboard.reload_prometheus(stack["prometheus"])


def _alert_state(stack: dict[str, Any], name: str) -> str | None:
    for alert in _get(f"{stack['prometheus']}/api/v1/alerts")["data"]["alerts"]:
        if alert["labels"].get("alertname") == name and alert["labels"].get("namespace") == "chart-live":
            return str(alert["state"])
    return None


def test_rules_evaluate_in_prometheus_and_an_alert_fires_from_a_scraped_series(
        stack: dict[str, Any], rules: Path, scraped_gauge: Gauge) -> None:
    url = stack["prometheus"]

    def all_evaluated() -> bool:
        groups = _get(f"{url}/api/v1/rules")["data"]["groups"]
        ours = [r for g in groups if g["file"] == str(rules) for r in g["rules"]]
        return (len(ours) == len(dashboard.ALERTS)
                and all(r["health"] == "ok" and r.get("lastEvaluation", "").startswith("20") for r in ours))

    _wait(all_evaluated, 30, "every alert rule to be evaluated with health ok")
    _wait(lambda: bool(_get(f'{url}/api/v1/query?query=skillwarden_recording_available'
                           '{namespace="chart-live"}')["data"]["result"]), 30, "the first scrape")
    assert _alert_state(stack, "SkillwardenRecordingUnavailable") is None
    scraped_gauge.set(0)  # what the recorder exports when S3 is gone past its bound
    _wait(lambda: _alert_state(stack, "SkillwardenRecordingUnavailable") == "firing", 30,
          "SkillwardenRecordingUnavailable to fire")
    scraped_gauge.set(1)
    _wait(lambda: _alert_state(stack, "SkillwardenRecordingUnavailable") is None, 30, "the alert to resolve")
