"""The operator as users run it: `skillwarden operator` subprocesses against the real
kube-apiserver (CRD applied, admission webhook registered by the operator itself), real OPA
processes pulling bundles from its bundle service, `kubectl` with the admin kubeconfig."""

from __future__ import annotations

import copy
import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from skillwarden_devstack import components, processes, tools
from skillwarden_devstack.processes import Running

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "crds" / "skillpolicy.yaml"
EXAMPLES = REPO / "examples"
GROUP, VERSION, PLURAL = "skillwarden.io", "v1alpha1", "skillpolicies"
WEBHOOK_NAME = "skillwarden-operator-tests.skillwarden.io"


def unique(prefix: str) -> str:
    """Namespaces of their own: reruns against a reused stack start clean."""
    return f"{prefix}-{secrets.token_hex(3)}"


def example(name: str, namespace: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    loaded["metadata"]["namespace"] = namespace
    return loaded


Response = tuple[int, dict[str, str], bytes]


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> Response:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), dict(response.headers), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), dict(error.headers), bytes(error.read())


@dataclass
class Cluster:
    stack: dict[str, Any]
    api: k8s.ApiClient
    kubeconfig: str
    kubectl_bin: str

    def kubectl(self, *args: str, stdin: str | None = None,
                check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args], input=stdin,
                              capture_output=True, text=True, timeout=60, check=check)

    def apply(self, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(obj))

    def namespace(self, name: str) -> None:
        core = k8s.CoreV1Api(self.api)
        try:
            core.create_namespace({"metadata": {"name": name}})
        except k8s.ApiException as error:
            if error.status != 409:
                raise

    def policy(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = k8s.CustomObjectsApi(self.api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name)
        return found

    def wait_ready(self, namespace: str, name: str, timeout: float = 30.0,
                   not_revision: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            policy = self.policy(namespace, name)
            status = policy.get("status") or {}
            ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
            if (ready and ready[0]["status"] == "True" and status.get("bundleRevision")
                    and status.get("observedGeneration") == policy["metadata"]["generation"]
                    and status["bundleRevision"] != not_revision):
                return policy
            if time.monotonic() > deadline:
                raise AssertionError(f"{namespace}/{name} not Ready: {status}")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def cluster(stack: dict[str, Any]) -> Cluster:
    api = k8s_config.new_client_from_config(config_file=stack["kubeconfigs"]["admin"])
    extensions = k8s.ApiextensionsV1Api(api)
    crd = yaml.safe_load(CRD.read_text())
    try:
        extensions.create_custom_resource_definition(crd)
    except k8s.ApiException as error:
        if error.status != 409:
            raise
        current = extensions.read_custom_resource_definition(crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(crd["metadata"]["name"], crd)
    deadline = time.monotonic() + 30
    while True:
        found = extensions.read_custom_resource_definition(crd["metadata"]["name"])
        if any(c.type == "Established" and c.status == "True" for c in found.status.conditions or []):
            break
        assert time.monotonic() < deadline, "SkillPolicy CRD not established"
        time.sleep(0.1)
    return Cluster(stack=stack, api=api, kubeconfig=stack["kubeconfigs"]["admin"],
                   kubectl_bin=stack["binaries"]["kubectl"])


@dataclass
class Operator:
    running: Running
    bundle_url: str
    webhook_port: int | None

    def bundle(self, namespace: str, headers: dict[str, str] | None = None) -> Response:
        return http_get(f"{self.bundle_url}/bundles/{namespace}.tar.gz", headers)

    def metrics(self) -> str:
        return http_get(f"{self.bundle_url}/metrics")[2].decode()


OperatorFactory = Callable[..., Operator]


@pytest.fixture
def operators(cluster: Cluster, tmp_path: Path) -> Iterator[OperatorFactory]:
    """Start `skillwarden operator` processes; at most one registers the admission webhook."""
    started: list[Running] = []
    # `python -m` rather than the `skillwarden` script: process checks match the executable.
    skillwarden = [sys.executable, "-m", "skillwarden_cli.main"]

    def start(admission: bool = True, extra: tuple[str, ...] = (), bundle_port: int = 0) -> Operator:
        bundle_port = bundle_port or processes.free_port()
        webhook_port = processes.free_port() if admission else None
        argv = [*skillwarden, "operator", "--bundle-port", str(bundle_port), "--log-level", "INFO", *extra]
        if admission:
            argv += ["--webhook-port", str(webhook_port), "--webhook-managed", WEBHOOK_NAME]
        else:
            argv += ["--admission", "false"]
        running = processes.spawn(f"operator-{len(started)}", argv, tmp_path / f"operator-{len(started)}.log",
                                  env={"KUBECONFIG": cluster.kubeconfig})
        started.append(running)
        url = f"http://127.0.0.1:{bundle_port}"
        processes.wait_until("operator", lambda: http_get(f"{url}/readyz")[0] == 200, running, 60, "ready")
        if admission:
            admission_api = k8s.AdmissionregistrationV1Api(cluster.api)

            def registered() -> bool:
                config = admission_api.read_validating_webhook_configuration(WEBHOOK_NAME)
                urls = [hook.client_config.url or "" for hook in config.webhooks or []]
                return any(f":{webhook_port}/" in url for url in urls)

            processes.wait_until("operator", registered, running, 30, "registered its webhook")
        return Operator(running=running, bundle_url=url, webhook_port=webhook_port)

    yield start
    for running in reversed(started):
        processes.stop(running)
    # kopf empties its managed configurations on exit; a killed process leaves them: remove both.
    admission = k8s.AdmissionregistrationV1Api(cluster.api)
    for delete in (admission.delete_validating_webhook_configuration,
                   admission.delete_mutating_webhook_configuration):
        try:
            delete(WEBHOOK_NAME)
        except k8s.ApiException as error:
            if error.status != 404:
                raise


@dataclass
class Opa:
    running: Running
    url: str

    def decide(self, input_doc: dict[str, Any]) -> dict[str, Any] | None:
        request = urllib.request.Request(
            f"{self.url}/v1/data/skillwarden/decision", data=json.dumps({"input": input_doc}).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            result: dict[str, Any] | None = json.loads(response.read()).get("result")
            return result


@pytest.fixture
def opa_for(tmp_path: Path) -> Iterator[Callable[[str, str], Opa]]:
    """A real OPA that pulls one namespace's bundle from the bundle service (long polling)."""
    started: list[Running] = []
    bins = tools.ensure_all()

    def start(bundle_url: str, namespace: str) -> Opa:
        name = f"opa-{namespace}-{len(started)}"
        running, url = components.start_opa(bins, tmp_path, name, {
            "services": {"operator": {"url": bundle_url}},
            "bundles": {"skillwarden": {"service": "operator", "resource": f"bundles/{namespace}.tar.gz",
                                        "polling": {"min_delay_seconds": 1, "max_delay_seconds": 2,
                                                    "long_polling_timeout_seconds": 30}}},
        })
        started.append(running)
        processes.wait_until(name, lambda: http_get(f"{url}/health?bundles")[0] == 200, running, 30,
                             "bundle loaded")
        return Opa(running=running, url=url)

    yield start
    for running in started:
        processes.stop(running)


def request_input(namespace: str, service_account: str = "report-bot", groups: list[str] | None = None,
                  skills: list[dict[str, str]] | None = None, prompt: str = "quarterly chart",
                  model: str = "claude-sonnet-4-5", tools_used: list[str] | None = None,
                  approval: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "identity": {"kind": "workload" if groups is None else "oidc", "sub": "", "groups": groups or []},
        "workload": {"namespace": namespace, "pod": "report-7f9c", "service_account": service_account},
        "request": {"method": "POST", "path": "/v1/messages", "operation": "messages.create", "model": model,
                    "stream": False, "max_tokens": 1024,
                    "skills": skills if skills is not None else [{"type": "anthropic", "skill_id": "xlsx",
                                                                   "version": "latest"}],
                    "tools": tools_used if tools_used is not None else [], "prompt_text": prompt,
                    "prompt_chars": len(prompt)},
        "approval": approval or {"id": "", "state": ""},
    }


def deep(obj: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(obj)
