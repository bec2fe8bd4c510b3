"""The chart renders, lints clean, ships the single CRD source, and refuses contradictory values
with a message that says what to set."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import yaml
from chart_helpers import CHART, REPO, Rendered, helm, render

from skillwarden_devstack import chart
from skillwarden_devstack.processes import StackError
from skillwarden_devstack.tools import Binaries

LINT_VARIANTS = {
    "default": (),
    "cert-manager-own-ca": ("--set", "certificates.mode=cert-manager",
                            "--set", "certificates.certManager.createSelfSignedIssuer=true"),
    "dev-managed-single": ("--set", "certificates.mode=self-signed-per-pod", "--set", "webhook.managed=true",
                           "--set", "operator.replicas=1",
                           "--set", "operator.podDisruptionBudget.enabled=false"),
    # (helm lint has no --api-versions: the monitoring objects are checked by the render tests)
    "monitoring-bindings": ("--set", "metrics.serviceMonitor.enabled=true",
                            "--set", "metrics.prometheusRule.enabled=true",
                            "--set-json", 'sidecar.approvalBindings={"finance": ["report-bot"]}',
                            "--set-json", 'approvals.reviewerBindings={"finance": {"groups": ["leads"]}}'),
    "external-operator": ("--set", "webhook.externalUrl=https://127.0.0.1:9443",
                          "--set", "webhook.caBundle=Q0E="),
}


@pytest.mark.parametrize("variant", LINT_VARIANTS)
def test_helm_lint_reports_no_warning_or_error(bins: Binaries, variant: str) -> None:
    result = helm(bins, "lint", str(CHART), "--strict", "--set", "providerKey.secretName=k",
                  *LINT_VARIANTS[variant])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    findings = [line for line in result.stdout.splitlines() if line.startswith(("[WARNING]", "[ERROR]"))]
    assert findings == []


def test_default_render_has_the_operator_and_its_admission_wiring(bins: Binaries) -> None:
    out = render(bins)
    assert sorted(set(out.kinds())) == sorted({
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "MutatingWebhookConfiguration",
        "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount",
        "ValidatingWebhookConfiguration"})
    deployment = out.one("Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["metadata"]["labels"]["skillwarden.io/inject"] == "false"
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    assert spec["securityContext"]["runAsNonRoot"] is True
    container = spec["containers"][0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "privileged": False, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert out.one("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    services = [d for d in out.documents if d["kind"] == "Service"]
    ports = {p["port"]: p["targetPort"] for s in services for p in s["spec"]["ports"]}
    assert ports[443] == "webhook" and ports[80] == "http" and ports[8080] == "http"


def test_pod_webhook_only_sees_opted_in_pods_outside_system_namespaces(bins: Binaries) -> None:
    out = render(bins, "--set", "webhook.pods.excludeNamespaces={legacy}",
                 "--set", "webhook.pods.timeoutSeconds=3",
                 "--set", "webhook.pods.failurePolicy=Ignore", namespace="platform")
    mutating = out.one("MutatingWebhookConfiguration")
    pods = next(w for w in mutating["webhooks"] if w["rules"][0]["resources"] == ["pods"])
    assert pods["objectSelector"] == {"matchLabels": {"skillwarden.io/inject": "true"}}
    expr = pods["namespaceSelector"]["matchExpressions"][0]
    assert expr["key"] == "kubernetes.io/metadata.name" and expr["operator"] == "NotIn"
    assert set(expr["values"]) == {"kube-system", "kube-public", "kube-node-lease", "platform", "legacy"}
    assert (pods["sideEffects"], pods["admissionReviewVersions"], pods["timeoutSeconds"],
            pods["failurePolicy"], pods["reinvocationPolicy"]) == ("None", ["v1"], 3, "Ignore", "IfNeeded")
    assert pods["clientConfig"]["service"] == {"name": "skw-skillwarden-webhook", "namespace": "platform",
                                               "path": "/skillwarden-inject", "port": 443}
    validating = out.one("ValidatingWebhookConfiguration")
    every = mutating["webhooks"] + validating["webhooks"]
    # kopf serves one handler per path: no two entries share one.
    paths = [w["clientConfig"]["service"]["path"] for w in every]
    assert len(paths) == len(set(paths)) == 6
    assert all("url" not in w["clientConfig"] and "caBundle" not in w["clientConfig"] for w in every)


def test_crds_come_from_the_single_source_in_crds(bins: Binaries, tmp_path: Path) -> None:
    sources = sorted((REPO / "crds").glob("*.yaml"))
    assert {p.name for p in sources} >= {"skillpolicy.yaml", "skillapproval.yaml"}
    assert (CHART / "crds").is_symlink() and (CHART / "crds").resolve() == (REPO / "crds").resolve()
    rendered = render(bins, "--include-crds")
    crds = [d for d in rendered.documents if d["kind"] == "CustomResourceDefinition"]
    assert sorted(crds, key=lambda d: d["metadata"]["name"]) == sorted(
        (yaml.safe_load(p.read_text()) for p in sources), key=lambda d: d["metadata"]["name"])
    # A packaged chart carries real files, byte-identical to the source.
    packaged = helm(bins, "package", str(CHART), "--destination", str(tmp_path))
    assert packaged.returncode == 0, packaged.stderr
    archive = next(tmp_path.glob("skillwarden-*.tgz"))
    with tarfile.open(archive) as tar:
        for source in sources:
            member = tar.getmember(f"skillwarden/crds/{source.name}")
            assert member.isfile()
            extracted = tar.extractfile(member)
            assert extracted is not None and extracted.read() == source.read_bytes()
        schema = tar.extractfile("skillwarden/values.schema.json")
        assert schema is not None and schema.read() == (CHART / "values.schema.json").read_bytes()


def test_monitoring_objects_render_only_when_enabled_and_the_cluster_serves_them(bins: Binaries) -> None:
    on = ("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true")
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & set(render(bins, *on).kinds())
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & set(
        render(bins, "--api-versions", "monitoring.coreos.com/v1").kinds())
    out = render(bins, *on, "--api-versions", "monitoring.coreos.com/v1")
    rule = out.one("PrometheusRule")
    alerts_file = yaml.safe_load((CHART / "dashboards" / "skillwarden-alerts.yaml").read_text())
    assert rule["spec"] == alerts_file
    assert out.one("PodMonitor")["spec"]["selector"] == {"matchLabels": {"skillwarden.io/inject": "true"}}


def test_dashboard_configmap_label_is_configurable(bins: Binaries) -> None:
    default = render(bins).one("ConfigMap", "-dashboard")
    assert default["metadata"]["labels"]["grafana_dashboard"] == "1"
    custom = render(bins, "--set", "grafana.dashboard.label=dashboards.example.com/load",
                    "--set", "grafana.dashboard.labelValue=yes",
                    "--set", "grafana.dashboard.namespace=monitoring")
    configmap = custom.one("ConfigMap", "-dashboard")
    assert configmap["metadata"]["labels"]["dashboards.example.com/load"] == "yes"
    assert "grafana_dashboard" not in configmap["metadata"]["labels"]
    assert configmap["metadata"]["namespace"] == "monitoring"
    dashboard_json = (CHART / "dashboards" / "skillwarden.json").read_text()
    assert configmap["data"]["skillwarden.json"] == dashboard_json.rstrip("\n")


def test_cert_manager_mode_renders_certificate_and_ca_injection(bins: Binaries) -> None:
    out = render(bins, "--set", "certificates.mode=cert-manager",
                 "--set", "certificates.certManager.issuerRef.name=corp-ca",
                 "--set", "certificates.certManager.issuerRef.kind=ClusterIssuer")
    certificate = out.one("Certificate")
    assert certificate["spec"]["issuerRef"] == {
        "name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert "skw-skillwarden-webhook.skillwarden.svc" in certificate["spec"]["dnsNames"]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        assert out.one(kind)["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": "skillwarden/skw-skillwarden-webhook"}
    # cert-manager owns the Secret: the operator gets no Secret or webhook-configuration rights.
    assert "Role" not in out.kinds()
    rules = out.one("ClusterRole", "-operator")["rules"]
    assert not [r for r in rules if "admissionregistration.k8s.io" in r["apiGroups"]]


_KEY = ("--set", "providerKey.secretName=k")
BAD_VALUES: list[tuple[tuple[str, ...], str]] = [
    ((), "providerKey.secretName is required"),
    ((*_KEY, "--set", "certificates.mode=self-signed-per-pod", "--set", "webhook.managed=true"),
     "set certificates.mode=secret"),
    ((*_KEY, "--set", "certificates.mode=self-signed-per-pod", "--set", "operator.replicas=1",
      "--set", "operator.podDisruptionBudget.enabled=false"), "needs webhook.managed=true"),
    ((*_KEY, "--set", "certificates.mode=cert-manager"), "set certificates.certManager.issuerRef.name"),
    ((*_KEY, "--set", "certificates.mode=cert-manager", "--set", "certificates.certManager.issuerRef.name=x",
      "--set", "certificates.certManager.createSelfSignedIssuer=true"), "keep one"),
    ((*_KEY, "--set", "certificates.mode=cert-manager", "--set", "certificates.certManager.issuerRef.name=x",
      "--set", "webhook.managed=true"), "use webhook.managed=false"),
    ((*_KEY, "--set", "operator.replicas=1"), "blocks every node drain"),
    ((*_KEY, "--set", "webhook.managed=true"),
     "set certificates.mode=self-signed-per-pod with operator.replicas=1"),
    ((*_KEY, "--set", "opa.pollMinSeconds=60"), "opa.pollMinSeconds=60 is above opa.pollMaxSeconds=15"),
    ((*_KEY, "--set", "operator.ports.http=9443"), "need their own ports"),
    ((*_KEY, "--set", "sidecar.metricsPort=8790"), "sidecar.port and sidecar.metricsPort must differ"),
    ((*_KEY, "--set", "certificates.rotateBeforeDays=400"), "must be below certificates.validityDays"),
    ((*_KEY, "--set", "webhook.pods.timeoutSeconds=60"), "/webhook/pods/timeoutSeconds"),
    ((*_KEY, "--set", "webhook.pods.failurePolicy=fail"), "/webhook/pods/failurePolicy"),
    ((*_KEY, "--set", "certificates.mode=self-signed"), "/certificates/mode"),
    ((*_KEY, "--set", "operator.replica=3"), "additional properties 'replica' not allowed"),
    ((*_KEY, "--set", "operator.serviceAccount.create=false"),
     "operator.serviceAccount.name must name an existing ServiceAccount"),
    ((*_KEY, "--set", "webhook.externalUrl=http://127.0.0.1:9443"), "/webhook/externalUrl"),
]


@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=[f"bad{i}" for i in range(len(BAD_VALUES))])
def test_contradictory_or_invalid_values_fail_with_what_to_fix(
        bins: Binaries, args: tuple[str, ...], message: str) -> None:
    out: Rendered = render(bins, *args, base=())
    assert out.returncode != 0, f"rendered despite {args}"
    assert message in out.stderr, out.stderr


def test_missing_provider_key_is_fine_when_injection_is_off(bins: Binaries) -> None:
    out = render(bins, "--set", "webhook.pods.enabled=false", base=())
    webhooks = out.one("MutatingWebhookConfiguration")["webhooks"]
    assert all(w["rules"][0]["resources"] != ["pods"] for w in webhooks)


def test_hard_anti_affinity_and_existing_service_account(bins: Binaries) -> None:
    out = render(bins, "--set", "operator.antiAffinity=hard", "--set", "operator.replicas=3",
                 "--set", "operator.serviceAccount.create=false", "--set", "operator.serviceAccount.name=ops")
    spec = out.one("Deployment")["spec"]
    assert spec["replicas"] == 3
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    required = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required[0]["topologyKey"] == "kubernetes.io/hostname"
    assert spec["template"]["spec"]["serviceAccountName"] == "ops"
    assert "ServiceAccount" not in out.kinds()
    binding = out.one("ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ops", "namespace": "skillwarden"}]


def test_devstack_render_takes_values_as_a_dict_and_raises_helms_message(bins: Binaries) -> None:
    manifest = chart.render(bins, "demo", "skillwarden", {
        "providerKey": {"secretName": "anthropic-api-key"},
        "webhook": {"externalUrl": "https://127.0.0.1:9443", "caBundle": "Q0E="}})
    docs = chart.documents(manifest)
    assert {d["kind"] for d in docs} >= {"CustomResourceDefinition", "Deployment"}
    hook = next(d for d in docs if d["kind"] == "ValidatingWebhookConfiguration")
    assert hook["webhooks"][0]["clientConfig"] == {"url": "https://127.0.0.1:9443/validate-skillpolicy",
                                                   "caBundle": "Q0E="}
    with pytest.raises(StackError, match=r"providerKey\.secretName is required"):
        chart.render(bins, "demo", "skillwarden", {})
