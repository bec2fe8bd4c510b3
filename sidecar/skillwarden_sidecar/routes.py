"""Which requests the sidecar forwards at all: an explicit table, everything else is refused.

The path is checked on its raw (still percent-encoded) form, before any framework decoding, so
`/v1/skills/..%2F..%2Fadmin`, doubled slashes or dot segments can never reach a different
upstream resource than the one the policy was asked about.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from skillwarden_sidecar.errors import Rejection, bad_request, not_found

# How a route's request body is read: a JSON object, passed through as raw bytes (multipart
# uploads of skill files), or no body at all.
JSON, RAW, NONE = "json", "raw", "none"


@dataclass(frozen=True)
class Route:
    operation: str  # the policy's `request.operation`
    label: str  # the metrics/route label (templated, bounded)
    body: str  # JSON | RAW | NONE
    params: tuple[tuple[str, str], ...] = ()  # captured ids, e.g. (("skill_id", "skill_01..."),)

    def param(self, name: str) -> str:
        return dict(self.params).get(name, "")


# (method, path template) -> (operation, body kind). "{x}" captures one safe segment.
_TABLE: tuple[tuple[str, str, str, str], ...] = (
    ("POST", "/v1/messages", "messages.create", JSON),
    ("POST", "/v1/messages/count_tokens", "messages.count_tokens", JSON),
    ("GET", "/v1/models", "models.list", NONE),
    ("GET", "/v1/models/{model_id}", "models.get", NONE),
    ("POST", "/v1/skills", "skills.create", RAW),
    ("GET", "/v1/skills", "skills.list", NONE),
    ("GET", "/v1/skills/{skill_id}", "skills.get", NONE),
    ("DELETE", "/v1/skills/{skill_id}", "skills.delete", NONE),
    ("POST", "/v1/skills/{skill_id}/versions", "skills.versions.create", RAW),
    ("GET", "/v1/skills/{skill_id}/versions", "skills.versions.list", NONE),
    ("GET", "/v1/skills/{skill_id}/versions/{version}", "skills.versions.get", NONE),
    ("DELETE", "/v1/skills/{skill_id}/versions/{version}", "skills.versions.delete", NONE),
)

ROUTES: tuple[tuple[str, str, str], ...] = tuple((m, p, o) for m, p, o, _ in _TABLE)

_SEGMENT_CHARS = frozenset(string.ascii_letters + string.digits + "-_.")
_MAX_PATH = 512


def _segments(raw_path: str) -> list[str]:
    if len(raw_path) > _MAX_PATH:
        raise bad_request("request path too long", "bad_path")
    if not raw_path.startswith("/"):
        raise bad_request("request path must be absolute", "bad_path")
    if raw_path == "/":
        raise not_found("route not allowed through skillwarden")
    parts = raw_path[1:].split("/")
    if raw_path.endswith("/") and raw_path != "/":
        parts = parts[:-1]
    for part in parts:
        # No percent-encoding at all (no encoded slash, dot or NUL), no empty or dot segments.
        if part in {"", ".", ".."} or not set(part) <= _SEGMENT_CHARS:
            raise bad_request("request path contains an empty, dot or encoded segment", "bad_path")
    return parts


def resolve(method: str, raw_path: str) -> Route:
    """Map a request to its route, or raise the `Rejection` a client should see."""
    path = raw_path.split("?", 1)[0]
    parts = _segments(path)
    path_matched = False
    for table_method, template, operation, body in _TABLE:
        pattern = template[1:].split("/")
        if len(pattern) != len(parts):
            continue
        params: list[tuple[str, str]] = []
        for want, got in zip(pattern, parts, strict=True):
            if want.startswith("{"):
                params.append((want[1:-1], got))
            elif want != got:
                break
        else:
            path_matched = True
            if table_method == method:
                return Route(operation, template, body, tuple(params))
    if path_matched:
        raise Rejection(405, f"method {method} not allowed on this route", cause="bad_method")
    raise not_found("route not allowed through skillwarden")
