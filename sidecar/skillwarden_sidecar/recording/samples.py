"""Realistic example records (docs, tests, benchmark): the shape the sidecar's pipeline produces,
with prompts already masked as records always are."""

from __future__ import annotations

from typing import Any

DETECTOR_VERSION = "skillwarden-masking/1"


def request_record(exchange_id: str, *, action: str = "allow", sub: str = "alice@example.com",
                   skill_id: str = "xlsx", prompt: str = "Summarise Q3 revenue for [EMAIL]",
                   masked: dict[str, int] | None = None, rule: str | None = None,
                   approval: dict[str, Any] | None = None,
                   recording: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "exchange_id": exchange_id,
        "identity": {"kind": "oidc", "sub": sub, "iss": "https://idp.example.com",
                     "groups": ["finance-analysts"], "email": sub},
        "workload": {"namespace": "finance", "pod": "report-7f9c", "service_account": "report-bot"},
        "route": {"method": "POST", "path": "/v1/messages", "operation": "messages.create"},
        "model": "claude-sonnet-4-5", "stream": False,
        "skills": [{"type": "anthropic", "skill_id": skill_id, "version": "latest"}],
        "tools": ["code_execution"],
        "prompt": {"text": prompt, "chars": len(prompt)},
        "params": {"max_tokens": 1024, "temperature": 0.2},
        "decision": {"action": action, "policy": "finance/finance-reporting", "rule": rule,
                     "reasons": [f"{action} by finance/finance-reporting"], "message": None,
                     "bundle_revision": "sha256:" + "ab" * 32, "recording": recording},
        "approval": approval,
        "masking": {"counts": masked or {}, "detector_version": DETECTOR_VERSION, "hmac_key_id": "k1"},
        "timings": {"received_at": "2026-11-24T06:00:00.000000Z", "policy_ms": 0.4, "masking_ms": 0.1},
    }


def response_record(exchange_id: str, *, outcome: str = "forwarded", status: int = 200,
                    text: str = "Revenue grew 12% to [REDACTED]",
                    recording: dict[str, Any] | None = None) -> dict[str, Any]:
    rejected = outcome != "forwarded"
    return {
        "exchange_id": exchange_id, "outcome": outcome, "status": status,
        "error": {"type": "permission_error", "message": "denied by policy"} if rejected else None,
        "response": None if rejected else {"text": text, "stop_reason": "end_turn",
                                           "content_types": ["text"]},
        "usage": None if rejected else {"input_tokens": 412, "output_tokens": 96},
        "masking": {"counts": {}, "detector_version": DETECTOR_VERSION, "hmac_key_id": "k1"},
        "recording": recording,
        "timings": {"upstream_ms": None if rejected else 812.5, "total_ms": 3.1 if rejected else 815.0},
    }
