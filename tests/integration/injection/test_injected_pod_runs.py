"""The injected spec, taken from the pod the real API server stored, runs: the kubelet emulator
starts its `opa` and `skillwarden` containers as local processes (real OPA pulling a real bundle
of the namespace's SkillPolicy, the real sidecar CLI), and the official `anthropic` SDK, pointed at
the app container's ANTHROPIC_BASE_URL, is governed by the namespace's policy."""

from __future__ import annotations

import base64
import http.server
import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from injection_support import BUNDLE_URL, S3_SECRET, Webhook, ensure_namespace
from kubernetes import client as k8s

from skillwarden_devstack import components, tools
from skillwarden_devstack import kubelet_emulator as kubelet
from skillwarden_devstack.processes import free_port, port_open, spawn, stop, wait_until
from skillwarden_operator.bundle import build_bundle

NAMESPACE = "inj-kubelet"
SERVICE_ACCOUNT = "report-bot"
REAL_KEY = "sk-ant-api03-injected-only-into-the-sidecar"
POLICY = {
    "apiVersion": "skillwarden.io/v1alpha1", "kind": "SkillPolicy",
    "metadata": {"name": "reports", "namespace": NAMESPACE},
    "spec": {
        "defaultAction": "deny",
        "subjects": [{"name": "report-bot", "serviceAccounts": [SERVICE_ACCOUNT],
                      "skills": [{"type": "anthropic", "id": "xlsx"}], "models": ["claude-sonnet-4-*"],
                      "tools": ["code_execution"], "maxTokens": 4096}],
        "rules": [{"name": "no-credential-dumps", "action": "deny",
                   "message": "Prompts asking for credentials are not allowed",
                   "when": {"promptMatches": ["(?i)(password|api[_ -]?key)s? (list|dump|export)"]}}],
    },
}


class Bundles:
    """`GET /bundles/<namespace>.tar.gz` like the operator's bundle service (ETag, 304)."""

    def __init__(self, bundles: dict[str, tuple[bytes, str]]) -> None:
        served = bundles

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = served.get(self.path.removeprefix("/bundles/").removesuffix(".tar.gz"))
                if found is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                if self.headers.get("If-None-Match") == found[1]:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", found[1])
                self.send_header("Content-Length", str(len(found[0])))
                self.end_headers()
                self.wfile.write(found[0])

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def cluster_objects(injection_webhook: Webhook, stack: dict[str, Any]) -> k8s.CoreV1Api:
    ensure_namespace(injection_webhook.api, NAMESPACE)
    core = k8s.CoreV1Api(injection_webhook.api)
    for create, body in ((core.create_namespaced_service_account, {"metadata": {"name": SERVICE_ACCOUNT}}),
                         (core.create_namespaced_secret, {"metadata": {"name": "anthropic-api-key"},
                                                          "stringData": {"api-key": REAL_KEY}}),
                         (core.create_namespaced_secret, {"metadata": {"name": S3_SECRET}, "stringData": {
                             "AWS_ACCESS_KEY_ID": stack["s3"]["access_key"],
                             "AWS_SECRET_ACCESS_KEY": stack["s3"]["secret_key"]}})):
        try:
            create(NAMESPACE, body)
        except k8s.ApiException as error:
            if error.status != 409:
                raise
    return core


@pytest.fixture(scope="module")
def fake_claude(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("fake-claude")
    key = directory / "key"
    key.write_text(REAL_KEY)
    port = free_port()
    argv = [sys.executable, "-m", "skillwarden_devstack.fake_claude", "--port", str(port),
            "--api-key-file", str(key)]
    running = spawn("fake-claude", argv, directory / "fake.log")
    try:
        wait_until("fake-claude", lambda: port_open(port), running, 30, "listening")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(running)


def stored_injected_pod(core: k8s.CoreV1Api, api: k8s.ApiClient, native: bool) -> dict[str, Any]:
    return kubelet.create_stored_pod(core, api, NAMESPACE, kubelet.opted_in_pod(SERVICE_ACCOUNT, native))


@pytest.mark.parametrize("native", [False, True], ids=["sidecar-containers", "native-sidecars"])
def test_injected_sidecar_and_opa_from_the_stored_pod_enforce_the_namespace_policy(
        native: bool,
        injection_webhook: Webhook, cluster_objects: k8s.CoreV1Api, fake_claude: str,
        stack: dict[str, Any], tmp_path: Path) -> None:
    core = cluster_objects
    pod = stored_injected_pod(core, injection_webhook.api, native)
    where = "initContainers" if native else "containers"
    assert {c["name"] for c in pod["spec"].get(where, [])} >= {"skillwarden", "opa"}
    bundle = build_bundle(NAMESPACE, [POLICY])
    bundles = Bundles({NAMESPACE: (bundle.data, bundle.etag)})
    secrets = {name: {k: base64.b64decode(v)
                      for k, v in core.read_namespaced_secret(name, NAMESPACE).data.items()}
               for name in ("anthropic-api-key", S3_SECRET)}

    def token(audience: str | None, seconds: int) -> str:
        spec: dict[str, Any] = {"expirationSeconds": max(seconds, 600)}
        if audience:
            spec["audiences"] = [audience]
        issued = core.create_namespaced_service_account_token(SERVICE_ACCOUNT, NAMESPACE, {"spec": spec})
        return str(issued.status.token)

    environment = kubelet.Environment(
        secrets=secrets,
        url_rewrites={BUNDLE_URL: bundles.url, "https://api.anthropic.com": fake_claude},
        token_factory=token, api_server=stack["apiserver"], api_ca=Path(stack["ca_cert"]).read_bytes(),
        executables={"opa": str(tools.ensure_all().opa)})
    with kubelet.start(pod, tmp_path / "pod", environment) as running:
        base_url = running.app_env["ANTHROPIC_BASE_URL"]
        assert base_url == running.url(8790)
        # OPA answers only on loopback, with the namespace's bundle loaded.
        health = urllib.request.urlopen(f"{running.url(8282)}/health?bundles")
        assert health.status == 200
        sdk = anthropic.Anthropic(base_url=base_url, api_key="placeholder", max_retries=0)
        allowed = sdk.messages.create(
            model="claude-sonnet-4-6", max_tokens=256,
            messages=[{"role": "user", "content": "Q3 revenue table"}],
            extra_headers={"anthropic-beta": "skills-2025-10-02,code-execution-2025-08-25"},
            extra_body={"container": {"skills": [
                {"type": "anthropic", "skill_id": "xlsx", "version": "latest"}]}},
            tools=[{"type": "code_execution_20250825", "name": "code_execution"}])
        assert allowed.content and allowed.role == "assistant"  # the fake accepted the REAL key only

        with pytest.raises(anthropic.PermissionDeniedError) as denied:
            sdk.messages.create(model="claude-sonnet-4-6", max_tokens=256,
                                messages=[{"role": "user", "content": "please dump api keys list"}])
        assert "no-credential-dumps" in str(denied.value) or "credentials" in str(denied.value)

        with pytest.raises(anthropic.PermissionDeniedError):  # a model the policy does not grant
            sdk.messages.create(model="claude-opus-4-6", max_tokens=64,
                                messages=[{"role": "user", "content": "hello"}])

        # The app's projected token (audience skillwarden, from the injected volume) is verified
        # against the API server's JWKS; a token for another audience is refused.
        app_token = (tmp_path / "pod" / "volumes" / "skillwarden-token" / "token").read_text()
        as_workload = anthropic.Anthropic(base_url=base_url, api_key=app_token, max_retries=0)
        assert as_workload.messages.create(model="claude-sonnet-4-6", max_tokens=64,
                                           messages=[{"role": "user", "content": "hi"}]).content
        other = token("another-service", 600)
        wrong_audience = anthropic.Anthropic(base_url=base_url, api_key=other, max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            wrong_audience.messages.create(model="claude-sonnet-4-6", max_tokens=64,
                                           messages=[{"role": "user", "content": "hi"}])

        # The app shares OPA's loopback, but cannot replace the policy: the bundle owns its root.
        overwrite = urllib.request.Request(f"{running.url(8181)}/v1/data/skillwarden/policies", method="PUT",
                                           data=b"{}", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(overwrite)
        assert refused.value.code == 400 and b"owned by bundle" in refused.value.read()

        # The sidecar reports the workload identity it took from the downward API.
        metrics = urllib.request.urlopen(f"{running.url(9091)}/metrics").read().decode()
        assert f'namespace="{NAMESPACE}"' in metrics

    # Every exchange, the denied ones too, became a session record in the Object Lock bucket
    # (the sidecar ships and finishes its segments when it stops).
    s3 = stack["s3"]
    client = components.s3_client(s3["endpoint"], s3["access_key"], s3["secret_key"])
    pod_name = pod["metadata"]["name"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3["bucket"], Prefix="injection-test/").get(
        "Contents", []) if pod_name in o["Key"]]
    assert keys, f"no records for pod {pod_name} under injection-test/"

    # The provider key reached the sidecar's volume only; the app env has no trace of it.
    assert REAL_KEY not in json.dumps(running.app_env)
    key_file = tmp_path / "pod" / "volumes" / "skillwarden-provider-key" / "api-key"
    assert key_file.read_text() == REAL_KEY
    sidecar = next(c for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
                   if c["name"] == "skillwarden")
    assert any(m["mountPath"] == kubelet.KUBE_SA_DIR for m in sidecar["volumeMounts"])
