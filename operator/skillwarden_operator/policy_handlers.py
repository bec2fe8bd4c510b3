"""kopf handlers for SkillPolicy: admission validation, and recompiling a policy's namespace on
every create / update / delete / resume.

A compilation always starts from the API server's CURRENT list of the namespace's policies, so a
policy deleted while another compile runs is simply absent from the next one; compilations of a
namespace are serialised, and one that started after a request arrived answers that request too
(1,000 policies resuming at start-up cost a handful of compiles, not 1,000).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

import kopf

from skillwarden_operator import policy_model
from skillwarden_operator.bundle import Bundle, build_bundle
from skillwarden_operator.policy_status import needs_update, policy_status
from skillwarden_operator.state import OperatorState

GROUP, VERSION, PLURAL = policy_model.GROUP, policy_model.VERSION, policy_model.PLURAL
_log = logging.getLogger("skillwarden.operator")


def _state(memo: Any) -> OperatorState:
    state: OperatorState = memo.state
    return state


def _plain(body: Any) -> dict[str, Any]:
    """A kopf Body (or dict) as plain JSON-like data."""
    plain: dict[str, Any] = {key: (dict(value) if isinstance(value, dict) else value)
                             for key, value in dict(body).items()}
    return plain


async def reconcile_namespace(state: OperatorState, namespace: str,
                              now: dt.datetime | None = None) -> Bundle | None:
    """Compile the namespace from the API server's current policies; store; patch statuses.
    Returns the bundle now served, or None when the namespace is gone."""
    state.requested[namespace] = my_request = state.requested.get(namespace, 0) + 1
    async with state.lock(namespace):
        if state.covered.get(namespace, 0) >= my_request:
            return state.store.get(namespace)
        covering = state.requested[namespace]
        try:
            namespace_state = await asyncio.to_thread(state.kube.namespace_state, namespace)
            if namespace_state == "gone":
                state.store.remove(namespace)
                state.metrics.forget_namespace(namespace)
                state.terminating.discard(namespace)
                state.covered[namespace] = covering
                return None
            listed = await asyncio.to_thread(state.kube.list_policies, namespace)
        except Exception as error:  # API server unreachable or restarting: retry, keep serving
            raise kopf.TemporaryError(f"cannot list SkillPolicies of {namespace}: {error}",
                                      delay=3) from error
        live = [p for p in listed if not p.get("metadata", {}).get("deletionTimestamp")]
        # A namespace being deleted keeps a bundle, but one that denies everything: its pods may
        # still run, and OPA would keep an older, permissive bundle if we answered 404.
        compiled_from = live if namespace_state == "active" else []
        if namespace_state == "active":
            state.terminating.discard(namespace)
        else:
            state.terminating.add(namespace)
        started = time.perf_counter()
        bundle = await asyncio.to_thread(build_bundle, namespace, compiled_from,
                                         state.config.min_retention_days)
        state.metrics.compile_seconds.observe(time.perf_counter() - started)
        state.metrics.compilations.labels("failure" if bundle.invalid else "success").inc()
        if state.store.put(bundle):
            _log.info("namespace %s: bundle %s (%d policies, %d invalid, %d bytes)", namespace,
                      bundle.revision, len(bundle.included), len(bundle.invalid), len(bundle.data))
        state.metrics.set_namespace(namespace, bundle.revision, len(bundle.data), len(bundle.included),
                                    len(bundle.invalid))
        state.covered[namespace] = covering
        await asyncio.to_thread(_patch_statuses, state, live, bundle, now or dt.datetime.now(dt.UTC),
                                namespace_state)
        return bundle


def _patch_statuses(state: OperatorState, policies: list[dict[str, Any]], bundle: Bundle, now: dt.datetime,
                    namespace_state: str) -> None:
    for policy in policies:
        status = policy_status(policy, bundle, now, namespace_state)
        if needs_update(policy, status):
            metadata = policy["metadata"]
            try:
                state.kube.patch_status(metadata["namespace"], metadata["name"], status)
            except Exception as error:  # status is informative; the bundle is already served
                _log.warning("status of %s/%s not updated: %s", metadata["namespace"], metadata["name"],
                             error)


def _report(state: OperatorState, body: Any, bundle: Bundle | None) -> None:
    if bundle is None or bundle.namespace in state.terminating:
        return  # the API server refuses new Events in a terminating namespace
    key = f"{bundle.namespace}/{body['metadata']['name']}"
    if key in bundle.invalid:
        kopf.event(body, type="Warning", reason="Invalid", message="; ".join(bundle.invalid[key])[:1000])
    elif bundle.invalid:
        kopf.event(body, type="Warning", reason="NamespaceInvalid",
                   message=f"bundle {bundle.revision} denies every request: "
                           f"{', '.join(sorted(bundle.invalid))} is invalid")
    else:
        kopf.event(body, type="Normal", reason="Compiled",
                   message=f"bundle {bundle.revision} ({len(bundle.included)} policies)")


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def policy_changed(**kwargs: Any) -> None:
    state = _state(kwargs["memo"])
    bundle = await reconcile_namespace(state, kwargs["namespace"])
    _report(state, kwargs["body"], bundle)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def policy_deleted(**kwargs: Any) -> None:
    # The object still exists (our finalizer holds it) with a deletionTimestamp: compiled out.
    await reconcile_namespace(_state(kwargs["memo"]), kwargs["namespace"])


def _serves_namespace(**kwargs: Any) -> bool:
    return _state(kwargs["memo"]).store.get(kwargs["name"]) is not None


@kopf.on.event("", "v1", "namespaces", when=_serves_namespace)
async def namespace_event(**kwargs: Any) -> None:
    state, name = _state(kwargs["memo"]), kwargs["name"]
    if kwargs["type"] == "DELETED" or kwargs["body"].get("metadata", {}).get("deletionTimestamp"):
        await reconcile_namespace(state, name)


@kopf.on.validate(GROUP, VERSION, PLURAL, id="validate-skillpolicy", operations=["CREATE", "UPDATE"])
def validate_skillpolicy(body: Any, memo: Any, **_: Any) -> None:
    state = _state(memo)
    errors = policy_model.validate_policy(_plain(body), state.config.min_retention_days)
    state.metrics.admission_reviews.labels("denied" if errors else "allowed").inc()
    if errors:
        raise kopf.AdmissionError("\n".join(errors), code=422)
