"""The injection webhook registered in the real kube-apiserver of the local stack.

`kopf run` (a real operator process) serves the handler on 127.0.0.1 with a certificate from the
shared-Secret machinery of `webhook_certs`; the MutatingWebhookConfiguration is the chart's shape
(url instead of service: the API server cannot resolve cluster DNS here) but WITHOUT the
namespaceSelector, so that the in-code exclusion of kube-system is what the tests exercise.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from skillwarden_devstack.processes import Running, free_port, port_open, spawn, stop, wait_until
from skillwarden_operator import webhook_certs

APP = Path(__file__).parent / "injection_webhook_app.py"
SYSTEM_NAMESPACE = "skillwarden-system"
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


def mutating_configuration(url: str, ca_bundle: bytes) -> dict[str, Any]:
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
                    "caBundle": base64.b64encode(ca_bundle).decode(),
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
            }
        ],
    }


def ensure_namespace(api: k8s.ApiClient, name: str) -> None:
    try:
        k8s.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    except k8s.ApiException as error:
        if error.status != 409:
            raise


def _probe_injected(api: k8s.ApiClient) -> bool:
    # The API server's webhook informer needs a moment after the configuration is created.
    probe = {
        "metadata": {"generateName": "probe-", "labels": {"skillwarden.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    }
    created = k8s.CoreV1Api(api).create_namespaced_pod("injection-probe", probe, dry_run="All")
    return any(c.name == "skillwarden" for c in created.spec.containers)


@pytest.fixture(scope="session")
def injection_webhook(stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    admin = k8s_config.new_client_from_config(config_file=stack["kubeconfigs"]["admin"])
    ensure_namespace(admin, SYSTEM_NAMESPACE)
    tls_dir = tmp_path_factory.mktemp("webhook-tls")
    rotator = webhook_certs.CertRotator(
        api=admin,
        namespace=SYSTEM_NAMESPACE,
        secret_name="injection-test-tls",
        hosts=("127.0.0.1",),
        directory=tls_dir,
    )
    rotator.reconcile()
    port = free_port()
    env = {
        "KUBECONFIG": stack["kubeconfigs"]["admin"],
        "INJECTION_TEST_TLS_DIR": str(tls_dir),
        "INJECTION_TEST_WEBHOOK_PORT": str(port),
        "SKILLWARDEN_INJECT_BUNDLE_SERVICE_URL": BUNDLE_URL,
        "SKILLWARDEN_INJECT_SIDECAR_IMAGE": "ghcr.io/skillwarden/skillwarden:test",
        # Session records go to the stack's Object Lock bucket (1-day default retention).
        "SKILLWARDEN_INJECT_S3_ENDPOINT": stack["s3"]["endpoint"],
        "SKILLWARDEN_INJECT_S3_CREDENTIALS_SECRET": S3_SECRET,
        "SKILLWARDEN_INJECT_RECORDS_PREFIX": "injection-test/",
        "SKILLWARDEN_INJECT_RECORDS_RETENTION_DAYS": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    log = Path(stack["state_dir"]) / "logs" / f"injection-webhook-{port}.log"
    process = spawn(
        "injection-webhook",
        [sys.executable, "-m", "kopf", "run", "--standalone", "-A", "--log-format=plain", str(APP)],
        log,
        env=env,
    )
    try:
        wait_until("injection-webhook", lambda: port_open(port), process, 60, "listening")
        url = f"https://127.0.0.1:{port}"
        registration = k8s.AdmissionregistrationV1Api(admin)
        try:
            registration.delete_mutating_webhook_configuration(MWC_NAME)
        except k8s.ApiException as error:
            if error.status != 404:
                raise
        registration.create_mutating_webhook_configuration(
            mutating_configuration(url, rotator.cafile.read_bytes())
        )
        ensure_namespace(admin, "injection-probe")
        wait_until(
            "injection-webhook", lambda: _probe_injected(admin), process, 30, "registered in the API server"
        )
        yield Webhook(
            url=url,
            ca_file=rotator.cafile,
            api=admin,
            kubeconfig=stack["kubeconfigs"]["admin"],
            process=process,
            env=env,
        )
    finally:
        try:
            k8s.AdmissionregistrationV1Api(admin).delete_mutating_webhook_configuration(MWC_NAME)
        except k8s.ApiException:
            pass
        stop(process)
