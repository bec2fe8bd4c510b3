"""Masking of Messages API bodies: only string values change, keys and structure stay, JSON stays valid.

Requests: `system` (string or blocks), `messages[].content` (string or blocks: text, tool_result
with string or nested content, tool_use input, document text, thinking) and `metadata`. Responses: `content`
(text, tool_use input, thinking, server tool results). Identifiers and structural fields (ids,
names, types, signatures, media types) and opaque binary payloads (base64 sources, redacted
thinking) are left alone.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from skillwarden_sidecar.masking.engine import TextMasker

MAX_DEPTH = 64

# Keys whose values are identifiers or protocol fields, never user text.
STRUCTURAL_KEYS = frozenset(
    {"type", "id", "tool_use_id", "name", "signature", "media_type", "cache_control", "role",
     "file_id", "container_id", "stop_reason", "stop_sequence", "model", "index",
     # opaque provider blobs (web search results): changing a byte would break them
     "encrypted_content", "encrypted_index"}
)  # fmt: skip
_OPAQUE_TYPES = frozenset({"base64", "redacted_thinking", "image"})


class MaskingDepthError(ValueError):
    """A body nests deeper than MAX_DEPTH: refused rather than walked without bound."""


def mask_string(masker: TextMasker, text: str, counts: Counter[str]) -> str:
    if not text:
        return text
    result = masker.mask_text(text)
    for finding in result.findings:
        counts[finding.entity] += 1
    return result.text


class _TooDeep(Exception):
    """Raised at the first level past MAX_DEPTH; each level on the way out adds its key, so the
    walk builds no path strings unless it fails."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []


def mask_json(
    masker: TextMasker, value: Any, counts: Counter[str], path: str = "$", depth: int = 0, free: bool = False
) -> Any:
    """Walk a JSON value: strings are masked, object keys kept; copies only what changes.
    `free`: arbitrary data (a tool's input) where no key is structural."""
    try:
        return _walk(masker, value, counts, depth, free)
    except _TooDeep as deep:
        where = path + "".join(reversed(deep.parts))
        raise MaskingDepthError(f"{where}: JSON nests deeper than {MAX_DEPTH} levels; "
                                "refusing to mask it") from None


def _walk(masker: TextMasker, value: Any, counts: Counter[str], depth: int, free: bool) -> Any:
    if depth > MAX_DEPTH:
        raise _TooDeep
    if isinstance(value, str):
        return mask_string(masker, value, counts)
    if isinstance(value, list):
        items = []
        changed = False
        for i, item in enumerate(value):
            try:
                masked = _walk(masker, item, counts, depth + 1, free)
            except _TooDeep as deep:
                deep.parts.append(f"[{i}]")
                raise
            changed = changed or masked is not item
            items.append(masked)
        return items if changed else value
    if isinstance(value, dict):
        kind = value.get("type")  # any JSON value: a list or object here is not hashable
        opaque = not free and isinstance(kind, str) and kind in _OPAQUE_TYPES
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not free and (key in STRUCTURAL_KEYS or (opaque and key == "data")):
                out[key] = item
                continue
            try:
                out[key] = _walk(masker, item, counts, depth + 1, free or key == "input")
            except _TooDeep as deep:
                deep.parts.append(f".{key}")
                raise
            changed = changed or out[key] is not item
        return out if changed else value
    return value


def mask_request_body(masker: TextMasker, body: dict[str, Any]) -> tuple[dict[str, Any], Counter[str]]:
    """What the provider (or the record) sees of a `/v1/messages` or count_tokens request."""
    counts: Counter[str] = Counter()
    out = dict(body)
    if "system" in body:
        out["system"] = mask_json(masker, body["system"], counts, "$.system", 1)
    if isinstance(body.get("metadata"), dict):  # metadata.user_id is sometimes an e-mail address
        out["metadata"] = mask_json(masker, body["metadata"], counts, "$.metadata", 1, free=True)
    messages = body.get("messages")
    if isinstance(messages, list):
        out["messages"] = [
            mask_json(masker, message, counts, f"$.messages[{i}]", 1) for i, message in enumerate(messages)
        ]
    return out, counts


def mask_response_body(masker: TextMasker, body: dict[str, Any]) -> tuple[dict[str, Any], Counter[str]]:
    """What the client (or the record) sees of a JSON `message` answer."""
    counts: Counter[str] = Counter()
    out = dict(body)
    if "content" in body:
        out["content"] = mask_json(masker, body["content"], counts, "$.content", 1)
    return out, counts
