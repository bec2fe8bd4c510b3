"""ApprovalGate decisions on objects a real API server would rarely hand out (malformed, odd
events), with a scripted stand-in for the Kubernetes client. The real API server, webhook and
sidecar are exercised in tests/integration/approvals/."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from skillwarden_operator import approvals_model as model
from skillwarden_sidecar.approval import ApprovalGate
from skillwarden_sidecar.approval_client import KubeNotFound, KubeRefused, KubeUnavailable
from skillwarden_sidecar.errors import Rejection
from skillwarden_sidecar.pipeline import Decision, Exchange, Identity, Workload

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def exchange(body: Any = None, hold: float = 0.2) -> Exchange:
    decision = Decision(
        action="require_approval",
        reasons=(),
        policy="finance/p",
        rule="r",
        message="m",
        masking={},
        recording={},
        raw={},
        bundle_revision="",
        approval={"approvers": {"groups": ["leads"]}, "required": 1, "ttlSeconds": 600, "holdSeconds": hold},
    )
    return Exchange(
        request_id="r1",
        received_at=0.0,
        method="POST",
        path="/v1/messages",
        query="",
        operation="messages.create",
        workload=Workload("finance", "pod", "bot"),
        identity=Identity(kind="oidc", sub="alice"),
        decision=decision,
        body=body if body is not None else {"messages": [{"role": "user", "content": "hi"}]},
        policy_input={"request": {"prompt_text": "hi"}},
    )


def stored(
    digest: str, *, state: str | None = None, expires: str | None = None, name: str = "old-1", rv: str = "5"
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "finance",
            "resourceVersion": rv,
            "creationTimestamp": "2026-11-24T11:59:00Z",
        },
        "spec": {
            "requestDigest": digest,
            "required": 1,
            "createdBy": "system:serviceaccount:finance:bot",
            "expiresAt": expires if expires is not None else model.format_time(NOW + dt.timedelta(minutes=5)),
        },
        "status": {},
    }
    if state:
        obj["status"]["state"] = state
    return obj


class ScriptedClient:
    def __init__(
        self,
        items: list[dict[str, Any]] | None = None,
        events: list[tuple[str, dict[str, Any]]] | None = None,
        patched: dict[str, Any] | None = None,
        list_error: Exception | None = None,
    ) -> None:
        self.items = items or []
        self.events = events or []
        self.patched = patched
        self.list_error = list_error
        self.created: list[dict[str, Any]] = []
        self.patches: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None

    async def list(self, namespace: str, selector: str) -> dict[str, Any]:
        if self.list_error:
            raise self.list_error
        return {"items": self.items}

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        self.current = {**body, "metadata": {"name": "new-1", "namespace": namespace, "resourceVersion": "9"}}
        return self.current

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        assert self.current is not None
        return self.current

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(patch)
        if self.patched is None:
            raise KubeRefused(403, "refused by the scripted server")
        return self.patched

    async def watch(
        self, namespace: str, name: str, rv: str, timeout_seconds: int
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        while self.events:
            yield self.events.pop(0)


def gate(client: ScriptedClient) -> ApprovalGate:
    return ApprovalGate(client, clock=lambda: NOW)  # type: ignore[arg-type]


async def test_a_malformed_approved_object_is_never_used() -> None:
    ex = exchange()
    digest = gate(ScriptedClient()).digest(ex)
    client = ScriptedClient(items=[stored(digest, state="Approved", expires="not-a-time")])
    with pytest.raises(Rejection) as raised:
        await gate(client).gate(ex)
    assert raised.value.cause == "approval_pending"
    assert all(p["status"]["state"] != "Used" for p in client.patches)
    assert len(client.created) == 1  # a fresh approval was asked for


async def test_an_approval_for_another_digest_is_ignored_even_if_the_label_matches() -> None:
    ex = exchange()
    client = ScriptedClient(items=[stored("sha256:" + "f" * 64, state="Approved")])
    with pytest.raises(Rejection):
        await gate(client).gate(ex)
    assert all(p["status"]["state"] != "Used" for p in client.patches)


async def test_a_malformed_watch_event_fails_closed() -> None:
    ex = exchange(hold=5)
    client = ScriptedClient(
        events=[
            (
                "MODIFIED",
                {
                    "metadata": {"name": "new-1", "namespace": "finance"},
                    "spec": {},
                    "status": {"state": "Approved"},
                },
            )
        ]
    )
    started = time.monotonic()
    with pytest.raises(Rejection) as raised:
        await gate(client).gate(ex)
    assert raised.value.cause == "approval_expired" and time.monotonic() - started < 2
    assert all(p["status"]["state"] != "Used" for p in client.patches)


async def test_a_claim_the_server_did_not_record_as_used_is_refused() -> None:
    ex = exchange()
    digest = gate(ScriptedClient()).digest(ex)
    approved = stored(digest, state="Approved")
    client = ScriptedClient(items=[approved], patched=approved)  # "Approved" came back, not "Used"
    with pytest.raises(Rejection) as raised:
        await gate(client).gate(ex)
    assert raised.value.cause == "approval_unavailable"


async def test_an_approved_object_is_claimed_with_its_resource_version() -> None:
    ex = exchange()
    digest = gate(ScriptedClient()).digest(ex)
    approved = stored(digest, state="Approved", rv="77")
    client = ScriptedClient(items=[approved], patched={**approved, "status": {"state": "Used"}})
    await gate(client).gate(ex)
    assert client.patches == [{"metadata": {"resourceVersion": "77"}, "status": {"state": "Used"}}]
    assert ex.approval.state == "Approved" and ex.approval.id == "old-1"


async def test_api_errors_and_uncanonical_bodies_fail_closed() -> None:
    with pytest.raises(Rejection) as raised:
        await gate(ScriptedClient(list_error=KubeUnavailable("down"))).gate(exchange())
    assert raised.value.status == 503 and raised.value.cause == "approval_unavailable"
    with pytest.raises(Rejection) as raised:
        await gate(ScriptedClient()).gate(exchange(body={"temperature": float("inf")}))
    assert raised.value.status == 400


async def test_created_spec_carries_the_decision_and_no_raw_prompt() -> None:
    ex = exchange()
    client = ScriptedClient()
    with pytest.raises(Rejection):
        await gate(client).gate(ex)
    [body] = client.created
    spec = body["spec"]
    assert spec["requestDigest"] == gate(client).digest(ex)
    assert spec["expiresAt"] == "2026-11-24T12:10:00Z" and spec["required"] == 1
    assert spec["approvers"] == {"groups": ["leads"], "users": []}
    assert spec["request"]["promptSummary"] == "[prompt not shown: 2 characters; masking not configured]"
    assert spec["requester"]["kubernetesUsernames"] == ["system:serviceaccount:finance:bot"]
    assert body["metadata"]["labels"][model.DIGEST_LABEL] == spec["requestDigest"][7:70]


def test_the_record_view_fits_the_session_record_schema() -> None:
    import json
    from pathlib import Path

    import jsonschema

    import skillwarden_sidecar.recording as recording
    from skillwarden_sidecar.approval import approval_record
    from skillwarden_sidecar.pipeline import ApprovalInfo

    schema = json.loads((Path(recording.__file__).parent / "schema" / "record.v1.json").read_text())
    approval_schema = schema["$defs"]["request"]["properties"]["approval"]
    assert approval_record(ApprovalInfo()) is None
    info = ApprovalInfo(
        id="bot-1",
        state="Approved",
        details={
            "namespace": "finance",
            "state": "Used",
            "requestDigest": "sha256:" + "a" * 64,
            "waitedSeconds": 3.2,
            "reviews": [
                {
                    "reviewer": "approver",
                    "groups": ["finance-leads"],
                    "decision": "Approve",
                    "reason": "Q3",
                    "time": "2026-11-24T12:00:00Z",
                }
            ],
        },
    )
    record = approval_record(info)
    assert record is not None
    assert record["reviewers"][0]["reviewer"] == "approver" and record["reasons"] == ["Q3"]
    assert record["state"] == "Approved" and record["objectState"] == "Used"
    jsonschema.validate(record, approval_schema)
    with pytest.raises(jsonschema.ValidationError):  # the schema really constrains reviewers
        jsonschema.validate({**record, "reviewers": [{"decision": "Approve"}]}, approval_schema)


async def test_a_denial_stands_until_its_approval_expires() -> None:
    ex = exchange()
    digest = gate(ScriptedClient()).digest(ex)
    standing = ScriptedClient(items=[stored(digest, state="Denied")])
    with pytest.raises(Rejection) as raised:
        await gate(standing).gate(ex)
    assert raised.value.cause == "approval_denied" and standing.created == []
    lapsed = ScriptedClient(items=[stored(digest, state="Denied", expires="2026-11-24T11:00:00Z")])
    with pytest.raises(Rejection) as raised:
        await gate(lapsed).gate(exchange())
    assert raised.value.cause == "approval_pending" and len(lapsed.created) == 1


@pytest.mark.parametrize("required", [0, "2", None, True])
async def test_an_invalid_quorum_in_the_decision_is_refused_not_guessed(required: Any) -> None:
    ex = exchange()
    assert ex.decision is not None
    ex.decision.approval["required"] = required
    client = ScriptedClient()
    with pytest.raises(Rejection) as raised:
        await gate(client).gate(ex)
    assert raised.value.cause == "approval_unavailable" and client.created == []


class FlakyWatchClient(ScriptedClient):
    """The watch breaks (API server gone); the re-read then answers with `after`."""

    def __init__(self, after: Exception) -> None:
        super().__init__()
        self.after = after

    async def watch(
        self, namespace: str, name: str, rv: str, timeout_seconds: int
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        raise KubeUnavailable("watch broke")
        yield  # pragma: no cover - makes this an async generator

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        raise self.after


@pytest.mark.parametrize(
    ("after", "cause"),
    [
        (KubeRefused(403, "forbidden"), "approval_unavailable"),
        (KubeNotFound(404, "gone", name="new-1"), "approval_deleted"),
        # 404 for the resource type (CRDs not served yet after an API server restart): not a deletion.
        (KubeNotFound(404, "the server could not find the requested resource"), "approval_unavailable"),
        (KubeUnavailable("still down"), "approval_unavailable"),
    ],
)
async def test_every_failure_while_reconnecting_becomes_a_clear_refusal(after: Exception, cause: str) -> None:
    with pytest.raises(Rejection) as raised:
        await gate(FlakyWatchClient(after)).gate(exchange(hold=1))
    assert raised.value.cause == cause
    if cause == "approval_unavailable":
        assert str(after) in raised.value.message and raised.value.status == 503


async def test_transient_refusals_after_a_restart_are_retried_until_the_approval_is_seen() -> None:
    """A restarted API server answers 403/404 for a moment; then the approved object comes back."""

    class Recovering(FlakyWatchClient):
        def __init__(self) -> None:
            super().__init__(KubeUnavailable("unused"))
            self.answers: list[Any] = [
                KubeUnavailable("down"),
                KubeRefused(403, "forbidden"),
                KubeNotFound(404, "the server could not find the requested resource"),
            ]

        async def get(self, namespace: str, name: str) -> dict[str, Any]:
            if self.answers:
                raise self.answers.pop(0)
            assert self.current is not None
            approved = {**self.current, "status": {"state": "Approved"}}
            self.patched = {**approved, "status": {"state": "Used"}}
            return approved

    client = Recovering()
    ex = exchange(hold=5)
    await gate(client).gate(ex)
    assert ex.approval.state == "Approved" and client.answers == []
