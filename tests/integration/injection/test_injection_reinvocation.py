"""reinvocationPolicy: IfNeeded through the real API server: a second mutating webhook (ordered
after ours) adds a container; the API server calls the injector again, which gives the new
container ANTHROPIC_BASE_URL and changes nothing else (no second sidecar)."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from injection_support import Webhook, ensure_namespace
from kubernetes import client as k8s

from skillwarden_operator import webhook_certs

NAMESPACE = "inj-reinvoke"
SHIPPER = {"name": "log-shipper", "image": "example/shipper:1"}


class AddContainerWebhook:
    """A minimal third-party mutating webhook: appends a container to every pod it sees."""

    def __init__(self, directory: Path) -> None:
        material, _ = webhook_certs.plan_material(None, ("127.0.0.1",), dt.datetime.now(dt.UTC))
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tls.crt").write_bytes(material.cert)
        (directory / "tls.key").write_bytes(material.key)
        self.ca_bundle = material.ca_bundle
        self.calls = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.calls += 1
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                containers = review["request"]["object"]["spec"]["containers"]
                ops = [] if any(c["name"] == SHIPPER["name"] for c in containers) else [
                    {"op": "add", "path": "/spec/containers/-", "value": SHIPPER}]
                response: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": True}
                if ops:
                    patch = base64.b64encode(json.dumps(ops).encode()).decode()
                    response |= {"patchType": "JSONPatch", "patch": patch}
                body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                   "response": response}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/add"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def second_webhook(injection_webhook: Webhook, tmp_path: Path) -> Iterator[AddContainerWebhook]:
    hook = AddContainerWebhook(tmp_path / "tls")
    name = f"zz-add-container-{uuid.uuid4().hex[:6]}"  # configurations are called in name order
    registration = k8s.AdmissionregistrationV1Api(injection_webhook.api)
    registration.create_mutating_webhook_configuration({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{"name": "add.containers.example.com", "admissionReviewVersions": ["v1"],
                      "sideEffects": "None", "failurePolicy": "Fail", "timeoutSeconds": 5,
                      "reinvocationPolicy": "Never",
                      "clientConfig": {"url": hook.url,
                                       "caBundle": base64.b64encode(hook.ca_bundle).decode()},
                      "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                 "resources": ["pods"]}],
                      "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}}]})
    try:
        yield hook
    finally:
        registration.delete_mutating_webhook_configuration(name)
        hook.server.shutdown()


def test_a_container_added_by_a_later_webhook_gets_the_sidecar_env(
        injection_webhook: Webhook, second_webhook: AddContainerWebhook) -> None:
    ensure_namespace(injection_webhook.api, NAMESPACE)
    core = k8s.CoreV1Api(injection_webhook.api)
    pod = {"metadata": {"generateName": "report-", "labels": {"skillwarden.io/inject": "true"}},
           "spec": {"serviceAccountName": "default",
                    "containers": [{"name": "app", "image": "example/app:1"}]}}
    deadline = time.monotonic() + 20
    while True:  # the API server's informer needs a moment for the new configuration
        stored = injection_webhook.api.sanitize_for_serialization(
            core.create_namespaced_pod(NAMESPACE, pod, dry_run="All"))
        names = [c["name"] for c in stored["spec"]["containers"]]
        if SHIPPER["name"] in names or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    names = [c["name"] for c in stored["spec"]["containers"]]
    assert sorted(names) == ["app", "log-shipper", "opa", "skillwarden"], names
    shipper = next(c for c in stored["spec"]["containers"] if c["name"] == "log-shipper")
    assert {"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:8790"} in shipper["env"]
    status = json.loads(stored["metadata"]["annotations"]["skillwarden.io/injected"])
    assert status["env"] == ["app", "log-shipper"]
    assert second_webhook.calls >= 1
