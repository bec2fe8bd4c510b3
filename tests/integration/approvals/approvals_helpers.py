"""Helpers for the approvals integration tests (a uniquely named module: every test folder has a
`conftest`, so tests import shared code from here)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes.client.exceptions import ApiException

from skillwarden_devstack import pki
from skillwarden_devstack.processes import free_port
from skillwarden_sidecar.approval_client import KubeAccess
from skillwarden_sidecar.pipeline import Decision, Exchange, Identity, Workload

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "crds" / "skillapproval.yaml"
HARNESS = Path(__file__).with_name("approvals_webhook_harness.py")
GROUP, VERSION, PLURAL = "skillwarden.io", "v1alpha1", "skillapprovals"
SIDECAR_SA = "report-bot"


@dataclass
class ApprovalsEnv:
    stack: dict[str, Any]
    namespace: str
    sidecar_token: str
    webhook_log: Path
    webhook: subprocess.Popen[bytes]

    def api(self, user: str) -> kclient.CustomObjectsApi:
        return kclient.CustomObjectsApi(
            kconfig.new_client_from_config(config_file=self.stack["kubeconfigs"][user])
        )

    def sidecar_access(self) -> KubeAccess:
        return KubeAccess(
            server=self.stack["apiserver"],
            token=self.sidecar_token,
            ca_pem=Path(self.stack["ca_cert"]).read_bytes(),
        )

    @property
    def sidecar_username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{SIDECAR_SA}"


def apply(api_client: kclient.ApiClient, documents: list[dict[str, Any]]) -> None:
    dynamic = kclient.ApiextensionsV1Api(api_client)
    rbac, core = kclient.RbacAuthorizationV1Api(api_client), kclient.CoreV1Api(api_client)
    for doc in documents:
        kind, ns = doc["kind"], doc["metadata"].get("namespace")
        try:
            if kind == "CustomResourceDefinition":
                dynamic.create_custom_resource_definition(doc)
            elif kind == "Namespace":
                core.create_namespace(doc)
            elif kind == "ServiceAccount":
                core.create_namespaced_service_account(ns, doc)
            elif kind == "ClusterRole":
                rbac.create_cluster_role(doc)
            elif kind == "RoleBinding":
                rbac.create_namespaced_role_binding(ns, doc)
            else:
                raise AssertionError(kind)
        except ApiException as error:
            if error.status != 409:
                raise


def rbac_documents(namespace: str) -> list[dict[str, Any]]:
    """The roles docs/approvals.md describes, bound in the test namespace."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SIDECAR_SA, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "skillwarden-approval-reviewer"},
            "rules": [
                {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "skillwarden-sidecar-approvals"},
            "rules": [
                {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "list", "watch"]},
                {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "approval-reviewers", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "skillwarden-approval-reviewer",
            },
            # finance-analysts too: so the self-approval test reaches the webhook, not RBAC.
            "subjects": [
                {"kind": "Group", "name": "finance-leads", "apiGroup": "rbac.authorization.k8s.io"},
                {"kind": "Group", "name": "finance-analysts", "apiGroup": "rbac.authorization.k8s.io"},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "sidecar-approvals", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "skillwarden-sidecar-approvals",
            },
            "subjects": [{"kind": "ServiceAccount", "name": SIDECAR_SA, "namespace": namespace}],
        },
    ]


def issue_webhook_cert(stack: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    ca = x509.load_pem_x509_certificate(Path(stack["ca_cert"]).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(stack["ca_key"]).read_bytes(), password=None)
    cert, key = pki.issue_serving_cert(ca, ca_key, ["127.0.0.1"], dt.datetime.now(dt.UTC))  # type: ignore[arg-type]
    cert_path, key_path = directory / "webhook.crt", directory / "webhook.key"
    pki.write_cert(cert, cert_path)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def webhook_ready(api: kclient.CustomObjectsApi, namespace: str) -> bool:
    # A create the schema allows but the webhook refuses (expiry in the past): our message proves
    # the webhook is registered and answering. dry-run: nothing is stored.
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SkillApproval",
        "metadata": {"generateName": "probe-", "namespace": namespace},
        "spec": {
            "requester": {
                "identity": {"kind": "workload", "sub": "probe"},
                "workload": {"namespace": namespace, "serviceAccount": "probe"},
            },
            "requestDigest": "sha256:" + "0" * 64,
            "expiresAt": "2000-01-01T00:00:00Z",
            "required": 1,
            "approvers": {"groups": ["finance-leads"]},
        },
    }
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, dry_run="All")
    except ApiException as error:
        return "not in the future" in str(error.body)
    return False


def approval_body(
    env: ApprovalsEnv,
    digest: str,
    *,
    required: int = 1,
    ttl_s: float = 600,
    approvers: dict[str, list[str]] | None = None,
    requester: str = "requester",
) -> dict[str, Any]:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl_s)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SkillApproval",
        "metadata": {"generateName": "it-", "namespace": env.namespace},
        "spec": {
            "requester": {
                "identity": {"kind": "oidc", "sub": requester, "iss": "https://issuer.test"},
                "workload": {"namespace": env.namespace, "serviceAccount": SIDECAR_SA},
            },
            "policy": f"{env.namespace}/finance-reporting",
            "rule": "customer-export",
            "request": {
                "method": "POST",
                "path": "/v1/messages",
                "model": "claude-sonnet-4-5",
                "skillSummary": "anthropic:xlsx",
                "promptSummary": "[masked]",
            },
            "requestDigest": digest,
            "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "required": required,
            "approvers": approvers or {"groups": ["finance-leads"]},
        },
    }


def random_digest() -> str:
    return "sha256:" + uuid.uuid4().hex + uuid.uuid4().hex


def review_as(env: ApprovalsEnv, user: str, verb: str, name: str, reason: str) -> int:
    """The real CLI, in-process (call through asyncio.to_thread from async tests)."""
    from skillwarden_cli.main import main as cli_main

    return cli_main(
        [
            "approvals",
            verb,
            name,
            "--reason",
            reason,
            "-n",
            env.namespace,
            "--kubeconfig",
            env.stack["kubeconfigs"][user],
        ]
    )


def approvals_for(env: ApprovalsEnv, digest: str) -> list[dict[str, Any]]:
    items = env.api("admin").list_namespaced_custom_object(GROUP, VERSION, env.namespace, PLURAL)["items"]
    return [i for i in items if i["spec"]["requestDigest"] == digest]


@contextlib.contextmanager
def approvals_environment(stack: dict[str, Any], work: Path) -> Iterator[ApprovalsEnv]:
    """CRD, RBAC, the sidecar's service-account token and the webhook (kopf) on `stack`."""
    work.mkdir(parents=True, exist_ok=True)
    admin = kconfig.new_client_from_config(config_file=stack["kubeconfigs"]["admin"])
    apply(admin, [yaml.safe_load(CRD.read_text())])
    namespace = f"approvals-{uuid.uuid4().hex[:6]}"
    apply(admin, rbac_documents(namespace))
    deadline = time.monotonic() + 30
    custom = kclient.CustomObjectsApi(admin)
    while True:  # the CRD becomes servable a moment after creation
        try:
            custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            break
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    token = kclient.CoreV1Api(admin).create_namespaced_service_account_token(
        SIDECAR_SA, namespace, {"spec": {"audiences": [stack["apiserver"]], "expirationSeconds": 3600}}
    )
    cert, key = issue_webhook_cert(stack, work)
    log = work / "webhook.log"
    env = {
        **os.environ,
        "KUBECONFIG": stack["kubeconfigs"]["admin"],
        "SKW_WEBHOOK_PORT": str(free_port()),
        "SKW_WEBHOOK_CERT": str(cert),
        "SKW_WEBHOOK_KEY": str(key),
        "SKW_WEBHOOK_CA": stack["ca_cert"],
        "SKW_WEBHOOK_NAME": f"skillapprovals-{namespace}.skillwarden.io",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", str(HARNESS)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
        )
    try:
        deadline = time.monotonic() + 60
        while not webhook_ready(custom, namespace):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"approval webhook did not come up; log {log}:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield ApprovalsEnv(
            stack=stack,
            namespace=namespace,
            sidecar_token=token.status.token,
            webhook_log=log,
            webhook=process,
        )
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        # kopf empties its managed configurations on exit; remove the husks too.
        registrations = kclient.AdmissionregistrationV1Api(admin)
        for delete in (
            registrations.delete_mutating_webhook_configuration,
            registrations.delete_validating_webhook_configuration,
        ):
            with contextlib.suppress(ApiException):
                delete(env["SKW_WEBHOOK_NAME"])


PROMPT = "Build the customer export for Q3 as xlsx and mail it to jane.doe@example.com"


def make_exchange(
    env: ApprovalsEnv,
    prompt: str,
    *,
    hold: float = 20,
    ttl: float = 600,
    required: int = 1,
    sub: str = "requester",
) -> Exchange:
    skills = [{"type": "anthropic", "skill_id": "xlsx", "version": "latest"}]
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "container": {"skills": skills},
        "messages": [{"role": "user", "content": prompt}],
    }
    decision = Decision(
        action="require_approval",
        reasons=("Customer data exports need a finance lead",),
        policy=f"{env.namespace}/finance-reporting",
        rule="customer-export",
        message="Customer data exports need a finance lead",
        masking={},
        recording={},
        approval={
            "approvers": {"groups": ["finance-leads"], "users": []},
            "required": required,
            "ttlSeconds": ttl,
            "holdSeconds": hold,
        },
        bundle_revision="sha256:test",
        raw={},
    )
    return Exchange(
        request_id=uuid.uuid4().hex,
        received_at=time.time(),
        method="POST",
        path="/v1/messages",
        query="",
        operation="messages.create",
        workload=Workload(env.namespace, "report-7f9c", SIDECAR_SA),
        identity=Identity(kind="oidc", sub=sub, iss="https://issuer.test", groups=("finance-analysts",)),
        body=body,
        decision=decision,
        policy_input={
            "request": {"model": "claude-sonnet-4-5", "skills": skills, "tools": [], "prompt_text": prompt}
        },
    )


def unique_prompt() -> str:
    return f"{PROMPT} (run {uuid.uuid4().hex[:8]})"


async def appears(env: ApprovalsEnv, digest: str, count: int = 1, within: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(approvals_for, env, digest)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no SkillApproval for {digest} after {within} s")
