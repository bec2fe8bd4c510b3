"""The kopf handler's mapping of outcomes to admission answers, metrics and Events (one function,
called directly; the real admission path is in tests/integration/injection)."""

from __future__ import annotations

import asyncio
import logging
import types
from typing import Any

import kopf
import pytest
from kopf._cogs.structs import patches

from skillwarden_operator import injection, injection_handlers
from skillwarden_operator.bundle import build_bundle
from skillwarden_operator.bundle_store import BundleStore
from skillwarden_operator.metrics import INJECTIONS_TOTAL, OperatorMetrics
from skillwarden_operator.webhook_certs import NAMESPACE_HEADER


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    def post(self, target: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.posted.append((target["metadata"]["name"], kind, reason))


def call(pod: dict[str, Any], namespace: str | None, dryrun: bool = False,
         store: BundleStore | None = None) -> dict[str, Any]:
    metrics = OperatorMetrics()
    events = Events()
    memo = kopf.Memo(state=types.SimpleNamespace(metrics=metrics, store=store or BundleStore()))
    memo[injection_handlers.SETTINGS_MEMO_KEY] = injection.InjectionSettings()
    memo[injection_handlers.EVENTS_MEMO_KEY] = events
    body = kopf.Body(pod)
    patch = patches.Patch(body=body)
    warnings: list[str] = []
    headers = {NAMESPACE_HEADER: namespace} if namespace else {}
    error: BaseException | None = None
    try:
        asyncio.run(injection_handlers.inject_pod(body=body, patch=patch, memo=memo, headers=headers,
                                                  dryrun=dryrun, warnings=warnings,
                                                  logger=logging.getLogger("test")))
    except kopf.AdmissionError as raised:
        error = raised

    def count(result: str, reason: str) -> float:
        value = metrics.registry.get_sample_value(INJECTIONS_TOTAL, {
            "namespace": namespace or "", "result": result, "reason": reason})
        return float(value or 0)

    return {"patch": patch.as_json_patch(), "warnings": warnings, "error": error, "events": events.posted,
            "count": count}


def pod(annotations: dict[str, str] | None = None, owner: bool = True) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": "report-7f9c-", "labels": {"skillwarden.io/inject": "true"},
                                "annotations": annotations or {}}
    if owner:
        metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "report-7f9c",
                                        "uid": "u-1", "controller": True}]
    return {"metadata": metadata, "spec": {"containers": [{"name": "app", "image": "x"}]}}


def test_injected_counts_and_events_on_the_replicaset() -> None:
    result = call(pod(), "finance")
    assert result["error"] is None and result["patch"]
    assert any(op["path"] == "/spec/containers/-" and op["value"]["name"] == "skillwarden"
               for op in result["patch"])
    assert result["count"]("injected", "injected") == 1
    assert result["events"] == [("report-7f9c", "Normal", "SkillwardenInjected")]


def test_dry_run_is_mutated_but_posts_no_event() -> None:
    result = call(pod(), "finance", dryrun=True)
    assert result["patch"] and result["events"] == []


def test_denial_is_a_400_with_the_reason_counted_and_reported() -> None:
    result = call(pod({"skillwarden.io/record": "off"}), "finance")
    error = result["error"]
    assert isinstance(error, kopf.AdmissionError) and error.code == 400
    assert "recording and masking cannot be changed per pod" in str(error)
    assert result["count"]("denied", "invalid") == 1
    assert result["events"] == [("report-7f9c", "Warning", "SkillwardenInjectionDenied")]


@pytest.mark.parametrize(("namespace", "reason", "warned"), [
    ("kube-system", "excluded-namespace", True),
    ("finance", "opted-out", False),
])
def test_skips_are_counted_with_their_reason(namespace: str, reason: str, warned: bool) -> None:
    annotations = {"skillwarden.io/inject": "false"} if reason == "opted-out" else {}
    result = call(pod(annotations), namespace)
    assert result["error"] is None and result["patch"] == []
    assert result["count"]("skipped", reason) == 1
    assert bool(result["warnings"]) is warned


def test_no_namespace_anywhere_is_denied() -> None:
    result = call(pod(owner=False), None)
    assert isinstance(result["error"], kopf.AdmissionError) and "namespace is unknown" in str(result["error"])
    assert result["events"] == []  # nothing to attach an event to


def test_a_namespace_without_policies_gets_a_warning_once_the_replica_knows() -> None:
    unknown = BundleStore()  # not listed yet: no claim either way
    assert call(pod(), "finance", store=unknown)["warnings"] == []
    listed = BundleStore()
    listed.expected = set()
    warned = call(pod(), "finance", store=listed)
    assert warned["patch"] and warned["warnings"] == [
        "skillwarden: namespace finance has no SkillPolicy yet; the sidecar denies every call (default deny) "
        "until one is applied"]
    listed.put(build_bundle("finance", []))
    assert call(pod(), "finance", store=listed)["warnings"] == []
