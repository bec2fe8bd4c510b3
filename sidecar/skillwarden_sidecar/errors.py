"""Rejections in Anthropic's error format.

Every refusal the sidecar makes — bad input, failed identity, policy deny, upstream trouble —
is a `Rejection`. The client sees exactly what the Claude API itself would send for that
class of problem (`{"type": "error", "error": {"type": ..., "message": ...}}`), so SDKs raise
their usual exception types; `cause` is the bounded label used for `skillwarden_errors_total`.

Messages never contain credentials or request text: they name the check that failed.
"""

from __future__ import annotations

from typing import Any

import orjson

# HTTP status -> Anthropic error type (https://docs.anthropic.com/en/api/errors).
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    431: "request_too_large",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


class Rejection(Exception):
    """Stop the pipeline and answer the client with this Anthropic-format error."""

    def __init__(self, status: int, message: str, *, cause: str, error_type: str | None = None,
                 details: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.cause = cause
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")
        # Extra machine-readable fields placed beside type/message (e.g. the approval name).
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.error_type, self.message, self.details)


def error_body(error_type: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details:
        error.update({k: v for k, v in details.items() if k not in error})
    return orjson.dumps({"type": "error", "error": error})


def bad_request(message: str, cause: str = "bad_request") -> Rejection:
    return Rejection(400, message, cause=cause)


def unauthenticated(reason: str) -> Rejection:
    return Rejection(401, f"invalid credential: {reason}", cause="authentication")


def forbidden(message: str, cause: str = "policy_deny", details: dict[str, Any] | None = None) -> Rejection:
    return Rejection(403, message, cause=cause, details=details)


def not_found(message: str) -> Rejection:
    return Rejection(404, message, cause="unknown_route")


def too_large(message: str) -> Rejection:
    return Rejection(413, message, cause="too_large")


def policy_unavailable(message: str) -> Rejection:
    # Fail closed: the policy could not be consulted, so nothing is forwarded. 503 tells a client
    # that retrying later may help (the SDK retries overloaded_error with backoff).
    return Rejection(503, message, cause="policy_unavailable", error_type="api_error")


def upstream_failure(status: int, message: str, cause: str) -> Rejection:
    return Rejection(status, message, cause=cause)
