"""The injection webhook registered in the real kube-apiserver of the local stack.

`kopf run` (a real operator process) serves the handler on 127.0.0.1 with the certificate its
`install()` created in the shared Secret (`certificates.mode=secret`), which also filled in the
configuration's caBundle; the MutatingWebhookConfiguration is the chart's shape
(url instead of service: the API server cannot resolve cluster DNS here) but WITHOUT the
namespaceSelector, so that the in-code exclusion of kube-system is what the tests exercise.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from injection_support import (
    APP,
    BUNDLE_URL,
    MWC_NAME,
    S3_SECRET,
    SYSTEM_NAMESPACE,
    TLS_SECRET,
    Webhook,
    ensure_namespace,
    mutating_configuration,
)
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from skillwarden_devstack.processes import free_port, port_open, spawn, stop, wait_until


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
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    registration = k8s.AdmissionregistrationV1Api(admin)
    try:
        registration.delete_mutating_webhook_configuration(MWC_NAME)
    except k8s.ApiException as error:
        if error.status != 404:
            raise
    # Registered first, without a caBundle, as `helm install` does: the operator's certificate
    # machinery (webhook_certs, mode secret) fills it in when it starts.
    registration.create_mutating_webhook_configuration(mutating_configuration(url, None))
    env = {
        "KUBECONFIG": stack["kubeconfigs"]["admin"],
        "INJECTION_TEST_WEBHOOK_PORT": str(port),
        "SKILLWARDEN_CERT_MODE": "secret",
        "SKILLWARDEN_NAMESPACE": SYSTEM_NAMESPACE,
        "SKILLWARDEN_WEBHOOK_SERVICE": "127.0.0.1",
        "SKILLWARDEN_WEBHOOK_TLS_SECRET": TLS_SECRET,
        "SKILLWARDEN_WEBHOOK_CONFIGURATIONS": f"mutating/{MWC_NAME}",
        "SKILLWARDEN_INJECT_BUNDLE_SERVICE_URL": BUNDLE_URL,
        "SKILLWARDEN_INJECT_SIDECAR_IMAGE": "ghcr.io/skillwarden/skillwarden:test",
        # Apps may present their projected token; the sidecar verifies it against the API server.
        "SKILLWARDEN_INJECT_SA_ISSUER": stack["apiserver"],
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
        secret = k8s.CoreV1Api(admin).read_namespaced_secret(TLS_SECRET, SYSTEM_NAMESPACE)
        ca_file = tmp_path_factory.mktemp("webhook-ca") / "ca.crt"
        ca_file.write_bytes(base64.b64decode(secret.data["ca.crt"]))
        configured = registration.read_mutating_webhook_configuration(MWC_NAME)
        assert base64.b64decode(configured.webhooks[0].client_config.ca_bundle) == ca_file.read_bytes()
        ensure_namespace(admin, "injection-probe")
        wait_until(
            "injection-webhook", lambda: _probe_injected(admin), process, 30, "registered in the API server"
        )
        yield Webhook(
            url=url,
            ca_file=ca_file,
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
