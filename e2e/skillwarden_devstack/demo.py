"""`skillwarden dev demo`: the whole product on the local stack, end to end, in one command.

1. the real stack comes up (etcd, kube-apiserver, OPA, S3 with Object Lock, Prometheus);
2. the Helm chart is rendered and applied server-side to the real API server;
3. the operator runs as a local process, authenticated as the chart's ServiceAccount, and answers
   admission through the chart's own webhook configurations (pointed at it by `webhook.externalUrl`);
4. the example SkillPolicy is applied through GitOps-style `kubectl apply` (an invalid one is refused);
5. an opted-in pod is created; the stored pod carries the injected `skillwarden` and `opa` containers;
6. the kubelet emulator starts those two containers from the stored pod spec;
7. a scripted session runs through the sidecar with the official `anthropic` SDK against a fake
   Claude upstream: an allowed skill call, a denied one, masked PII both ways (also in a stream),
   and a customer export held until the `approver` user approves it;
8. what an operator sees (metrics, also through the real Prometheus) and what an auditor gets
   (`skillwarden audit verify` over the Object-Locked records).

Everything started here is registered with the stack, so `skillwarden dev down` stops it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from skillwarden_devstack import chart, fake_claude, kubelet_emulator, pki, stack
from skillwarden_devstack.processes import StackError, free_port, spawn
from skillwarden_devstack.tools import Binaries, ensure_all

REPO = Path(__file__).resolve().parents[2]
RELEASE, RELEASE_NAMESPACE, NAMESPACE = "skillwarden", "skillwarden-system", "finance"
SERVICE_ACCOUNT = "report-bot"
GROUP, VERSION = "skillwarden.io", "v1alpha1"
SKILLS_BETA = "skills-2025-10-02,code-execution-2025-08-25"
XLSX = {"type": "anthropic", "skill_id": "xlsx", "version": "latest"}
CODE_EXECUTION = {"type": "code_execution_20250825", "name": "code_execution"}


def say(message: str) -> None:
    print(message, flush=True)


def step(number: int, title: str) -> None:
    say(f"\n== {number}. {title}")


@dataclass
class DemoResult:
    """What the session showed; the e2e test asserts on it."""

    state_dir: str = ""
    sidecar: str = ""
    metrics: str = ""
    outcomes: dict[str, Any] = field(default_factory=dict)
    metrics_summary: dict[str, float] = field(default_factory=dict)
    verify_exit_code: int = -1
    verify_report: dict[str, Any] = field(default_factory=dict)
    prometheus_series: dict[str, float] = field(default_factory=dict)


# -- the fake Claude upstream, served from a thread so the demo can change its replies -------------


class FakeUpstream:
    def __init__(self, api_key: str) -> None:
        self.fake = fake_claude.FakeClaude(fake_claude.Settings(api_key=api_key))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-claude", daemon=True)
        self._exit = AsyncExitStack()
        self.url = ""

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        started: Future[str] = asyncio.run_coroutine_threadsafe(
            self._exit.enter_async_context(fake_claude.running(self.fake)), self._loop)
        self.url = started.result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._exit.aclose(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def last_prompt(self) -> str:
        received = [r for r in self.fake.received if r.path == "/v1/messages"]
        return fake_claude.prompt_of(received[-1].json()) if received else ""


# -- Kubernetes helpers ------------------------------------------------------------------------------


def _api(document: dict[str, Any], user: str) -> Any:
    # `Any` on purpose: the client's generated types want model classes; we pass plain dicts,
    # which it accepts and which read like the YAML a user writes.
    return k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=document["kubeconfigs"][user])


def _ensure(create: Callable[..., Any], *args: Any) -> None:
    """Create, or accept that it exists (the demo runs again on the same stack)."""
    try:
        create(*args)
    except k8s.ApiException as error:
        if error.status != 409:
            raise


def _wait(what: str, check: Callable[[], bool], seconds: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, k8s.ApiException, KeyError, ValueError):
            pass
        time.sleep(0.3)
    raise StackError("demo", f"timed out after {seconds:.0f}s waiting for {what}", log)


def _serving_cert(document: dict[str, Any], directory: Path) -> Path:
    """What cert-manager would mount for the webhook: tls.crt/tls.key for 127.0.0.1 from the dev CA."""
    ca = x509.load_pem_x509_certificate(Path(document["ca_cert"]).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(document["ca_key"]).read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    cert, key = pki.issue_serving_cert(ca, ca_key, ["127.0.0.1"], dt.datetime.now(dt.UTC))
    directory.mkdir(parents=True, exist_ok=True)
    pki.write_cert(cert, directory / "tls.crt")
    (directory / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / "ca.crt").write_bytes(Path(document["ca_cert"]).read_bytes())
    return directory


def _kubeconfig_for_token(document: dict[str, Any], token: str, path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "stack", "cluster": {"server": document["apiserver"],
                                                   "certificate-authority": document["ca_cert"]}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "stack", "user": "operator"}}]}))
    path.chmod(0o600)
    return path


def _kubectl(bins: Binaries, kubeconfig: str, *args: str,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bins.kubectl), "--kubeconfig", kubeconfig, *args], input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


def _skillwarden() -> str:
    return str(Path(sys.executable).with_name("skillwarden"))


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - loopback http URLs of the demo
        return str(reply.read().decode())


def _metric_values(text: str) -> dict[str, float]:
    """`name{labels}` -> value for every sample of a Prometheus text exposition."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                samples[name] = float(value)
            except ValueError:
                continue
    return samples


def _sum(samples: dict[str, float], metric: str, **labels: str) -> float:
    total = 0.0
    for name, value in samples.items():
        if name == metric or name.startswith(metric + "{"):
            if all(f'{key}="{val}"' in name for key, val in labels.items()):
                total += value
    return total


# -- the demo --------------------------------------------------------------------------------------


def run(state_dir: Path | None = None) -> DemoResult:
    step(1, "the local stack (first run builds kube-apiserver, opa and helm; later runs reuse them)")
    document = stack.up(state_dir)
    state_path = Path(document["state_dir"])
    stack.stop_extra_processes(state_path)  # a previous demo's operator and pod
    work = state_path / "demo"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    bins = ensure_all()
    result = DemoResult(state_dir=str(state_path))
    admin = _api(document, "admin")
    core: Any = k8s.CoreV1Api(admin)
    say(f"   kube-apiserver {document['apiserver']}  S3 {document['s3']['endpoint']}  "
        f"Prometheus {document['prometheus']}")

    step(2, "install the Helm chart: server-side apply to the real kube-apiserver")
    for namespace in (RELEASE_NAMESPACE, NAMESPACE):
        _ensure(core.create_namespace, {"metadata": {"name": namespace}})
    webhook_port, bundle_port = free_port(), free_port()
    ca_bundle = base64.b64encode(Path(document["ca_cert"]).read_bytes()).decode()
    s3 = document["s3"]
    values = {
        "providerKey": {"secretName": "anthropic-api-key"},
        "webhook": {"externalUrl": f"https://127.0.0.1:{webhook_port}", "caBundle": ca_bundle},
        "recording": {"s3": {"endpoint": s3["endpoint"], "bucket": s3["bucket"],
                             "credentialsSecret": "skillwarden-s3"},
                      "signingKeySecret": "skillwarden-signing-key"},
        "sidecar": {"approvalBindings": {NAMESPACE: [SERVICE_ACCOUNT]}},
        "approvals": {"reviewerBindings": {NAMESPACE: {"groups": ["finance-leads"]}}},
    }
    manifest = chart.render(bins, RELEASE, RELEASE_NAMESPACE, values)
    docs = chart.documents(manifest)
    webhooks = [d for d in docs if d["kind"].endswith("WebhookConfiguration")]
    rest = [d for d in docs if d not in webhooks]
    chart.apply(bins, document["kubeconfigs"]["admin"], yaml.safe_dump_all(rest))
    say(f"   applied {len(rest)} objects: " + ", ".join(sorted({d['kind'] for d in rest})))

    step(3, "the operator, as the chart's ServiceAccount, behind the chart's webhook configurations")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    token = core.create_namespaced_service_account_token(
        account, RELEASE_NAMESPACE, {"spec": {"expirationSeconds": 86400}}).status.token
    kubeconfig = _kubeconfig_for_token(document, token, work / "operator.kubeconfig")
    env = chart.operator_process_env(manifest, work / "injection.json", {
        "KUBECONFIG": str(kubeconfig), "SKILLWARDEN_NAMESPACE": RELEASE_NAMESPACE,
        "SKILLWARDEN_POD_NAME": "skillwarden-operator-0",
        "SKILLWARDEN_OPERATOR_BUNDLE_HOST": "127.0.0.1",
        "SKILLWARDEN_OPERATOR_BUNDLE_PORT": str(bundle_port),
        "SKILLWARDEN_OPERATOR_WEBHOOK_ADDR": "127.0.0.1",
        "SKILLWARDEN_OPERATOR_WEBHOOK_PORT": str(webhook_port),
        "SKILLWARDEN_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
        "SKILLWARDEN_OPERATOR_WEBHOOK_CERT_DIR": str(_serving_cert(document, work / "webhook-tls")),
        "SKILLWARDEN_CERT_MODE": "external",
    })
    operator_log = work / "operator.log"
    operator = spawn("operator", [_skillwarden(), *chart.operator_args(manifest)], operator_log, env=env)
    stack.register_extra_process(state_path, operator)
    bundles = f"http://127.0.0.1:{bundle_port}"
    _wait("the operator's /healthz", lambda: bool(_fetch(f"{bundles}/healthz")), 60, operator_log)
    chart.apply(bins, document["kubeconfigs"]["admin"], yaml.safe_dump_all(webhooks))
    say(f"   operator pid {operator.pid}: bundles {bundles}, admission https://127.0.0.1:{webhook_port} "
        f"(log {operator_log})")

    step(4, "GitOps: kubectl apply the example SkillPolicy")
    policy_file = REPO / "examples" / "skillpolicy-finance.yaml"
    bad = yaml.safe_load(policy_file.read_text())
    bad["metadata"]["name"] = "finance-typo"
    bad["spec"]["rules"][0]["when"]["promptMatches"] = ["(?<=secret)key"]

    def refused() -> bool:
        answer = _kubectl(bins, document["kubeconfigs"]["admin"], "apply", "-f", "-",
                          stdin=yaml.safe_dump(bad))
        result.outcomes["invalid_policy"] = answer.stderr.strip()
        return answer.returncode != 0 and "promptMatches[0]" in answer.stderr

    _wait("the invalid policy to be refused by the operator's admission webhook", refused, 60, operator_log)
    say(f"   an invalid policy is refused:\n     {result.outcomes['invalid_policy'].splitlines()[0][:200]}")
    applied = _kubectl(bins, document["kubeconfigs"]["admin"], "apply", "-f", str(policy_file))
    if applied.returncode != 0:
        raise StackError("demo", f"kubectl apply of the example policy failed: {applied.stderr}",
                         operator_log)
    objects: Any = k8s.CustomObjectsApi(admin)

    def ready() -> bool:
        status = objects.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "skillpolicies",
                                                      "finance-reporting").get("status", {})
        result.outcomes["bundle_revision"] = status.get("bundleRevision", "")
        return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))

    _wait("SkillPolicy finance/finance-reporting to become Ready", ready, 60, operator_log)
    say(f"   {applied.stdout.strip()} -> Ready, bundle revision {result.outcomes['bundle_revision'][:23]}…")

    step(5, "an opted-in workload: the webhook injects the sidecar and OPA")
    provider_key = "sk-ant-demo-" + secrets.token_urlsafe(24)  # only the fake upstream accepts it
    signing_key = ed25519.Ed25519PrivateKey.generate()
    signing_pem = signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    public_pem = signing_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    pins = work / "auditor-pins"
    pins.mkdir()
    (pins / "demo-signing-key.pem").write_bytes(public_pem)  # handed to the auditor out of band
    workload_secrets = {
        "anthropic-api-key": {"api-key": provider_key.encode()},
        "skillwarden-s3": {"AWS_ACCESS_KEY_ID": s3["access_key"].encode(),
                           "AWS_SECRET_ACCESS_KEY": s3["secret_key"].encode()},
        "skillwarden-signing-key": {"signing-key.pem": signing_pem},
    }
    for name, data in workload_secrets.items():
        encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
        body = {"metadata": {"name": name}, "data": encoded}
        _ensure(core.create_namespaced_secret, NAMESPACE, body)
    account_body = {"metadata": {"name": SERVICE_ACCOUNT}}
    _ensure(core.create_namespaced_service_account, NAMESPACE, account_body)
    pod = kubelet_emulator.create_stored_pod(core, admin, NAMESPACE,
                                             kubelet_emulator.opted_in_pod(SERVICE_ACCOUNT))
    containers = [c["name"] for c in [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]]
    say(f"   pod {NAMESPACE}/{pod['metadata']['name']} stored with containers {containers}")

    step(6, "the kubelet emulator starts the injected containers from the stored pod")
    with FakeUpstream(provider_key) as upstream:
        injection = json.loads((work / "injection.json").read_text())

        def token_for(audience: str | None, seconds: int) -> str:
            spec: dict[str, Any] = {"expirationSeconds": max(seconds, 600)}
            if audience:
                spec["audiences"] = [audience]
            issued = core.create_namespaced_service_account_token(SERVICE_ACCOUNT, NAMESPACE, {"spec": spec})
            return str(issued.status.token)

        environment = kubelet_emulator.Environment(
            secrets=workload_secrets,
            url_rewrites={injection["bundleUrl"].rstrip("/"): bundles,
                          values_upstream(manifest): upstream.url},
            token_factory=token_for, api_server=document["apiserver"],
            api_ca=Path(document["ca_cert"]).read_bytes(), executables={"opa": str(bins.opa)},
            extra_env={"skillwarden": {"SKILLWARDEN_RECORDS_DIGEST_INTERVAL": "5"}})
        emulated = kubelet_emulator.start(pod, work / "pod", environment)
        for running in emulated.processes.values():
            stack.register_extra_process(state_path, running)
        result.sidecar = emulated.app_env["ANTHROPIC_BASE_URL"]
        result.metrics = f"{emulated.url(9091)}/metrics"
        stack.set_demo_endpoints(state_path, sidecar=result.sidecar, metrics=result.metrics)
        _scrape(document, [emulated.url(9091), bundles])
        say(f"   sidecar {result.sidecar} (admin {emulated.url(9091)}), OPA loaded the namespace bundle")
        say(f"   the app container's env: ANTHROPIC_BASE_URL={result.sidecar}; provider key in it: "
            f"{provider_key in json.dumps(emulated.app_env)}")

        step(7, "a governed session with the official anthropic SDK")
        session(result, upstream, document, bins)

    step(8, "what an operator sees")
    samples = _metric_values(_fetch(result.metrics))
    summary = {
        "requests allowed": _sum(samples, "skillwarden_requests_total", decision="allow"),
        "requests denied": _sum(samples, "skillwarden_requests_total", decision="deny"),
        "requests needing approval": _sum(samples, "skillwarden_requests_total", decision="require_approval"),
        "entities masked": _sum(samples, "skillwarden_masked_entities_total"),
        "records spooled": _sum(samples, "skillwarden_records_spooled_total"),
    }
    _wait("records shipped to S3", lambda: _shipped(result) >= summary["records spooled"] > 0, 60)
    summary["records shipped"] = _shipped(result)
    result.metrics_summary = summary
    for key, value in summary.items():
        say(f"   {key:<28} {value:g}")
    result.prometheus_series = _prometheus_decisions(document)
    say(f"   Prometheus: sum by (decision) (skillwarden_requests_total) = {result.prometheus_series}")

    step(9, "what an auditor gets: skillwarden audit verify over the Object-Locked records")
    time.sleep(6)  # one digest interval: the session's records are sealed by a signed digest
    verify = subprocess.run(
        [_skillwarden(), "audit", "verify", *_s3_args(s3), "--trusted-key", str(pins), "--check-retention"],
        capture_output=True, text=True, timeout=300, check=False)
    result.verify_exit_code = verify.returncode
    try:
        result.verify_report = json.loads(verify.stdout)
    except ValueError:
        result.verify_report = {"unparsed": verify.stdout[-2000:], "stderr": verify.stderr[-2000:]}
    say(json.dumps(_report_summary(result.verify_report), indent=2))
    say(f"   verify exit code {verify.returncode} ({'OK' if verify.returncode == 0 else 'FINDINGS'})")
    approved = _approved_exchange(s3)
    if approved:
        say("   the approved export as the auditor reads it (skillwarden audit show):")
        shown = subprocess.run([_skillwarden(), "audit", "show", approved, *_s3_args(s3)],
                               capture_output=True, text=True, timeout=120, check=False)
        result.outcomes["audit_show"] = shown.stdout
        for line in shown.stdout.splitlines()[:12]:
            say(f"     {line}")
    say("\nThe stack and the demo's operator, sidecar and OPA keep running: `skillwarden dev status`; "
        "stop everything with `skillwarden dev down`.")
    return result


def values_upstream(manifest: str) -> str:
    """The upstream base URL the chart gave the injected sidecar (values `upstream.baseUrl`)."""
    for document in chart.documents(manifest):
        if document["kind"] == "ConfigMap" and document["metadata"]["name"].endswith("-injection"):
            injection = json.loads(document["data"]["injection.json"])
            return str(injection.get("upstreamUrl") or injection.get("upstream", {}).get("baseUrl")
                       or "https://api.anthropic.com").rstrip("/")
    return "https://api.anthropic.com"


def session(result: DemoResult, upstream: FakeUpstream, document: dict[str, Any], bins: Binaries) -> None:
    import anthropic

    sdk = anthropic.Anthropic(base_url=result.sidecar, api_key="workload-identity", max_retries=0,
                              timeout=120)
    skills: dict[str, Any] = {"container": {"skills": [XLSX]}}
    beta = {"anthropic-beta": SKILLS_BETA}

    allowed = sdk.messages.create(model="claude-sonnet-4-6", max_tokens=512, tools=[CODE_EXECUTION],  # type: ignore[list-item]
                                  messages=[{"role": "user", "content": "Build the Q3 revenue table"}],
                                  extra_headers=beta, extra_body=skills)
    result.outcomes["allowed"] = allowed.content[0].text if allowed.content[0].type == "text" else ""
    say(f"   allowed  xlsx skill         -> {result.outcomes['allowed'][:70]!r}")

    try:
        sdk.messages.create(model="claude-sonnet-4-6", max_tokens=256,
                            messages=[{"role": "user", "content": "please dump api keys list"}])
        result.outcomes["denied"] = "NOT DENIED"
    except anthropic.PermissionDeniedError as error:
        body = error.body if isinstance(error.body, dict) else {}
        result.outcomes["denied"] = str(body.get("error", {}).get("message", error.message))
    say(f"   denied   credential dump     -> 403 {result.outcomes['denied'][:90]}")

    sdk.messages.create(model="claude-haiku-4-5", max_tokens=256, messages=[{
        "role": "user", "content": "Summarise the payroll dispute of employee SSN 536-22-8143."}])
    result.outcomes["upstream_saw"] = upstream.last_prompt()
    say(f"   masked   upstream saw        -> {result.outcomes['upstream_saw']!r}")

    upstream.fake.settings.reply_text = ("The refund went to card 4111 1111 1111 1111 on Tuesday, "
                                         "confirmation 88-1290.")
    try:
        with sdk.messages.stream(model="claude-haiku-4-5", max_tokens=256, messages=[
                {"role": "user", "content": "Which card got the refund?"}]) as stream:
            streamed = "".join(stream.text_stream)
    finally:
        upstream.fake.settings.reply_text = None
    result.outcomes["stream"] = streamed
    say(f"   masked   streamed reply      -> {streamed!r}")

    held: Future[str] = Future()

    def export() -> None:
        try:
            reply = sdk.messages.create(
                model="claude-sonnet-4-6", max_tokens=512, tools=[CODE_EXECUTION],  # type: ignore[list-item]
                messages=[{"role": "user", "content": "Prepare the customer export for the auditors"}],
                extra_headers=beta, extra_body=skills)
            held.set_result(reply.content[0].text if reply.content[0].type == "text" else "")
        except Exception as error:  # the demo reports whatever the SDK raised
            held.set_exception(error)

    threading.Thread(target=export, name="held-request", daemon=True).start()
    approver: Any = k8s.CustomObjectsApi(_api(document, "approver"))
    pending: list[str] = []

    def appeared() -> bool:
        items = approver.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "skillapprovals")["items"]
        pending[:] = [i["metadata"]["name"] for i in items if i.get("status", {}).get("state") == "Pending"]
        return bool(pending)

    _wait("the SkillApproval created by the held request", appeared, 30)
    say(f"   held     customer export     -> SkillApproval {NAMESPACE}/{pending[0]} is Pending")
    approve = subprocess.run(
        [_skillwarden(), "approvals", "approve", pending[0], "-n", NAMESPACE, "--kubeconfig",
         document["kubeconfigs"]["approver"], "--reason", "Quarterly audit export, ticket FIN-1042"],
        capture_output=True, text=True, timeout=60, check=False)
    said = (approve.stdout or approve.stderr).strip().splitlines()
    say(f"   approver (kubectl skillwarden approvals approve): {said[-1] if said else approve.returncode}")
    if approve.returncode != 0:
        raise StackError("demo", f"the approver could not approve {pending[0]}: {approve.stderr.strip()}")
    result.outcomes["approval"] = pending[0]
    result.outcomes["approved_reply"] = held.result(timeout=90)
    say(f"   released customer export     -> {result.outcomes['approved_reply'][:70]!r}")


def _s3_args(s3: dict[str, str]) -> list[str]:
    # `--flag=value`: a random secret may start with "-", which argparse would take for a flag.
    return [f"--endpoint={s3['endpoint']}", f"--bucket={s3['bucket']}", f"--access-key={s3['access_key']}",
            f"--secret-key={s3['secret_key']}"]


def _approved_exchange(s3: dict[str, str]) -> str:
    found = subprocess.run([_skillwarden(), "audit", "search", *_s3_args(s3)], capture_output=True, text=True,
                           timeout=120, check=False)
    for line in reversed(found.stdout.splitlines()):
        entry = json.loads(line)
        if entry.get("rule") == "customer-export" and entry.get("decision") == "allow":
            return str(entry["exchange_id"])
    return ""


def _shipped(result: DemoResult) -> float:
    samples = _metric_values(_fetch(result.metrics))
    return _sum(samples, "skillwarden_records_shipped_total")


def _scrape(document: dict[str, Any], base_urls: list[str]) -> None:
    targets = [{"targets": [url.removeprefix("http://")], "labels": {"demo": "true"}} for url in base_urls]
    Path(document["prometheus_targets"]).write_text(json.dumps(targets))


def _prometheus_decisions(document: dict[str, Any]) -> dict[str, float]:
    query = urllib.parse.quote("sum by (decision) (skillwarden_requests_total)")
    found: dict[str, float] = {}

    def answered() -> bool:
        data = json.loads(_fetch(f"{document['prometheus']}/api/v1/query?query={query}"))["data"]["result"]
        found.clear()
        found.update({r["metric"].get("decision", ""): float(r["value"][1]) for r in data})
        return "allow" in found and "deny" in found

    _wait("Prometheus to scrape the sidecar", answered, 30)
    return found


def _report_summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("ok", "status", "objects", "records", "streams", "digests", "findings", "trusted_keys")
    summary = {key: report[key] for key in keys if key in report}
    return summary or report

