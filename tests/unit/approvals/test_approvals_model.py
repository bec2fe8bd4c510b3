"""approvals_model: the rules every writer of a SkillApproval meets (table-driven)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skillwarden_operator import approvals_model as model
from skillwarden_operator.approvals_model import ApprovalRuleError, UserInfo

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
CREATOR = "system:serviceaccount:finance:report-bot"
APPROVER = UserInfo("approver", ("finance-leads", "system:authenticated"))
APPROVER2 = UserInfo("approver2", ("finance-leads", "system:authenticated"))
OUTSIDER = UserInfo("outsider", ("system:authenticated",))
SIDECAR = UserInfo(CREATOR, ("system:serviceaccounts",))


def approval(
    *,
    required: int = 1,
    reviews: list[dict[str, Any]] | None = None,
    state: str | None = None,
    expires: dt.datetime = NOW + dt.timedelta(minutes=30),
    **spec: Any,
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if reviews is not None:
        status["reviews"] = reviews
    if state is not None:
        status["state"] = state
    return {
        "metadata": {"name": "report-bot-x1", "namespace": "finance"},
        "spec": {
            "requester": {
                "identity": {"kind": "oidc", "sub": "alice", "email": "alice@example.com"},
                "workload": {"namespace": "finance", "serviceAccount": "report-bot"},
                "kubernetesUsernames": ["oidc:alice"],
            },
            "requestDigest": "sha256:" + "a" * 64,
            "expiresAt": model.format_time(expires),
            "required": required,
            "approvers": {"groups": ["finance-leads"], "users": ["bob"]},
            "createdBy": CREATOR,
            **spec,
        },
        "status": status,
    }


def with_review(obj: dict[str, Any], review: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "status": {**obj["status"], "reviews": [*obj["status"].get("reviews", []), review]}}


def stamped(user: UserInfo, decision: str = "Approve") -> dict[str, Any]:
    return {
        "reviewer": user.username,
        "groups": sorted(user.groups),
        "decision": decision,
        "reason": "ok",
        "time": model.format_time(NOW),
    }


def test_an_eligible_approver_approves_and_the_server_stamps_who_and_when() -> None:
    old = approval()
    status = model.apply_status_update(
        old, with_review(old, {"decision": "Approve", "reason": " ok "}), APPROVER, NOW
    )
    assert status["state"] == "Approved" and status["approvalCount"] == 1
    assert status["reviews"] == [
        {
            "reviewer": "approver",
            "groups": ["finance-leads", "system:authenticated"],
            "decision": "Approve",
            "reason": "ok",
            "time": "2026-11-24T12:00:00Z",
        }
    ]
    assert status["decidedAt"] == "2026-11-24T12:00:00Z"


def test_a_user_named_in_approvers_users_may_approve() -> None:
    old = approval()
    status = model.apply_status_update(
        old, with_review(old, {"decision": "Approve", "reason": "x"}), UserInfo("bob"), NOW
    )
    assert status["state"] == "Approved"


def test_one_deny_decides() -> None:
    old = approval(required=2, reviews=[stamped(APPROVER)])
    status = model.apply_status_update(
        old, with_review(old, {"decision": "Deny", "reason": "no"}), APPROVER2, NOW
    )
    assert status["state"] == "Denied"


def test_two_of_n_needs_two_distinct_reviewers() -> None:
    old = approval(required=2)
    first = model.apply_status_update(
        old, with_review(old, {"decision": "Approve", "reason": "1"}), APPROVER, NOW
    )
    assert first["state"] == "Pending" and first["approvalCount"] == 1
    after_first = {**old, "status": first}
    with pytest.raises(ApprovalRuleError, match="already reviewed"):
        model.apply_status_update(
            after_first, with_review(after_first, {"decision": "Approve", "reason": "2"}), APPROVER, NOW
        )
    second = model.apply_status_update(
        after_first, with_review(after_first, {"decision": "Approve", "reason": "2"}), APPROVER2, NOW
    )
    assert second["state"] == "Approved" and second["approvalCount"] == 2


@pytest.mark.parametrize(
    "username",
    ["alice", "alice@example.com", "oidc:alice", CREATOR, "system:serviceaccount:finance:report-bot"],
)
def test_no_self_approval_under_any_of_the_requesters_names(username: str) -> None:
    old = approval(approvers={"groups": ["finance-leads"], "users": [username]})
    with pytest.raises(ApprovalRuleError, match="no self-approval"):
        model.apply_status_update(
            old,
            with_review(old, {"decision": "Approve", "reason": "x"}),
            UserInfo(username, ("finance-leads",)),
            NOW,
        )


REFUSALS: list[tuple[str, dict[str, Any], dict[str, Any], UserInfo, str]] = [
    ("not an approver", approval(), {"decision": "Approve", "reason": "x"}, OUTSIDER, "not an approver"),
    (
        "forged reviewer",
        approval(),
        {"decision": "Approve", "reason": "x", "reviewer": "approver2"},
        APPROVER,
        "reviewer may not be set by a client",
    ),
    (
        "forged groups",
        approval(),
        {"decision": "Approve", "reason": "x", "groups": ["finance-leads"]},
        APPROVER,
        "groups may not be set by a client",
    ),
    (
        "unknown field",
        approval(),
        {"decision": "Approve", "reason": "x", "onBehalfOf": "a"},
        APPROVER,
        "onBehalfOf may not be set",
    ),
    ("empty reason", approval(), {"decision": "Approve", "reason": "  "}, APPROVER, "reason is mandatory"),
    ("missing reason", approval(), {"decision": "Approve"}, APPROVER, "reason is mandatory"),
    ("long reason", approval(), {"decision": "Approve", "reason": "x" * 1025}, APPROVER, "longer than"),
    ("bad decision", approval(), {"decision": "Maybe", "reason": "x"}, APPROVER, "Approve or Deny"),
    (
        "expired",
        approval(expires=NOW - dt.timedelta(seconds=1)),
        {"decision": "Approve", "reason": "x"},
        APPROVER,
        "expired",
    ),
    (
        "decided",
        approval(reviews=[stamped(APPROVER2)], state="Approved"),
        {"decision": "Deny", "reason": "x"},
        APPROVER,
        "already Approved",
    ),
    (
        "used",
        approval(reviews=[stamped(APPROVER2)], state="Used"),
        {"decision": "Approve", "reason": "x"},
        APPROVER,
        "already Used",
    ),
]


@pytest.mark.parametrize(
    ("old", "review", "user", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_review_refusals(old: dict[str, Any], review: dict[str, Any], user: UserInfo, message: str) -> None:
    with pytest.raises(ApprovalRuleError, match=message):
        model.apply_status_update(old, with_review(old, review), user, NOW)


def test_stamped_fields_equal_to_the_server_values_are_accepted_and_time_is_rewritten() -> None:
    old = approval()
    review = {
        "decision": "Approve",
        "reason": "x",
        "reviewer": "approver",
        "groups": sorted(APPROVER.groups),
        "time": "2001-01-01T00:00:00Z",
    }
    status = model.apply_status_update(old, with_review(old, review), APPROVER, NOW)
    assert status["reviews"][0]["time"] == "2026-11-24T12:00:00Z"


def test_existing_reviews_are_immutable_and_one_review_per_write() -> None:
    old = approval(required=2, reviews=[stamped(APPROVER)])
    edited = {**old, "status": {"reviews": [{**stamped(APPROVER), "reason": "changed"}]}}
    with pytest.raises(ApprovalRuleError, match="immutable"):
        model.apply_status_update(old, edited, APPROVER2, NOW)
    removed = {**old, "status": {"reviews": []}}
    with pytest.raises(ApprovalRuleError, match="immutable"):
        model.apply_status_update(old, removed, APPROVER2, NOW)
    two = with_review(
        with_review(old, {"decision": "Approve", "reason": "a"}), {"decision": "Approve", "reason": "b"}
    )
    with pytest.raises(ApprovalRuleError, match="exactly one review"):
        model.apply_status_update(old, two, APPROVER2, NOW)


def test_used_only_by_the_creator_only_once_only_from_approved() -> None:
    approved = approval(reviews=[stamped(APPROVER)], state="Approved")
    use = {**approved, "status": {**approved["status"], "state": "Used"}}
    with pytest.raises(ApprovalRuleError, match="only the creator"):
        model.apply_status_update(approved, use, APPROVER, NOW)
    status = model.apply_status_update(approved, use, SIDECAR, NOW)
    assert (
        status["state"] == "Used"
        and status["usedBy"] == CREATOR
        and status["usedAt"] == "2026-11-24T12:00:00Z"
    )
    used = {**approved, "status": status}
    with pytest.raises(ApprovalRuleError, match="approval is Used"):
        model.apply_status_update(used, used, SIDECAR, NOW)
    pending = approval()
    with pytest.raises(ApprovalRuleError, match="approval is Pending"):
        model.apply_status_update(pending, {**pending, "status": {"state": "Used"}}, SIDECAR, NOW)
    late = approval(reviews=[stamped(APPROVER)], state="Approved", expires=NOW - dt.timedelta(seconds=1))
    with pytest.raises(ApprovalRuleError, match="approval is Expired"):
        model.apply_status_update(late, {**late, "status": {**late["status"], "state": "Used"}}, SIDECAR, NOW)


def test_expired_may_be_written_only_after_expiry_and_never_over_a_decision() -> None:
    pending = approval()
    with pytest.raises(ApprovalRuleError, match="expires at"):
        model.apply_status_update(pending, {**pending, "status": {"state": "Expired"}}, SIDECAR, NOW)
    late = approval(expires=NOW - dt.timedelta(seconds=1))
    assert (
        model.apply_status_update(late, {**late, "status": {"state": "Expired"}}, SIDECAR, NOW)["state"]
        == "Expired"
    )
    denied = approval(
        reviews=[stamped(APPROVER, "Deny")], state="Denied", expires=NOW - dt.timedelta(seconds=1)
    )
    with pytest.raises(ApprovalRuleError, match="cannot change"):
        model.apply_status_update(
            denied, {**denied, "status": {**denied["status"], "state": "Expired"}}, SIDECAR, NOW
        )


def test_state_cannot_be_set_directly_and_no_op_writes_keep_the_derived_state() -> None:
    pending = approval()
    with pytest.raises(ApprovalRuleError, match="cannot be set directly"):
        model.apply_status_update(pending, {**pending, "status": {"state": "Approved"}}, APPROVER, NOW)
    approved = approval(reviews=[stamped(APPROVER)], state="Approved")
    noise = {**approved, "status": {**approved["status"], "message": "hello"}}
    assert model.apply_status_update(approved, noise, APPROVER, NOW) == {
        **approved["status"],
        "approvalCount": 1,
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (approval(), "Pending"),
        (approval(expires=NOW), "Expired"),
        (approval(reviews=[stamped(APPROVER)], state="Approved", expires=NOW - dt.timedelta(1)), "Expired"),
        (approval(state="Used", expires=NOW - dt.timedelta(1)), "Used"),
        (approval(state="Denied"), "Denied"),
        (approval(state="Nonsense"), "Pending"),
        ({"spec": {"expiresAt": "tomorrow"}}, "Expired"),
        ({"spec": {"expiresAt": "2030-01-01T00:00:00"}}, "Expired"),  # no zone: malformed, fail closed
        ({}, "Expired"),
    ],
)
def test_effective_state_reads_malformed_objects_as_expired(obj: dict[str, Any], expected: str) -> None:
    assert model.effective_state(obj, NOW) == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"requestDigest": "sha256:ABC"}, "requestDigest"),
        ({"requestDigest": None}, "requestDigest"),
        ({"expiresAt": model.format_time(NOW - dt.timedelta(seconds=1))}, "not in the future"),
        ({"expiresAt": model.format_time(NOW + dt.timedelta(days=2))}, "ahead of server time"),
        ({"expiresAt": "soon"}, "not a timestamp"),
        ({"approvers": {"groups": [], "users": []}}, "nobody could approve"),
        ({"required": 0}, "positive integer"),
        ({"required": "2"}, "positive integer"),
        ({"required": True}, "positive integer"),
        ({"requester": {"identity": {}}}, "identity.sub"),
    ],
)
def test_new_spec_validation_names_the_field(change: dict[str, Any], message: str) -> None:
    spec = {**approval()["spec"], **change}
    with pytest.raises(ApprovalRuleError, match=message):
        model.validate_new_spec(spec, NOW, dt.timedelta(days=1))


def test_spec_is_immutable() -> None:
    old = approval()
    model.check_spec_unchanged(old, {**old, "metadata": {"labels": {"x": "y"}}})
    with pytest.raises(ApprovalRuleError, match="immutable"):
        model.check_spec_unchanged(old, {**old, "spec": {**old["spec"], "required": 1, "expiresAt": "x"}})


@given(
    st.integers(1, 5), st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), max_size=8), st.booleans()
)
def test_quorum_property(required: int, reviewers: list[str], deny_last: bool) -> None:
    """Approved exactly when `required` DISTINCT reviewers approved and nobody denied."""
    obj = approval(required=required, approvers={"groups": [], "users": list("abcdef")})
    seen: set[str] = set()
    denied = False
    for index, name in enumerate(reviewers):
        decision = "Deny" if deny_last and index == len(reviewers) - 1 else "Approve"
        try:
            status = model.apply_status_update(
                obj, with_review(obj, {"decision": decision, "reason": "r"}), UserInfo(name), NOW
            )
        except ApprovalRuleError:
            assert name in seen or model.stored_state(obj) != "Pending"
            continue
        seen.add(name)
        denied = denied or decision == "Deny"
        obj = {**obj, "status": status}
    expected = "Denied" if denied else "Approved" if len(seen) >= required else "Pending"
    assert model.stored_state(obj) == expected


SERVED = {
    "finance/finance-reporting": {
        "approvers": {"groups": ["finance-leads"], "users": ["bob"]},
        "required": 2,
        "ttlSeconds": 1800,
        "holdSeconds": 60,
    }
}


def policy_spec(**change: Any) -> dict[str, Any]:
    return {**approval(required=2)["spec"], "policy": "finance/finance-reporting", **change}


def test_an_approval_matching_the_served_policy_is_accepted() -> None:
    model.check_against_policy(policy_spec(), "finance", SERVED, NOW)
    model.check_against_policy(policy_spec(required=3), "finance", SERVED, NOW)  # stricter is fine


@pytest.mark.parametrize(
    ("spec", "served", "message"),
    [
        (policy_spec(policy="marketing/finance-reporting"), SERVED, "not a policy of namespace finance"),
        (policy_spec(policy="finance/other"), SERVED, "no approval settings"),
        (policy_spec(), None, "no approval settings"),
        (
            policy_spec(approvers={"groups": ["finance-leads"], "users": ["bob", "mallory"]}),
            SERVED,
            "approvers.users differ",
        ),
        (
            policy_spec(approvers={"groups": ["everyone"], "users": ["bob"]}),
            SERVED,
            "approvers.groups differ",
        ),
        (policy_spec(required=1), SERVED, "below policy"),
        (
            policy_spec(expiresAt=model.format_time(NOW + dt.timedelta(seconds=1800 + 61))),
            SERVED,
            "ttl of 1800 s",
        ),
    ],
)
def test_an_approval_that_asks_for_less_than_the_policy_is_refused(
    spec: dict[str, Any], served: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ApprovalRuleError, match=message):
        model.check_against_policy(spec, "finance", served, NOW)


def test_the_webhook_reads_the_served_bundle_when_it_runs_in_the_operator() -> None:
    from types import SimpleNamespace

    from skillwarden_operator.approvals_admission import policy_store, served_approvals
    from skillwarden_operator.bundle import build_bundle
    from skillwarden_operator.bundle_store import BundleStore

    store = BundleStore()
    store.put(
        build_bundle(
            "finance",
            [
                {
                    "apiVersion": "skillwarden.io/v1alpha1",
                    "kind": "SkillPolicy",
                    "metadata": {"name": "finance-reporting", "namespace": "finance"},
                    "spec": {
                        "defaultAction": "deny",
                        "subjects": [{"name": "a", "groups": ["finance-analysts"], "models": ["claude-*"]}],
                        "approval": {
                            "approvers": {"groups": ["finance-leads"]},
                            "required": 2,
                            "ttl": "30m",
                            "holdSeconds": 60,
                        },
                    },
                }
            ],
        )
    )
    memo = SimpleNamespace(state=SimpleNamespace(store=store))
    assert policy_store(memo) is store and policy_store(SimpleNamespace()) is None
    served = served_approvals(store, "finance")
    assert served is not None and served["finance/finance-reporting"]["required"] == 2
    assert served_approvals(store, "marketing") is None  # no bundle yet: refused by check_against_policy
