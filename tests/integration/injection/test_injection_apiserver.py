"""Injection through real admission: the real kube-apiserver calls the kopf webhook process."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from injection_support import SYSTEM_NAMESPACE, Webhook, ensure_namespace
from kubernetes import client as k8s

from skillwarden_operator import injection as inj

NAMESPACE = "inj-finance"
KEY_SECRET = "anthropic-api-key"


def template_pod(
    annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """What a ReplicaSet makes of a Deployment's template: generateName, no name, no namespace."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "report-7f9c5d-",
            "labels": {"app": "report", **(labels or {})},
            "annotations": annotations or {},
        },
        "spec": {
            "serviceAccountName": "default",
            "containers": [
                {
                    "name": "app",
                    "image": "example/report:1",
                    "ports": [{"containerPort": 8080}],
                    "env": [{"name": "LOG_LEVEL", "value": "info"}],
                }
            ],
            **spec,
        },
    }


OPT_IN = {"skillwarden.io/inject": "true"}


@pytest.fixture(scope="module")
def core(injection_webhook: Webhook) -> k8s.CoreV1Api:
    ensure_namespace(injection_webhook.api, NAMESPACE)
    return k8s.CoreV1Api(injection_webhook.api)


def kubectl(webhook: Webhook, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={webhook.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def provider_key_routes(pod: dict[str, Any], secret: str) -> dict[str, list[str]]:
    """Every container that can read `secret`, and how (env, envFrom, volume, projected volume)."""
    spec = pod["spec"]
    secret_volumes = set()
    for volume in spec.get("volumes") or []:
        if (volume.get("secret") or {}).get("secretName") == secret:
            secret_volumes.add(volume["name"])
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name") == secret:
                secret_volumes.add(volume["name"])
    routes: dict[str, list[str]] = {}
    for container in (spec.get("initContainers") or []) + spec["containers"]:
        found = []
        for env in container.get("env") or []:
            if ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") == secret:
                found.append(f"env {env['name']}")
        for source in container.get("envFrom") or []:
            if (source.get("secretRef") or {}).get("name") == secret:
                found.append("envFrom")
        for mount in container.get("volumeMounts") or []:
            if mount["name"] in secret_volumes:
                found.append(f"volume {mount['name']}")
        if found:
            routes[container["name"]] = found
    return routes


def test_opted_in_template_pod_is_stored_injected(core: k8s.CoreV1Api, injection_webhook: Webhook) -> None:
    created = core.create_namespaced_pod(NAMESPACE, template_pod(OPT_IN, OPT_IN))
    stored = injection_webhook.api.sanitize_for_serialization(
        core.read_namespaced_pod(created.metadata.name, NAMESPACE)
    )
    spec = stored["spec"]
    names = [c["name"] for c in spec["containers"]]
    assert names == ["app", "skillwarden", "opa"]
    app, sidecar, opa = spec["containers"]
    assert {"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:8790"} in app["env"]
    assert {"name": "LOG_LEVEL", "value": "info"} in app["env"]
    assert sidecar["image"] == "ghcr.io/skillwarden/skillwarden:test"
    assert sidecar["command"] == ["skillwarden", "sidecar"]
    assert f"--set=bundles.skillwarden.resource=bundles/{NAMESPACE}.tar.gz" in opa["args"]
    for container in (sidecar, opa):
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert security["seccompProfile"]["type"] == "RuntimeDefault"
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["skillwarden-spool"]["emptyDir"]["sizeLimit"] == "1Gi"
    assert volumes["skillwarden-provider-key"]["secret"]["secretName"] == KEY_SECRET
    assert (
        volumes["skillwarden-token"]["projected"]["sources"][0]["serviceAccountToken"]["audience"]
        == "skillwarden"
    )
    status = json.loads(stored["metadata"]["annotations"]["skillwarden.io/injected"])
    assert status["containers"] == ["skillwarden", "opa"] and status["env"] == ["app"]
    # The provider key: only the sidecar, by exactly one route.
    assert provider_key_routes(stored, KEY_SECRET) == {"skillwarden": ["volume skillwarden-provider-key"]}


def test_native_sidecar_mode_is_accepted_by_the_api_server(
    core: k8s.CoreV1Api, injection_webhook: Webhook
) -> None:
    pod = template_pod(
        {**OPT_IN, "skillwarden.io/native-sidecar": "true"},
        OPT_IN,
        initContainers=[{"name": "migrate", "image": "example/migrate:1"}],
    )
    created = injection_webhook.api.sanitize_for_serialization(core.create_namespaced_pod(NAMESPACE, pod))
    init = created["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["opa", "skillwarden", "migrate"]
    assert init[0]["restartPolicy"] == init[1]["restartPolicy"] == "Always"
    assert "restartPolicy" not in init[2]
    assert [c["name"] for c in created["spec"]["containers"]] == ["app"]
    assert provider_key_routes(created, KEY_SECRET) == {"skillwarden": ["volume skillwarden-provider-key"]}


def test_pods_not_opted_in_are_untouched(core: k8s.CoreV1Api, injection_webhook: Webhook) -> None:
    plain = injection_webhook.api.sanitize_for_serialization(
        core.create_namespaced_pod(NAMESPACE, template_pod())
    )
    assert [c["name"] for c in plain["spec"]["containers"]] == ["app"]
    assert "skillwarden.io/injected" not in (plain["metadata"].get("annotations") or {})
    # Labelled (so the webhook IS called) but the annotation says "false": explicit false wins.
    refused = injection_webhook.api.sanitize_for_serialization(
        core.create_namespaced_pod(NAMESPACE, template_pod({"skillwarden.io/inject": "false"}, OPT_IN))
    )
    assert [c["name"] for c in refused["spec"]["containers"]] == ["app"]
    assert not refused["spec"].get("volumes")


def test_kube_system_pod_is_never_touched(injection_webhook: Webhook) -> None:
    manifest = template_pod(OPT_IN, OPT_IN)
    name = f"opted-in-but-system-{uuid.uuid4().hex[:6]}"
    manifest["metadata"] = {
        "name": name,
        **{k: v for k, v in manifest["metadata"].items() if k != "generateName"},
    }
    result = kubectl(
        injection_webhook, "create", "-n", "kube-system", "-f", "-", "-o", "json", stdin=json.dumps(manifest)
    )
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)
    try:
        assert [c["name"] for c in stored["spec"]["containers"]] == ["app"]
        assert "skillwarden.io/injected" not in stored["metadata"]["annotations"]
        # The webhook saw it (no namespaceSelector here) and said why it did nothing.
        assert "not injected: namespace kube-system is never injected" in result.stderr
    finally:
        kubectl(
            injection_webhook, "delete", "pod", "-n", "kube-system", name, "--wait=false"
        )


def test_kubectl_server_side_dry_run_is_mutated_without_side_effects(
    core: k8s.CoreV1Api, injection_webhook: Webhook
) -> None:
    manifest = template_pod(OPT_IN, OPT_IN)
    name = f"dry-run-report-{uuid.uuid4().hex[:6]}"
    manifest["metadata"]["name"] = name
    del manifest["metadata"]["generateName"]
    result = kubectl(
        injection_webhook,
        "apply",
        "--dry-run=server",
        "-n",
        NAMESPACE,
        "-f",
        "-",
        "-o",
        "json",
        stdin=json.dumps(manifest),
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert [c["name"] for c in shown["spec"]["containers"]] == ["app", "skillwarden", "opa"]
    with pytest.raises(k8s.ApiException) as missing:
        core.read_namespaced_pod(name, NAMESPACE)
    assert missing.value.status == 404
    time.sleep(1.5)  # events are posted asynchronously: give a wrong one time to appear
    events = core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}")
    assert events.items == []


def test_real_create_posts_an_event(core: k8s.CoreV1Api, injection_webhook: Webhook) -> None:
    pod = template_pod(OPT_IN, OPT_IN)
    name = f"evented-report-{uuid.uuid4().hex[:6]}"
    pod["metadata"]["name"] = name
    del pod["metadata"]["generateName"]
    core.create_namespaced_pod(NAMESPACE, pod)
    deadline = time.monotonic() + 15
    reasons: list[str] = []
    while time.monotonic() < deadline and "SkillwardenInjected" not in reasons:
        events = core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}")
        reasons = [e.reason for e in events.items]
        time.sleep(0.3)
    assert "SkillwardenInjected" in reasons


@pytest.mark.parametrize(
    ("annotations", "spec", "message"),
    [
        (
            {"skillwarden.io/sidecar-memory": "lots"},
            {},
            "skillwarden.io/sidecar-memory: 'lots' is not a Kubernetes",
        ),
        ({"skillwarden.io/record": "false"}, {}, "recording and masking cannot be changed per pod"),
        (
            {},
            {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 8790}]}]},
            "port conflict: container 'app' (containers) declares port 8790",
        ),
        (
            {},
            {"containers": [{"name": "app", "image": "x", "envFrom": [{"secretRef": {"name": KEY_SECRET}}]}]},
            "imports the provider-key Secret 'anthropic-api-key' with envFrom",
        ),
    ],
)
def test_invalid_requests_are_denied_with_the_reason(
    core: k8s.CoreV1Api, annotations: dict[str, str], spec: dict[str, Any], message: str
) -> None:
    pod = template_pod({**OPT_IN, **annotations}, OPT_IN)
    pod["spec"].update(spec)
    with pytest.raises(k8s.ApiException) as denied:
        core.create_namespaced_pod(NAMESPACE, pod)
    assert denied.value.status == 400, denied.value.body
    assert message in json.loads(denied.value.body)["message"]


def test_yaml_example_from_the_docs_is_injected(injection_webhook: Webhook) -> None:
    docs = (Path(__file__).parents[3] / "docs" / "injection.md").read_text()
    example = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    deployment = yaml.safe_load(example)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "report-", **deployment["spec"]["template"]["metadata"]},
        "spec": deployment["spec"]["template"]["spec"],
    }
    ensure_namespace(injection_webhook.api, deployment["metadata"]["namespace"])
    created = k8s.CoreV1Api(injection_webhook.api).create_namespaced_pod(
        deployment["metadata"]["namespace"], pod, dry_run="All"
    )
    assert [c.name for c in created.spec.containers] == ["app", "skillwarden", "opa"]


def test_system_namespace_for_the_fixture_exists(injection_webhook: Webhook) -> None:
    secret = k8s.CoreV1Api(injection_webhook.api).read_namespaced_secret(
        "injection-test-tls", SYSTEM_NAMESPACE
    )
    assert set(secret.data) >= {"ca.crt", "tls.crt", "tls.key"}
    assert inj.SIDECAR == "skillwarden"
