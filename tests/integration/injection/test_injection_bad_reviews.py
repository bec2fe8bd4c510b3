"""Bad input POSTed straight at the running webhook process (as an attacker or a broken API server
would): it answers every time, with a denial that says what is wrong, and keeps serving."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from injection_support import Webhook


def review(obj: Any = None, namespace: str | None = "inj-raw", **request: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uid": "6f1f0e0c-raw",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": obj
        if obj is not None
        else {
            "metadata": {"generateName": "report-", "labels": {"skillwarden.io/inject": "true"}},
            "spec": {"serviceAccountName": "report-bot", "containers": [{"name": "app", "image": "x"}]},
        },
        "dryRun": False,
    }
    if namespace is not None:
        body["namespace"] = namespace
    body.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


def answer(webhook: Webhook, document: Any) -> dict[str, Any]:
    status, response = webhook.post_review(json.dumps(document).encode())
    assert status == 200, response
    assert isinstance(response, dict) and response["kind"] == "AdmissionReview"
    result: dict[str, Any] = response["response"]
    return result


def test_namespace_only_in_the_request_is_used(injection_webhook: Webhook) -> None:
    result = answer(injection_webhook, review())
    assert result["allowed"] is True and result["uid"] == "6f1f0e0c-raw"
    ops = json.loads(base64.b64decode(result["patch"]))
    opa = next(
        op["value"] for op in ops if op["path"] == "/spec/containers/-" and op["value"]["name"] == "opa"
    )
    assert "--set=bundles.skillwarden.resource=bundles/inj-raw.tar.gz" in opa["args"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "the body is not a JSON object"),
        ("review", "the body is not a JSON object"),
        ({"kind": "Pod"}, "kind/apiVersion must be AdmissionReview"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "request is missing"),
        (review(uid=None), "request.uid is missing"),
        (review(resource={"group": ""}), "request.resource (group, version, resource) is missing"),
        (review(userInfo=None), "request.userInfo is missing"),
        (review(object=None), "request.object is missing"),
        (review(namespace=7), "request.namespace must be a string"),
    ],
)
def test_malformed_reviews_get_a_clear_denial(
    injection_webhook: Webhook, document: Any, message: str
) -> None:
    result = answer(injection_webhook, document)
    assert result["allowed"] is False
    assert result["status"]["code"] == 400
    assert message in result["status"]["message"]


def test_not_json_is_a_400(injection_webhook: Webhook) -> None:
    status, _ = injection_webhook.post_review(b"{not json")
    assert status == 400


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            {"metadata": {"labels": {"skillwarden.io/inject": "true"}}, "spec": {}},
            "the pod has no containers",
        ),
        ({"metadata": {"labels": {"skillwarden.io/inject": "true"}}}, "the pod has no spec"),
        (
            {
                "metadata": {
                    "labels": {"skillwarden.io/inject": "true"},
                    "annotations": {"skillwarden.io/port": "x"},
                },
                "spec": {"containers": [{"name": "app"}]},
            },
            "skillwarden.io/port",
        ),
    ],
)
def test_bad_pods_are_denied_with_400(injection_webhook: Webhook, obj: dict[str, Any], message: str) -> None:
    result = answer(injection_webhook, review(obj))
    assert result["allowed"] is False and result["status"]["code"] == 400
    assert message in result["status"]["message"]


def test_pod_without_any_namespace_is_denied(injection_webhook: Webhook) -> None:
    result = answer(injection_webhook, review(namespace=None))
    assert result["allowed"] is False and "namespace is unknown" in result["status"]["message"]


def test_huge_pod_is_answered_quickly_and_oversized_refused(injection_webhook: Webhook) -> None:
    env = [{"name": f"VAR_{i}", "value": "v" * 80} for i in range(150)]
    containers = [{"name": f"c{i}", "image": "x", "env": env} for i in range(50)]  # ~800 KB
    big = {
        "metadata": {"generateName": "big-", "labels": {"skillwarden.io/inject": "true"}},
        "spec": {"serviceAccountName": "default", "containers": containers},
    }
    document = review(big)
    assert 500_000 < len(json.dumps(document)) < 1_000_000
    started = time.perf_counter()
    result = answer(injection_webhook, document)
    elapsed = time.perf_counter() - started
    assert result["allowed"] is True and result["patch"]
    assert elapsed < 2.0, f"an 800 KB review took {elapsed:.2f}s"

    env = [{"name": f"VAR_{i}", "value": "v" * 80} for i in range(300)]
    oversized = review(
        {**big, "spec": {"containers": [{"name": f"c{i}", "image": "x", "env": env} for i in range(60)]}}
    )
    status, _ = injection_webhook.post_review(json.dumps(oversized).encode())
    assert status == 413  # kopf's server limit (1 MiB); the API server then refuses the pod
    # ... and the webhook is still serving.
    assert answer(injection_webhook, review())["allowed"] is True
