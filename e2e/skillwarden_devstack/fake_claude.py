"""A fake Anthropic API: the only faked component in the stack (tests, demo, benchmarks).

Speaks enough of the real wire format for the official SDK: `POST /v1/messages` as JSON or SSE
(text, `tool_use` with `input_json_delta`, extended thinking, `container` with skills),
`/v1/messages/count_tokens`, `/v1/models`, and `/v1/skills` (create/list/get/delete).
Answers are deterministic functions of the request body (ids derive from its hash), so a test can
compare "through the sidecar" with "direct" byte for byte.

Knobs: time to first token (`ttft`), gap between stream deltas (`token_gap`), a required API key,
and a FIFO of faults consumed one per request: `status` (e.g. 500, 529 overloaded), `timeout`
(sleep before answering), `disconnect` (drop the connection mid-stream after N events),
`stream_error` (an `event: error` mid-stream after N events, e.g. 529 overloaded).
Everything received is kept (method, path, query, headers incl. `x-api-key`, body) so tests can
assert what the upstream saw. Control endpoints under `/_fake/` (not part of Anthropic's API):
GET/DELETE `/_fake/received`, POST `/_fake/faults`, POST `/_fake/settings`, GET `/_fake/stats`.

Run standalone: `python -m skillwarden_devstack.fake_claude --port 0 [--api-key-file F]
[--ttft S] [--token-gap S]`; it prints `{"url": ...}` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import ssl
import sys
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

MODELS = (
    ("claude-opus-4-7", "Claude Opus 4.7"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5"),
)
ANTHROPIC_SKILLS = ("xlsx", "pptx", "docx", "pdf")
_CREATED = "2025-10-16T00:00:00Z"


@dataclass
class Settings:
    api_key: str | None = None  # required x-api-key (None: accept any, still recorded)
    api_key_file: str | None = None  # read per request, so rotation is visible
    ttft: float = 0.0  # seconds before the first byte/event
    token_gap: float = 0.0  # seconds between stream deltas
    reply_text: str | None = None  # fixed reply; default echoes the last user text
    words_per_delta: int = 1


@dataclass
class Fault:
    kind: str  # status | timeout | disconnect | stream_error (an `event: error` mid-stream)
    status: int = 500
    seconds: float = 0.0
    after_events: int = 3
    message: str = ""


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "query": self.query, "headers": self.headers,
                "body": self.body.decode("utf-8", "replace")}


@dataclass
class Stats:
    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_cut_by_client: int = 0  # the client (e.g. the sidecar) went away mid-stream


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # the real API sends UTF-8, not \u escapes


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(value, status=status, headers=headers, dumps=_dumps)


def error_payload(status: int, message: str) -> dict[str, Any]:
    kinds = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
             529: "overloaded_error"}
    return {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}


class FakeClaude:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.received: list[Received] = []
        self.faults: deque[Fault] = deque()
        self.stats = Stats()
        self.skills: dict[str, dict[str, Any]] = {}

    # -- helpers --------------------------------------------------------------------------------

    def _expected_key(self) -> str | None:
        if self.settings.api_key_file:
            return Path(self.settings.api_key_file).read_text().strip()
        return self.settings.api_key

    def _error(self, status: int, message: str, request_id: str) -> web.Response:
        return _json(error_payload(status, message), status=status,
                                 headers={"request-id": request_id})

    async def _gate(self, request: web.Request, body: bytes) -> web.StreamResponse | None:
        """Record, check key and version, apply a queued non-stream fault."""
        self.stats.requests += 1
        self.received.append(Received(request.method, request.path, request.query_string,
                                      dict(request.headers), body))
        request_id = "req_fake_" + hashlib.sha256(body + request.path.encode()).hexdigest()[:20]
        expected = self._expected_key()
        # SDK 2.x sends the key as `Authorization: Bearer`, older clients as `x-api-key`.
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        presented = request.headers.get("x-api-key") or bearer
        if expected is not None and presented != expected:
            return self._error(401, "invalid x-api-key", request_id)
        if "anthropic-version" not in request.headers:
            return self._error(400, "anthropic-version: header is required", request_id)
        if self.faults and self.faults[0].kind in {"status", "timeout"}:
            fault = self.faults.popleft()
            if fault.kind == "timeout":
                await asyncio.sleep(fault.seconds)
            else:
                return self._error(fault.status, fault.message or f"fake fault {fault.status}", request_id)
        if self.settings.ttft:
            await asyncio.sleep(self.settings.ttft)
        return None

    # -- messages -------------------------------------------------------------------------------

    async def messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        refused = await self._gate(request, raw)
        if refused is not None:
            return refused
        try:
            body = json.loads(raw)
            assert isinstance(body, dict) and isinstance(body.get("messages"), list)
        except (ValueError, AssertionError):
            return self._error(400, "messages: field required", "req_fake_bad")
        message = build_message(body, self.settings.reply_text)
        headers = {"request-id": "req_fake_" + message["id"][4:24]}
        if body.get("stream") is True:
            return await self._stream(request, message, headers)
        return _json(message, headers=headers)

    async def _stream(self, request: web.Request, message: dict[str, Any],
                      headers: dict[str, str]) -> web.StreamResponse:
        in_stream = {"disconnect", "stream_error"}
        fault = self.faults.popleft() if self.faults and self.faults[0].kind in in_stream else None
        response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        self.stats.streams_started += 1
        try:
            for count, (name, data) in enumerate(stream_events(message, self.settings.words_per_delta)):
                if fault is not None and count >= fault.after_events:
                    if fault.kind == "stream_error":  # what the real API sends when it fails mid-stream
                        error = error_payload(fault.status, fault.message or "Overloaded")
                        await response.write(f"event: error\ndata: {_dumps(error)}\n\n".encode())
                        await response.write_eof()
                        return response
                    assert request.transport is not None
                    request.transport.close()  # upstream dies mid-stream
                    return response
                if name == "content_block_delta" and self.settings.token_gap:
                    await asyncio.sleep(self.settings.token_gap)
                await response.write(f"event: {name}\ndata: {_dumps(data)}\n\n".encode())
            await response.write_eof()
            self.stats.streams_completed += 1
        except (ConnectionError, asyncio.CancelledError):
            self.stats.streams_cut_by_client += 1
            raise
        return response

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        refused = await self._gate(request, raw)
        if refused is not None:
            return refused
        body = json.loads(raw)
        return _json({"input_tokens": _tokens(prompt_of(body))})

    # -- models and skills ----------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.StreamResponse:
        refused = await self._gate(request, b"")
        if refused is not None:
            return refused
        data = [{"type": "model", "id": mid, "display_name": name, "created_at": _CREATED}
                for mid, name in MODELS]
        return _json({"data": data, "has_more": False, "first_id": data[0]["id"],
                                  "last_id": data[-1]["id"]})

    async def model(self, request: web.Request) -> web.StreamResponse:
        refused = await self._gate(request, b"")
        if refused is not None:
            return refused
        for mid, name in MODELS:
            if mid == request.match_info["model_id"]:
                return _json({"type": "model", "id": mid, "display_name": name,
                                          "created_at": _CREATED})
        return self._error(404, "model not found", "req_fake_model")

    async def create_skill(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        refused = await self._gate(request, raw)
        if refused is not None:
            return refused
        digest = hashlib.sha256(raw).hexdigest()
        skill_id = "skill_01" + digest[:22]
        title = "uploaded skill"
        marker = b'name="display_name"'
        if marker in raw:
            title = raw.split(marker, 1)[1].split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[0].decode()
        skill = {"type": "skill", "id": skill_id, "display_name": title, "source": "custom",
                 "latest_version_id": str(int(digest[:8], 16)), "created_at": _CREATED,
                 "updated_at": _CREATED}
        self.skills[skill_id] = skill
        return _json(skill)

    async def list_skills(self, request: web.Request) -> web.StreamResponse:
        refused = await self._gate(request, b"")
        if refused is not None:
            return refused
        return _json({"data": list(self.skills.values()), "has_more": False, "next_page": None})

    async def get_skill(self, request: web.Request) -> web.StreamResponse:
        refused = await self._gate(request, b"")
        if refused is not None:
            return refused
        skill = self.skills.get(request.match_info["skill_id"])
        if skill is None:
            return self._error(404, "skill not found", "req_fake_skill")
        if request.method == "DELETE":
            del self.skills[skill["id"]]
            return _json({"type": "skill_deleted", "id": skill["id"]})
        return _json(skill)

    # -- control --------------------------------------------------------------------------------

    async def control_received(self, request: web.Request) -> web.StreamResponse:
        if request.method == "DELETE":
            self.received.clear()
            return _json({"cleared": True})
        return _json([r.as_dict() for r in self.received])

    async def control_faults(self, request: web.Request) -> web.StreamResponse:
        for entry in await request.json():
            self.faults.append(Fault(**entry))
        return _json({"queued": len(self.faults)})

    async def control_settings(self, request: web.Request) -> web.StreamResponse:
        changes = await request.json()
        self.settings = dataclasses.replace(self.settings, **changes)
        return _json(dataclasses.asdict(self.settings) | {"api_key": None})

    async def control_stats(self, request: web.Request) -> web.StreamResponse:
        return _json(dataclasses.asdict(self.stats))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        add = app.router.add_route
        add("POST", "/v1/messages", self.messages)
        add("POST", "/v1/messages/count_tokens", self.count_tokens)
        add("GET", "/v1/models", self.models)
        add("GET", "/v1/models/{model_id}", self.model)
        add("POST", "/v1/skills", self.create_skill)
        add("GET", "/v1/skills", self.list_skills)
        add("GET", "/v1/skills/{skill_id}", self.get_skill)
        add("DELETE", "/v1/skills/{skill_id}", self.get_skill)
        add("GET", "/_fake/received", self.control_received)
        add("DELETE", "/_fake/received", self.control_received)
        add("POST", "/_fake/faults", self.control_faults)
        add("POST", "/_fake/settings", self.control_settings)
        add("GET", "/_fake/stats", self.control_stats)
        return app


# ---------------------------------------------------------------------------------------------
# Deterministic answers


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and block.get("type") == "text":
            out.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") == "tool_result":
            out.extend(_texts(block.get("content")))
    return out


def prompt_of(body: dict[str, Any]) -> str:
    parts = _texts(body.get("system"))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            parts.extend(_texts(message.get("content")))
    return "\n".join(parts)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def build_message(body: dict[str, Any], reply_text: str | None = None) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    last = messages[-1] if messages else {}
    last_content = last.get("content")
    last_text = "\n".join(_texts(last_content))
    answering_tool = isinstance(last_content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in last_content)
    content: list[dict[str, Any]] = []
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        content.append({"type": "thinking", "thinking": "Let me think about what was asked.",
                        "signature": "sig_" + digest[:32]})
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name")]
    stop_reason = "end_turn"
    if tools and not answering_tool:
        tool = tools[0]
        content.append({"type": "text", "text": f"I will use the {tool['name']} tool."})
        content.append({"type": "tool_use", "id": "toolu_01" + digest[:22], "name": tool["name"],
                        "input": {"query": last_text[:200], "limit": 3}})
        stop_reason = "tool_use"
    else:
        text = reply_text if reply_text is not None else (
            f"Tool said: {last_text}" if answering_tool else f"You said: {last_text}")
        content.append({"type": "text", "text": text})
    output = " ".join(json.dumps(b) for b in content)
    message: dict[str, Any] = {
        "id": "msg_01" + digest[:22], "type": "message", "role": "assistant",
        "model": body.get("model", "claude-sonnet-4-6"), "content": content,
        "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": _tokens(prompt_of(body)), "output_tokens": _tokens(output),
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }
    container = body.get("container")
    if container is not None:
        skills = container.get("skills", []) if isinstance(container, dict) else []
        message["container"] = {
            "id": container if isinstance(container, str) else "container_01" + digest[:22],
            "expires_at": "2030-01-01T00:00:00Z",
            "skills": [{"type": s.get("type"), "skill_id": s.get("skill_id"),
                        "version": s.get("version", "latest")} for s in skills if isinstance(s, dict)]}
    return message


def _split(text: str, words: int) -> list[str]:
    pieces = text.split(" ")
    out = []
    for i in range(0, len(pieces), words):
        chunk = " ".join(pieces[i:i + words])
        out.append(chunk if i + words >= len(pieces) else chunk + " ")
    return out or [""]


def stream_events(message: dict[str, Any], words_per_delta: int = 1) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events that stream `message`, in Anthropic's order and shapes."""
    start = {k: v for k, v in message.items() if k not in {"content", "stop_reason", "usage"}}
    start.update(content=[], stop_reason=None, stop_sequence=None,
                 usage={**message["usage"], "output_tokens": 1})
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}}))
            for piece in _split(block["text"], words_per_delta):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "text_delta", "text": piece}}))
        elif kind == "thinking":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "thinking", "thinking": "",
                                                                     "signature": ""}}))
            for piece in _split(block["thinking"], words_per_delta):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "thinking_delta",
                                                                 "thinking": piece}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "signature_delta",
                                                             "signature": block["signature"]}}))
        elif kind == "tool_use":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "tool_use", "id": block["id"],
                                                                     "name": block["name"], "input": {}}}))
            encoded = json.dumps(block["input"])
            third = max(1, len(encoded) // 3)
            for i in range(0, len(encoded), third):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "input_json_delta",
                                                                 "partial_json": encoded[i:i + third]}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta: dict[str, Any] = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    if "container" in message:
        delta["container"] = message["container"]
    events.append(("message_delta", {"type": "message_delta", "delta": delta,
                                     "usage": {"output_tokens": message["usage"]["output_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


# ---------------------------------------------------------------------------------------------
# Running it


@contextlib.asynccontextmanager
async def running(fake: FakeClaude, host: str = "127.0.0.1", port: int = 0,
                  ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve `fake` in this event loop (HTTPS with `ssl_context`); yields its base URL."""
    runner = web.AppRunner(fake.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    try:
        yield f"{'https' if ssl_context else 'http'}://{host}:{bound}"
    finally:
        await runner.cleanup()


async def _serve(fake: FakeClaude, host: str, port: int) -> None:
    async with running(fake, host, port) as url:
        print(json.dumps({"url": url}), flush=True)
        await asyncio.Event().wait()  # until the process is stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fake_claude", description="fake Anthropic API for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key-file", default=None, help="require this key (file re-read per request)")
    parser.add_argument("--ttft", type=float, default=0.0)
    parser.add_argument("--token-gap", type=float, default=0.0)
    parser.add_argument("--reply-text", default=None)
    parser.add_argument("--words-per-delta", type=int, default=1)
    args = parser.parse_args(argv)
    fake = FakeClaude(Settings(api_key_file=args.api_key_file, ttft=args.ttft, token_gap=args.token_gap,
                               reply_text=args.reply_text, words_per_delta=args.words_per_delta))
    try:
        import uvloop
        uvloop.run(_serve(fake, args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
