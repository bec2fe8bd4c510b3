"""The approval gate: a `require_approval` decision holds the request until a human decides.

Flow (`ApprovalGate.gate`), for the digest of the exact request (request_digest.py):
1. An Approved, unexpired SkillApproval for this digest exists ⇒ claim it (status Used, a
   conditional write: the resourceVersion must match and the webhook refuses a second use) and
   let the pipeline re-ask the policy with `approval.state = Approved`.
2. A Denied one that has not expired ⇒ 403 with the reviewers' reasons (no new request spam).
3. Otherwise reuse a Pending one or create a new one, and watch it for up to `holdSeconds`:
   approved ⇒ claim and proceed; denied / expired / deleted / used elsewhere ⇒ 403;
   hold time over ⇒ 403 `approval_pending` naming the approval and its expiry, so the client can
   retry the identical request after approval.
The Kubernetes API unreachable at any point ⇒ refuse (503): nothing is forwarded on a guess.
Everything the gate learnt is left on `exchange.approval` for the session record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from skillwarden_operator import approvals_model as model
from skillwarden_sidecar.approval_client import (
    ApprovalClient,
    KubeConflict,
    KubeNotFound,
    KubeRefused,
    KubeUnavailable,
)
from skillwarden_sidecar.errors import Rejection
from skillwarden_sidecar.notify import Notifier
from skillwarden_sidecar.pipeline import ApprovalInfo, Exchange
from skillwarden_sidecar.request_digest import request_digest

Clock = Callable[[], dt.datetime]
PROMPT_SUMMARY_CHARS = 500
_RETRY_PAUSE_S = 0.5


@dataclass(frozen=True)
class GateSettings:
    default_hold_seconds: float = 60.0
    default_ttl_seconds: float = 1800.0
    max_hold_seconds: float = 600.0
    # Kubernetes username prefixes of OIDC users (`--oidc-username-prefix`): with "oidc:" the
    # requester `alice` is `oidc:alice` to the API server, and may not review her own request.
    username_prefixes: tuple[str, ...] = ()


def _seconds(value: Any, default: float) -> float:
    # The decision comes from our own compiled bundle; a bad value still must not crash the hold.
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return default
    return float(value)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


Summarize = Callable[[Exchange, str], str]


def _no_summary(exchange: Exchange, text: str) -> str:
    # Without a masker the prompt never leaves the pod in an approval: the digest still binds it.
    return f"[prompt not shown: {len(text)} characters; masking not configured]"


def refusal(
    code: str, message: str, approval: Mapping[str, Any] | None = None, status: int = 403
) -> Rejection:
    details: dict[str, Any] = {"code": code}
    if approval is not None:
        details["approval"] = {k: approval.get(k) for k in ("name", "namespace", "state", "expiresAt")}
    return Rejection(status, f"{code}: {message}", cause=code, details=details)


def approval_record(info: ApprovalInfo) -> dict[str, Any] | None:
    """`approval` of the session record (recording/schema/record.v1.json) from what the gate left
    on the exchange; None when no approval was involved."""
    if not info.id:
        return None
    details = info.details
    reviews = [r for r in details.get("reviews") or [] if isinstance(r, Mapping)]
    return {
        "name": info.id,
        "namespace": details.get("namespace"),
        "state": info.state,
        "objectState": details.get("state"),
        "reviewers": [
            {k: r.get(k) for k in ("reviewer", "groups", "decision", "reason", "time")} for r in reviews
        ],
        "reasons": [str(r.get("reason")) for r in reviews if r.get("reason")],
        "requestDigest": details.get("requestDigest"),
        "policy": details.get("policy"),
        "rule": details.get("rule"),
        "required": details.get("required"),
        "createdAt": details.get("createdAt"),
        "expiresAt": details.get("expiresAt"),
        "usedAt": details.get("usedAt"),
        "waitedSeconds": details.get("waitedSeconds"),
    }


class ApprovalGate:
    """`ApprovalHook` implementation (skillwarden_sidecar.pipeline)."""

    def __init__(
        self,
        client: ApprovalClient,
        settings: GateSettings | None = None,
        *,
        summarize: Summarize = _no_summary,
        notifier: Notifier | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        self._client = client
        self._settings = settings or GateSettings()
        self._summarize = summarize
        self._notifier = notifier
        self._clock = clock

    async def lookup(self, exchange: Exchange) -> None:
        # Approvals are looked up only once the policy asks for one (gate): an extra API call on
        # every allowed request would cost more than it could ever save.
        return None

    async def gate(self, exchange: Exchange) -> None:
        # The pipeline stage times the hold and counts outcomes (skillwarden_approvals_total by
        # exchange.approval.state); the gate keeps the wait on the record too.
        started = time.monotonic()
        try:
            await self._gate(exchange, started)
        finally:
            exchange.approval.details["waitedSeconds"] = round(time.monotonic() - started, 3)

    # -----------------------------------------------------------------------------------------

    async def _gate(self, exchange: Exchange, started: float) -> str:
        decision = exchange.decision
        config: Mapping[str, Any] = (decision.approval if decision else None) or {}
        namespace = exchange.workload.namespace
        try:
            digest = self.digest(exchange)
        except ValueError as error:
            raise refusal(
                "approval_invalid_request", f"request cannot be canonicalised: {error}", status=400
            ) from error
        exchange.approval.details["requestDigest"] = digest
        hold = min(
            _seconds(config.get("holdSeconds"), self._settings.default_hold_seconds),
            self._settings.max_hold_seconds,
        )
        deadline = started + max(0.0, hold)

        found = await self._unavailable_guard(
            self._client.list(namespace, f"{model.DIGEST_LABEL}={model.digest_label_value(digest)}")
        )
        now = self._clock()
        candidates = [
            o
            for o in found.get("items") or []
            if isinstance(o, dict) and model.spec_of(o).get("requestDigest") == digest
        ]
        candidates.sort(key=lambda o: str((o.get("metadata") or {}).get("creationTimestamp") or ""))
        by_state: dict[str, list[dict[str, Any]]] = {}
        for candidate in candidates:
            by_state.setdefault(model.effective_state(candidate, now), []).append(candidate)
        for approved in by_state.get(model.APPROVED, []):
            claimed = await self._claim(exchange, approved, raise_on_loss=False)
            if claimed:
                return model.APPROVED
        # A denial stands until its approval expires; after that the request may be asked again.
        standing = [d for d in by_state.get(model.DENIED, []) if self._until_expiry(d) > 0.05]
        if standing:
            self._note(exchange, standing[-1])
            raise self._denied(standing[-1])
        pending = by_state.get(model.PENDING)
        current = pending[-1] if pending else await self._create(exchange, digest, config)
        return await self._hold(exchange, current, deadline)

    def digest(self, exchange: Exchange) -> str:
        identity = exchange.identity.as_input() if exchange.identity else {"kind": "workload"}
        return request_digest(
            exchange.method, exchange.path, exchange.body, identity, exchange.workload.as_input()
        )

    async def _unavailable_guard(
        self, call: Any, approval: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await call
        except KubeUnavailable as error:
            raise refusal(
                "approval_unavailable",
                f"cannot reach the Kubernetes API to check approvals ({error})",
                approval,
                status=503,
            ) from error
        except KubeRefused as error:
            raise refusal(
                "approval_unavailable",
                f"the Kubernetes API refused the approval request: {error.message}",
                approval,
            ) from error
        return result

    def _requester(self, exchange: Exchange) -> dict[str, Any]:
        workload = exchange.workload
        account = f"system:serviceaccount:{workload.namespace}:{workload.service_account}"
        identity = exchange.identity.as_input() if exchange.identity else {"kind": "workload"}
        if identity.get("kind") == "workload" and not identity.get("sub"):
            # No token presented: the requester is the pod's own service account (never empty,
            # or admission refuses the approval and no-self-approval could not be checked).
            identity["sub"] = account
        names = {account}
        if identity.get("kind") == "oidc":
            for prefix in self._settings.username_prefixes:
                for claim in (identity.get("sub"), identity.get("email")):
                    if claim:
                        names.add(f"{prefix}{claim}")
        return {
            "identity": {k: v for k, v in identity.items() if v not in (None, "", [])},
            "workload": {
                "namespace": workload.namespace,
                "pod": workload.pod,
                "serviceAccount": workload.service_account,
            },
            "kubernetesUsernames": sorted(names),
        }

    def _spec(self, exchange: Exchange, digest: str, config: Mapping[str, Any]) -> dict[str, Any]:
        decision = exchange.decision
        request = (exchange.policy_input or {}).get("request") or {}
        skills = [
            {k: str(s.get(k, "")) for k in ("type", "skill_id", "version")}
            for s in request.get("skills") or []
            if isinstance(s, dict)
        ]
        prompt = str(request.get("prompt_text") or "")
        summary = self._summarize(exchange, prompt)
        if len(summary) > PROMPT_SUMMARY_CHARS:
            summary = summary[:PROMPT_SUMMARY_CHARS] + "…"
        ttl = _seconds(config.get("ttlSeconds"), self._settings.default_ttl_seconds)
        required = config.get("required", 1)
        if isinstance(required, bool) or not isinstance(required, int) or required < 1:
            # Never guess a weaker quorum than the policy asked for.
            raise refusal(
                "approval_unavailable", f"the policy decision has no valid approval.required ({required!r})"
            )
        approvers = config.get("approvers") or {}
        return {
            "requester": self._requester(exchange),
            "policy": (decision.policy if decision else None) or "",
            "rule": (decision.rule if decision else None) or "",
            "message": ((decision.message if decision else "") or "")[:1024],
            "request": {
                "method": exchange.method,
                "path": exchange.path,
                "operation": exchange.operation,
                "model": str(request.get("model") or ""),
                "skills": skills,
                "skillSummary": ", ".join(f"{s['type']}:{s['skill_id']}" for s in skills)[:512] or "-",
                "tools": [str(t) for t in request.get("tools") or []],
                "promptSummary": summary,
                "promptChars": len(prompt),
            },
            "requestDigest": digest,
            "expiresAt": model.format_time(self._clock() + dt.timedelta(seconds=ttl)),
            "required": required,
            "approvers": {
                "groups": [str(g) for g in approvers.get("groups") or []],
                "users": [str(u) for u in approvers.get("users") or []],
            },
            "holdSeconds": int(_seconds(config.get("holdSeconds"), self._settings.default_hold_seconds)),
        }

    async def _create(self, exchange: Exchange, digest: str, config: Mapping[str, Any]) -> dict[str, Any]:
        workload = exchange.workload
        body = {
            "apiVersion": f"{model.GROUP}/{model.VERSION}",
            "kind": model.KIND,
            "metadata": {
                "generateName": f"{workload.service_account[:40]}-".lower(),
                "namespace": workload.namespace,
                "labels": {model.DIGEST_LABEL: model.digest_label_value(digest)},
            },
            "spec": self._spec(exchange, digest, config),
        }
        created = await self._unavailable_guard(self._client.create(workload.namespace, body))
        created = await self._initialise_status(created)
        self._note(exchange, created)
        self._notify("created", created)
        return created

    async def _initialise_status(self, created: dict[str, Any]) -> dict[str, Any]:
        # The API server drops `status` on create; writing Pending makes `kubectl get` show it.
        # Cosmetic: a missing state already reads as Pending everywhere, so failures are ignored.
        meta = created.get("metadata") or {}
        try:
            return await self._client.patch_status(
                str(meta.get("namespace")), str(meta.get("name")), {"status": {"state": model.PENDING}}
            )
        except (KubeRefused, KubeUnavailable):
            return created

    def _notify(self, event: str, obj: Mapping[str, Any]) -> None:
        if self._notifier is not None:
            self._notifier.submit(event, self._view(obj), model.spec_of(obj))

    async def _hold(self, exchange: Exchange, current: dict[str, Any], deadline: float) -> str:
        meta = current.get("metadata") or {}
        name, namespace = str(meta.get("name")), str(meta.get("namespace"))
        waited_pending = False
        while True:
            self._note(exchange, current)
            state = model.effective_state(current, self._clock())
            if waited_pending and state in (model.APPROVED, model.DENIED):
                # Decided while this request waited: tell the channel once, from here.
                self._notify("decided", current)
                waited_pending = False
            waited_pending = waited_pending or state == model.PENDING
            if state == model.APPROVED:
                if await self._claim(exchange, current, raise_on_loss=True):
                    return model.APPROVED
                current = await self._refetch(exchange, namespace, name)
                continue
            if state == model.DENIED:
                raise self._denied(current)
            if state == model.EXPIRED:
                await self._mark_expired(namespace, name)
                raise refusal(
                    "approval_expired",
                    f"approval {name} expired at "
                    f"{model.spec_of(current).get('expiresAt')} without enough approvals",
                    self._view(current),
                )
            if state == model.USED:
                raise refusal(
                    "approval_used",
                    f"approval {name} was already used by another request",
                    self._view(current),
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                view = self._view(current)
                raise refusal(
                    "approval_pending",
                    f"waiting for approval {name} in namespace {namespace} "
                    f"(expires {view.get('expiresAt')}); retry the identical request once it "
                    "is approved",
                    view,
                )
            current = await self._wait_for_change(
                exchange, current, min(remaining, self._until_expiry(current))
            )

    def _until_expiry(self, obj: Mapping[str, Any]) -> float:
        try:
            return max(0.05, (model.expires_at(obj) - self._clock()).total_seconds())
        except model.ApprovalRuleError:
            return 0.05

    async def _wait_for_change(
        self, exchange: Exchange, current: dict[str, Any], budget: float
    ) -> dict[str, Any]:
        meta = current.get("metadata") or {}
        name, namespace = str(meta.get("name")), str(meta.get("namespace"))
        rv = str(meta.get("resourceVersion") or "")
        ends = time.monotonic() + budget
        try:
            async with asyncio.timeout(budget):
                async for kind, obj in self._client.watch(namespace, name, rv, int(budget) + 1):
                    if kind == "DELETED":
                        self._note(exchange, current, state="Deleted")
                        raise refusal(
                            "approval_deleted",
                            f"approval {name} was deleted while the request waited; nothing was forwarded",
                            self._view(current),
                        )
                    if kind == "ERROR":  # e.g. 410 Gone: our resourceVersion is too old
                        return await self._refetch(exchange, namespace, name)
                    if kind in ("ADDED", "MODIFIED"):
                        return obj
        except TimeoutError:
            return current
        except KubeUnavailable:
            # The API server went away mid-hold (restart): keep trying until the hold ends, then
            # refuse; never assume the approval's state. A freshly started API server may answer
            # 403/404 for a moment (authorizer caches, CRDs not served yet): retried too — reads only.
            last = "no answer"
            while time.monotonic() < ends:
                await asyncio.sleep(min(_RETRY_PAUSE_S, max(0.0, ends - time.monotonic())))
                try:
                    return await self._client.get(namespace, name)
                except KubeUnavailable as error:
                    last = str(error)
                except KubeNotFound as error:
                    if error.name == name:
                        raise refusal(
                            "approval_deleted",
                            f"approval {name} was deleted while the request waited; nothing was forwarded",
                            self._view(current),
                        ) from error
                    last = error.message  # the resource type is not served yet
                except KubeRefused as error:
                    last = error.message
            raise refusal(
                "approval_unavailable",
                f"lost the Kubernetes API while waiting for approval {name} (last: {last}); "
                "nothing was forwarded",
                self._view(current),
                status=503,
            ) from None
        except KubeRefused as error:
            raise refusal(
                "approval_unavailable", f"cannot watch approval {name}: {error.message}", self._view(current)
            ) from error
        return current  # the server closed the watch early: re-check and watch again

    async def _refetch(self, exchange: Exchange, namespace: str, name: str) -> dict[str, Any]:
        try:
            return await self._client.get(namespace, name)
        except KubeNotFound as error:
            if error.name != name:
                raise refusal(
                    "approval_unavailable",
                    f"the Kubernetes API does not serve SkillApprovals right now ({name})",
                    status=503,
                ) from error
            raise refusal(
                "approval_deleted", f"approval {name} no longer exists; nothing was forwarded"
            ) from error
        except KubeUnavailable as error:
            raise refusal(
                "approval_unavailable",
                f"cannot reach the Kubernetes API to check approval {name}",
                status=503,
            ) from error
        except KubeRefused as error:
            raise refusal("approval_unavailable", f"cannot read approval {name}: {error.message}") from error

    async def _claim(self, exchange: Exchange, obj: dict[str, Any], *, raise_on_loss: bool) -> bool:
        """Approved -> Used, only if nobody changed it since we read it (resourceVersion)."""
        meta = obj.get("metadata") or {}
        name, namespace = str(meta.get("name")), str(meta.get("namespace"))
        patch = {
            "metadata": {"resourceVersion": meta.get("resourceVersion")},
            "status": {"state": model.USED},
        }
        try:
            used = await self._client.patch_status(namespace, name, patch)
        except KubeConflict:
            return False  # changed under us: the caller re-reads and decides again
        except KubeNotFound as error:
            if error.name != name:
                raise refusal(
                    "approval_unavailable",
                    f"the Kubernetes API does not serve SkillApprovals right now ({name})",
                    self._view(obj),
                    status=503,
                ) from error
            raise refusal(
                "approval_deleted", f"approval {name} was deleted before use", self._view(obj)
            ) from error
        except KubeUnavailable as error:
            raise refusal(
                "approval_unavailable",
                f"cannot reach the Kubernetes API to use approval {name}",
                self._view(obj),
                status=503,
            ) from error
        except KubeRefused as error:
            if not raise_on_loss:
                return False
            raise refusal(
                "approval_used", f"approval {name} cannot be used: {error.message}", self._view(obj)
            ) from error
        if model.stored_state(used) != model.USED:
            raise refusal(
                "approval_unavailable", f"approval {name} was not marked Used; refusing", self._view(used)
            )
        self._note(exchange, used, state=model.APPROVED)
        return True

    async def _mark_expired(self, namespace: str, name: str) -> None:
        # Best effort, for `kubectl get` readers; the refusal does not depend on it.
        try:
            await self._client.patch_status(namespace, name, {"status": {"state": model.EXPIRED}})
        except (KubeRefused, KubeUnavailable):
            return

    def _denied(self, obj: Mapping[str, Any]) -> Rejection:
        name = (obj.get("metadata") or {}).get("name")
        reasons = [
            f"{r.get('reviewer')}: {r.get('reason')}"
            for r in model.reviews_of(obj)
            if r.get("decision") == model.DENY
        ]
        return refusal(
            "approval_denied",
            f"approval {name} was denied ({'; '.join(reasons) or 'no reason'})",
            self._view(obj),
        )

    def _view(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return model.record_view(obj, self._clock())

    def _note(self, exchange: Exchange, obj: Mapping[str, Any], state: str | None = None) -> None:
        view = self._view(obj)
        details = {**exchange.approval.details, **view}
        if state is not None:
            details["state"] = model.USED if state == model.APPROVED else state
        exchange.approval = ApprovalInfo(
            id=str(view.get("name") or ""), state=state or str(view["state"]), details=details
        )
