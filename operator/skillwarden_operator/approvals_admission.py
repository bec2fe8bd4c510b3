"""Admission webhooks for SkillApproval: the only place a review gets its reviewer.

The reviewer identity is the admission request's `userInfo` (authenticated by the API server),
never a field of the object. Reviewers append `{decision, reason}` to `status.reviews` through the
status subresource; the MUTATING handler checks the rules (approvals_model) and rewrites the
whole status (stamped reviewer, groups, time and the derived state); the VALIDATING handlers
re-check the final object, so nothing another webhook changes after ours slips through.

The API server calls these only if the webhook configuration points at the operator (kopf's
managed mode or the chart); `failurePolicy: Fail` means no webhook, no reviews.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf

from skillwarden_operator import approvals_model as model

# How far ahead an expiry may lie. Policies use minutes to hours; anything further is a clock
# problem (or a forged object) and refusing it keeps approvals short-lived.
_DEFAULT_MAX_TTL = dt.timedelta(days=1)


def max_ttl() -> dt.timedelta:
    raw = os.environ.get("SKILLWARDEN_APPROVAL_MAX_TTL_SECONDS", "")
    return dt.timedelta(seconds=int(raw)) if raw.isdigit() else _DEFAULT_MAX_TTL


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _old_new(kwargs: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    # kopf passes the admission request's oldObject/object as `old`/`new` (None when absent).
    return kwargs.get("old") or {}, kwargs.get("new") or {}


def _refuse(error: model.ApprovalRuleError) -> kopf.AdmissionError:
    return kopf.AdmissionError(str(error), code=403)


def mutate_create(
    body: Mapping[str, Any], userinfo: Mapping[str, Any], now: dt.datetime, ttl: dt.timedelta
) -> Callable[[dict[str, Any]], None]:
    """Returns the body transformation for a valid CREATE (stamp creator, label the digest)."""
    user = model.UserInfo.from_admission(userinfo)
    spec = model.spec_of(body)
    claimed = spec.get("createdBy")
    if claimed not in (None, "", user.username):
        raise model.ApprovalRuleError("spec.createdBy is set by the server from your Kubernetes identity")
    model.validate_new_spec(spec, now, ttl)
    if user.username in {str(u) for u in (spec.get("approvers") or {}).get("users") or ()}:
        raise model.ApprovalRuleError(
            f"{user.username} creates this approval and cannot be one of its approvers"
        )
    digest = str(spec["requestDigest"])

    def transform(raw: dict[str, Any]) -> None:
        raw.setdefault("spec", {})["createdBy"] = user.username
        labels = raw.setdefault("metadata", {}).setdefault("labels", {})
        labels[model.DIGEST_LABEL] = model.digest_label_value(digest)
        raw.pop("status", None)  # the status subresource owns it; reviews never start pre-filled

    return transform


def policy_store(memo: Any) -> Any | None:
    """The operator's bundle store, when this webhook runs inside `skillwarden operator`."""
    return getattr(getattr(memo, "state", None), "store", None)


def served_approvals(store: Any, namespace: str) -> Mapping[str, Any] | None:
    """The namespace's compiled approval settings (policy key -> settings) as served to OPA;
    None while the namespace has no bundle (then approvals are refused: fail closed)."""
    bundle = store.get(namespace)
    approvals = None if bundle is None else bundle.document.get("approvals")
    return approvals if isinstance(approvals, Mapping) else None


@kopf.on.mutate(model.GROUP, model.VERSION, model.PLURAL, operations=["CREATE"], id="skillapproval-create")
def on_create(body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, **kwargs: Any) -> None:
    try:
        now = _now()
        transform = mutate_create(body, userinfo, now, max_ttl())
        namespace = str((body.get("metadata") or {}).get("namespace") or kwargs.get("namespace") or "")
        store = policy_store(kwargs.get("memo"))
        if store is not None:  # without the operator's policy side (tests' bare webhook) no cross-check
            model.check_against_policy(
                model.spec_of(body), namespace, served_approvals(store, namespace), now
            )
    except model.ApprovalRuleError as error:
        raise _refuse(error) from error
    patch.fns.append(lambda raw: transform(cast(dict[str, Any], raw)))


@kopf.on.validate(model.GROUP, model.VERSION, model.PLURAL, operations=["UPDATE"], id="skillapproval-spec")
def on_update(**kwargs: Any) -> None:
    old, new = _old_new(kwargs)
    try:
        model.check_spec_unchanged(old, new)
        old_labels = (old.get("metadata") or {}).get("labels") or {}
        new_labels = (new.get("metadata") or {}).get("labels") or {}
        if old_labels.get(model.DIGEST_LABEL) != new_labels.get(model.DIGEST_LABEL):
            raise model.ApprovalRuleError(f"label {model.DIGEST_LABEL} is immutable")
    except model.ApprovalRuleError as error:
        raise _refuse(error) from error


@kopf.on.mutate(
    model.GROUP,
    model.VERSION,
    model.PLURAL,
    subresource="status",
    operations=["UPDATE"],
    id="skillapproval-review",
)
def on_status(userinfo: kopf.UserInfo, patch: kopf.Patch, **kwargs: Any) -> None:
    old, new = _old_new(kwargs)
    try:
        status = model.apply_status_update(old, new, model.UserInfo.from_admission(userinfo), _now())
    except model.ApprovalRuleError as error:
        raise _refuse(error) from error
    patch.fns.append(lambda raw: cast(dict[str, Any], raw).__setitem__("status", status))


@kopf.on.validate(
    model.GROUP,
    model.VERSION,
    model.PLURAL,
    subresource="status",
    operations=["UPDATE"],
    id="skillapproval-review-check",
)
def on_status_check(userinfo: kopf.UserInfo, **kwargs: Any) -> None:
    old, new = _old_new(kwargs)
    try:
        model.check_stamped_review(old, new, model.UserInfo.from_admission(userinfo))
        derived = model.decided_state(new)
        stored = model.stored_state(new)
        if stored in (model.PENDING, model.APPROVED, model.DENIED) and stored != derived:
            raise model.ApprovalRuleError(
                f"status.state {stored} does not follow from the reviews ({derived})"
            )
    except model.ApprovalRuleError as error:
        raise _refuse(error) from error
