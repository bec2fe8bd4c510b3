"""Rebuild the final Message from the SSE events a client received (for records and usage).

Anthropic streams a message as `message_start`, per content block `content_block_start` /
`content_block_delta`* / `content_block_stop`, then `message_delta` (stop reason, usage) and
`message_stop`. Tool inputs arrive as `input_json_delta` fragments that only parse once the
block stops.
"""

from __future__ import annotations

from typing import Any

import orjson

from skillwarden_sidecar.sse import SseEvent


class MessageAccumulator:
    """Fragments are collected in lists and joined once per block (at its stop, or `finish()`):
    appending to a growing string per delta would be quadratic in the length of the answer."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self._json_parts: dict[int, list[str]] = {}
        self._text_parts: dict[tuple[int, str], list[str]] = {}  # (index, field) -> fragments
        self.events = 0
        self.error: dict[str, Any] | None = None

    def finish(self) -> dict[str, Any] | None:
        """Join what is still open (a stream cut before its blocks stopped) and return the message."""
        for index in sorted({i for i, _ in self._text_parts} | set(self._json_parts)):
            self._stop(index)
        return self.message

    def add(self, event: SseEvent) -> None:
        self.events += 1
        if not event.data or event.data == "[DONE]":
            return
        try:
            data = event.json()  # parsed once: the stream masker attaches what it serialised
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "message_start" and isinstance(data.get("message"), dict):
            self.message = dict(data["message"])
            self.message["content"] = list(self.message.get("content") or [])
        elif self.message is None:
            if kind == "error" and isinstance(data.get("error"), dict):
                self.error = data["error"]
            return
        elif kind == "content_block_start" and isinstance(data.get("content_block"), dict):
            self.message["content"].append(dict(data["content_block"]))
        elif kind == "content_block_delta":
            self._delta(data)
        elif kind == "content_block_stop":
            self._stop(data.get("index"))
        elif kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict):
                self.message.update({k: v for k, v in delta.items()})
            usage = data.get("usage")
            if isinstance(usage, dict):
                merged = dict(self.message.get("usage") or {})
                merged.update(usage)
                self.message["usage"] = merged
        elif kind == "error" and isinstance(data.get("error"), dict):
            self.error = data["error"]

    def _block(self, index: Any) -> dict[str, Any] | None:
        content = self.message["content"] if self.message else []
        if isinstance(index, int) and 0 <= index < len(content) and isinstance(content[index], dict):
            block: dict[str, Any] = content[index]
            return block
        return None

    def _delta(self, data: dict[str, Any]) -> None:
        block = self._block(data.get("index"))
        delta = data.get("delta")
        if block is None or not isinstance(delta, dict):
            return
        kind = delta.get("type")
        index = data["index"]
        if kind == "text_delta":
            self._fragment(block, index, "text").append(str(delta.get("text", "")))
        elif kind == "input_json_delta":
            self._json_parts.setdefault(index, []).append(str(delta.get("partial_json", "")))
        elif kind == "thinking_delta":
            self._fragment(block, index, "thinking").append(str(delta.get("thinking", "")))
        elif kind == "signature_delta":
            block["signature"] = str(delta.get("signature", ""))
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def _fragment(self, block: dict[str, Any], index: int, name: str) -> list[str]:
        parts = self._text_parts.get((index, name))
        if parts is None:
            parts = self._text_parts[(index, name)] = [str(block.get(name, ""))]
        return parts

    def _stop(self, index: Any) -> None:
        block = self._block(index)
        for name in ("text", "thinking"):
            fragments = self._text_parts.pop((index, name), None)
            if block is not None and fragments is not None:
                block[name] = "".join(fragments)
        parts = self._json_parts.pop(index, None) if isinstance(index, int) else None
        if block is not None and parts is not None:
            joined = "".join(parts)
            try:
                block["input"] = orjson.loads(joined) if joined else {}
            except orjson.JSONDecodeError:
                block["input"] = {"_unparsed": joined}
