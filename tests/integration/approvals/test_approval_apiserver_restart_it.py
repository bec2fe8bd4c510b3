"""A held request while the real kube-apiserver restarts (a private etcd + kube-apiserver, so the
shared stack is never disturbed): the sidecar keeps trying, sees the approval made after the
restart, and forwards only then; an outage longer than the hold fails closed."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from approvals_helpers import appears, approvals_environment, make_exchange, review_as, unique_prompt

from skillwarden_devstack import components, pki, processes, tools
from skillwarden_devstack.processes import Running
from skillwarden_sidecar.approval import ApprovalGate
from skillwarden_sidecar.approval_client import ApprovalClient
from skillwarden_sidecar.errors import Rejection


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    bins = tools.ensure_all()
    keys = pki.create(tmp_path / "pki", dt.datetime.now(dt.UTC))
    tokens = pki.tokens(keys)
    started: list[Running] = []
    try:
        etcd, etcd_url = components.start_etcd(bins, tmp_path)
        started.append(etcd)
        apiserver, url = components.start_apiserver(bins, tmp_path, keys, etcd_url, tokens["admin"])
        started.append(apiserver)
        kubeconfigs = {}
        for user in ("admin", "approver"):
            kubeconfigs[user] = str(tmp_path / f"{user}.yaml")
            pki.write_kubeconfig(Path(kubeconfigs[user]), url, keys.ca_cert, user, tokens[user])
        yield {
            "apiserver": url,
            "ca_cert": str(keys.ca_cert),
            "ca_key": str(keys.ca_key),
            "kubeconfigs": kubeconfigs,
            "binaries": {"kubectl": str(bins.kubectl)},
            "_started": started,
            "_token": tokens["admin"],
            "_dir": tmp_path,
        }
    finally:
        for running in reversed(started):
            processes.stop(running)


def _ready(stack: dict[str, Any]) -> bool:
    request = urllib.request.Request(
        f"{stack['apiserver']}/readyz", headers={"Authorization": f"Bearer {stack['_token']}"}
    )
    context = ssl.create_default_context(cafile=stack["ca_cert"])
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop_apiserver(stack: dict[str, Any]) -> list[str]:
    apiserver: Running = stack["_started"][1]
    argv = [
        a.decode() for a in Path(f"/proc/{apiserver.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    ]
    processes.stop(apiserver)
    return argv


def start_apiserver(stack: dict[str, Any], argv: list[str]) -> None:
    restarted = processes.spawn(
        "kube-apiserver-restarted", argv, stack["_dir"] / "kube-apiserver-restarted.log"
    )
    stack["_started"][1] = restarted
    processes.wait_until("kube-apiserver", lambda: _ready(stack), restarted, 120, "ready again")


async def test_held_request_survives_an_apiserver_restart_and_passes_once_approved(
    private_stack: dict[str, Any], tmp_path: Path
) -> None:
    with approvals_environment(private_stack, tmp_path / "webhook") as env:
        async with aiohttp.ClientSession() as session:
            gate = ApprovalGate(ApprovalClient(env.sidecar_access(), session, request_timeout=2))
            exchange = make_exchange(env, unique_prompt(), hold=120)
            held = asyncio.create_task(gate.gate(exchange))
            [approval] = await appears(env, gate.digest(exchange))
            argv = await asyncio.to_thread(stop_apiserver, private_stack)
            await asyncio.sleep(2)
            assert not held.done(), "nothing may be decided while the API server is down"
            await asyncio.to_thread(start_apiserver, private_stack, argv)
            name = approval["metadata"]["name"]
            # Right after a restart the API server may not serve the CRD yet: the reviewer retries.
            for _ in range(60):
                if await asyncio.to_thread(review_as, env, "approver", "approve", name, "after restart") == 0:
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError("the approval could not be reviewed after the restart")
            await asyncio.wait_for(held, 60)
            assert exchange.approval.state == "Approved"
            assert exchange.approval.details["reviews"][0]["reason"] == "after restart"


async def test_an_outage_longer_than_the_hold_fails_closed(
    private_stack: dict[str, Any], tmp_path: Path
) -> None:
    with approvals_environment(private_stack, tmp_path / "webhook") as env:
        async with aiohttp.ClientSession() as session:
            gate = ApprovalGate(ApprovalClient(env.sidecar_access(), session, request_timeout=2))
            exchange = make_exchange(env, unique_prompt(), hold=15)  # outlasts the graceful shutdown
            held = asyncio.create_task(gate.gate(exchange))
            await appears(env, gate.digest(exchange))
            argv = await asyncio.to_thread(stop_apiserver, private_stack)
            try:
                with pytest.raises(Rejection) as raised:
                    await asyncio.wait_for(held, 45)
                assert raised.value.status == 503 and raised.value.cause == "approval_unavailable"
                assert "nothing was forwarded" in raised.value.message
            finally:
                await asyncio.to_thread(start_apiserver, private_stack, argv)
