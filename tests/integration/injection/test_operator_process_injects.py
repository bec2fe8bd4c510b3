"""The whole chain with the product's own operator process: `skillwarden operator` (kopf, managed
webhook mode as in local development) injects a pod through the real API server, compiles the
namespace's SkillPolicy into the bundle it serves, and the injected OPA + sidecar (run by the
kubelet emulator from the stored pod, no URL rewriting for the bundle) enforce that policy."""

from __future__ import annotations

import base64
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
import yaml
from injection_support import OWN_INJECTOR_LABEL, ensure_namespace
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from skillwarden_devstack import kubelet_emulator as kubelet
from skillwarden_devstack import tools
from skillwarden_devstack.processes import free_port, port_open, spawn, stop, wait_until

CRDS = Path(__file__).parents[3] / "crds"
REAL_KEY = "sk-ant-api03-operator-chain-key"
WEBHOOK_NAME = "skillwarden-injection-operator-test.skillwarden.io"


def install_crds(api: k8s.ApiClient) -> None:
    extensions = k8s.ApiextensionsV1Api(api)
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        try:
            extensions.create_custom_resource_definition(crd)
        except k8s.ApiException as error:
            if error.status != 409:
                raise
        deadline = time.monotonic() + 30
        name = crd["metadata"]["name"]
        while not any(c.type == "Established" and c.status == "True"
                      for c in extensions.read_custom_resource_definition(name).status.conditions or []):
            assert time.monotonic() < deadline, f"{path.name} not established"
            time.sleep(0.1)


@pytest.fixture
def operator(stack: dict[str, Any], tmp_path: Path) -> Iterator[tuple[k8s.ApiClient, str]]:
    api = k8s_config.new_client_from_config(config_file=stack["kubeconfigs"]["admin"])
    install_crds(api)
    bundle_port, webhook_port = free_port(), free_port()
    bundle_url = f"http://127.0.0.1:{bundle_port}"
    argv = [sys.executable, "-m", "skillwarden_cli.main", "operator", "--bundle-port", str(bundle_port),
            "--webhook-port", str(webhook_port), "--webhook-managed", WEBHOOK_NAME,
            "--min-retention-days", "1"]
    env = {"KUBECONFIG": stack["kubeconfigs"]["admin"], "SKILLWARDEN_INJECT_BUNDLE_SERVICE_URL": bundle_url,
           "SKILLWARDEN_INJECT_S3_ENDPOINT": stack["s3"]["endpoint"],
           "SKILLWARDEN_INJECT_S3_CREDENTIALS_SECRET": "skillwarden-s3",
           "SKILLWARDEN_INJECT_RECORDS_PREFIX": "injection-operator-test/",
           "SKILLWARDEN_INJECT_RECORDS_RETENTION_DAYS": "1"}
    running = spawn("skillwarden-operator", argv, tmp_path / "operator.log", env=env)
    registration = k8s.AdmissionregistrationV1Api(api)
    try:
        wait_until("operator", lambda: port_open(bundle_port), running, 60, "serving bundles")

        def registered() -> bool:
            hooks = registration.read_mutating_webhook_configuration(WEBHOOK_NAME).webhooks or []
            return any(f":{webhook_port}/skillwarden-inject" in (h.client_config.url or "") for h in hooks)

        wait_until("operator", registered, running, 60, "registered its mutating webhook")
        yield api, bundle_url
    finally:
        stop(running)
        # kopf removes its non-persistent webhooks on a clean exit; never leave one behind.
        try:
            hooks = registration.read_mutating_webhook_configuration(WEBHOOK_NAME).webhooks or []
            assert not any(h.name.startswith("skillwarden-inject") for h in hooks), "webhook left behind"
        except k8s.ApiException as error:
            if error.status != 404:
                raise
        for delete in (registration.delete_mutating_webhook_configuration,
                       registration.delete_validating_webhook_configuration):
            try:
                delete(WEBHOOK_NAME)
            except k8s.ApiException as error:
                if error.status != 404:
                    raise


def test_operator_injects_and_serves_the_bundle_the_injected_pod_enforces(
        operator: tuple[k8s.ApiClient, str], stack: dict[str, Any], tmp_path: Path) -> None:
    api, bundle_url = operator
    namespace = f"inj-op-{uuid.uuid4().hex[:6]}"
    ensure_namespace(api, namespace, {OWN_INJECTOR_LABEL: "operator"})
    core = k8s.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "report-bot"}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "anthropic-api-key"},
                                              "stringData": {"api-key": REAL_KEY}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "skillwarden-s3"}, "stringData": {
        "AWS_ACCESS_KEY_ID": stack["s3"]["access_key"], "AWS_SECRET_ACCESS_KEY": stack["s3"]["secret_key"]}})
    k8s.CustomObjectsApi(api).create_namespaced_custom_object("skillwarden.io", "v1alpha1", namespace,
                                                              "skillpolicies", {
        "apiVersion": "skillwarden.io/v1alpha1", "kind": "SkillPolicy", "metadata": {"name": "reports"},
        "spec": {"defaultAction": "deny", "subjects": [
            {"name": "bot", "serviceAccounts": ["report-bot"], "models": ["claude-haiku-*"]}]}})

    created = core.create_namespaced_pod(namespace, {
        "metadata": {"generateName": "report-", "labels": {"skillwarden.io/inject": "true"}},
        "spec": {"serviceAccountName": "report-bot",
                 "containers": [{"name": "app", "image": "example/app:1"}]}})
    stored: dict[str, Any] = api.sanitize_for_serialization(core.read_namespaced_pod(created.metadata.name,
                                                                                     namespace))
    opa = next(c for c in stored["spec"]["containers"] if c["name"] == "opa")
    assert f"--set=services.skillwarden.url={bundle_url}" in opa["args"]
    bundle = f"{bundle_url}/bundles/{namespace}.tar.gz"
    wait_until("operator", lambda: urllib.request.urlopen(bundle).status == 200, None, 30,
               f"serving the bundle of {namespace}")

    def token(audience: str | None, seconds: int) -> str:
        spec: dict[str, Any] = {"expirationSeconds": max(seconds, 600)}
        if audience:
            spec["audiences"] = [audience]
        return str(core.create_namespaced_service_account_token("report-bot", namespace, {"spec": spec})
                   .status.token)

    secrets = {name: {k: base64.b64decode(v)
                      for k, v in core.read_namespaced_secret(name, namespace).data.items()}
               for name in ("anthropic-api-key", "skillwarden-s3")}
    key_file = tmp_path / "fake-key"
    key_file.write_text(REAL_KEY)
    fake_port = free_port()
    fake = spawn("fake-claude", [sys.executable, "-m", "skillwarden_devstack.fake_claude",
                                 "--port", str(fake_port), "--api-key-file", str(key_file)],
                 tmp_path / "fake.log")
    try:
        wait_until("fake-claude", lambda: port_open(fake_port), fake, 30, "listening")
        environment = kubelet.Environment(
            secrets=secrets, url_rewrites={"https://api.anthropic.com": f"http://127.0.0.1:{fake_port}"},
            token_factory=token, api_server=stack["apiserver"], api_ca=Path(stack["ca_cert"]).read_bytes(),
            executables={"opa": str(tools.ensure_all().opa)})
        with kubelet.start(stored, tmp_path / "pod", environment) as pod:
            sdk = anthropic.Anthropic(base_url=pod.app_env["ANTHROPIC_BASE_URL"], api_key="placeholder",
                                      max_retries=0)
            reply = sdk.messages.create(model="claude-haiku-4-5", max_tokens=64,
                                        messages=[{"role": "user", "content": "hello"}])
            assert reply.content
            with pytest.raises(anthropic.PermissionDeniedError):
                sdk.messages.create(model="claude-opus-4-6", max_tokens=64,
                                    messages=[{"role": "user", "content": "hello"}])
    finally:
        stop(fake)
