"""The SkillApproval rules, enforced by the real kube-apiserver: RBAC plus our admission webhook.

Reviews go through `skillwarden approvals approve|deny` (the real CLI, as the kubeconfig users of
the dev stack); the sidecar's writes go through its own service-account token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from approvals_helpers import GROUP, PLURAL, VERSION, ApprovalsEnv, approval_body, random_digest
from kubernetes.client.exceptions import ApiException

from skillwarden_cli.main import main as cli_main
from skillwarden_sidecar.approval_client import ApprovalClient, KubeRefused


@pytest.fixture
async def sidecar(approvals_env: ApprovalsEnv) -> AsyncIterator[ApprovalClient]:
    access = approvals_env.sidecar_access()
    async with aiohttp.ClientSession() as session:
        yield ApprovalClient(access, session)


def review(
    env: ApprovalsEnv, user: str, verb: str, name: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    capsys.readouterr()
    code = cli_main(
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
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def read(env: ApprovalsEnv, name: str) -> dict[str, Any]:
    result: dict[str, Any] = env.api("admin").get_namespaced_custom_object(
        GROUP, VERSION, env.namespace, PLURAL, name
    )
    return result


async def create(env: ApprovalsEnv, sidecar: ApprovalClient, **kwargs: Any) -> str:
    created = await sidecar.create(env.namespace, approval_body(env, random_digest(), **kwargs))
    return str(created["metadata"]["name"])


async def test_sidecar_creates_and_the_webhook_stamps_the_creator(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient
) -> None:
    digest = random_digest()
    created = await sidecar.create(approvals_env.namespace, approval_body(approvals_env, digest))
    assert created["spec"]["createdBy"] == approvals_env.sidecar_username
    assert created["metadata"]["labels"]["skillwarden.io/request-digest"] == digest[7:70]
    forged = approval_body(approvals_env, random_digest())
    forged["spec"]["createdBy"] = "system:serviceaccount:kube-system:someone-else"
    with pytest.raises(KubeRefused, match="createdBy is set by the server"):
        await sidecar.create(approvals_env.namespace, forged)


async def test_approver_approves_with_a_reason_and_is_named_by_the_server(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient, capsys: pytest.CaptureFixture[str]
) -> None:
    name = await create(approvals_env, sidecar)
    code, out = review(approvals_env, "approver", "approve", name, "quarterly export, ticket FIN-1", capsys)
    assert code == 0, out
    assert "state Approved" in out
    status = read(approvals_env, name)["status"]
    assert status["state"] == "Approved"
    [entry] = status["reviews"]
    assert entry["reviewer"] == "approver"
    assert "finance-leads" in entry["groups"]
    assert entry["reason"] == "quarterly export, ticket FIN-1"
    assert dt.datetime.fromisoformat(entry["time"].replace("Z", "+00:00")) <= dt.datetime.now(dt.UTC)


def test_cli_runs_as_the_installed_command_and_kubectl_plugin(approvals_env: ApprovalsEnv) -> None:
    kubectl = approvals_env.stack["binaries"]["kubectl"]
    for command in (["skillwarden"], ["kubectl-skillwarden"], [kubectl, "skillwarden"]):
        result = subprocess.run(
            [
                *command,
                "approvals",
                "list",
                "-n",
                approvals_env.namespace,
                "--kubeconfig",
                approvals_env.stack["kubeconfigs"]["approver"],
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[:3] == ["NAME", "STATE", "REQUESTER"]


async def test_requester_cannot_approve_their_own_request(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # finance-analysts may review in this namespace (RBAC) and is an approver group here: only the
    # self-approval rule stands between the requester and their own approval.
    name = await create(approvals_env, sidecar, approvers={"groups": ["finance-leads", "finance-analysts"]})
    code, out = review(approvals_env, "requester", "approve", name, "looks fine to me", capsys)
    assert code == 1
    assert "requester is the requester of this approval: no self-approval" in out
    assert read(approvals_env, name).get("status", {}).get("reviews") in (None, [])


async def test_the_sidecar_account_cannot_approve_what_it_created(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient
) -> None:
    name = await create(approvals_env, sidecar, approvers={"groups": ["finance-leads"]})
    with pytest.raises(KubeRefused, match="no self-approval"):
        await sidecar.patch_status(
            approvals_env.namespace, name, {"status": {"reviews": [{"decision": "Approve", "reason": "me"}]}}
        )


async def test_outsider_is_refused_by_rbac(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient, capsys: pytest.CaptureFixture[str]
) -> None:
    name = await create(approvals_env, sidecar)
    code, out = review(approvals_env, "outsider", "approve", name, "let me in", capsys)
    assert code == 1
    assert "403" in out and "forbidden" in out.lower()
    with pytest.raises(ApiException) as raised:
        approvals_env.api("outsider").patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            approvals_env.namespace,
            PLURAL,
            name,
            {"status": {"reviews": [{"decision": "Approve", "reason": "x"}]}},
            _content_type="application/merge-patch+json",
        )
    assert raised.value.status == 403


@pytest.mark.parametrize("forged", [{"reviewer": "approver2"}, {"groups": ["system:masters"]}])
async def test_reviewer_fields_cannot_be_forged(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient, forged: dict[str, Any]
) -> None:
    name = await create(approvals_env, sidecar)
    with pytest.raises(ApiException) as raised:
        approvals_env.api("approver").patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            approvals_env.namespace,
            PLURAL,
            name,
            {"status": {"reviews": [{"decision": "Approve", "reason": "ok", **forged}]}},
            _content_type="application/merge-patch+json",
        )
    assert raised.value.status == 403
    assert "may not be set by a client" in str(raised.value.body)
    assert "reviews" not in read(approvals_env, name).get("status", {})


async def test_a_client_supplied_time_is_replaced_by_server_time(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient
) -> None:
    name = await create(approvals_env, sidecar)
    approvals_env.api("approver").patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        approvals_env.namespace,
        PLURAL,
        name,
        {"status": {"reviews": [{"decision": "Approve", "reason": "ok", "time": "2020-01-01T00:00:00Z"}]}},
        _content_type="application/merge-patch+json",
    )
    [entry] = read(approvals_env, name)["status"]["reviews"]
    stamped = dt.datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - stamped).total_seconds()) < 60
    assert entry["reviewer"] == "approver"


async def test_non_approver_with_rbac_is_refused_and_state_cannot_be_set_directly(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient, capsys: pytest.CaptureFixture[str]
) -> None:
    name = await create(approvals_env, sidecar, requester="someone-else")
    code, out = review(approvals_env, "requester", "approve", name, "I can see it", capsys)
    assert code == 1 and "requester is not an approver for this request" in out
    with pytest.raises(ApiException) as raised:
        approvals_env.api("approver").patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            approvals_env.namespace,
            PLURAL,
            name,
            {"status": {"state": "Approved"}},
            _content_type="application/merge-patch+json",
        )
    assert "cannot be set directly" in str(raised.value.body)


async def test_reason_is_mandatory(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient, capsys: pytest.CaptureFixture[str]
) -> None:
    name = await create(approvals_env, sidecar)
    code, out = review(approvals_env, "approver", "approve", name, "   ", capsys)
    assert code == 2 and "--reason must not be empty" in out
    with pytest.raises(ApiException) as raised:
        approvals_env.api("approver").patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            approvals_env.namespace,
            PLURAL,
            name,
            {"status": {"reviews": [{"decision": "Approve", "reason": " "}]}},
            _content_type="application/merge-patch+json",
        )
    assert "reason is mandatory" in str(raised.value.body)


async def test_two_of_n_needs_two_distinct_approvers(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient, capsys: pytest.CaptureFixture[str]
) -> None:
    name = await create(approvals_env, sidecar, required=2)
    assert review(approvals_env, "approver", "approve", name, "first look ok", capsys)[0] == 0
    assert read(approvals_env, name)["status"]["state"] == "Pending"
    code, out = review(approvals_env, "approver", "approve", name, "approving twice", capsys)
    assert code == 1 and "approver has already reviewed" in out
    assert read(approvals_env, name)["status"]["state"] == "Pending"
    assert review(approvals_env, "approver2", "approve", name, "second pair of eyes", capsys)[0] == 0
    status = read(approvals_env, name)["status"]
    assert status["state"] == "Approved" and status["approvalCount"] == 2
    assert [r["reviewer"] for r in status["reviews"]] == ["approver", "approver2"]


async def test_decided_approvals_are_immutable(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient, capsys: pytest.CaptureFixture[str]
) -> None:
    name = await create(approvals_env, sidecar)
    assert review(approvals_env, "approver", "deny", name, "no customer exports this week", capsys)[0] == 0
    assert read(approvals_env, name)["status"]["state"] == "Denied"
    code, out = review(approvals_env, "approver2", "approve", name, "overrule", capsys)
    assert code == 1 and "already Denied" in out
    current = read(approvals_env, name)
    edited = [{**current["status"]["reviews"][0], "reason": "rewritten history"}]
    with pytest.raises(ApiException) as raised:
        approvals_env.api("approver").patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            approvals_env.namespace,
            PLURAL,
            name,
            {"status": {"reviews": edited}},
            _content_type="application/merge-patch+json",
        )
    assert "immutable" in str(raised.value.body)
    with pytest.raises(ApiException) as raised:
        approvals_env.api("admin").patch_namespaced_custom_object(
            GROUP,
            VERSION,
            approvals_env.namespace,
            PLURAL,
            name,
            {"spec": {"requestDigest": random_digest()}},
            _content_type="application/merge-patch+json",
        )
    assert "spec of a SkillApproval is immutable" in str(raised.value.body)


async def test_decisions_after_expiry_are_refused(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient, capsys: pytest.CaptureFixture[str]
) -> None:
    name = await create(approvals_env, sidecar, ttl_s=2)
    await asyncio.sleep(2.2)
    code, out = review(approvals_env, "approver", "approve", name, "too late", capsys)
    assert code == 1 and "expired" in out
    capsys.readouterr()
    assert (
        cli_main(
            [
                "approvals",
                "list",
                "-n",
                approvals_env.namespace,
                "--state",
                "Expired",
                "--kubeconfig",
                approvals_env.stack["kubeconfigs"]["approver"],
            ]
        )
        == 0
    )
    assert name in capsys.readouterr().out


async def test_used_only_once_and_only_by_the_creator(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient, capsys: pytest.CaptureFixture[str]
) -> None:
    name = await create(approvals_env, sidecar)
    with pytest.raises(KubeRefused, match="not Approved"):
        await sidecar.patch_status(approvals_env.namespace, name, {"status": {"state": "Used"}})
    assert review(approvals_env, "approver", "approve", name, "fine", capsys)[0] == 0
    with pytest.raises(ApiException) as raised:
        approvals_env.api("approver").patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            approvals_env.namespace,
            PLURAL,
            name,
            {"status": {"state": "Used"}},
            _content_type="application/merge-patch+json",
        )
    assert "only the creator" in str(raised.value.body)
    used = await sidecar.patch_status(approvals_env.namespace, name, {"status": {"state": "Used"}})
    assert used["status"]["state"] == "Used" and used["status"]["usedBy"] == approvals_env.sidecar_username
    with pytest.raises(KubeRefused, match="approval is Used"):
        await sidecar.patch_status(approvals_env.namespace, name, {"status": {"state": "Used"}})


async def test_sidecar_clock_skew_is_refused_with_a_clear_message(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient
) -> None:
    past = approval_body(approvals_env, random_digest(), ttl_s=-30)
    with pytest.raises(KubeRefused, match=r"is not in the future .* check the sidecar's clock"):
        await sidecar.create(approvals_env.namespace, past)
    far = approval_body(approvals_env, random_digest(), ttl_s=3 * 86400)
    with pytest.raises(KubeRefused, match="ahead of server time"):
        await sidecar.create(approvals_env.namespace, far)


async def test_malformed_approvals_are_refused_at_admission(
    approvals_env: ApprovalsEnv, sidecar: ApprovalClient
) -> None:
    bad = approval_body(approvals_env, random_digest())
    bad["spec"]["approvers"] = {"groups": []}
    with pytest.raises(KubeRefused, match="nobody could approve"):
        await sidecar.create(approvals_env.namespace, bad)
    bad = approval_body(approvals_env, "sha256:xyz")
    with pytest.raises(KubeRefused, match="requestDigest"):
        await sidecar.create(approvals_env.namespace, bad)
