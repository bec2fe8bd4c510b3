"""The whole approval story through the real sidecar: the official `anthropic` SDK as the client
(caller identity: an OIDC token for `requester`), real OPA with a real bundle compiled from a
SkillPolicy with a `requireApproval` rule, the real kube-apiserver + admission webhook, reviews by
the dev stack's users with the installed `skillwarden approvals` command. Only Claude is faked.

The session record: the records team's Recorder is not wired into the sidecar yet, so the test
asserts on the exchange the RECORDING HOOK receives (what the record is built from).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import jwt
import pytest
from approvals_helpers import GROUP, PLURAL, SIDECAR_SA, VERSION, ApprovalsEnv
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from skillwarden_devstack import fake_claude, processes, tools
from skillwarden_operator.bundle import build_bundle
from skillwarden_sidecar import app as sidecar_app
from skillwarden_sidecar.approval import GateSettings, approval_record
from skillwarden_sidecar.approval_hook import install_gate, masked_summary
from skillwarden_sidecar.config import SidecarConfig
from skillwarden_sidecar.pipeline import Exchange, Hooks

ISSUER = "https://issuer.approvals.test"
AUDIENCE = "skillwarden"
REAL_KEY = "sk-ant-api03-provider-key-only-the-sidecar-knows"
MODEL = "claude-sonnet-4-6"


def policy(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "skillwarden.io/v1alpha1",
        "kind": "SkillPolicy",
        "metadata": {"name": "finance-reporting", "namespace": namespace},
        "spec": {
            "defaultAction": "deny",
            "subjects": [
                {
                    "name": "analysts",
                    "groups": ["finance-analysts"],
                    "skills": [{"type": "anthropic", "id": "xlsx"}],
                    "models": ["claude-sonnet-4-*"],
                    "tools": ["code_execution"],
                    "maxTokens": 4096,
                }
            ],
            "rules": [
                {
                    "name": "customer-export",
                    "action": "requireApproval",
                    "message": "Customer data exports need a finance reviewer",
                    "when": {"promptMatches": ["(?i)customer (list|export)"]},
                }
            ],
            # Peer review: any finance person may approve, but never their own request.
            "approval": {
                "approvers": {"groups": ["finance-leads", "finance-analysts"]},
                "required": 1,
                "ttl": "10m",
                "holdSeconds": 15,
            },
        },
    }


class RecordProbe:
    """A recording hook that keeps the exchanges it is handed (what a record is built from)."""

    def __init__(self) -> None:
        self.requests: list[Exchange] = []
        self.responses: list[Exchange] = []

    def admit(self) -> None:
        return None

    async def record_request(self, exchange: Exchange) -> None:
        self.requests.append(exchange)

    async def record_response(self, exchange: Exchange) -> None:
        self.responses.append(exchange)


@dataclass
class World:
    env: ApprovalsEnv
    url: str
    app: Any
    fake: fake_claude.FakeClaude
    probe: RecordProbe
    token: str

    def client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.url, api_key=self.token, max_retries=0, timeout=60)

    def sample(self, name: str, **labels: str) -> float:
        return float(self.app[sidecar_app.METRICS].registry.get_sample_value(name, labels) or 0.0)


def _decides(url: str) -> bool:
    request = urllib.request.Request(
        f"{url}/v1/data/skillwarden/decision",
        data=b'{"input": {}}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return "result" in json.loads(response.read())
    except OSError:
        return False


@pytest.fixture(scope="module")
def opa_url(approvals_env: ApprovalsEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("approvals-opa")
    bundle = build_bundle(approvals_env.namespace, [policy(approvals_env.namespace)])
    assert not bundle.invalid, bundle.invalid
    (work / "bundle.tar.gz").write_bytes(bundle.data)
    port = processes.free_port()
    running = processes.spawn(
        "opa-approvals",
        [
            str(tools.ensure_all().opa),
            "run",
            "--server",
            f"--addr=127.0.0.1:{port}",
            "--diagnostic-addr=",
            "--bundle",
            str(work / "bundle.tar.gz"),
        ],
        work / "opa.log",
    )
    url = f"http://127.0.0.1:{port}"
    processes.wait_until("opa-approvals", lambda: _decides(url), running, 30, "answering decisions")
    yield url
    processes.stop(running)


@pytest.fixture
async def world(approvals_env: ApprovalsEnv, opa_url: str, tmp_path: Path) -> AsyncIterator[World]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]})
    )
    now = int(time.time())
    token = jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "requester",
            "groups": ["finance-analysts"],
            "iat": now,
            "exp": now + 600,
        },
        key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    (tmp_path / "key").write_text(REAL_KEY)
    fake = fake_claude.FakeClaude(fake_claude.Settings(api_key_file=str(tmp_path / "key")))
    probe = RecordProbe()
    hooks = Hooks(recording=probe)
    install_gate(hooks, approvals_env.sidecar_access(), GateSettings(), masked_summary)
    async with fake_claude.running(fake) as upstream:
        config = SidecarConfig(
            namespace=approvals_env.namespace,
            pod_name="report-7f9c",
            service_account=SIDECAR_SA,
            provider_key_file=tmp_path / "key",
            upstream_url=upstream,
            opa_url=opa_url,
            opa_timeout=2.0,
            port=0,
            admin_port=0,
            admin_host="127.0.0.1",
            oidc_issuer=ISSUER,
            oidc_audience=(AUDIENCE,),
            oidc_jwks_file=tmp_path / "jwks.json",
        )
        application = sidecar_app.build_app(config, hooks)
        runner, port = await sidecar_app.start(application, config, "127.0.0.1", 0)
        try:
            yield World(approvals_env, f"http://127.0.0.1:{port}", application, fake, probe, token)
        finally:
            await runner.cleanup()


def cli(env: ApprovalsEnv, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "skillwarden",
            "approvals",
            *args,
            "-n",
            env.namespace,
            "--kubeconfig",
            env.stack["kubeconfigs"][user],
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def find_approval(env: ApprovalsEnv, marker: str) -> list[dict[str, Any]]:
    items = env.api("admin").list_namespaced_custom_object(GROUP, VERSION, env.namespace, PLURAL)["items"]
    return [i for i in items if marker in i["spec"]["request"].get("promptSummary", "")]


async def wait_for_approval(env: ApprovalsEnv, marker: str, count: int = 1) -> dict[str, Any]:
    for _ in range(300):  # 30 s: generous on a loaded CI machine
        found = await asyncio.to_thread(find_approval, env, marker)
        if len(found) >= count:
            return sorted(found, key=lambda i: i["metadata"]["creationTimestamp"])[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no SkillApproval with {marker}")


async def ask(world: World, prompt: str, seconds: float = 60) -> anthropic.types.Message:
    async with world.client() as client:
        return await client.with_options(timeout=seconds).messages.create(
            model=MODEL,
            max_tokens=512,
            messages=[{"role": "user", "content": prompt}],
            extra_body={
                "container": {"skills": [{"type": "anthropic", "skill_id": "xlsx", "version": "latest"}]}
            },
        )


async def test_requester_waits_approver_approves_request_completes_and_the_record_names_them(
    world: World,
) -> None:
    env, marker = world.env, uuid.uuid4().hex[:10]
    prompt = f"Export the customer list for Q3 as a spreadsheet, ref {marker}, contact jane.doe@example.com"
    held = asyncio.create_task(ask(world, prompt))
    approval = await wait_for_approval(env, marker)
    name = approval["metadata"]["name"]
    spec = approval["spec"]
    assert spec["requester"]["identity"]["sub"] == "requester" and spec["rule"] == "customer-export"
    assert spec["policy"] == f"{env.namespace}/finance-reporting"
    assert "jane.doe@example.com" not in spec["request"]["promptSummary"]
    assert world.fake.received == [] and not held.done()

    listed = await asyncio.to_thread(cli, env, "approver", "list")
    assert name in listed.stdout and "Pending" in listed.stdout
    approved = await asyncio.to_thread(cli, env, "approver", "approve", name, "--reason", "Q3 close, FIN-42")
    assert approved.returncode == 0, approved.stderr

    message = await asyncio.wait_for(held, 30)
    assert message.content[0].type == "text"
    assert len(world.fake.received) == 1
    [recorded] = [e for e in world.probe.requests if e.approval.id == name and e.approval.state == "Approved"]
    assert recorded.decision is not None and recorded.decision.action == "allow"
    assert recorded.approval.state == "Approved"
    assert [(r["reviewer"], r["decision"], r["reason"]) for r in recorded.approval.details["reviews"]] == [
        ("approver", "Approve", "Q3 close, FIN-42")
    ]
    assert recorded.approval.details["state"] == "Used" and recorded.approval.details["expiresAt"]
    record = approval_record(recorded.approval)  # the `approval` part of the session record
    assert record is not None and record["name"] == name and record["reasons"] == ["Q3 close, FIN-42"]
    assert [r["reviewer"] for r in record["reviewers"]] == ["approver"]
    assert world.sample("skillwarden_approvals_total", state="Approved") == 1
    assert world.sample("skillwarden_approval_wait_seconds_count") == 1

    # Second use of the same approval: refused; the identical request needs a new approval.
    with pytest.raises(anthropic.PermissionDeniedError) as second:
        await ask(world, prompt)
    assert second.value.body["error"]["code"] == "approval_pending"  # type: ignore[index]
    assert second.value.body["error"]["approval"]["name"] != name  # type: ignore[index]
    assert len(world.fake.received) == 1


async def test_pending_answer_names_the_approval_and_the_identical_retry_passes_once_approved(
    world: World,
) -> None:
    env, marker = world.env, uuid.uuid4().hex[:10]
    prompt = f"customer export for the board pack {marker}"
    started = time.monotonic()
    with pytest.raises(anthropic.PermissionDeniedError) as pending:
        await ask(world, prompt)
    assert 14 <= time.monotonic() - started < 30  # held for the policy's holdSeconds (15)
    error = pending.value.body["error"]  # type: ignore[index]
    assert error["code"] == "approval_pending"
    name = error["approval"]["name"]
    assert name in error["message"] and error["approval"]["expiresAt"]
    assert world.fake.received == []
    # The refusal is on the record too: which approval, its state and expiry.
    [refused] = [e for e in world.probe.requests if e.approval.id == name]
    assert refused.rejection is not None and refused.approval.state == "Pending"
    assert refused.approval.details["expiresAt"] == error["approval"]["expiresAt"]

    # The request already returned (no hold to race). requester may review (peer-review policy + RBAC)
    # but never their own request; outsider: RBAC.
    own = await asyncio.to_thread(cli, env, "requester", "approve", name, "--reason", "trust me")
    assert own.returncode == 1 and "no self-approval" in own.stderr
    outsider = await asyncio.to_thread(cli, env, "outsider", "approve", name, "--reason", "hi")
    assert outsider.returncode == 1 and "403" in outsider.stderr
    assert (
        await asyncio.to_thread(cli, env, "approver2", "approve", name, "--reason", "board pack")
    ).returncode == 0
    # An edited prompt is another request: a new approval, nothing forwarded (client gives up).
    with pytest.raises(anthropic.APITimeoutError):
        await ask(world, prompt + " and their home addresses", seconds=3)
    states = sorted(
        a["status"].get("state", "Pending") if a.get("status") else "Pending"
        for a in await asyncio.to_thread(find_approval, env, marker)
    )
    assert states == ["Approved", "Pending"]
    assert world.fake.received == []
    reply = await ask(world, prompt)  # identical: passes at once
    assert reply.content and len(world.fake.received) == 1
    [recorded] = [e for e in world.probe.requests if e.approval.id == name and e.approval.state == "Approved"]
    assert recorded.approval.details["reviews"][0]["reviewer"] == "approver2"
