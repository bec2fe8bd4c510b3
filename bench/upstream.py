"""A fake Anthropic Messages API upstream that is never the bottleneck of a benchmark.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length request bodies, chunked responses) to
answer `POST /v1/messages` with a Messages API JSON body or an SSE stream, from canned bytes, on a
raw asyncio protocol (uvloop when installed). An aiohttp app costs ~5x more CPU per request, which
on a shared core would cap the arms we compare; this server does ~25k req/s on one core.

The delay profile is chosen per request by the model name, because proxies forward the body but
not arbitrary headers: `claude-bench-t300-g20` waits 300 ms before the first token (and before a
non-streaming answer) and 20 ms between deltas; a model name without `-t<ms>-g<ms>` (e.g.
`claude-bench-overhead`) has no delays and measures pure proxy overhead.
`max_tokens` is the number of `content_block_delta` events of a stream (capped at 20,000).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from typing import Any

import orjson

MAX_HEADER = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


class Profile:
    def __init__(self, ttft_ms: float, gap_ms: float) -> None:
        self.ttft = ttft_ms / 1000.0
        self.gap = gap_ms / 1000.0


_PROFILE = re.compile(r"-t(\d+)-g(\d+)$")
_profiles: dict[str, Profile | None] = {}


def profile_of(model: str) -> Profile | None:
    if model not in _profiles:
        match = _PROFILE.search(model)  # the model names are ours, not user text
        _profiles[model] = Profile(float(match.group(1)), float(match.group(2))) if match else None
    return _profiles[model]


def model_name(ttft_ms: int = 0, gap_ms: int = 0) -> str:
    return f"claude-bench-t{ttft_ms}-g{gap_ms}" if ttft_ms or gap_ms else "claude-bench-overhead"


def message_json(model: str, text: str, input_tokens: int) -> bytes:
    return orjson.dumps({
        "id": "msg_bench01", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": input_tokens, "output_tokens": 12},
    })


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


DELTA = sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": "token "}})


def stream_head(model: str) -> bytes:
    return (sse("message_start", {"type": "message_start", "message": {
        "id": "msg_bench01", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1}}})
        + sse("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}))


def stream_tail(deltas: int) -> bytes:
    return (sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            + sse("message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                    "usage": {"output_tokens": deltas}})
            + sse("message_stop", {"type": "message_stop"}))


def response_head(status: int, content_type: bytes, length: int | None) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 411: b"Length Required"}[status]
    framing = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    return (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%srequest-id: req_bench\r\n\r\n"
            % (status, reason, content_type, framing))


class Upstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # one response at a time; pipelined requests wait in the buffer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.pump()

    def pump(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER:
                    self.transport.close()
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            method, path = head[0].split(" ")[:2]
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.reply_error(411, "chunked request bodies are not supported")
                return
            length = int(headers.get("content-length", "0"))
            if length > MAX_BODY:
                self.transport.close()
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            self.handle(method, path.split("?")[0], body)

    def reply_error(self, status: int, message: str) -> None:
        assert self.transport is not None
        payload = orjson.dumps({"type": "error", "error": {"type": "invalid_request_error",
                                                           "message": message}})
        self.transport.write(response_head(status, b"application/json", len(payload)) + payload)

    def handle(self, method: str, path: str, body: bytes) -> None:
        assert self.transport is not None
        if method != "POST" or path not in ("/v1/messages", "/messages"):
            self.reply_error(404, f"no route {method} {path}")
            return
        try:
            request = orjson.loads(body)
            model = str(request["model"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.reply_error(400, "body is not a Messages API request")
            return
        profile = profile_of(model)
        if not request.get("stream"):
            payload = message_json(model, "The quarterly numbers look fine.", len(body) // 4)
            data = response_head(200, b"application/json", len(payload)) + payload
            if profile is None:
                self.transport.write(data)
            else:
                self.busy = True
                asyncio.get_running_loop().call_later(profile.ttft, self.finish, data)
            return
        deltas = max(1, min(int(request.get("max_tokens") or 1), 20_000))
        head = response_head(200, b"text/event-stream", None) + chunk(stream_head(model))
        if profile is None:
            # Everything in one write: proxies must re-frame events merged into one network chunk.
            self.transport.write(head + chunk(DELTA * deltas) + chunk(stream_tail(deltas)) + b"0\r\n\r\n")
            return
        self.busy = True
        asyncio.get_running_loop().create_task(self.stream(profile, head, deltas))

    def finish(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
        self.busy = False
        self.pump()

    async def stream(self, profile: Profile, head: bytes, deltas: int) -> None:
        await asyncio.sleep(profile.ttft)
        if self.transport is None:
            return
        self.transport.write(head + chunk(DELTA))
        for _ in range(deltas - 1):
            await asyncio.sleep(profile.gap)
            if self.transport is None:
                return
            self.transport.write(chunk(DELTA))
        self.finish(chunk(stream_tail(deltas)) + b"0\r\n\r\n")


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run_loop(serve(args.port))


def run_loop(main_coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)


if __name__ == "__main__":
    main()
