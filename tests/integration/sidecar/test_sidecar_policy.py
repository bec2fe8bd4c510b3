"""The real OPA, loaded with a real bundle from the operator's `build_bundle`, decides."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
import yarl
from aiohttp import web
from sidecar_support import NAMESPACE, BundleServer, SidecarFactory, SidecarHandle, start_opa

from skillwarden_devstack import components, tools
from skillwarden_devstack.fake_claude import FakeClaude
from skillwarden_sidecar.pipeline import Exchange, Hooks, NoApprovals

MODEL = "claude-sonnet-4-6"
BETAS = ["code-execution-2025-08-25", "skills-2025-10-02"]


def skill_request(skill: str, text: str = "Build the Q3 report.") -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 512, "betas": BETAS,
            "container": {"skills": [{"type": "anthropic", "skill_id": skill, "version": "latest"}]},
            "tools": [{"type": "code_execution_20250825", "name": "code_execution"}],
            "messages": [{"role": "user", "content": text}]}


def client(sidecar: SidecarHandle, key: str = "placeholder") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sidecar.url, api_key=key, max_retries=0)


async def test_allowed_skill_passes_denied_skill_names_the_rule(sidecar: SidecarHandle,
                                                                fake: tuple[FakeClaude, str]) -> None:
    upstream, _ = fake
    sdk = client(sidecar)
    allowed = await sdk.beta.messages.create(**skill_request("xlsx"))
    assert allowed.container is not None and allowed.container.skills[0].skill_id == "xlsx"
    assert len(upstream.received) == 1

    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        await sdk.beta.messages.create(**skill_request("pptx"))
    error = denied.value
    assert error.status_code == 403
    body: Any = error.body
    assert body["type"] == "error" and body["error"]["type"] == "permission_error"
    assert "rule no-pptx-for-finance" in body["error"]["message"]
    assert "Slide decks leave the finance perimeter" in body["error"]["message"]
    assert body["error"]["rule"] == "no-pptx-for-finance"
    assert body["error"]["policy"] == f"{NAMESPACE}/sidecar-test"
    assert error.response.headers["request-id"].startswith("req_skw_")
    assert len(upstream.received) == 1  # the denied request never left the pod
    assert sidecar.sample("skillwarden_requests_total", {
        "decision": "deny", "namespace": NAMESPACE, "skill": "pptx", "model": MODEL,
        "route": "/v1/messages"}) == 1
    assert sidecar.sample("skillwarden_requests_total", {
        "decision": "allow", "namespace": NAMESPACE, "skill": "xlsx", "model": MODEL,
        "route": "/v1/messages"}) == 1


async def test_ungranted_skill_and_prompt_rule_denied(sidecar: SidecarHandle,
                                                      fake: tuple[FakeClaude, str]) -> None:
    upstream, _ = fake
    sdk = client(sidecar)
    with pytest.raises(anthropic.PermissionDeniedError) as ungranted:
        await sdk.beta.messages.create(**skill_request("pdf"))
    assert "no SkillPolicy subject grants this request" in str(ungranted.value.body)
    with pytest.raises(anthropic.PermissionDeniedError) as prompt_rule:
        await sdk.beta.messages.create(**skill_request("xlsx", "Please dump the passwords list export"))
    assert "rule no-credential-dumps" in str(prompt_rule.value.body)
    with pytest.raises(anthropic.PermissionDeniedError) as too_many_tokens:
        await sdk.messages.create(model=MODEL, max_tokens=5000, messages=[{"role": "user", "content": "hi"}])
    assert too_many_tokens.value.status_code == 403
    assert upstream.received == []


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/v1/messages/batches", 404),
    ("GET", "/v1/files", 404),
    ("GET", "/admin", 404),
    ("GET", "/v1/skills/..%2F..%2Fadmin", 400),
    ("GET", "/v1/skills/%2e%2e", 400),
    ("GET", "/v1//models", 400),
    ("PUT", "/v1/messages", 405),
])
async def test_unknown_routes_and_traversal_denied(sidecar: SidecarHandle, fake: tuple[FakeClaude, str],
                                                   method: str, path: str, status: int) -> None:
    upstream, _ = fake
    async with aiohttp.ClientSession() as http:
        # encoded=True: send the path exactly as written (no client-side normalisation)
        async with http.request(method, yarl.URL(sidecar.url + path, encoded=True),
                                headers={"anthropic-version": "2023-06-01"}) as response:
            body = await response.json()
    assert response.status == status
    assert body["type"] == "error" and body["error"]["type"] in {"not_found_error", "invalid_request_error"}
    assert upstream.received == []


async def test_skills_api_is_governed(sidecar: SidecarHandle, fake: tuple[FakeClaude, str]) -> None:
    upstream, _ = fake
    sdk = client(sidecar)
    created = await sdk.beta.skills.create(files=[("skill/SKILL.md", b"---\nname: q3\n---\nQ3 report\n")],
                                           display_name="q3 report")
    assert created.display_name == "q3 report"
    assert upstream.received[0].headers["Content-Type"].startswith("multipart/form-data")
    # Reading or deleting a skill the policy does not grant is refused (custom skills need a grant).
    with pytest.raises(anthropic.PermissionDeniedError):
        await sdk.beta.skills.delete(created.id)
    assert created.id in upstream.skills


async def test_stopping_opa_denies_everything(sidecar_factory: SidecarFactory, bundle_server: BundleServer,
                                             opa_binary: Path, tmp_path: Path,
                                             fake: tuple[FakeClaude, str]) -> None:
    upstream, _ = fake
    opa = start_opa(opa_binary, tmp_path, bundle_server.url, NAMESPACE, "opa-stoppable")
    try:
        async with sidecar_factory(opa_url=opa.url) as sidecar:
            sdk = client(sidecar)
            await sdk.beta.messages.create(**skill_request("xlsx"))
            async with aiohttp.ClientSession() as http:
                async with http.get(sidecar.admin_url + "/readyz") as ready:
                    assert ready.status == 200, await ready.text()
            opa.stop()
            before = len(upstream.received)
            for call in (lambda: sdk.beta.messages.create(**skill_request("xlsx")),
                         lambda: sdk.messages.count_tokens(model=MODEL,
                                                           messages=[{"role": "user", "content": "x"}]),
                         lambda: sdk.models.list()):
                with pytest.raises(anthropic.APIStatusError) as refused:
                    await call()
                assert refused.value.status_code == 503
                assert "policy engine unreachable; request denied" in str(refused.value.body)
            assert len(upstream.received) == before
            async with aiohttp.ClientSession() as http:
                async with http.get(sidecar.admin_url + "/readyz") as ready:
                    assert ready.status == 503
                    assert (await ready.json())["opa_bundle"] is False
            assert sidecar.sample("skillwarden_errors_total", {"cause": "policy_unavailable"}) == 3
    finally:
        opa.stop()


async def test_opa_without_bundle_denies(sidecar_factory: SidecarFactory, tmp_path: Path,
                                         fake: tuple[FakeClaude, str]) -> None:
    running, url = components.start_opa(tools.ensure_all(), tmp_path, "opa-empty")
    try:
        async with sidecar_factory(opa_url=url) as sidecar:
            with pytest.raises(anthropic.APIStatusError) as refused:
                await client(sidecar).beta.messages.create(**skill_request("xlsx"))
            assert refused.value.status_code == 503
            assert "policy gave no decision" in str(refused.value.body)
    finally:
        from skillwarden_devstack.processes import stop
        stop(running)
    assert fake[0].received == []


class ApproveEverything:
    """Stands in for the approvals team's hook: approves at once, so OPA is asked again."""

    def __init__(self) -> None:
        self.gated: list[str] = []

    async def lookup(self, exchange: Exchange) -> None:
        return None

    async def gate(self, exchange: Exchange) -> None:
        assert exchange.decision is not None
        self.gated.append(str(exchange.decision.rule))
        exchange.approval.id, exchange.approval.state = "skillapproval-test", "Approved"


async def test_require_approval_without_workflow_is_refused_and_with_approval_reasks_opa(
        sidecar_factory: SidecarFactory, fake: tuple[FakeClaude, str]) -> None:
    upstream, _ = fake
    request = skill_request("xlsx", "Please prepare the customer export for October")
    async with sidecar_factory(hooks=Hooks(approval=NoApprovals())) as sidecar:
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            await client(sidecar).beta.messages.create(**request)
        assert "approval required by rule 'customer-export'" in str(refused.value.body)
    assert upstream.received == []
    approvals = ApproveEverything()
    async with sidecar_factory(hooks=Hooks(approval=approvals)) as sidecar:
        answer = await client(sidecar).beta.messages.create(**request)
        assert answer.content[0].type == "text"
        assert approvals.gated == ["customer-export"]
        assert sidecar.sample("skillwarden_approvals_total", {"state": "Approved"}) == 1
    assert len(upstream.received) == 1


async def test_slow_policy_engine_is_a_deny(sidecar_factory: SidecarFactory,
                                            fake: tuple[FakeClaude, str]) -> None:
    """An OPA stand-in that would allow everything, but answers after the configured bound."""
    async def slow_allow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response({"result": {"action": "allow", "reasons": [], "policy": None, "rule": None}})

    slow = web.Application()
    slow.router.add_post("/v1/data/skillwarden/decision", slow_allow)
    runner = web.AppRunner(slow, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with sidecar_factory(opa_url=f"http://127.0.0.1:{port}", opa_timeout=0.2) as sidecar:
            with pytest.raises(anthropic.APIStatusError) as refused:
                await client(sidecar).beta.messages.create(**skill_request("xlsx"))
            assert refused.value.status_code == 503
            assert "policy engine did not answer in time; request denied" in str(refused.value.body)
    finally:
        await runner.cleanup()
    assert fake[0].received == []
