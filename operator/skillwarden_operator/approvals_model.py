"""SkillApproval rules as pure functions: the admission webhook, the sidecar and the CLI all ask
this module, so one rule has one implementation. Time is always passed in.

States: Pending -> Approved | Denied | Expired; Approved -> Used | Expired. Approved needs
`spec.required` approvals from DISTINCT eligible reviewers; a single Deny decides Denied (a finance
lead saying no is not outvoted). Decided states never change except Approved -> Used (once,
by the creator, i.e. the sidecar's service account) and Approved/Pending -> Expired.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GROUP = "skillwarden.io"
VERSION = "v1alpha1"
PLURAL = "skillapprovals"
KIND = "SkillApproval"

PENDING, APPROVED, DENIED, EXPIRED, USED = "Pending", "Approved", "Denied", "Expired", "Used"
STATES = (PENDING, APPROVED, DENIED, EXPIRED, USED)
FINAL_STATES = frozenset({DENIED, EXPIRED, USED})
APPROVE, DENY = "Approve", "Deny"
DECISIONS = (APPROVE, DENY)

# Fields of a review that only the admission webhook may write.
STAMPED_REVIEW_FIELDS = ("reviewer", "groups", "time")
CLIENT_REVIEW_FIELDS = frozenset({"decision", "reason"})
ALL_REVIEW_FIELDS = CLIENT_REVIEW_FIELDS | frozenset(STAMPED_REVIEW_FIELDS)
MAX_REASON_CHARS = 1024
DIGEST_LABEL = "skillwarden.io/request-digest"
# A label value holds at most 63 characters: the label narrows the list, spec.requestDigest decides.
DIGEST_LABEL_CHARS = 63
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")  # our own fixed-format field, not user text


class ApprovalRuleError(ValueError):
    """A request that breaks an approval rule; the message is shown to the user verbatim."""


@dataclass(frozen=True)
class UserInfo:
    username: str
    groups: tuple[str, ...] = ()

    @classmethod
    def from_admission(cls, userinfo: Mapping[str, Any]) -> UserInfo:
        return cls(
            username=str(userinfo.get("username") or ""),
            groups=tuple(str(g) for g in userinfo.get("groups") or ()),
        )


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> dt.datetime:
    if not isinstance(value, str) or not value:
        raise ApprovalRuleError(f"not a timestamp: {value!r}")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise ApprovalRuleError(f"not a timestamp: {value!r}") from error
    if parsed.tzinfo is None:
        raise ApprovalRuleError(f"timestamp without a time zone: {value!r}")
    return parsed


def digest_label_value(digest: str) -> str:
    return digest.removeprefix("sha256:")[:DIGEST_LABEL_CHARS]


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _dict(obj.get("spec"))


def status_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _dict(obj.get("status"))


def reviews_of(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [_dict(r) for r in _list(status_of(obj).get("reviews"))]


def expires_at(obj: Mapping[str, Any]) -> dt.datetime:
    return parse_time(spec_of(obj).get("expiresAt"))


def required_of(obj: Mapping[str, Any]) -> int:
    value = spec_of(obj).get("required", 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ApprovalRuleError(f"spec.required must be a positive integer, got {value!r}")
    return value


def requester_usernames(spec: Mapping[str, Any]) -> frozenset[str]:
    """Every Kubernetes username that is, or acts for, the requester.

    A Kubernetes username for an OIDC user is `<prefix><claim>`; the sidecar lists the names it
    knows in `kubernetesUsernames`, and the raw `sub`/`email` are added too, so a cluster that
    maps usernames 1:1 (the dev stack's `requester`) is covered without configuration. The
    workload's service account and the creator (the sidecar) may never review either.
    """
    requester = _dict(spec.get("requester"))
    identity, workload = _dict(requester.get("identity")), _dict(requester.get("workload"))
    names = {str(n) for n in _list(requester.get("kubernetesUsernames"))}
    for key in ("sub", "email"):
        if identity.get(key):
            names.add(str(identity[key]))
    if workload.get("namespace") and workload.get("serviceAccount"):
        names.add(f"system:serviceaccount:{workload['namespace']}:{workload['serviceAccount']}")
    if spec.get("createdBy"):
        names.add(str(spec["createdBy"]))
    return frozenset(n for n in names if n)


def is_eligible_reviewer(spec: Mapping[str, Any], user: UserInfo) -> bool:
    approvers = _dict(spec.get("approvers"))
    users = {str(u) for u in _list(approvers.get("users"))}
    groups = {str(g) for g in _list(approvers.get("groups"))}
    return user.username in users or bool(groups.intersection(user.groups))


def decided_state(obj: Mapping[str, Any]) -> str:
    """State implied by the reviews alone (Pending, Approved or Denied)."""
    reviews = reviews_of(obj)
    if any(r.get("decision") == DENY for r in reviews):
        return DENIED
    approvers = {r.get("reviewer") for r in reviews if r.get("decision") == APPROVE and r.get("reviewer")}
    return APPROVED if len(approvers) >= required_of(obj) else PENDING


def approval_count(obj: Mapping[str, Any]) -> int:
    return len({r.get("reviewer") for r in reviews_of(obj) if r.get("decision") == APPROVE})


def stored_state(obj: Mapping[str, Any]) -> str:
    state = status_of(obj).get("state")
    return str(state) if state in STATES else PENDING


def effective_state(obj: Mapping[str, Any], now: dt.datetime) -> str:
    """What a reader should believe now: a Pending/Approved approval past expiry is Expired even
    before anyone wrote that down. A malformed object reads as Expired (fail closed)."""
    try:
        state = stored_state(obj)
        if state in FINAL_STATES:
            return state
        return EXPIRED if now >= expires_at(obj) else state
    except ApprovalRuleError:
        return EXPIRED


def validate_new_spec(spec: Mapping[str, Any], now: dt.datetime, max_ttl: dt.timedelta) -> None:
    """Checked on CREATE. Clock skew between sidecar and API server shows up here first: an
    expiry in the past, or further ahead than any policy allows, is refused by name."""
    digest = spec.get("requestDigest")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ApprovalRuleError("spec.requestDigest must be 'sha256:' followed by 64 lowercase hex digits")
    requester = _dict(spec.get("requester"))
    if not _dict(requester.get("identity")).get("sub"):
        raise ApprovalRuleError("spec.requester.identity.sub is required")
    expiry = parse_time(spec.get("expiresAt"))
    if expiry <= now:
        raise ApprovalRuleError(
            f"spec.expiresAt {spec.get('expiresAt')} is not in the future (server time "
            f"{format_time(now)}); check the sidecar's clock"
        )
    if expiry > now + max_ttl:
        raise ApprovalRuleError(
            f"spec.expiresAt {spec.get('expiresAt')} is more than {int(max_ttl.total_seconds())} s "
            f"ahead of server time {format_time(now)}; check the sidecar's clock"
        )
    required_of({"spec": spec})
    approvers = _dict(spec.get("approvers"))
    if not _list(approvers.get("groups")) and not _list(approvers.get("users")):
        raise ApprovalRuleError("spec.approvers names no groups or users: nobody could approve this")


POLICY_SKEW = dt.timedelta(seconds=60)


def check_against_policy(
    spec: Mapping[str, Any], namespace: str, approvals: Mapping[str, Any] | None, now: dt.datetime
) -> None:
    """The approval must ask for what the policy asks for: the same approvers, at least its quorum,
    no longer than its TTL. `approvals` is the namespace's compiled `approvals` map (policy key ->
    settings) the operator serves in the bundle; None means no bundle for the namespace yet."""
    policy = str(spec.get("policy") or "")
    if not policy.startswith(f"{namespace}/"):
        raise ApprovalRuleError(f"spec.policy {policy!r} is not a policy of namespace {namespace}")
    settings = _dict((approvals or {}).get(policy)) if approvals is not None else None
    if not settings:
        raise ApprovalRuleError(f"policy {policy} has no approval settings in the served bundle")
    want, have = _dict(settings.get("approvers")), _dict(spec.get("approvers"))
    for key in ("groups", "users"):
        if {str(v) for v in _list(want.get(key))} != {str(v) for v in _list(have.get(key))}:
            raise ApprovalRuleError(f"spec.approvers.{key} differ from policy {policy}'s approvers")
    minimum = settings.get("required", 1)
    if isinstance(minimum, int) and required_of({"spec": spec}) < minimum:
        raise ApprovalRuleError(f"spec.required is below policy {policy}'s {minimum}")
    ttl = settings.get("ttlSeconds")
    if (
        isinstance(ttl, int)
        and parse_time(spec.get("expiresAt")) > now + dt.timedelta(seconds=ttl) + POLICY_SKEW
    ):
        raise ApprovalRuleError(
            f"spec.expiresAt {spec.get('expiresAt')} is later than policy {policy}'s ttl of {ttl} s allows "
            f"(server time {format_time(now)}); check the sidecar's clock"
        )


def _clean_review(review: Mapping[str, Any], index: int, user: UserInfo) -> tuple[str, str]:
    """Only decision and reason come from the client. Stamped fields are refused unless they
    already say exactly what the server would write (so a second instance of this webhook, e.g.
    during a rollout, accepts what the first stamped); `time` is always rewritten."""
    unknown = sorted(set(review) - ALL_REVIEW_FIELDS)
    forged = [
        key
        for key, server_value in (("reviewer", user.username), ("groups", sorted(user.groups)))
        if key in review and review[key] != server_value
    ]
    if unknown or forged:
        raise ApprovalRuleError(
            f"status.reviews[{index}]: {', '.join(unknown + forged)} may not be set by a client; the "
            "reviewer is taken from your Kubernetes identity"
        )
    decision, reason = review.get("decision"), review.get("reason")
    if decision not in DECISIONS:
        raise ApprovalRuleError(f"status.reviews[{index}].decision must be Approve or Deny")
    if not isinstance(reason, str) or not reason.strip():
        raise ApprovalRuleError(f"status.reviews[{index}].reason is mandatory")
    if len(reason) > MAX_REASON_CHARS:
        raise ApprovalRuleError(
            f"status.reviews[{index}].reason is longer than {MAX_REASON_CHARS} characters"
        )
    return str(decision), reason.strip()


def apply_status_update(
    old: Mapping[str, Any], new: Mapping[str, Any], user: UserInfo, now: dt.datetime
) -> dict[str, Any]:
    """Decide a write to the status subresource; return the status the API server must store.

    Two kinds of write are allowed: a reviewer appending ONE review (decision + reason only), or
    the creator marking Approved -> Used / Pending|Approved -> Expired. Anything else is refused.
    """
    old_status, new_status = dict(status_of(old)), dict(status_of(new))
    old_reviews, new_reviews = reviews_of(old), reviews_of(new)
    old_state = effective_state(old, now)
    spec = spec_of(old)

    if len(new_reviews) != len(old_reviews) or new_reviews != old_reviews:
        if [dict(r) for r in new_reviews[: len(old_reviews)]] != [dict(r) for r in old_reviews]:
            raise ApprovalRuleError("existing reviews are immutable")
        added = new_reviews[len(old_reviews) :]
        if len(added) != 1:
            raise ApprovalRuleError("add exactly one review per update")
        return _add_review(old, old_status, old_reviews, added[0], user, now, old_state)

    requested = new_status.get("state")
    if (requested == stored_state(old) and requested != USED) or requested is None:
        # Nothing the rules care about changed; keep the server's view of state authoritative.
        return _with_state(old_status, old, now)
    creator = str(spec.get("createdBy") or "")
    if requested == USED:
        if user.username != creator:
            raise ApprovalRuleError(f"only the creator ({creator or 'unknown'}) may mark an approval Used")
        if old_state != APPROVED:
            raise ApprovalRuleError(f"approval is {old_state}, not Approved: it cannot be used")
        return {**old_status, "state": USED, "usedAt": format_time(now), "usedBy": user.username}
    if requested == EXPIRED:
        if old_state in (DENIED, USED):
            raise ApprovalRuleError(f"approval is {old_state}; a decided approval cannot change")
        if now < expires_at(old):
            raise ApprovalRuleError(
                f"approval expires at {spec.get('expiresAt')}, server time is {format_time(now)}"
            )
        return {**old_status, "state": EXPIRED}
    raise ApprovalRuleError(f"status.state {requested!r} cannot be set directly; it follows from the reviews")


def _add_review(
    old: Mapping[str, Any],
    old_status: dict[str, Any],
    old_reviews: Sequence[Mapping[str, Any]],
    review: Mapping[str, Any],
    user: UserInfo,
    now: dt.datetime,
    old_state: str,
) -> dict[str, Any]:
    spec = spec_of(old)
    decision, reason = _clean_review(review, len(old_reviews), user)
    if old_state == EXPIRED:
        raise ApprovalRuleError(f"approval expired at {spec.get('expiresAt')}; decisions are refused")
    if old_state != PENDING:
        raise ApprovalRuleError(f"approval is already {old_state}; a decided approval cannot change")
    if not user.username:
        raise ApprovalRuleError("the request carries no user name")
    if user.username in requester_usernames(spec):
        raise ApprovalRuleError(f"{user.username} is the requester of this approval: no self-approval")
    if not is_eligible_reviewer(spec, user):
        approvers = _dict(spec.get("approvers"))
        raise ApprovalRuleError(
            f"{user.username} is not an approver for this request (groups "
            f"{list(approvers.get('groups') or [])}, users {list(approvers.get('users') or [])})"
        )
    if any(r.get("reviewer") == user.username for r in old_reviews):
        raise ApprovalRuleError(f"{user.username} has already reviewed this approval")
    stamped = {
        "reviewer": user.username,
        "groups": sorted(user.groups),
        "decision": decision,
        "reason": reason,
        "time": format_time(now),
    }
    status = {**old_status, "reviews": [*map(dict, old_reviews), stamped]}
    return _with_state(status, {"spec": spec, "status": status}, now, decided=True)


def _with_state(
    status: dict[str, Any], obj: Mapping[str, Any], now: dt.datetime, decided: bool = False
) -> dict[str, Any]:
    if stored_state(obj) in FINAL_STATES:
        return {**status, "state": stored_state(obj)}
    state = decided_state({"spec": spec_of(obj), "status": status})
    result = {**status, "state": state, "approvalCount": approval_count({"status": status})}
    if decided and state in (APPROVED, DENIED):
        result["decidedAt"] = format_time(now)
    return result


def check_spec_unchanged(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    if dict(spec_of(old)) != dict(spec_of(new)):
        raise ApprovalRuleError("spec of a SkillApproval is immutable; create a new approval instead")


def check_stamped_review(old: Mapping[str, Any], new: Mapping[str, Any], user: UserInfo) -> None:
    """Validating-webhook re-check of the final object: any review added in this write names the
    writer, whatever another mutating webhook may have done after ours."""
    added = reviews_of(new)[len(reviews_of(old)) :]
    for review in added:
        if review.get("reviewer") != user.username:
            raise ApprovalRuleError("a review must name the user who wrote it")


def usable(obj: Mapping[str, Any], digest: str, now: dt.datetime) -> bool:
    """True when this approval may authorise the request with `digest` right now."""
    return spec_of(obj).get("requestDigest") == digest and effective_state(obj, now) == APPROVED


def record_view(obj: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """What the session record keeps about an approval."""
    meta, spec, status = _dict(obj.get("metadata")), spec_of(obj), status_of(obj)
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "state": effective_state(obj, now),
        "requestDigest": spec.get("requestDigest"),
        "policy": spec.get("policy"),
        "rule": spec.get("rule"),
        "required": spec.get("required"),
        "expiresAt": spec.get("expiresAt"),
        "createdAt": meta.get("creationTimestamp"),
        "reviews": [
            {k: r.get(k) for k in ("reviewer", "groups", "decision", "reason", "time")}
            for r in reviews_of(obj)
        ],
        "usedAt": status.get("usedAt"),
    }
