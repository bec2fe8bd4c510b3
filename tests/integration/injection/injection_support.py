"""Helpers of the injection integration tests (a uniquely named module: several test folders have
a conftest.py, and `import conftest` would find whichever comes first)."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from skillwarden_devstack.processes import Running

APP = Path(__file__).parent / "injection_webhook_app.py"
SYSTEM_NAMESPACE = "skillwarden-system"
TLS_SECRET = "injection-test-tls"
OWN_INJECTOR_LABEL = "skillwarden.io/test-own-injector"
MWC_NAME = "skillwarden-injection-test"
S3_SECRET = "skillwarden-s3"
BUNDLE_URL = "http://127.0.0.1:1"  # replaced per test where OPA must really load a bundle


@dataclass
class Webhook:
    url: str
    ca_file: Path
    api: k8s.ApiClient
    kubeconfig: str
    process: Running
    env: dict[str, str]

    def post_review(self, body: bytes, timeout: float = 10.0) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.url}/skillwarden-inject",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")


def mutating_configuration(url: str, ca_bundle: bytes | None) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": MWC_NAME},
        "webhooks": [
            {
                "name": "inject.pods.skillwarden.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "reinvocationPolicy": "IfNeeded",
                "matchPolicy": "Equivalent",
                "clientConfig": {
                    "url": f"{url}/skillwarden-inject",
                    **({"caBundle": base64.b64encode(ca_bundle).decode()} if ca_bundle else {}),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "objectSelector": {"matchLabels": {"skillwarden.io/inject": "true"}},
                # Namespaces of tests that bring their own injector (the operator process) are left
                # to it: two injectors on one pod would each rebuild the sidecar their own way.
                "namespaceSelector": {
                    "matchExpressions": [{"key": OWN_INJECTOR_LABEL, "operator": "DoesNotExist"}]},
            }
        ],
    }


def ensure_namespace(api: k8s.ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    try:
        k8s.CoreV1Api(api).create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    except k8s.ApiException as error:
        if error.status != 409:
            raise
