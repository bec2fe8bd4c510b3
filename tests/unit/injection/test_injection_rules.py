"""Who is injected, who is skipped (with which reason) and what is denied (with which message)."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from skillwarden_operator import injection as inj

SETTINGS = inj.InjectionSettings()


def pod(annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
        **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "annotations": annotations or {}, "labels": labels or {}},
            "spec": {"containers": [{"name": "app", "image": "example/app:1"}], **spec}}


OPTED_IN = {"skillwarden.io/inject": "true"}


@pytest.mark.parametrize(("annotations", "labels", "namespace", "reason"), [
    ({}, {}, "finance", "not-opted-in"),
    ({"skillwarden.io/inject": "false"}, {"skillwarden.io/inject": "true"}, "finance", "opted-out"),
    ({"skillwarden.io/inject": "true"}, {"skillwarden.io/inject": "false"}, "finance", "opted-out"),
    ({"skillwarden.io/inject": "FALSE"}, {}, "finance", "opted-out"),
    (OPTED_IN, OPTED_IN, "kube-system", "excluded-namespace"),
    (OPTED_IN, OPTED_IN, "kube-node-lease", "excluded-namespace"),
    (OPTED_IN, {**OPTED_IN, "app.kubernetes.io/name": "skillwarden-operator"}, "skillwarden-system",
     "operator-pod"),
    # Even garbage in the opt-in annotation cannot get a system pod denied: it is not ours to judge.
    ({"skillwarden.io/inject": "maybe", "skillwarden.io/record": "false"}, {}, "kube-system",
     "excluded-namespace"),
])
def test_skips_leave_the_pod_untouched(annotations: dict[str, str], labels: dict[str, str], namespace: str,
                                       reason: str) -> None:
    original = pod(annotations, labels)
    outcome = inj.plan(original, namespace, SETTINGS)
    assert (outcome.action, outcome.reason) == ("skip", reason)
    assert outcome.pod == original and outcome.patch == []


@pytest.mark.parametrize("source", ["annotations", "labels"])
def test_label_or_annotation_alone_opts_in(source: str) -> None:
    outcome = inj.plan(pod(**{source: OPTED_IN}), "finance", SETTINGS)  # type: ignore[arg-type]
    assert outcome.action == "inject"


@pytest.mark.parametrize(("annotations", "spec", "message"), [
    ({"skillwarden.io/inject": "yes"}, {}, 'is not "true" or "false"'),
    ({"skillwarden.io/sidecar-cpu": "lots"}, {},
     "skillwarden.io/sidecar-cpu: 'lots' is not a Kubernetes quantity"),
    ({"skillwarden.io/sidecar-memory": "0"}, {}, "must be greater than zero"),
    ({"skillwarden.io/sidecar-memory": "1Ki"}, {}, "below the 16Mi"),
    ({"skillwarden.io/sidecar-cpu": "500m", "skillwarden.io/sidecar-cpu-limit": "200m"}, {},
     "below the CPU request"),
    ({"skillwarden.io/opa-memory": "64Mi; rm -rf /"}, {}, "not a Kubernetes quantity"),
    ({"skillwarden.io/port": "80"}, {}, "1024-65535"),
    ({"skillwarden.io/port": "8181"}, {}, "collides with a port the injected containers use"),
    ({"skillwarden.io/native-sidecar": "sometimes"}, {}, 'must be "true" or "false"'),
    ({"skillwarden.io/spool-medium": "memory"}, {},
     "skillwarden.io/spool-medium: 'memory' is not a spool medium"),
    ({"skillwarden.io/spool-medium": "HugePages-2Mi"}, {}, "is not a spool medium"),
    # A pod cannot weaken its records' durability: the memory spool is the platform's choice.
    ({"skillwarden.io/spool-medium": "Memory"}, {}, "only the platform setting"),
    ({"skillwarden.io/provider-key-secret": "Bad_Name"}, {}, "is not a valid Secret name"),
    ({"skillwarden.io/record": "false"}, {}, "recording and masking cannot be changed per pod"),
    ({"skillwarden.io/disable-recording": "true"}, {}, "recording and masking cannot be changed per pod"),
    ({"skillwarden.io/masking": "off"}, {}, "recording and masking cannot be changed per pod"),
    ({"skillwarden.io/sidecar-image": "evil/proxy"}, {}, "unknown annotation skillwarden.io/sidecar-image"),
    ({"skillwarden.io/sidecar-cpu": "1" * 300}, {}, "longer than 253"),
    ({}, {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 8790}]}]},
     "port conflict: container 'app' (containers) declares port 8790, which the injected sidecar proxy"),
    ({}, {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 9091}]}]},
     "sidecar admin listens on"),
    ({}, {"containers": [{"name": "opa", "image": "openpolicyagent/opa"}]}, "name 'opa' is reserved"),
    ({}, {"volumes": [{"name": "skillwarden-spool", "emptyDir": {}}]},
     "volume name 'skillwarden-spool' is reserved"),
    ({}, {"hostNetwork": True}, "spec.hostNetwork: true would put the sidecar's 127.0.0.1 listener"),
    ({}, {"containers": []}, "the pod has no containers"),
    ({}, {"containers": "app"}, "spec.containers must be a list of containers with names"),
    ({}, {"containers": [{"image": "x"}]}, "spec.containers must be a list of containers with names"),
])
def test_invalid_requests_are_denied_with_a_clear_message(annotations: dict[str, str], spec: dict[str, Any],
                                                          message: str) -> None:
    with pytest.raises(inj.InjectionDenied) as denied:
        inj.plan(pod({**OPTED_IN, **annotations}, **spec), "finance", SETTINGS)
    assert message in str(denied.value)


def test_port_annotation_moves_the_sidecar_and_the_base_url() -> None:
    spec = {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 8790}]}]}
    out = inj.plan(pod({**OPTED_IN, "skillwarden.io/port": "18790"}, **spec), "finance", SETTINGS).pod
    sidecar = next(c for c in out["spec"]["containers"] if c["name"] == "skillwarden")
    assert "--port=18790" in sidecar["args"]
    assert out["spec"]["containers"][0]["env"] == [{"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:18790"}]


KEY = SETTINGS.provider_key_secret


@pytest.mark.parametrize(("container", "volumes", "route"), [
    ({"env": [{"name": "ANTHROPIC_API_KEY", "valueFrom": {"secretKeyRef": {"name": KEY, "key": "api-key"}}}]},
     [], "into env 'ANTHROPIC_API_KEY'"),
    ({"envFrom": [{"secretRef": {"name": KEY}}]}, [], "with envFrom"),
    ({"volumeMounts": [{"name": "k", "mountPath": "/k"}]}, [{"name": "k", "secret": {"secretName": KEY}}],
     "volume 'k' mounts the provider-key Secret"),
    ({"volumeMounts": [{"name": "k", "mountPath": "/k"}]},
     [{"name": "k", "projected": {"sources": [{"secret": {"name": KEY}}]}}],
     "volume 'k' mounts the provider-key"),
    ({"volumeMounts": [{"name": "skillwarden-provider-key", "mountPath": "/k"}]}, [],
     "mounts 'skillwarden-provider-key', a volume owned by the injected sidecar"),
])
def test_app_containers_can_never_reach_the_provider_key(container: dict[str, Any], volumes: list[Any],
                                                         route: str) -> None:
    spec = {"containers": [{"name": "app", "image": "x", **container}], "volumes": volumes}
    with pytest.raises(inj.InjectionDenied) as denied:
        inj.plan(pod(OPTED_IN, **spec), "finance", SETTINGS)
    assert route in str(denied.value)


def test_provider_key_override_is_checked_too() -> None:
    spec = {"containers": [{"name": "app", "image": "x", "envFrom": [{"secretRef": {"name": "team-key"}}]}]}
    assert inj.plan(pod(OPTED_IN, **spec), "finance", SETTINGS).action == "inject"  # another Secret: fine
    with pytest.raises(inj.InjectionDenied):
        inj.plan(pod({**OPTED_IN, "skillwarden.io/provider-key-secret": "team-key"}, **spec), "finance",
                 SETTINGS)


def test_forged_status_annotation_gets_the_real_sidecar_not_the_fake() -> None:
    fake = {"name": "skillwarden", "image": "evil/passthrough", "env": [
        {"name": "RECORD", "value": "false"}]}
    forged = pod({**OPTED_IN, inj.STATUS_KEY: "{}"})
    forged["spec"]["containers"].append(fake)
    out = inj.plan(forged, "finance", SETTINGS)
    sidecars = [c for c in out.pod["spec"]["containers"] if c["name"] == "skillwarden"]
    assert len(sidecars) == 1 and sidecars[0]["image"] == SETTINGS.sidecar_image
    assert sidecars[0]["command"] == ["skillwarden", "sidecar"]
    assert inj.plan(out.pod, "finance", SETTINGS).patch == []


def test_reinvocation_after_another_webhook_added_a_container() -> None:
    injected = inj.plan(pod(OPTED_IN), "finance", SETTINGS).pod
    later = copy.deepcopy(injected)
    later["spec"]["containers"].insert(1, {"name": "log-shipper", "image": "example/ship:1"})
    again = inj.plan(later, "finance", SETTINGS)
    assert again.action == "inject"
    assert again.patch[0]["path"] == "/metadata/annotations/skillwarden.io~1injected"
    shipper = again.pod["spec"]["containers"][1]
    assert shipper["env"] == [{"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:8790"}]
    assert [c["name"] for c in again.pod["spec"]["containers"]].count("skillwarden") == 1
    assert json.loads(again.pod["metadata"]["annotations"][inj.STATUS_KEY])["env"] == ["app", "log-shipper"]
    assert inj.plan(again.pod, "finance", SETTINGS).patch == []


def test_namespace_comes_from_the_request_and_is_required() -> None:
    template = pod(OPTED_IN)
    template["metadata"].pop("name")
    template["metadata"]["generateName"] = "report-"
    out = inj.plan(template, "finance", SETTINGS).pod
    opa = next(c for c in out["spec"]["containers"] if c["name"] == "opa")
    assert "--set=bundles.skillwarden.resource=bundles/finance.tar.gz" in opa["args"]
    assert "namespace" not in out["metadata"]
    with pytest.raises(inj.InjectionDenied, match="namespace is unknown"):
        inj.plan(template, None, SETTINGS)


@pytest.mark.parametrize("bad", [
    [], "pod", {"spec": None}, {"metadata": "x", "spec": {"containers": [{"name": "a"}]}},
    {"metadata": {"annotations": {"skillwarden.io/inject": 1}}, "spec": {"containers": [{"name": "a"}]}},
    {"metadata": {"labels": ["x"]}, "spec": {"containers": [{"name": "a"}]}},
    {"spec": {"containers": [{"name": "a"}], "volumes": {"a": 1}}},
])
def test_malformed_objects_are_denied_not_crashed(bad: Any) -> None:
    with pytest.raises(inj.InjectionDenied):
        inj.plan(bad, "finance", SETTINGS)


def test_huge_pod_is_handled_quickly() -> None:
    env = [{"name": f"V{j}", "value": "x" * 100} for j in range(200)]
    containers = [{"name": f"c{i}", "image": "x", "env": env, "ports": [{"containerPort": 10000 + i}]}
                  for i in range(100)]
    big = pod(OPTED_IN, containers=containers,
              volumes=[{"name": f"v{i}", "emptyDir": {}} for i in range(500)])
    started = time.perf_counter()
    outcome = inj.plan(big, "finance", SETTINGS)
    again = inj.plan(outcome.pod, "finance", SETTINGS)
    elapsed = time.perf_counter() - started
    assert outcome.action == "inject" and again.patch == []
    assert elapsed < 2.0, f"two passes over a 20,000-env-var pod took {elapsed:.2f}s"


def test_settings_from_env_and_errors_name_the_variable() -> None:
    settings = inj.settings_from_env({
        "SKILLWARDEN_INJECT_SIDECAR_IMAGE": "registry.local/skillwarden:dev",
        "SKILLWARDEN_INJECT_NATIVE_SIDECAR": "true", "SKILLWARDEN_INJECT_SIDECAR_MEMORY": "300Mi",
        "SKILLWARDEN_INJECT_PORT": "18000", "SKILLWARDEN_INJECT_EXCLUDED_NAMESPACES": "kube-system, infra",
    })
    assert settings.sidecar_image == "registry.local/skillwarden:dev" and settings.native_sidecar
    assert settings.sidecar_resources.memory == "300Mi" and settings.sidecar_resources.cpu == "100m"
    assert settings.port == 18000 and settings.excluded_namespaces == {"kube-system", "infra"}
    for variable, value in [("SKILLWARDEN_INJECT_PORT", "http"), ("SKILLWARDEN_INJECT_NATIVE_SIDECAR", "1"),
                            ("SKILLWARDEN_INJECT_OPA_CPU", "-1"), ("SKILLWARDEN_INJECT_SPOOL_SIZE", "big")]:
        with pytest.raises(inj.SettingsError, match=variable):
            inj.settings_from_env({variable: value})


MEMORY_SPOOL = inj.InjectionSettings(spool_medium="Memory", spool_size="256Mi")


@pytest.mark.parametrize(("annotations", "message"), [
    # A 1Gi tmpfs spool in a 256Mi sidecar would get the sidecar OOM-killed.
    ({"skillwarden.io/spool-size": "1Gi"},
     "the sidecar's memory limit 256Mi does not cover the memory-backed spool (sizeLimit 1Gi + 128Mi"),
    ({"skillwarden.io/sidecar-memory": "300Mi"}, "raise skillwarden.io/sidecar-memory"),
])
def test_memory_spool_must_fit_the_sidecar_memory_limit(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(inj.InjectionDenied) as denied:
        inj.plan(pod({**OPTED_IN, **annotations}), "finance", MEMORY_SPOOL)
    assert message in str(denied.value)


def test_memory_spool_is_a_tmpfs_the_recorder_stops_filling_before_its_limit() -> None:
    annotations = {**OPTED_IN, "skillwarden.io/spool-medium": "Memory",
                   "skillwarden.io/sidecar-memory": "384Mi"}
    out = inj.plan(pod(annotations), "finance", MEMORY_SPOOL).pod
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes["skillwarden-spool"] == {"name": "skillwarden-spool",
                                            "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}
    sidecar = next(c for c in out["spec"]["containers"] if c["name"] == "skillwarden")
    assert sidecar["resources"]["limits"]["memory"] == "384Mi"
    bound = int(next(a for a in sidecar["args"] if a.startswith("--records-spool-max-bytes="))
                .split("=")[1])
    # Admission refuses past `bound`; in-flight appends stop at twice that (the recorder's hard
    # bound): both below the tmpfs size, and the spool plus 128Mi inside the memory limit.
    assert bound == int(256 * 2**20 * 0.4) and 2 * bound < 256 * 2**20
    # The disk spool keeps its shape (no `medium` key: the API server would drop `medium: ""`).
    disk = inj.plan(pod({**OPTED_IN, "skillwarden.io/spool-medium": "",
                         "skillwarden.io/sidecar-memory": "384Mi"}), "finance", MEMORY_SPOOL).pod
    disk_spool = {v["name"]: v for v in disk["spec"]["volumes"]}["skillwarden-spool"]
    assert disk_spool["emptyDir"] == {"sizeLimit": "256Mi"}  # a pod may always keep the disk


def test_spool_medium_setting_from_env_and_document() -> None:
    # 128Mi spool + 128Mi for the process = the default 256Mi sidecar limit.
    memory = {"SKILLWARDEN_INJECT_SPOOL_MEDIUM": "Memory", "SKILLWARDEN_INJECT_SPOOL_SIZE": "128Mi"}
    settings = inj.settings_from_env(memory)
    assert settings.spool_medium == "Memory"
    out = inj.plan(pod(OPTED_IN), "finance", settings).pod
    spool = {v["name"]: v for v in out["spec"]["volumes"]}["skillwarden-spool"]
    assert spool["emptyDir"] == {"medium": "Memory", "sizeLimit": "128Mi"}
    with pytest.raises(inj.SettingsError, match=r"SKILLWARDEN_INJECT_SPOOL_MEDIUM='tmpfs': 'tmpfs' is not a"):
        inj.settings_from_env({"SKILLWARDEN_INJECT_SPOOL_MEDIUM": "tmpfs"})
    # Memory with the default 1Gi spool and 256Mi sidecar limit stops start-up, naming what to change.
    with pytest.raises(inj.SettingsError, match=r"raise sidecar\.resources\.limits\.memory or lower"):
        inj.settings_from_env({"SKILLWARDEN_INJECT_SPOOL_MEDIUM": "Memory"})
    document = {"recording": {"spool": {"medium": "Memory", "sizeLimit": "64Mi"}},
                "sidecar": {"resources": {"limits": {"memory": "256Mi"}}}}
    assert inj.settings_from_document(document).spool_medium == "Memory"
    with pytest.raises(ValueError, match=r"recording\.spool\.medium: 'memory' is not a spool medium"):
        inj.settings_from_document({"recording": {"spool": {"medium": "memory"}}})


def test_every_documented_annotation_is_in_the_docs() -> None:
    from pathlib import Path
    docs = (Path(__file__).parents[3] / "docs" / "injection.md").read_text()
    for key in inj.ANNOTATIONS:
        assert f"`{key}`" in docs, key
    for variable in inj.ENV_SETTINGS:
        assert f"`{variable}`" in docs, variable


def _resolved_env(container: dict[str, Any], pod: dict[str, Any], namespace: str) -> dict[str, str]:
    """What the kubelet would give the container: values and downward-API field references."""
    fields = {"metadata.namespace": namespace, "metadata.name": pod["metadata"].get("name", "report-x1"),
              "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default")}
    resolved = {}
    for env in container.get("env", []):
        if "value" in env:
            resolved[env["name"]] = env["value"]
        else:
            resolved[env["name"]] = fields[env["valueFrom"]["fieldRef"]["fieldPath"]]
    return resolved


@pytest.mark.parametrize("settings", [
    SETTINGS,
    inj.InjectionSettings(sa_issuer="https://kubernetes.default.svc", oidc_issuer="https://login.example.com",
                          oidc_audience="skillwarden", oidc_jwks_url="https://login.example.com/jwks"),
])
def test_the_sidecar_accepts_the_injected_args_and_env(settings: inj.InjectionSettings,
                                                        tmp_path: Any) -> None:
    from skillwarden_cli.main import build_parser
    from skillwarden_sidecar import config

    spec = {"serviceAccountName": "report-bot", "containers": [{"name": "app", "image": "x", "volumeMounts": [
        {"name": "kube-api-access-1", "mountPath": inj.KUBE_SA_DIR, "readOnly": True}]}]}
    out = inj.plan(pod(OPTED_IN, **spec), "finance", settings).pod
    sidecar = next(c for c in out["spec"]["containers"] if c["name"] == "skillwarden")
    assert sidecar["command"][0] == "skillwarden"
    # The real `skillwarden` parser (with every hook's flags) must accept exactly these args.
    args = build_parser("sidecar").parse_args([*sidecar["command"][1:], *sidecar["args"]])
    key = tmp_path / "api-key"
    key.write_text("sk-ant-test\n")
    assert args.provider_key_file == "/var/run/secrets/skillwarden.io/provider/api-key"
    args.provider_key_file = str(key)  # the Secret mount, as the kubelet would provide it
    for name in ("jwks_ca_file", "jwks_token_file"):
        if getattr(args, name, None):
            path = tmp_path / name
            path.write_text("x")
            setattr(args, name, str(path))
    parsed = config.from_args(args, _resolved_env(sidecar, out, "finance"))
    assert parsed.namespace == "finance" and parsed.service_account == "report-bot"
    assert parsed.listen_host == "127.0.0.1" and parsed.port == 8790
    assert parsed.admin_port == settings.admin_port and parsed.opa_url == "http://127.0.0.1:8181"
    assert parsed.sa_audience == ("skillwarden",)
    assert parsed.oidc_issuer == settings.oidc_issuer
    assert args.records_spool_max_bytes == inj.spool_admission_bytes(settings.spool_size)
