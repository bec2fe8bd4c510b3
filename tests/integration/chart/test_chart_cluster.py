"""The rendered chart against the real kube-apiserver: server-side dry-run, a real apply, and the
operator's RBAC checked as the chart's own ServiceAccount (a TokenRequest token): it can do what
the operator needs and nothing else."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, REPO, helm, render
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from skillwarden_devstack import chart, dashboard
from skillwarden_devstack.processes import free_port
from skillwarden_devstack.tools import Binaries

GROUP, VERSION = "skillwarden.io", "v1alpha1"
RELEASE = "chart-it"


def _admin(stack: dict[str, Any]) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=stack["kubeconfigs"]["admin"])


def _token_client(stack: dict[str, Any], token: str) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = stack["apiserver"]
    configuration.ssl_ca_cert = stack["ca_cert"]
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return k8s.ApiClient(configuration)


def _apply(bins: Binaries, stack: dict[str, Any], manifest: str, *extra: str) -> str:
    return chart.apply(bins, stack["kubeconfigs"]["admin"], manifest, dry_run="--dry-run=server" in extra,
                       field_manager="skillwarden-chart-test")


def test_default_chart_passes_server_side_dry_run(bins: Binaries, stack: dict[str, Any]) -> None:
    namespace = f"skw-dry-{uuid.uuid4().hex[:6]}"
    k8s.CoreV1Api(_admin(stack)).create_namespace({"metadata": {"name": namespace}})
    try:
        rendered = render(bins, "--include-crds", release="dry", namespace=namespace)
        out = _apply(bins, stack, rendered.stdout, "--dry-run=server")
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == len(rendered.documents)
        assert all(line.endswith("(server dry run)") for line in lines), out
        # dry run: nothing was stored.
        with pytest.raises(ApiException) as missing:
            k8s.AppsV1Api(_admin(stack)).read_namespaced_deployment("dry-skillwarden-operator", namespace)
        assert missing.value.status == 404
    finally:
        k8s.CoreV1Api(_admin(stack)).delete_namespace(namespace)


@dataclass
class Installed:
    stack: dict[str, Any]
    namespace: str
    workload_namespace: str
    manifest: str
    documents: list[dict[str, Any]]
    operator: k8s.ApiClient
    service_account: str

    def fullname(self, suffix: str) -> str:
        return f"{RELEASE}-skillwarden-{suffix}"


@pytest.fixture(scope="module")
def installed(bins: Binaries, stack: dict[str, Any]) -> Iterator[Installed]:
    """The chart applied for real. No operator process answers its webhook Service here, so the
    SkillPolicy/SkillApproval webhooks are set to Ignore for this install (the pod webhook keeps
    Fail; nothing here creates pods); everything cluster-wide is removed afterwards."""
    admin = _admin(stack)
    core = k8s.CoreV1Api(admin)
    suffix = uuid.uuid4().hex[:6]
    namespace, workload = f"skw-chart-{suffix}", f"skw-team-{suffix}"
    for name in (namespace, workload):
        core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_service_account(workload, {"metadata": {"name": "report-bot"}})
    rendered = render(bins, "--include-crds", "--set", "webhook.skillPolicies.failurePolicy=Ignore",
                      "--set", "webhook.skillApprovals.failurePolicy=Ignore",
                      # The operator run below handles only this namespace: other tests' policies are
                      # not its to finalize.
                      "--set-json", f'operator.watchNamespaces=["{workload}"]',
                      "--set-json", f'sidecar.approvalBindings={{"{workload}": ["report-bot"]}}',
                      "--set-json",
                      f'approvals.reviewerBindings={{"{workload}": {{"groups": ["finance-leads"]}}}}',
                      release=RELEASE, namespace=namespace)
    try:
        _apply(bins, stack, rendered.stdout)
        service_account = f"{RELEASE}-skillwarden-operator"
        token = core.create_namespaced_service_account_token(
            service_account, namespace, {"spec": {"expirationSeconds": 600}}).status.token
        yield Installed(stack, namespace, workload, rendered.stdout, rendered.documents,
                        _token_client(stack, token),
                        service_account)
    finally:
        admission = k8s.AdmissionregistrationV1Api(admin)
        rbac = k8s.RbacAuthorizationV1Api(admin)
        for delete, name in (
            (admission.delete_mutating_webhook_configuration, f"{RELEASE}-skillwarden-mutating"),
            (admission.delete_validating_webhook_configuration, f"{RELEASE}-skillwarden-validating"),
            (rbac.delete_cluster_role_binding, f"{RELEASE}-skillwarden-operator"),
            (rbac.delete_cluster_role, f"{RELEASE}-skillwarden-operator"),
            (rbac.delete_cluster_role, f"{RELEASE}-skillwarden-sidecar"),
            (rbac.delete_cluster_role, f"{RELEASE}-skillwarden-approval-reviewer"),
        ):
            try:
                delete(name)
            except ApiException as error:
                if error.status != 404:
                    raise
        for name in (namespace, workload):
            core.delete_namespace(name)


def test_every_rendered_object_is_stored_by_the_real_api_server(installed: Installed) -> None:
    admin = _admin(installed.stack)
    dynamic_get: dict[str, Callable[[dict[str, Any]], Any]] = {
        "CustomResourceDefinition": lambda d: k8s.ApiextensionsV1Api(admin).read_custom_resource_definition(
            d["metadata"]["name"]),
        "Deployment": lambda d: k8s.AppsV1Api(admin).read_namespaced_deployment(d["metadata"]["name"],
                                                                               installed.namespace),
        "MutatingWebhookConfiguration": lambda d: k8s.AdmissionregistrationV1Api(admin)
        .read_mutating_webhook_configuration(d["metadata"]["name"]),
        "ValidatingWebhookConfiguration": lambda d: k8s.AdmissionregistrationV1Api(admin)
        .read_validating_webhook_configuration(d["metadata"]["name"]),
        "PodDisruptionBudget": lambda d: k8s.PolicyV1Api(admin).read_namespaced_pod_disruption_budget(
            d["metadata"]["name"], installed.namespace),
        "ClusterRole": lambda d: k8s.RbacAuthorizationV1Api(admin).read_cluster_role(d["metadata"]["name"]),
    }
    checked = 0
    for document in installed.documents:
        getter = dynamic_get.get(document["kind"])
        if getter is not None:
            stored = getter(document)
            assert stored.metadata.name == document["metadata"]["name"]
            checked += 1
    assert checked >= 7
    stored_hook = k8s.AdmissionregistrationV1Api(admin).read_mutating_webhook_configuration(
        installed.fullname("mutating"))
    pods = next(w for w in stored_hook.webhooks if w.name == "inject.pods.skillwarden.io")
    assert pods.object_selector.match_labels == {"skillwarden.io/inject": "true"}
    assert installed.namespace in pods.namespace_selector.match_expressions[0].values
    assert pods.client_config.service.namespace == installed.namespace


def _can(api: k8s.ApiClient, verb: str, resource: str, group: str = "", namespace: str = "",
         subresource: str = "", name: str = "") -> bool:
    review = k8s.AuthorizationV1Api(api).create_self_subject_access_review({"spec": {"resourceAttributes": {
        "verb": verb, "resource": resource, "group": group, "namespace": namespace,
        "subresource": subresource, "name": name}}})
    return bool(review.status.allowed)


def _forbidden(call: Callable[[], Any]) -> None:
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 403, refused.value.body


def _policy(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SkillPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"defaultAction": "deny", "subjects": [{
                "name": "bots", "serviceAccounts": ["report-bot"],
                "skills": [{"type": "anthropic", "id": "xlsx"}]}]}}


def test_the_operator_account_can_do_what_the_operator_does(installed: Installed) -> None:
    op = installed.operator
    custom = k8s.CustomObjectsApi(op)
    admin_custom = k8s.CustomObjectsApi(_admin(installed.stack))
    admin_custom.create_namespaced_custom_object(GROUP, VERSION, installed.workload_namespace,
                                                 "skillpolicies",
                                                 _policy(installed.workload_namespace, "chart-rbac"))
    # Watch every namespace's policies (kopf lists, then watches).
    listed = custom.list_cluster_custom_object(GROUP, VERSION, "skillpolicies")
    assert "chart-rbac" in [item["metadata"]["name"] for item in listed["items"]]
    custom.list_cluster_custom_object(GROUP, VERSION, "skillpolicies", watch=True, timeout_seconds=1,
                                      resource_version=listed["metadata"]["resourceVersion"])
    # kopf's own finalizer on the object, then the compile result on the status subresource.
    custom.patch_namespaced_custom_object(GROUP, VERSION, installed.workload_namespace, "skillpolicies",
                                          "chart-rbac",
                                          {"metadata": {"finalizers": ["skillwarden.io/operator"]}})
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, installed.workload_namespace, "skillpolicies", "chart-rbac",
        {"status": {"observedGeneration": 1, "bundleRevision": "sha256:" + "0" * 64}})
    stored = admin_custom.get_namespaced_custom_object(GROUP, VERSION, installed.workload_namespace,
                                                       "skillpolicies", "chart-rbac")
    assert stored["status"]["bundleRevision"] == "sha256:" + "0" * 64
    custom.patch_namespaced_custom_object(GROUP, VERSION, installed.workload_namespace, "skillpolicies",
                                          "chart-rbac", {"metadata": {"finalizers": None}})
    # Namespaces: watched, and read before a recompilation.
    k8s.CoreV1Api(op).read_namespace(installed.workload_namespace)
    # Events about what it did.
    k8s.CoreV1Api(op).create_namespaced_event(installed.workload_namespace, {
        "metadata": {"generateName": "chart-rbac-"},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SkillPolicy", "name": "chart-rbac",
                           "namespace": installed.workload_namespace},
        "reason": "Compiled", "message": "bundle compiled", "type": "Normal"})
    # kopf's cluster observation.
    k8s.CoreV1Api(op).list_namespace(limit=1)
    k8s.ApiextensionsV1Api(op).list_custom_resource_definition(limit=1)
    # secret mode: the shared webhook certificate Secret, and the chart's own caBundle.
    tls = installed.fullname("webhook-tls")
    core = k8s.CoreV1Api(op)
    core.create_namespaced_secret(installed.namespace, {
        "metadata": {"name": tls}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}})
    secret = core.read_namespaced_secret(tls, installed.namespace)
    secret.metadata.labels = {"skillwarden.io/rotated": "1"}
    core.replace_namespaced_secret(tls, installed.namespace, secret)
    admission = k8s.AdmissionregistrationV1Api(op)
    hook = admission.read_mutating_webhook_configuration(installed.fullname("mutating"))
    admission.patch_mutating_webhook_configuration(installed.fullname("mutating"), [
        {"op": "replace", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": "Y2E="}
        for i in range(len(hook.webhooks))])
    admission.patch_validating_webhook_configuration(installed.fullname("validating"), {
        "metadata": {"annotations": {"skillwarden.io/ca-rotated": "now"}}})


def test_the_operator_account_cannot_do_anything_else(installed: Installed) -> None:
    op = installed.operator
    core, custom = k8s.CoreV1Api(op), k8s.CustomObjectsApi(op)
    admin_core = k8s.CoreV1Api(_admin(installed.stack))
    admin_core.create_namespaced_secret(installed.workload_namespace, {
        "metadata": {"name": "anthropic-api-key"}, "stringData": {"api-key": "sk-ant-test"}})
    admin_core.create_namespaced_secret(installed.namespace, {
        "metadata": {"name": "other"}, "stringData": {"x": "y"}})
    # No secrets anywhere except its own certificate: not the provider keys, not its neighbours.
    _forbidden(lambda: core.list_secret_for_all_namespaces())
    _forbidden(lambda: core.read_namespaced_secret("anthropic-api-key", installed.workload_namespace))
    _forbidden(lambda: core.list_namespaced_secret(installed.namespace))
    _forbidden(lambda: core.read_namespaced_secret("other", installed.namespace))
    _forbidden(lambda: core.delete_namespaced_secret(installed.fullname("webhook-tls"), installed.namespace))
    # No workloads: it never creates pods (the API server does, with its mutation applied).
    _forbidden(lambda: core.create_namespaced_pod(installed.workload_namespace, {
        "metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}, dry_run="All"))
    _forbidden(lambda: core.list_pod_for_all_namespaces())
    _forbidden(lambda: k8s.AppsV1Api(op).list_deployment_for_all_namespaces())
    # Policies are written through GitOps, not by the operator; CRDs are not its to change.
    _forbidden(lambda: custom.create_namespaced_custom_object(
        GROUP, VERSION, installed.workload_namespace, "skillpolicies",
        _policy(installed.workload_namespace, "forged"), dry_run="All"))
    _forbidden(lambda: custom.delete_namespaced_custom_object(
        GROUP, VERSION, installed.workload_namespace, "skillpolicies", "chart-rbac", dry_run="All"))
    # Approvals are decided by people and used by sidecars; the operator only admits them.
    _forbidden(lambda: custom.list_cluster_custom_object(GROUP, VERSION, "skillapprovals"))
    _forbidden(lambda: custom.create_namespaced_custom_object(
        GROUP, VERSION, installed.workload_namespace, "skillapprovals",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SkillApproval", "metadata": {"name": "forged"}},
        dry_run="All"))
    assert not _can(op, "patch", "skillapprovals", GROUP, installed.workload_namespace, subresource="status")
    _forbidden(lambda: k8s.ApiextensionsV1Api(op).delete_custom_resource_definition(
        "skillpolicies.skillwarden.io", dry_run="All"))
    # Only its own webhook configurations, and never new ones.
    admission = k8s.AdmissionregistrationV1Api(op)
    _forbidden(lambda: admission.list_mutating_webhook_configuration())
    _forbidden(lambda: admission.create_mutating_webhook_configuration(
        {"metadata": {"name": "forged"}, "webhooks": []}, dry_run="All"))
    assert not _can(op, "patch", "mutatingwebhookconfigurations", "admissionregistration.k8s.io",
                    name="someone-elses")
    # No privilege escalation routes.
    rbac = k8s.RbacAuthorizationV1Api(op)
    _forbidden(lambda: rbac.create_cluster_role_binding({
        "metadata": {"name": "forged"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                    "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": installed.service_account,
                      "namespace": installed.namespace}]}, dry_run="All"))
    assert not _can(op, "impersonate", "users")
    assert not _can(op, "create", "serviceaccounts", subresource="token",
                    namespace=installed.workload_namespace, name="default")
    assert not _can(op, "delete", "namespaces")


def test_the_cluster_role_grants_only_the_rules_docs_helm_md_lists(installed: Installed) -> None:
    role = next(d for d in installed.documents
                if d["kind"] == "ClusterRole" and d["metadata"]["name"] == installed.fullname("operator"))
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert not any(verb in {"*", "delete", "deletecollection", "create"} and resource != "events"
                   for _, resource, verb in granted), yaml.safe_dump(role["rules"])
    assert not any("*" in (group, resource) for group, resource, _ in granted)
    assert not any(resource in {"secrets", "pods", "configmaps"} for _, resource, _ in granted)


def _wait(condition: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, ApiException, KeyError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}; "
                         f"operator log:\n{log.read_text()[-4000:]}")


def test_the_api_server_refuses_opted_in_pods_while_the_webhook_is_unreachable(
        bins: Binaries, installed: Installed) -> None:
    """No operator answers the chart's Service here: an opted-in pod is refused (failurePolicy Fail)
    with a message naming our webhook, and the API server counts the failures our alert reads."""
    admin = _admin(installed.stack)
    with pytest.raises(ApiException) as refused:
        k8s.CoreV1Api(admin).create_namespaced_pod(installed.workload_namespace, {
            "metadata": {"name": "unreachable", "labels": {"skillwarden.io/inject": "true"},
                         "annotations": {"skillwarden.io/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "registry.example/report:1"}]}})
    assert 'failed calling webhook "inject.pods.skillwarden.io"' in json.loads(refused.value.body)["message"]
    # Ignore (as this install sets for policies): admitted unchecked, counted as fail-open.
    k8s.CustomObjectsApi(admin).create_namespaced_custom_object(
        GROUP, VERSION, installed.workload_namespace, "skillpolicies",
        _policy(installed.workload_namespace, "fail-open"), dry_run="All")
    metrics = subprocess.run([str(bins.kubectl), "--kubeconfig", installed.stack["kubeconfigs"]["admin"],
                              "get", "--raw", "/metrics"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    series = {name: [line for line in metrics.splitlines() if line.startswith(name + "{")]
              for name in dashboard.EXTERNAL_SERIES}
    assert any('error_type="calling_webhook_error"' in line and 'name="inject.pods.skillwarden.io"' in line
               for line in series["apiserver_admission_webhook_rejection_count"])
    assert any('name="validate.skillpolicies.skillwarden.io"' in line
               for line in series["apiserver_admission_webhook_fail_open_count"])
    assert any('name="inject.pods.skillwarden.io"' in line
               for line in series["apiserver_admission_webhook_request_total"])


def _pod(name: str, opted_in: bool) -> dict[str, Any]:
    marks = {"skillwarden.io/inject": "true"} if opted_in else {}
    return {"metadata": {"name": name, "labels": dict(marks), "annotations": dict(marks)},
            "spec": {"serviceAccountName": "report-bot",
                     "containers": [{"name": "app", "image": "registry.example/report:1"}]}}


def _container_names(pod: Any) -> list[str]:
    return [c.name for c in [*(pod.spec.init_containers or []), *pod.spec.containers]]


def _check_injection_through_the_chart_webhook(installed: Installed) -> None:
    """The chart's pod webhook (objectSelector, namespaceSelector, path) reaches the operator."""
    core = k8s.CoreV1Api(_admin(installed.stack))
    ns = installed.workload_namespace
    injected = core.create_namespaced_pod(ns, _pod("chart-opted-in", True))
    assert {"skillwarden", "opa", "app"} <= set(_container_names(injected))
    untouched = core.create_namespaced_pod(ns, _pod("chart-not-opted-in", False))
    assert _container_names(untouched) == ["app"]
    # The release namespace is excluded by the namespaceSelector, label or not.
    core.create_namespaced_service_account(installed.namespace, {"metadata": {"name": "report-bot"}})
    excluded = core.create_namespaced_pod(installed.namespace, _pod("chart-release-ns", True))
    assert _container_names(excluded) == ["app"]


def _check_shared_certificate(installed: Installed) -> None:
    """secret mode: the operator (as the chart's ServiceAccount) filled the shared Secret and put
    its CA into every entry of the chart's two configurations, and nothing else's."""
    admin = _admin(installed.stack)
    secret = k8s.CoreV1Api(admin).read_namespaced_secret(installed.fullname("webhook-tls"),
                                                         installed.namespace)
    assert {"tls.crt", "tls.key", "ca.crt"} <= set(secret.data)
    admission = k8s.AdmissionregistrationV1Api(admin)
    hooks = [*admission.read_mutating_webhook_configuration(installed.fullname("mutating")).webhooks,
             *admission.read_validating_webhook_configuration(installed.fullname("validating")).webhooks]
    assert len(hooks) == 6
    assert {h.client_config.ca_bundle for h in hooks} == {secret.data["ca.crt"]}


def test_the_real_operator_works_with_exactly_the_chart_rbac(bins: Binaries, installed: Installed,
                                                             tmp_path: Path) -> None:
    """`skillwarden operator`, configured by the rendered Deployment's env and ConfigMap and
    authenticated as the chart's ServiceAccount, answers admission through the chart's own webhook
    configurations (re-rendered with webhook.externalUrl, failurePolicy Fail: policy validation and
    pod injection) with the certificate it keeps in the shared Secret (certificates.mode=secret),
    compiles a SkillPolicy and serves its bundle, without a single refused API call."""
    token = installed.operator.configuration.api_key["authorization"].removeprefix("Bearer ")
    kubeconfig = tmp_path / "operator.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "stack", "cluster": {"server": installed.stack["apiserver"],
                                                   "certificate-authority": installed.stack["ca_cert"]}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "stack", "user": "operator"}}]}))
    bundle_port, webhook_port = free_port(), free_port()
    # No caBundle: in certificates.mode=secret the operator makes the shared Secret and patches it in.
    external = render(bins, "--set", f"webhook.externalUrl=https://127.0.0.1:{webhook_port}",
                      release=RELEASE, namespace=installed.namespace)
    hooks = [d for d in external.documents if d["kind"].endswith("WebhookConfiguration")]
    assert {d["metadata"]["name"] for d in hooks} == {installed.fullname("mutating"),
                                                       installed.fullname("validating")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLWARDEN_")}
    env.update(chart.operator_process_env(installed.manifest, tmp_path / "injection.json", {
        "KUBECONFIG": str(kubeconfig), "SKILLWARDEN_NAMESPACE": installed.namespace,
        "SKILLWARDEN_POD_NAME": "operator-0",
        # Loopback instead of the pod IP; everything else exactly as the chart renders it.
        "SKILLWARDEN_OPERATOR_BUNDLE_HOST": "127.0.0.1",
        "SKILLWARDEN_OPERATOR_BUNDLE_PORT": str(bundle_port),
        "SKILLWARDEN_OPERATOR_WEBHOOK_ADDR": "127.0.0.1",
        "SKILLWARDEN_OPERATOR_WEBHOOK_PORT": str(webhook_port),
        "SKILLWARDEN_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
        # The name the API server dials (the Service's in a cluster): the certificate must cover it.
        "SKILLWARDEN_WEBHOOK_SERVICE": "127.0.0.1",
    }))
    assert env["SKILLWARDEN_CERT_MODE"] == "secret"
    log = tmp_path / "operator.log"
    command = [str(Path(sys.executable).with_name("skillwarden")), *chart.operator_args(installed.manifest)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{bundle_port}"
    try:
        _wait(lambda: urllib.request.urlopen(f"{base}/healthz", timeout=2).status == 200, 60,
              "the operator's /healthz", log)
        _apply(bins, installed.stack, yaml.safe_dump_all(hooks))
        policy = yaml.safe_load((REPO / "examples" / "skillpolicy-finance.yaml").read_text())
        admin = k8s.CustomObjectsApi(_admin(installed.stack))
        # Admission through the chart's ValidatingWebhookConfiguration: RE2 has no look-behind.
        invalid = copy.deepcopy(policy)
        invalid["metadata"] = {"name": "chart-invalid", "namespace": installed.workload_namespace}
        invalid["spec"]["rules"][0]["when"]["promptMatches"] = ["(?<=secret)key"]

        def refused_by_the_operator() -> bool:
            try:
                admin.create_namespaced_custom_object(GROUP, VERSION, installed.workload_namespace,
                                                      "skillpolicies", invalid, dry_run="All")
            except ApiException as error:
                # The operator's own message (a CRD schema cannot judge RE2), naming the field.
                body = str(error.body)
                return error.status == 422 and "promptMatches[0]: not a valid RE2 pattern" in body
            return False

        _wait(refused_by_the_operator, 30, "the chart's policy webhook to reach the operator", log)
        policy["metadata"] = {"name": "chart-operator", "namespace": installed.workload_namespace}
        admin.create_namespaced_custom_object(GROUP, VERSION, installed.workload_namespace,
                                              "skillpolicies", policy)

        def ready() -> bool:
            status = admin.get_namespaced_custom_object(GROUP, VERSION, installed.workload_namespace,
                                                        "skillpolicies", "chart-operator").get("status", {})
            conditions = status.get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        _wait(ready, 60, "the SkillPolicy to become Ready", log)
        stored = admin.get_namespaced_custom_object(GROUP, VERSION, installed.workload_namespace,
                                                    "skillpolicies", "chart-operator")
        bundle_url = f"{base}/bundles/{installed.workload_namespace}.tar.gz"
        with urllib.request.urlopen(bundle_url, timeout=5) as response:
            assert response.status == 200
            assert response.headers["ETag"] == f'"{stored["status"]["bundleRevision"]}"'
        _check_injection_through_the_chart_webhook(installed)
        _check_shared_certificate(installed)
        ready_gauge = ('skillwarden_operator_policies'
                       f'{{namespace="{installed.workload_namespace}",state="ready"}}')

        def counted() -> bool:
            with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
                lines = response.read().decode().splitlines()
            return any(line.startswith(ready_gauge) and float(line.split()[-1]) >= 1 for line in lines)

        _wait(counted, 30, "the ready policy in the operator's metrics", log)
    finally:
        # failurePolicy Fail towards a process about to stop: remove before anything else runs.
        admission = k8s.AdmissionregistrationV1Api(_admin(installed.stack))
        admission.delete_mutating_webhook_configuration(installed.fullname("mutating"))
        admission.delete_validating_webhook_configuration(installed.fullname("validating"))
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    text = log.read_text()
    # RBAC refusals name the user ("... is forbidden: User \"system:serviceaccount:...\" cannot ...");
    # writes into namespaces other tests left terminating are refused too, but not by RBAC.
    refused = [line for line in text.splitlines() if f"serviceaccount:{installed.namespace}:" in line
               and "cannot" in line]
    assert refused == [], "\n".join(refused)
    assert "Traceback" not in text, text[-4000:]


def test_a_bound_workload_sidecar_may_ask_for_approvals_and_nothing_more(installed: Installed) -> None:
    admin = k8s.CoreV1Api(_admin(installed.stack))
    token = admin.create_namespaced_service_account_token(
        "report-bot", installed.workload_namespace, {"spec": {"expirationSeconds": 600}}).status.token
    sidecar = _token_client(installed.stack, token)
    ns = installed.workload_namespace
    for verb in ("create", "get", "list", "watch"):
        assert _can(sidecar, verb, "skillapprovals", GROUP, ns)
    assert _can(sidecar, "patch", "skillapprovals", GROUP, ns, subresource="status")  # mark Used
    # Not its approvals to rewrite or delete, not other namespaces, not policies, not secrets.
    for verb in ("update", "patch", "delete"):
        assert not _can(sidecar, verb, "skillapprovals", GROUP, ns)
    assert not _can(sidecar, "create", "skillapprovals", GROUP, installed.namespace)
    assert not _can(sidecar, "list", "skillpolicies", GROUP, ns)
    assert not _can(sidecar, "get", "secrets", "", ns)
    k8s.CustomObjectsApi(sidecar).list_namespaced_custom_object(GROUP, VERSION, ns, "skillapprovals")
    _forbidden(lambda: k8s.CustomObjectsApi(sidecar).list_namespaced_custom_object(
        GROUP, VERSION, installed.namespace, "skillapprovals"))


def test_reviewer_binding_lets_the_approver_group_review_and_nobody_else(installed: Installed) -> None:
    ns = installed.workload_namespace
    kubeconfigs = installed.stack["kubeconfigs"]
    approver = k8s_config.new_client_from_config(config_file=kubeconfigs["approver"])  # finance-leads
    outsider = k8s_config.new_client_from_config(config_file=kubeconfigs["outsider"])
    requester = k8s_config.new_client_from_config(config_file=kubeconfigs["requester"])  # finance-analysts
    for verb in ("get", "list", "watch"):
        assert _can(approver, verb, "skillapprovals", GROUP, ns)
    assert _can(approver, "patch", "skillapprovals", GROUP, ns, subresource="status")
    assert not _can(approver, "patch", "skillapprovals", GROUP, ns)  # the request itself is immutable
    assert not _can(approver, "delete", "skillapprovals", GROUP, ns)
    assert not _can(approver, "patch", "skillapprovals", GROUP, installed.namespace, subresource="status")
    for user in (outsider, requester):
        assert not _can(user, "patch", "skillapprovals", GROUP, ns, subresource="status")
        _forbidden(lambda user=user: k8s.CustomObjectsApi(user).list_namespaced_custom_object(
            GROUP, VERSION, ns, "skillapprovals"))
    k8s.CustomObjectsApi(approver).list_namespaced_custom_object(GROUP, VERSION, ns, "skillapprovals")


def test_helm_install_and_uninstall_against_the_real_api_server(bins: Binaries,
                                                               stack: dict[str, Any]) -> None:
    """The user's path: `helm install` refuses missing values with the message, then installs (the
    cluster's own version satisfies kubeVersion) and uninstalls cleanly."""
    namespace = f"skw-helm-{uuid.uuid4().hex[:6]}"
    kubeconfig = ("--kubeconfig", stack["kubeconfigs"]["admin"])
    refused = helm(bins, "install", "helmit", str(CHART), "-n", namespace, "--create-namespace",
                   *kubeconfig)
    assert refused.returncode != 0
    assert "providerKey.secretName is required" in refused.stderr
    admission = k8s.AdmissionregistrationV1Api(_admin(stack))
    with pytest.raises(ApiException):
        admission.read_mutating_webhook_configuration("helmit-skillwarden-mutating")
    installed = helm(bins, "install", "helmit", str(CHART), "-n", namespace, "--create-namespace",
                     *kubeconfig, "--set", "providerKey.secretName=anthropic-api-key",
                     "--set", "webhook.skillPolicies.failurePolicy=Ignore",
                     "--set", "webhook.skillApprovals.failurePolicy=Ignore",
                     "--set", "metrics.prometheusRule.enabled=true")
    try:
        assert installed.returncode == 0, installed.stderr
        assert "STATUS: deployed" in installed.stdout
        # No Prometheus Operator here: the rule is skipped and the notes say so.
        assert "does not serve\nmonitoring.coreos.com/v1" in installed.stdout
        hook = admission.read_mutating_webhook_configuration("helmit-skillwarden-mutating")
        assert hook.webhooks[0].client_config.service.namespace == namespace
    finally:
        removed = helm(bins, "uninstall", "helmit", "-n", namespace, *kubeconfig)
        k8s.CoreV1Api(_admin(stack)).delete_namespace(namespace)
    assert removed.returncode == 0, removed.stderr
    with pytest.raises(ApiException) as gone:
        admission.read_mutating_webhook_configuration("helmit-skillwarden-mutating")
    assert gone.value.status == 404
