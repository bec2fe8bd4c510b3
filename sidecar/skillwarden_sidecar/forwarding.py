"""Send an admitted request upstream with the real key, and relay the answer faithfully.

- Upstream headers are built from an allow-list: the caller's `Authorization`/`x-api-key`
  (and cookies, proxy headers, anything unknown) never leave the pod; `x-api-key` is the
  provider key from `credentials`.
- Non-2xx answers from the upstream are already in Anthropic's error format: relayed as they are.
- JSON answers go through the response-mask hook and are re-serialised; only with the explicit
  no-op `NoMasking` are the upstream's bytes relayed untouched.
- SSE is re-framed event by event (`SseDecoder`), passed through the stream-mask hook and written
  with `await resp.write(...)`, so a slow client slows the upstream read (backpressure). A client
  that disconnects cancels the handler, which closes the upstream connection.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from skillwarden_sidecar.credentials import ProviderKey, ProviderKeyError
from skillwarden_sidecar.errors import Rejection, error_body, upstream_failure
from skillwarden_sidecar.message_stream import MessageAccumulator
from skillwarden_sidecar.pipeline import Exchange, Hooks, NoMasking
from skillwarden_sidecar.sse import SseDecoder, SseError, SseEvent

log = logging.getLogger("skillwarden.sidecar.forwarding")

_FORWARDED_PREFIXES = ("anthropic-", "x-stainless-")
_FORWARDED = frozenset({"accept", "user-agent", "idempotency-key"})
# Response headers that describe the upstream hop, not the message.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "te", "trailer",
    "upgrade", "proxy-authenticate", "proxy-authorization", "set-cookie", "date", "server"})
REQUEST_ID_HEADER = "x-skillwarden-request-id"


def forwardable_headers(headers: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in _FORWARDED or lower.startswith(_FORWARDED_PREFIXES):
            out[lower] = value
    return out


def _response_headers(upstream: aiohttp.ClientResponse, request_id: str) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.headers.items():
        if name.lower() not in _HOP_BY_HOP:
            out.add(name, value)
    out[REQUEST_ID_HEADER] = request_id
    return out


class Upstream:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: ProviderKey,
                 connect_timeout: float, read_timeout: float) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._key = key
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout,
                                              sock_read=read_timeout)

    def _headers(self, exchange: Exchange) -> dict[str, str]:
        try:
            key = self._key.get()
        except ProviderKeyError as error:
            log.error("%s", error)  # names the file, never the key
            raise Rejection(503, "provider credential unavailable in the sidecar", cause="provider_key",
                            error_type="api_error") from None
        headers = dict(exchange.forward_headers)
        if exchange.content_type:
            headers["content-type"] = exchange.content_type
        headers["x-api-key"] = key
        return headers

    async def forward(self, request: web.Request, exchange: Exchange, hooks: Hooks) -> web.StreamResponse:
        url = self._base + exchange.path + (f"?{exchange.query}" if exchange.query else "")
        headers = self._headers(exchange)
        data: bytes | None = None
        # Any installed request masker may have edited the dict (flag set or not): send the dict.
        rewritten = exchange.body_modified or not isinstance(hooks.request_masking, NoMasking)
        if exchange.body is not None and rewritten:
            data = orjson.dumps(exchange.body)
        elif exchange.body_bytes or exchange.method in {"POST", "PUT", "PATCH"}:
            data = exchange.body_bytes
        started = time.perf_counter()
        try:
            async with self._session.request(exchange.method, url, headers=headers, data=data,
                                             timeout=self._timeout, allow_redirects=False) as upstream:
                exchange.response_status = upstream.status
                if upstream.status == 401:
                    self._key.suspect()  # rotated or revoked: re-read the key file on the next call
                exchange.response_headers = {k.lower(): v for k, v in upstream.headers.items()
                                             if k.lower() in {"request-id", "content-type"}}
                content_type = upstream.headers.get("Content-Type", "")
                if upstream.status == 200 and content_type.startswith("text/event-stream"):
                    return await self._relay_stream(request, exchange, hooks, upstream, started)
                return await self._relay_body(exchange, hooks, upstream, started)
        except TimeoutError:
            raise upstream_failure(504, "upstream did not answer in time", "upstream_timeout") from None
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError):
            raise upstream_failure(502, "upstream TLS certificate not trusted", "upstream_tls") from None
        except aiohttp.ClientConnectorError:
            raise upstream_failure(502, "upstream unreachable", "upstream_unreachable") from None
        except aiohttp.ClientError as error:
            raise upstream_failure(502, f"upstream connection failed ({type(error).__name__})",
                                   "upstream_connection") from None
        finally:
            exchange.timings.upstream_s = time.perf_counter() - started

    async def _relay_body(self, exchange: Exchange, hooks: Hooks, upstream: aiohttp.ClientResponse,
                          started: float) -> web.StreamResponse:
        exchange.timings.upstream_ttft_s = time.perf_counter() - started
        payload = await upstream.read()
        headers = _response_headers(upstream, exchange.request_id)
        parsed: Any = None
        if upstream.headers.get("Content-Type", "").startswith("application/json"):
            try:
                parsed = orjson.loads(payload)
            except orjson.JSONDecodeError:
                parsed = None
        if upstream.status == 200 and isinstance(parsed, dict):
            masked = hooks.response_masking.mask_response_body(exchange, parsed)
            # Only the explicit no-op keeps the upstream's bytes: a masker that edits the dict in
            # place and returns it must not have its work thrown away.
            if not isinstance(hooks.response_masking, NoMasking):
                payload = orjson.dumps(masked)
            exchange.response_body = masked
            usage = masked.get("usage")
            exchange.usage = usage if isinstance(usage, dict) else None
            stop = masked.get("stop_reason")
            exchange.stop_reason = stop if isinstance(stop, str) else None
        elif isinstance(parsed, dict):
            exchange.response_body = parsed  # upstream error, relayed as it is
        return web.Response(status=upstream.status, body=payload, headers=headers)

    async def _relay_stream(self, request: web.Request, exchange: Exchange, hooks: Hooks,
                            upstream: aiohttp.ClientResponse, started: float) -> web.StreamResponse:
        exchange.stream = True
        response = web.StreamResponse(status=upstream.status, headers=_response_headers(
            upstream, exchange.request_id))
        await response.prepare(request)
        decoder = SseDecoder()
        masker = hooks.response_masking.stream_masker(exchange)
        accumulated = MessageAccumulator()

        async def emit(events: list[SseEvent]) -> None:
            out: list[bytes] = []
            for event in events:
                for masked in masker.feed(event):
                    accumulated.add(masked)
                    out.append(masked.encode())
            if out:
                await response.write(b"".join(out))

        try:
            async for chunk in upstream.content.iter_any():
                if exchange.timings.upstream_ttft_s is None:
                    exchange.timings.upstream_ttft_s = time.perf_counter() - started
                await emit(decoder.feed(chunk))
            await emit(decoder.close())
            tail = masker.close()
            for event in tail:
                accumulated.add(event)
            if tail:
                await response.write(b"".join(e.encode() for e in tail))
        except ConnectionError:
            # The client went away (without handler cancellation): stop reading the upstream.
            exchange.error = "client_disconnected"
            return response
        except (aiohttp.ClientError, TimeoutError, SseError) as error:
            # Headers are gone already: tell the client in-band, as Anthropic does mid-stream.
            exchange.error = "upstream_stream_interrupted"
            log.warning("upstream stream interrupted: %s", type(error).__name__)
            with contextlib.suppress(ConnectionError):
                await response.write(b"event: error\ndata: " + error_body(
                    "api_error", "upstream stream interrupted") + b"\n\n")
        finally:
            exchange.response_message = accumulated.finish()
            if accumulated.message is not None:
                usage = accumulated.message.get("usage")
                exchange.usage = usage if isinstance(usage, dict) else None
                stop = accumulated.message.get("stop_reason")
                exchange.stop_reason = stop if isinstance(stop, str) else None
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response
