"""The chart's injection document (templates/configmap.yaml, read by the operator through
SKILLWARDEN_INJECTION_CONFIG) is what `injection.load_settings` understands: rendered by the real
`helm template`, loaded, and used to inject a pod."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from skillwarden_devstack import tools
from skillwarden_operator import injection

CHART = Path(__file__).parents[3] / "charts" / "skillwarden"


def rendered_document(*sets: str) -> dict[str, Any]:
    helm = tools.ensure_all().helm
    args = [str(helm), "template", "rel", str(CHART), "-n", "skillwarden-system", "--kube-version", "1.34.0"]
    for value in sets:
        args += ["--set", value]
    output = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    for document in yaml.safe_load_all(output):
        if (
            document
            and document.get("kind") == "ConfigMap"
            and document["metadata"]["name"].endswith("-injection")
        ):
            loaded: dict[str, Any] = json.loads(document["data"]["injection.json"])
            return loaded
    raise AssertionError("no injection ConfigMap rendered")


def test_chart_values_reach_the_injected_pod(tmp_path: Path) -> None:
    document = rendered_document(
        "providerKey.secretName=claude-key",
        "sidecar.port=18790",
        "sidecar.resources.requests.memory=200Mi",
        "recording.s3.endpoint=https://s3.example.com",
        "recording.s3.credentialsSecret=s3-creds",
        "recording.s3.prefix=team-a/",
        "recording.signingKeySecret=record-signing",
        "sidecar.oidc.issuer=https://login.example.com",
        "sidecar.oidc.audience=skillwarden",
    )
    path = tmp_path / "injection.json"
    path.write_text(json.dumps(document))
    settings = injection.load_settings(
        {
            injection.CONFIG_FILE_ENV: str(path),
            "SKILLWARDEN_INJECT_SIDECAR_IMAGE": "registry.local/skillwarden:dev",
        }
    )
    assert settings.bundle_service_url == "http://rel-skillwarden-bundles.skillwarden-system.svc:80"
    assert settings.sidecar_image == "registry.local/skillwarden:dev"  # env overrides the document
    pod = {
        "metadata": {"name": "p", "labels": {"skillwarden.io/inject": "true"}},
        "spec": {"serviceAccountName": "bot", "containers": [{"name": "app", "image": "x"}]},
    }
    out = injection.plan(pod, "finance", settings).pod
    spec = out["spec"]
    native = document["sidecar"]["nativeSidecar"]
    injected = {c["name"]: c for c in (spec.get("initContainers") or []) + spec["containers"]}
    assert ("restartPolicy" in injected["skillwarden"]) is native
    sidecar, opa = injected["skillwarden"], injected["opa"]
    assert "--port=18790" in sidecar["args"] and "--oidc-issuer=https://login.example.com" in sidecar["args"]
    assert sidecar["resources"]["requests"]["memory"] == "200Mi"
    assert sidecar["resources"]["limits"]["memory"] == document["sidecar"]["resources"]["limits"]["memory"]
    assert sidecar["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert (
        env["AWS_ENDPOINT_URL_S3"] == "https://s3.example.com"
        and env["SKILLWARDEN_RECORDS_PREFIX"] == "team-a/"
    )
    assert "SKILLWARDEN_RECORDS_SIGNING_KEY_FILE" in env
    assert (
        f"--set=bundles.skillwarden.polling.min_delay_seconds={document['opa']['pollMinSeconds']}"
        in opa["args"]
    )
    assert opa["image"] == document["opa"]["image"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["skillwarden-provider-key"]["secret"]["secretName"] == "claude-key"
    assert volumes["skillwarden-signing-key"]["secret"]["secretName"] == "record-signing"
    assert spec["containers"][0]["env"] == [{"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:18790"}]
    assert [p["name"] for p in sidecar["ports"]] == [document.get("metricsPortName", "skw-metrics")]


def test_memory_spool_values_reach_the_injected_pod(tmp_path: Path) -> None:
    document = rendered_document(
        "providerKey.secretName=claude-key",
        "recording.spool.medium=Memory",
        "recording.spool.sizeLimit=256Mi",
        "sidecar.resources.limits.memory=384Mi",
    )
    assert document["recording"]["spool"] == {"medium": "Memory", "sizeLimit": "256Mi"}
    path = tmp_path / "injection.json"
    path.write_text(json.dumps(document))
    settings = injection.load_settings({injection.CONFIG_FILE_ENV: str(path)})
    assert settings.spool_medium == "Memory"
    pod = {
        "metadata": {"name": "p", "labels": {"skillwarden.io/inject": "true"}},
        "spec": {"serviceAccountName": "bot", "containers": [{"name": "app", "image": "x"}]},
    }
    spec = injection.plan(pod, "finance", settings).pod["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["skillwarden-spool"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "256Mi"}
    injected = {c["name"]: c for c in (spec.get("initContainers") or []) + spec["containers"]}
    sidecar = injected["skillwarden"]
    assert sidecar["resources"]["limits"]["memory"] == "384Mi"
    assert f"--records-spool-max-bytes={int(256 * 2**20 * 0.4)}" in sidecar["args"]

    # The default (disk) render keeps the spool without a medium.
    default = rendered_document("providerKey.secretName=claude-key")
    path.write_text(json.dumps(default))
    disk = injection.plan(pod, "finance", injection.load_settings({injection.CONFIG_FILE_ENV: str(path)})).pod
    disk_spool = {v["name"]: v for v in disk["spec"]["volumes"]}["skillwarden-spool"]
    assert disk_spool["emptyDir"] == {"sizeLimit": "1Gi"}


def _refused(command: str, *sets: str) -> str:
    helm = tools.ensure_all().helm
    args = [str(helm), *command.split(), str(CHART)]
    if command == "template":
        args += ["--kube-version", "1.34.0"]
    for value in sets:
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, f"helm {command} accepted {sets}"
    return result.stdout + result.stderr


def test_bad_spool_medium_values_are_refused_by_the_chart() -> None:
    key = "providerKey.secretName=k"
    for command in ("lint --strict", "template"):  # the schema
        assert "/recording/spool/medium': value must be one of '', 'Memory'" in _refused(
            command, key, "recording.spool.medium=memory")
    # Cross-field (templates/_validate.tpl; `helm lint` does not execute `fail`, install/template do).
    # Memory with the default 1Gi spool and 256Mi sidecar limit: the sidecar would be OOM-killed.
    assert "sidecar.resources.limits.memory=256Mi must be at least recording.spool.sizeLimit (1Gi) + 128Mi" \
        in _refused("template", key, "recording.spool.medium=Memory")
    assert "= 384Mi" in _refused("template", key, "recording.spool.medium=Memory",
                                 "recording.spool.sizeLimit=0.25Gi", "sidecar.resources.limits.memory=383Mi")


def test_a_broken_document_stops_start_up_with_the_variable_named(tmp_path: Path) -> None:
    path = tmp_path / "injection.json"
    path.write_text(json.dumps({"sidecar": {"port": "http", "resources": {}}}))
    try:
        injection.load_settings({injection.CONFIG_FILE_ENV: str(path)})
    except injection.SettingsError as error:
        assert injection.CONFIG_FILE_ENV in str(error) and "sidecar.port: must be a port number" in str(error)
    else:
        raise AssertionError("a non-numeric port was accepted")
