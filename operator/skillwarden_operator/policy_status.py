"""A SkillPolicy's status after its namespace was compiled (pure: time is passed in)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from skillwarden_operator.bundle import Bundle


def ready_condition(policy: dict[str, Any], bundle: Bundle,
                    namespace_state: str = "active") -> dict[str, str]:
    metadata = policy.get("metadata", {})
    key = f"{bundle.namespace}/{metadata.get('name', '')}"
    if key in bundle.invalid:
        return {"status": "False", "reason": "Invalid",
                "message": "; ".join(bundle.invalid[key]) + f". Namespace {bundle.namespace} denies every "
                           "request until this policy is fixed"}
    if bundle.invalid:
        others = ", ".join(sorted(bundle.invalid))
        return {"status": "False", "reason": "NamespaceInvalid",
                "message": f"compiled, but {others} is invalid: namespace {bundle.namespace} denies every "
                           "request until it is fixed"}
    if namespace_state == "terminating":
        return {"status": "False", "reason": "NamespaceTerminating",
                "message": f"namespace {bundle.namespace} is being deleted; its bundle denies every request"}
    return {"status": "True", "reason": "Compiled",
            "message": f"compiled with {len(bundle.included)} SkillPolicies of namespace {bundle.namespace} "
                       f"into bundle {bundle.revision}"}


def policy_status(policy: dict[str, Any], bundle: Bundle, now: dt.datetime,
                  namespace_state: str = "active") -> dict[str, Any]:
    generation = int(policy.get("metadata", {}).get("generation", 0))
    condition: dict[str, Any] = {"type": "Ready", **ready_condition(policy, bundle, namespace_state),
                                 "observedGeneration": generation}
    previous = next((c for c in (policy.get("status") or {}).get("conditions", [])
                     if c.get("type") == "Ready"), None)
    if previous is not None and previous.get("status") == condition["status"] and previous.get(
            "lastTransitionTime"):
        condition["lastTransitionTime"] = previous["lastTransitionTime"]
    else:
        condition["lastTransitionTime"] = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"observedGeneration": generation, "bundleRevision": bundle.revision, "conditions": [condition]}


def needs_update(policy: dict[str, Any], status: dict[str, Any]) -> bool:
    current = policy.get("status") or {}
    keys = ("observedGeneration", "bundleRevision", "conditions")
    return any(current.get(key) != status[key] for key in keys)
