"""Golden files of the injection for the pod shapes users actually create, each with an idempotency
pass (Istio's inject_test.go pattern). Regenerate after an intended change with
`SKILLWARDEN_UPDATE_GOLDEN=1 pytest tests/unit/injection/test_injection_golden.py` and review the diff.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from skillwarden_operator import injection as inj

GOLDEN = Path(__file__).parent / "golden"
OPT_IN = {"labels": {"skillwarden.io/inject": "true", "app": "report"},
          "annotations": {"skillwarden.io/inject": "true"}}
SETTINGS = inj.InjectionSettings(bundle_service_url="http://skillwarden-operator.skillwarden-system.svc:8080")


def _pod(spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    meta = copy.deepcopy(OPT_IN)
    for key, value in metadata.items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "report", **meta},
            "spec": {"serviceAccountName": "report-bot", **spec}}


APP = {"name": "app", "image": "example/report:1", "ports": [{"containerPort": 8080}]}

CASES: dict[str, tuple[dict[str, Any], inj.InjectionSettings]] = {
    # Smallest opted-in pod: no env, no volumes, no volumeMounts, no annotations besides ours.
    "minimal": (_pod({"containers": [APP]}), SETTINGS),
    # No serviceAccountName (the ServiceAccount admission plugin is off, as in the dev stack):
    # no projected token, which the API server would refuse without one.
    "no-service-account": ({"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": "bare", **copy.deepcopy(OPT_IN)},
                            "spec": {"containers": [APP]}}, SETTINGS),
    # A Deployment's pod: generateName, ownerReferences, no name and no namespace in the object.
    "deployment-pod-without-namespace": ({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "report-7f9c5d-", **copy.deepcopy(OPT_IN),
                     "ownerReferences": [{
                         "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "report-7f9c5d",
                         "uid": "0b7c1a9e-1111-2222-3333-444455556666", "controller": True}]},
        "spec": {"serviceAccountName": "report-bot", "containers": [APP]}}, SETTINGS),
    "init-containers": (_pod({"initContainers": [{"name": "migrate", "image": "example/migrate:1"}],
                              "containers": [APP]}), SETTINGS),
    # The user already points ANTHROPIC_BASE_URL somewhere: kept; other env untouched and in order.
    "existing-env": (_pod({"containers": [{**APP, "env": [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:8790/custom"}]},
        {"name": "worker", "image": "example/worker:1", "env": [{"name": "QUEUE", "value": "jobs"}]}]}),
        SETTINGS),
    "existing-volumes": (_pod({
        "containers": [{**APP, "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "emptyDir": {}},
                    {"name": "app-config", "configMap": {"name": "report"}}]}),
        SETTINGS),
    "multiple-app-containers": (_pod({"containers": [
        APP, {"name": "worker", "image": "example/worker:1"},
        {"name": "cron", "image": "example/cron:1", "env": []}]}), SETTINGS),
    # Native sidecars into a pod that has no initContainers: the whole array is added.
    "native-sidecar": (_pod({"containers": [APP]}, annotations={"skillwarden.io/native-sidecar": "true"}),
                       SETTINGS),
    # Native sidecars go before the user's init containers, which then get ANTHROPIC_BASE_URL too.
    "native-sidecar-with-init-containers": (_pod(
        {"initContainers": [{"name": "warmup", "image": "example/warmup:1"}], "containers": [APP]}),
        inj.InjectionSettings(native_sidecar=True)),
    "annotation-overrides": (_pod({"containers": [APP]}, annotations={
        "skillwarden.io/sidecar-cpu": "250m", "skillwarden.io/sidecar-memory": "512Mi",
        "skillwarden.io/sidecar-cpu-limit": "1", "skillwarden.io/opa-cpu": "20m",
        "skillwarden.io/opa-memory": "96Mi", "skillwarden.io/port": "18790",
        "skillwarden.io/spool-size": "4Gi", "skillwarden.io/provider-key-secret": "team-claude-key"}),
        SETTINGS),
    # recording.spool.medium: Memory (tmpfs spool): the sidecar's memory limit covers the spool
    # plus 128Mi, and the recorder's admission bound is 40% of the sizeLimit.
    "memory-spool": (_pod({"containers": [APP]}),
                     inj.InjectionSettings(spool_medium="Memory", spool_size="256Mi",
                                           sidecar_resources=inj.Resources("100m", "128Mi", "512Mi"))),
    # A real cluster's ServiceAccount admission already mounted the API token into the app: the
    # sidecar gets the same mount (approvals, JWKS) and service-account tokens are verified.
    "service-account-mount-and-issuers": (_pod({"containers": [{**APP, "volumeMounts": [
        {"name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
         "readOnly": True}]}], "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"sources": [
             {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}]}),
        inj.InjectionSettings(sa_issuer="https://kubernetes.default.svc",
                              s3_credentials_secret="skillwarden-s3",
                              s3_endpoint="https://s3.eu-central-1.amazonaws.com", s3_region="eu-central-1",
                              records_prefix="finance/", signing_key_secret="skillwarden-signing",
                              image_pull_secrets=("registry",),
                              oidc_issuer="https://login.example.com", oidc_audience="skillwarden")),
}

NAMESPACE = "finance"


def _golden(name: str, document: dict[str, Any]) -> dict[str, Any]:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    if os.environ.get("SKILLWARDEN_UPDATE_GOLDEN"):
        path.write_text(text)
    expected: dict[str, Any] = json.loads(path.read_text())
    return expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_and_idempotent(name: str) -> None:
    pod, settings = CASES[name]
    received = copy.deepcopy(pod)
    outcome = inj.plan(pod, NAMESPACE, settings)
    assert pod == received, "plan() must not modify its input"
    assert outcome.action == "inject"
    assert {"patch": outcome.patch, "pod": outcome.pod} == _golden(name, {"patch": outcome.patch,
                                                                          "pod": outcome.pod})

    # The patch, applied to the pod as the API server has it, gives exactly the injected pod.
    assert jsonpatch.apply_patch(received, outcome.patch) == outcome.pod

    # Second pass (reinvocation, or an injected pod re-submitted): nothing changes.
    again = inj.plan(outcome.pod, NAMESPACE, settings)
    assert again.action == "unchanged" and again.patch == [] and again.pod == outcome.pod


@pytest.mark.parametrize("name", sorted(CASES))
def test_injected_shape_invariants(name: str) -> None:
    pod, settings = CASES[name]
    out = inj.plan(pod, NAMESPACE, settings).pod
    spec = out["spec"]
    native = name.startswith("native")
    owned = spec["initContainers"][:2] if native else spec["containers"][-2:]
    assert [c["name"] for c in owned] == (["opa", "skillwarden"] if native else ["skillwarden", "opa"])
    for container in owned:
        security = container["securityContext"]
        assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert (container.get("restartPolicy") == "Always") is native
    opa = next(c for c in owned if c["name"] == "opa")
    assert f"--set=bundles.skillwarden.resource=bundles/{NAMESPACE}.tar.gz" in opa["args"]
    assert "--addr=127.0.0.1:8181" in opa["args"]
    assert opa["readinessProbe"]["httpGet"]["path"] == "/health?bundles"
    # The provider key reaches the sidecar only.
    key_volume = next(v for v in spec["volumes"] if v["name"] == inj.VOLUME_PROVIDER_KEY)
    users = [c["name"] for c in spec.get("initContainers", []) + spec["containers"]
             if any(m["name"] == inj.VOLUME_PROVIDER_KEY for m in c.get("volumeMounts", []))]
    assert users == ["skillwarden"] and key_volume["secret"]["secretName"]
    spool = next(v for v in spec["volumes"] if v["name"] == inj.VOLUME_SPOOL)
    assert spool["emptyDir"]["sizeLimit"]
    # Every app container can find the sidecar.
    for container in spec["containers"]:
        if container["name"] not in inj.OWNED_CONTAINERS:
            assert any(e["name"] == "ANTHROPIC_BASE_URL" for e in container["env"])
    status = json.loads(out["metadata"]["annotations"][inj.STATUS_KEY])
    assert status["version"] == inj.INJECTOR_VERSION and status["containers"] == ["skillwarden", "opa"]


def test_user_base_url_is_never_overwritten() -> None:
    pod, settings = CASES["existing-env"]
    out = inj.plan(pod, NAMESPACE, settings).pod
    app, worker = out["spec"]["containers"][:2]
    assert app["env"] == pod["spec"]["containers"][0]["env"]
    assert worker["env"][-1] == {"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:8790"}
    assert json.loads(out["metadata"]["annotations"][inj.STATUS_KEY])["env"] == ["worker"]


def test_patch_adds_absent_arrays_whole_and_escapes_slashes() -> None:
    pod, settings = CASES["native-sidecar"]
    patch = inj.plan(pod, NAMESPACE, settings).patch
    paths = {op["path"]: op for op in patch}
    assert paths["/spec/initContainers"]["op"] == "add"
    assert [c["name"] for c in paths["/spec/initContainers"]["value"]] == ["opa", "skillwarden"]
    assert paths["/spec/volumes"]["op"] == "add" and len(paths["/spec/volumes"]["value"]) == 4
    assert "/metadata/annotations/skillwarden.io~1injected" in paths
    assert inj.escape_pointer("skillwarden.io/injected") == "skillwarden.io~1injected"
    bare = {"metadata": {"name": "p", "labels": {"skillwarden.io/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]}}
    added = {op["path"]: op for op in inj.plan(bare, NAMESPACE, settings).patch}
    assert added["/metadata/annotations"]["op"] == "add"  # no annotations map at all: added whole
