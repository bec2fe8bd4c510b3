"""The OCSF view of one exchange: API Activity (class_uid 6003, OCSF 1.3.0) with the Security
Control profile for the decision. docs/records.md has the field-by-field mapping table."""

from __future__ import annotations

from typing import Any

from skillwarden_sidecar.recording.entry import parse_timestamp

OCSF_VERSION = "1.3.0"
API_ACTIVITY = 6003
_ACTIVITY = {"create": 1, "read": 2, "update": 3, "delete": 4}
_OPERATION_ACTIVITY = {
    "messages.create": "create", "skills.create": "create", "skills.delete": "delete",
    "skills.list": "read", "skills.get": "read", "models.list": "read", "models.get": "read",
    "messages.count_tokens": "read",
}


def _millis(text: str | None) -> int | None:
    return int(parse_timestamp(text).timestamp() * 1000) if text else None


def to_ocsf(request: dict[str, Any], response: dict[str, Any] | None = None,
            product_version: str = "0.1.0") -> dict[str, Any]:
    """`request`/`response` are decoded entries (`{"v", "stream", "seq", "time", "record", ...}`)."""
    req = request["record"]
    res = (response or {}).get("record") or {}
    operation = str(req.get("route", {}).get("operation", ""))
    activity = _OPERATION_ACTIVITY.get(operation)
    activity_id = _ACTIVITY[activity] if activity else 99
    decision = req.get("decision") or {}
    action = decision.get("action")
    status = res.get("status")
    succeeded = res.get("outcome") == "forwarded" and isinstance(status, int) and status < 400
    identity = req.get("identity") or {}
    workload = req.get("workload") or {}
    error = res.get("error") or {}
    start, end = _millis(request.get("time")), _millis((response or {}).get("time"))
    event: dict[str, Any] = {
        "class_uid": API_ACTIVITY, "class_name": "API Activity",
        "category_uid": 6, "category_name": "Application Activity",
        "activity_id": activity_id, "activity_name": (activity or "other").capitalize(),
        "type_uid": API_ACTIVITY * 100 + activity_id,
        "time": start, "start_time": start, "end_time": end,
        "duration": (end - start) if start is not None and end is not None else None,
        "severity_id": 1 if action == "allow" and (succeeded or not res) else 3,
        "status_id": 0 if not res else (1 if succeeded else 2),
        "status_code": str(status) if status is not None else None,
        "status_detail": error.get("message"),
        "action_id": {"allow": 1, "deny": 2}.get(str(action), 99),
        "action": {"allow": "Allowed", "deny": "Denied"}.get(str(action), "Other"),
        "disposition_id": {"allow": 1, "deny": 2}.get(str(action), 99),
        "actor": {
            "user": {"uid": identity.get("sub"), "name": identity.get("email") or identity.get("sub"),
                     "email_addr": identity.get("email"), "type": identity.get("kind"),
                     "groups": [{"name": g} for g in identity.get("groups") or []]},
            "app_name": workload.get("service_account"),
        },
        "api": {
            "operation": operation, "service": {"name": "Anthropic Claude API"},
            "version": req.get("model"),
            "request": {"uid": req.get("exchange_id")},
            "response": {"code": status, "error": error.get("type"), "error_message": error.get("message")},
        },
        "http_request": {"http_method": req.get("route", {}).get("method"),
                         "url": {"path": req.get("route", {}).get("path")}},
        "http_response": {"code": status} if status is not None else None,
        "src_endpoint": {"name": workload.get("pod"), "namespace": workload.get("namespace"),
                         "uid": f"{workload.get('namespace')}/{workload.get('pod')}"},
        "resources": [{"type": "skill", "uid": s.get("skill_id"), "name": s.get("skill_id"),
                       "labels": [f"type:{s.get('type')}", f"version:{s.get('version')}"]}
                      for s in req.get("skills") or []]
                     + ([{"type": "model", "uid": req.get("model"), "name": req.get("model")}]
                        if req.get("model") else []),
        "policy": {"name": decision.get("policy"), "uid": decision.get("rule"),
                   "version": decision.get("bundle_revision"), "desc": decision.get("message")},
        "metadata": {
            "version": OCSF_VERSION, "profiles": ["security_control"],
            "product": {"name": "skillwarden", "vendor_name": "skillwarden", "version": product_version},
            "uid": req.get("exchange_id"),
            "correlation_uid": f"{request.get('stream')}#{request.get('seq')}",
            "log_name": "skillwarden-records",
        },
        "unmapped": {
            "tools": req.get("tools"), "prompt": req.get("prompt"), "params": req.get("params"),
            "decision_reasons": decision.get("reasons"), "approval": req.get("approval"),
            "response": res.get("response"), "usage": res.get("usage"), "outcome": res.get("outcome"),
            "masking": {"request": req.get("masking"), "response": res.get("masking")},
            "timings": {"request": req.get("timings"), "response": res.get("timings")},
            "record_refs": [f"{e.get('stream')}#{e.get('seq')}" for e in (request, response) if e],
        },
    }
    return event
