"""The sidecar's approval gate against the real kube-apiserver and the real admission webhook:
held requests, reviews by the dev stack's users through the CLI, single use, digest binding,
and the bad cases (deleted mid-wait, API server gone during a hold, clock skew)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from approvals_helpers import (
    GROUP,
    PLURAL,
    VERSION,
    ApprovalsEnv,
    appears,
    approvals_for,
    make_exchange,
    review_as,
    unique_prompt,
)

from skillwarden_sidecar.approval import ApprovalGate, GateSettings
from skillwarden_sidecar.approval_client import ApprovalClient, KubeAccess
from skillwarden_sidecar.approval_hook import masked_summary
from skillwarden_sidecar.errors import Rejection


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def gate(approvals_env: ApprovalsEnv, session: aiohttp.ClientSession) -> ApprovalGate:
    return ApprovalGate(
        ApprovalClient(approvals_env.sidecar_access(), session),
        summarize=masked_summary,
    )


async def refused(call: Any) -> Rejection:
    with pytest.raises(Rejection) as raised:
        await call
    return raised.value


def error_of(rejection: Rejection) -> dict[str, Any]:
    body = orjson.loads(rejection.body())
    assert body["type"] == "error"
    error: dict[str, Any] = body["error"]
    return error


async def test_held_request_completes_when_approver_approves(
    approvals_env: ApprovalsEnv, gate: ApprovalGate
) -> None:
    exchange = make_exchange(approvals_env, unique_prompt())
    held = asyncio.create_task(gate.gate(exchange))
    [approval] = await appears(approvals_env, gate.digest(exchange))
    spec = approval["spec"]
    assert spec["requester"]["identity"]["sub"] == "requester"
    assert spec["rule"] == "customer-export" and spec["request"]["skillSummary"] == "anthropic:xlsx"
    summary = spec["request"]["promptSummary"]  # masked by the real masker: never the raw prompt
    assert "jane.doe@example.com" not in summary and summary.startswith("Build the customer export")
    assert not held.done()
    name = approval["metadata"]["name"]
    assert await asyncio.to_thread(review_as, approvals_env, "approver", "approve", name, "Q3 export ok") == 0
    await asyncio.wait_for(held, 10)
    assert exchange.approval.id == name and exchange.approval.state == "Approved"
    details = exchange.approval.details
    assert details["state"] == "Used"
    assert [(r["reviewer"], r["decision"], r["reason"]) for r in details["reviews"]] == [
        ("approver", "Approve", "Q3 export ok")
    ]
    assert details["requestDigest"] == spec["requestDigest"] and details["waitedSeconds"] < 15
    stored = approvals_env.api("admin").get_namespaced_custom_object(
        GROUP, VERSION, approvals_env.namespace, PLURAL, name
    )
    assert stored["status"]["state"] == "Used"

    # The same approval never authorises a second request, even an identical one.
    again = make_exchange(approvals_env, exchange.policy_input["request"]["prompt_text"], hold=0.5)  # type: ignore[index]
    rejection = await refused(gate.gate(again))
    assert rejection.status == 403 and rejection.cause == "approval_pending"
    assert error_of(rejection)["approval"]["name"] != name


async def test_pending_retry_edited_prompt_and_identical_retry(
    approvals_env: ApprovalsEnv, gate: ApprovalGate
) -> None:
    prompt = unique_prompt()
    first = make_exchange(approvals_env, prompt, hold=0.5)
    rejection = await refused(gate.gate(first))
    error = error_of(rejection)
    assert (
        rejection.status == 403
        and error["type"] == "permission_error"
        and error["code"] == "approval_pending"
    )
    name = error["approval"]["name"]
    assert name in error["message"] and error["approval"]["expiresAt"] in error["message"]
    assert await asyncio.to_thread(review_as, approvals_env, "approver", "approve", name, "fine") == 0

    edited = make_exchange(approvals_env, prompt + " and include home addresses", hold=0.5)
    edited_error = error_of(await refused(gate.gate(edited)))
    assert edited_error["code"] == "approval_pending" and edited_error["approval"]["name"] != name

    retry = make_exchange(approvals_env, prompt, hold=0.5)
    await gate.gate(retry)
    assert retry.approval.id == name and retry.approval.state == "Approved"
    assert len(approvals_for(approvals_env, gate.digest(retry))) == 1  # no new approval was made


async def test_concurrent_identical_requests_use_one_approval_once(
    approvals_env: ApprovalsEnv, gate: ApprovalGate
) -> None:
    prompt = unique_prompt()
    name = error_of(await refused(gate.gate(make_exchange(approvals_env, prompt, hold=0))))["approval"][
        "name"
    ]
    assert await asyncio.to_thread(review_as, approvals_env, "approver", "approve", name, "once") == 0
    results = await asyncio.gather(
        *(gate.gate(make_exchange(approvals_env, prompt, hold=1)) for _ in range(3)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    losers = [r for r in results if isinstance(r, Rejection)]
    assert len(losers) == 2 and all(r.status == 403 for r in losers)


async def test_denied_request_gets_403_with_the_reason(
    approvals_env: ApprovalsEnv, gate: ApprovalGate
) -> None:
    prompt = unique_prompt()
    exchange = make_exchange(approvals_env, prompt)
    held = asyncio.create_task(gate.gate(exchange))
    [approval] = await appears(approvals_env, gate.digest(exchange))
    name = approval["metadata"]["name"]
    assert await asyncio.to_thread(review_as, approvals_env, "approver", "deny", name, "no PII exports") == 0
    with pytest.raises(Rejection) as raised:
        await asyncio.wait_for(held, 10)
    error = error_of(raised.value)
    assert raised.value.status == 403 and error["code"] == "approval_denied"
    assert "approver: no PII exports" in error["message"]
    assert exchange.approval.state == "Denied"
    assert exchange.approval.details["reviews"][0]["reason"] == "no PII exports"
    # A retry of the same request is refused at once, without pestering the approvers again.
    started = time.monotonic()
    again = error_of(await refused(gate.gate(make_exchange(approvals_env, prompt))))
    assert again["code"] == "approval_denied" and time.monotonic() - started < 2
    assert len(approvals_for(approvals_env, gate.digest(exchange))) == 1


async def test_expired_approval_is_refused(approvals_env: ApprovalsEnv, gate: ApprovalGate) -> None:
    exchange = make_exchange(approvals_env, unique_prompt(), ttl=1.5, hold=10)
    started = time.monotonic()
    rejection = await refused(gate.gate(exchange))
    assert rejection.cause == "approval_expired" and time.monotonic() - started < 6
    [stored] = approvals_for(approvals_env, gate.digest(exchange))
    assert stored["status"]["state"] == "Expired"
    code = await asyncio.to_thread(
        review_as, approvals_env, "approver", "approve", stored["metadata"]["name"], "late"
    )
    assert code == 1


async def test_two_of_n_waits_for_the_second_distinct_approver(
    approvals_env: ApprovalsEnv, gate: ApprovalGate
) -> None:
    exchange = make_exchange(approvals_env, unique_prompt(), required=2)
    held = asyncio.create_task(gate.gate(exchange))
    [approval] = await appears(approvals_env, gate.digest(exchange))
    name = approval["metadata"]["name"]
    assert await asyncio.to_thread(review_as, approvals_env, "approver", "approve", name, "one") == 0
    await asyncio.sleep(1.0)
    assert not held.done(), "one approval of two must not release the request"
    assert await asyncio.to_thread(review_as, approvals_env, "approver2", "approve", name, "two") == 0
    await asyncio.wait_for(held, 10)
    assert [r["reviewer"] for r in exchange.approval.details["reviews"]] == ["approver", "approver2"]


async def test_approval_deleted_mid_wait_fails_closed(
    approvals_env: ApprovalsEnv, gate: ApprovalGate
) -> None:
    exchange = make_exchange(approvals_env, unique_prompt())
    held = asyncio.create_task(gate.gate(exchange))
    [approval] = await appears(approvals_env, gate.digest(exchange))
    await asyncio.to_thread(
        approvals_env.api("admin").delete_namespaced_custom_object,
        GROUP,
        VERSION,
        approvals_env.namespace,
        PLURAL,
        approval["metadata"]["name"],
    )
    with pytest.raises(Rejection) as raised:
        await asyncio.wait_for(held, 10)
    assert raised.value.cause == "approval_deleted" and "nothing was forwarded" in raised.value.message


async def test_api_server_unreachable_fails_closed(
    approvals_env: ApprovalsEnv, session: aiohttp.ClientSession
) -> None:
    from skillwarden_devstack.processes import free_port

    dead = KubeAccess(server=f"https://127.0.0.1:{free_port()}", token="x")
    gate = ApprovalGate(ApprovalClient(dead, session, request_timeout=1))
    rejection = await refused(gate.gate(make_exchange(approvals_env, unique_prompt())))
    assert rejection.status == 503 and rejection.cause == "approval_unavailable"
    assert "cannot reach the Kubernetes API" in rejection.message


class Proxy:
    """A TCP relay in front of the API server that can be cut and restored, to act out an API
    server restart during a hold (no traffic, then traffic again)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers.difference_update({writer, up_writer})


@pytest.fixture
async def proxy(approvals_env: ApprovalsEnv) -> AsyncIterator[Proxy]:
    relay = Proxy(int(approvals_env.stack["apiserver"].rsplit(":", 1)[1]))
    await relay.start()
    yield relay
    with contextlib.suppress(Exception):
        await relay.cut()


def proxied_gate(
    env: ApprovalsEnv,
    session: aiohttp.ClientSession,
    proxy: Proxy,
    clock: Callable[[], dt.datetime] | None = None,
) -> ApprovalGate:
    access = env.sidecar_access()
    via = KubeAccess(server=f"https://127.0.0.1:{proxy.port}", ca_pem=access.ca_pem, token=access.token)
    client = ApprovalClient(via, session, request_timeout=1)
    return ApprovalGate(client, clock=clock) if clock else ApprovalGate(client)


async def test_api_server_gone_for_the_rest_of_the_hold_fails_closed(
    approvals_env: ApprovalsEnv, session: aiohttp.ClientSession, proxy: Proxy
) -> None:
    gate = proxied_gate(approvals_env, session, proxy)
    exchange = make_exchange(approvals_env, unique_prompt(), hold=3)
    held = asyncio.create_task(gate.gate(exchange))
    [approval] = await appears(approvals_env, gate.digest(exchange))
    await asyncio.sleep(0.3)
    await proxy.cut()
    # Approved behind the sidecar's back: without the API server the sidecar cannot know; it refuses.
    assert (
        await asyncio.to_thread(
            review_as,
            approvals_env,
            "approver",
            "approve",
            approval["metadata"]["name"],
            "approved during the outage",
        )
        == 0
    )
    with pytest.raises(Rejection) as raised:
        await asyncio.wait_for(held, 10)
    assert raised.value.status == 503 and raised.value.cause == "approval_unavailable"
    assert "lost the Kubernetes API" in raised.value.message


async def test_api_server_back_within_the_hold_lets_the_approved_request_through(
    approvals_env: ApprovalsEnv, session: aiohttp.ClientSession, proxy: Proxy
) -> None:
    gate = proxied_gate(approvals_env, session, proxy)
    exchange = make_exchange(approvals_env, unique_prompt(), hold=15)
    held = asyncio.create_task(gate.gate(exchange))
    [approval] = await appears(approvals_env, gate.digest(exchange))
    await asyncio.sleep(0.3)
    await proxy.cut()
    assert (
        await asyncio.to_thread(
            review_as,
            approvals_env,
            "approver",
            "approve",
            approval["metadata"]["name"],
            "approved during the outage",
        )
        == 0
    )
    await asyncio.sleep(1.5)
    assert not held.done()
    await proxy.start()  # same port: the "restarted" API server
    await asyncio.wait_for(held, 12)
    assert exchange.approval.state == "Approved"


async def test_sidecar_clock_skew_fails_closed_with_a_clear_message(
    approvals_env: ApprovalsEnv, session: aiohttp.ClientSession
) -> None:
    behind = ApprovalGate(
        ApprovalClient(approvals_env.sidecar_access(), session),
        GateSettings(),
        clock=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(hours=2),
    )
    rejection = await refused(behind.gate(make_exchange(approvals_env, unique_prompt(), ttl=1800)))
    assert rejection.status == 403 and rejection.cause == "approval_unavailable"
    assert "check the sidecar's clock" in rejection.message


async def test_channel_is_told_on_create_and_decision_with_signed_posts(
    approvals_env: ApprovalsEnv, session: aiohttp.ClientSession
) -> None:
    from aiohttp import web

    from skillwarden_sidecar.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, Notifier, verify_signature

    secret = b"channel-secret"
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify_signature(
            secret,
            request.headers.get(TIMESTAMP_HEADER, ""),
            body,
            request.headers.get(SIGNATURE_HEADER, ""),
            time.time(),
        )
        received.append({"ok": ok, **orjson.loads(body)})
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    notifier = Notifier(session, f"http://127.0.0.1:{port}/hook", secret)
    gate = ApprovalGate(ApprovalClient(approvals_env.sidecar_access(), session), notifier=notifier)
    try:
        exchange = make_exchange(approvals_env, unique_prompt())
        held = asyncio.create_task(gate.gate(exchange))
        [approval] = await appears(approvals_env, gate.digest(exchange))
        name = approval["metadata"]["name"]
        assert await asyncio.to_thread(review_as, approvals_env, "approver", "approve", name, "ok by me") == 0
        await asyncio.wait_for(held, 10)
        await notifier.aclose()
    finally:
        await runner.cleanup()
    assert [(r["ok"], r["skillwarden"]["event"]) for r in received] == [(True, "created"), (True, "decided")]
    assert f"approve {name} -n {approvals_env.namespace}" in received[0]["text"]
    assert "approver Approve: ok by me" in received[1]["text"]
    assert "jane.doe@example.com" not in str(received)
