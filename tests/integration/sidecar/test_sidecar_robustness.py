"""Bad input gets a clear Anthropic-format 4xx (no traceback) and the sidecar keeps serving;
the provider key rotates without a restart; upstream faults and client disconnects are handled."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import generate_latest
from sidecar_support import REAL_KEY, SidecarFactory, SidecarHandle

from skillwarden_devstack import pki
from skillwarden_devstack.fake_claude import FakeClaude, Fault
from skillwarden_devstack.fake_claude import Settings as FakeSettings
from skillwarden_devstack.fake_claude import running as fake_running
from skillwarden_sidecar.pipeline import Exchange, Hooks

MODEL = "claude-sonnet-4-6"
SAY_A = [{"role": "user", "content": "a"}]
GOOD = json.dumps({"model": MODEL, "max_tokens": 32, "messages": SAY_A}).encode()
HEADERS = {"anthropic-version": "2023-06-01", "content-type": "application/json"}


async def raw_http(port: int, payload: bytes) -> tuple[int, dict[str, Any], bytes]:
    """Send bytes exactly as given (no client-side validation) and read one response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}, body


async def still_serving(sidecar: SidecarHandle) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sidecar.url}/v1/messages", data=GOOD, headers=HEADERS) as response:
            assert response.status == 200, await response.text()


@pytest.mark.parametrize(("body", "content_type", "status", "error_type", "message"), [
    (b'{"model": "x", "messages": [', "application/json", 400, "invalid_request_error", "not valid JSON"),
    (b"[1, 2, 3]", "application/json", 400, "invalid_request_error", "must be a JSON object"),
    (b'{"model": "\xff\xfe"}', "application/json", 400, "invalid_request_error", "not valid UTF-8"),
    (GOOD, "text/plain", 415, "invalid_request_error", "content-type must be application/json"),
    (GOOD, "application/x-www-form-urlencoded", 415, "invalid_request_error", "content-type"),
    (b"x" * 5000, "application/json", 413, "request_too_large", "exceeds the limit of 4096 bytes"),
])
async def test_bad_bodies_get_clear_errors(sidecar_factory: SidecarFactory, fake: tuple[FakeClaude, str],
                                           body: bytes, content_type: str, status: int, error_type: str,
                                           message: str) -> None:
    async with sidecar_factory(max_body_bytes=4096) as sidecar:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{sidecar.url}/v1/messages", data=body,
                                 headers={**HEADERS, "content-type": content_type}) as response:
                text = await response.text()
        assert response.status == status
        parsed = json.loads(text)
        assert parsed["type"] == "error" and parsed["error"]["type"] == error_type
        assert message in parsed["error"]["message"]
        assert "Traceback" not in text and response.headers["request-id"].startswith("req_skw_")
        await still_serving(sidecar)
    assert len(fake[0].received) == 1  # only the good request went upstream


async def test_chunked_body_over_limit(sidecar_factory: SidecarFactory) -> None:
    async with sidecar_factory(max_body_bytes=4096) as sidecar:
        async def chunks() -> Any:
            for _ in range(10):
                yield b"y" * 1000

        async with aiohttp.ClientSession() as http:
            async with http.post(f"{sidecar.url}/v1/messages", data=chunks(), headers=HEADERS) as response:
                body = await response.json()
        assert response.status == 413 and body["error"]["type"] == "request_too_large"
        await still_serving(sidecar)


@pytest.mark.parametrize(("request_bytes", "status", "message"), [
    (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 100_000 + b"\r\nContent-Length: 0\r\n\r\n",
     431, "larger than this sidecar accepts"),
    (b"GET /v1/" + b"m" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431, "larger than this sidecar accepts"),
    (b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n",
     400, "too many HTTP headers"),
    (b"\x16\x03\x01\x02\x00garbage-tls-hello\r\n\r\n", 400, "not an HTTP request"),
])
async def test_absurd_headers_and_garbage_get_json_errors(sidecar: SidecarHandle, request_bytes: bytes,
                                                          status: int, message: str) -> None:
    port = int(sidecar.url.rsplit(":", 1)[1])
    got, body, raw = await raw_http(port, request_bytes)
    assert got == status
    assert body["type"] == "error" and body["error"]["type"] in {"invalid_request_error", "request_too_large"}
    assert message in body["error"]["message"]
    assert b"Traceback" not in raw
    await still_serving(sidecar)


async def test_provider_key_rotation_without_restart(sidecar_factory: SidecarFactory, tmp_path: Path,
                                                     fake: tuple[FakeClaude, str]) -> None:
    """Kubernetes updates a Secret volume by swapping the `..data` symlink: emulate exactly that."""
    upstream, _ = fake
    expected = tmp_path / "upstream-expects"
    expected.write_text("sk-ant-key-one")
    upstream.settings.api_key_file = str(expected)
    volume = tmp_path / "secret-volume"
    (volume / "..2026_11_24_v1").mkdir(parents=True)
    (volume / "..2026_11_24_v1" / "api-key").write_text("sk-ant-key-one")
    (volume / "..data").symlink_to("..2026_11_24_v1")
    (volume / "api-key").symlink_to("..data/api-key")
    async with sidecar_factory(provider_key_file=volume / "api-key") as sidecar:
        sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0)
        request: dict[str, Any] = {"model": MODEL, "max_tokens": 16, "messages": SAY_A}
        await sdk.messages.create(**request)
        expected.write_text("sk-ant-key-two")  # the provider revoked key one
        with pytest.raises(anthropic.AuthenticationError):
            await sdk.messages.create(**request)  # the upstream's 401, passed through
        (volume / "..2026_11_24_v2").mkdir()
        (volume / "..2026_11_24_v2" / "api-key").write_text("sk-ant-key-two\n")
        (volume / "..data_tmp").symlink_to("..2026_11_24_v2")
        os.replace(volume / "..data_tmp", volume / "..data")
        await sdk.messages.create(**request)
        assert [r.headers["x-api-key"] for r in upstream.received] == \
            ["sk-ant-key-one", "sk-ant-key-one", "sk-ant-key-two"]
        assert b"sk-ant-key" not in generate_latest(sidecar.metrics.registry)
        # A missing key file fails closed with a message naming no secret (noticed within the
        # key's one-second recheck interval).
        (volume / "api-key").unlink()
        await asyncio.sleep(1.1)
        with pytest.raises(anthropic.APIStatusError) as refused:
            await sdk.messages.create(**request)
        assert refused.value.status_code == 503 and "sk-ant" not in str(refused.value.body)
    assert REAL_KEY not in str(upstream.received[-1].headers)


async def test_upstream_faults(sidecar_factory: SidecarFactory, fake: tuple[FakeClaude, str]) -> None:
    upstream, _ = fake
    async with sidecar_factory(upstream_read_timeout=0.5) as sidecar:
        sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0)
        request: dict[str, Any] = {"model": MODEL, "max_tokens": 16, "messages": SAY_A}
        upstream.faults.append(Fault(kind="timeout", seconds=2))
        with pytest.raises(anthropic.APIStatusError) as slow:
            await sdk.messages.create(**request)
        assert slow.value.status_code == 504 and "did not answer in time" in str(slow.value.body)
        upstream.faults.append(Fault(kind="status", status=500, message="boom"))
        with pytest.raises(anthropic.InternalServerError) as broken:
            await sdk.messages.create(**request)
        assert broken.value.body == {"type": "error", "error": {"type": "api_error", "message": "boom"}}
        # Upstream dies mid-stream: the client gets an in-band error event, not a hang.
        upstream.faults.append(Fault(kind="disconnect", after_events=4))
        with pytest.raises(anthropic.APIError):
            async with sdk.messages.stream(**request) as stream:
                async for _ in stream:
                    pass
        assert sidecar.sample("skillwarden_errors_total", {"cause": "upstream_timeout"}) == 1
        assert sidecar.sample("skillwarden_errors_total", {"cause": "upstream_stream_interrupted"}) == 1
        await still_serving(sidecar)
    async with sidecar_factory(upstream_url="http://127.0.0.1:9") as unreachable:
        sdk = anthropic.AsyncAnthropic(base_url=unreachable.url, api_key="placeholder", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as gone:
            await sdk.messages.create(model=MODEL, max_tokens=16, messages=SAY_A)
        assert gone.value.status_code == 502 and "upstream unreachable" in str(gone.value.body)


async def test_client_disconnect_cancels_upstream(sidecar: SidecarHandle,
                                                  fake: tuple[FakeClaude, str]) -> None:
    upstream, _ = fake
    upstream.settings.token_gap = 0.05
    upstream.settings.reply_text = " ".join(f"word{i}" for i in range(400))  # ~20 s if read to the end
    body = {"model": MODEL, "max_tokens": 2048, "stream": True, "messages": SAY_A}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sidecar.url}/v1/messages", json=body, headers=HEADERS) as response:
            await response.content.readuntil(b"content_block_delta")
            response.close()  # the app goes away mid-stream
    for _ in range(100):
        if upstream.stats.streams_cut_by_client:
            break
        await asyncio.sleep(0.05)
    assert upstream.stats.streams_cut_by_client == 1 and upstream.stats.streams_completed == 0
    assert sidecar.sample("skillwarden_errors_total", {"cause": "client_disconnected"}) == 1


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int | None, str | None]] = []

    def admit(self) -> None:
        return None

    async def record_request(self, exchange: Exchange) -> None:
        self.calls.append(("request", exchange.request_id, None, None))

    async def record_response(self, exchange: Exchange) -> None:
        cause = exchange.rejection.cause if exchange.rejection else None
        self.calls.append(("response", exchange.request_id, exchange.response_status, cause))


class RefusingRecorder(Recorder):
    def admit(self) -> None:
        raise RuntimeError("spool full")


async def test_every_path_is_recorded_and_recording_fails_closed(sidecar_factory: SidecarFactory,
                                                                  fake: tuple[FakeClaude, str]) -> None:
    recorder = Recorder()
    async with sidecar_factory(hooks=Hooks(recording=recorder)) as sidecar:
        async with aiohttp.ClientSession() as http:
            for method, path, data, headers in [
                    ("POST", "/v1/messages", GOOD, HEADERS),  # allowed
                    ("POST", "/v1/messages", b"{", HEADERS),  # bad JSON
                    ("GET", "/v1/files", None, HEADERS),  # unknown route
                    ("POST", "/v1/messages", GOOD, {**HEADERS, "Authorization": "Bearer a.b.c"}),  # bad token
            ]:
                async with http.request(method, sidecar.url + path, data=data, headers=headers) as response:
                    await response.read()
    statuses = [c[2] for c in recorder.calls if c[0] == "response"]
    assert statuses == [200, 400, 404, 401]
    ids = [c[1] for c in recorder.calls]
    assert all(ids.count(i) == 2 for i in ids)  # each request: one request record + one response record
    async with sidecar_factory(hooks=Hooks(recording=RefusingRecorder())) as sidecar:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{sidecar.url}/v1/messages", data=GOOD, headers=HEADERS) as response:
                body = await response.json()
            assert response.status == 503
            assert "session recording unavailable (spool full)" in body["error"]["message"]
            async with http.get(sidecar.admin_url + "/readyz") as ready:
                assert ready.status == 503 and "spool full" in (await ready.json())["recording"]
    assert len(fake[0].received) == 1


async def test_slow_client_backpressures_the_upstream(sidecar: SidecarHandle,
                                                      fake: tuple[FakeClaude, str]) -> None:
    """A client that stops reading stalls the upstream (bounded buffers), and then gets every byte."""
    upstream, _ = fake
    upstream.settings.reply_text = " ".join(["0123456789"] * 2_400_000)  # ~26 MB of text
    upstream.settings.words_per_delta = 400
    body = json.dumps({"model": MODEL, "max_tokens": 64, "stream": True, "messages": SAY_A}).encode()
    port = int(sidecar.url.rsplit(":", 1)[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # a small, fixed window: no autotuning
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=8192)
    writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: sidecar\r\nanthropic-version: 2023-06-01\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(2.0)  # not reading
    assert upstream.stats.streams_started == 1 and upstream.stats.streams_completed == 0
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # now read at full speed
    started = time.monotonic()
    received = 0
    while chunk := await asyncio.wait_for(reader.read(1 << 20), timeout=30):
        received += len(chunk)
        if chunk.endswith(b"0\r\n\r\n"):  # end of the chunked body
            break
    writer.close()
    assert received > 26_000_000
    assert time.monotonic() - started < 10  # linear relay (it took 15 s when text was re-concatenated)
    assert upstream.stats.streams_completed == 1


async def test_https_upstream_verified_against_configured_ca(sidecar_factory: SidecarFactory,
                                                             provider_key: Path, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca, ca_key = pki.issue_ca("upstream-test-ca", now)
    cert, key = pki.issue_serving_cert(ca, ca_key, ["127.0.0.1"], now)
    pki.write_cert(ca, tmp_path / "ca.crt")
    pki.write_cert(cert, tmp_path / "tls.crt")
    (tmp_path / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    upstream = FakeClaude(FakeSettings(api_key_file=str(provider_key)))
    async with fake_running(upstream, ssl_context=context) as url:
        assert url.startswith("https://")
        async with sidecar_factory(upstream_url=url, upstream_ca_file=tmp_path / "ca.crt") as sidecar:
            sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0)
            answer = await sdk.messages.create(model=MODEL, max_tokens=16, messages=SAY_A)
            assert answer.content[0].type == "text"
        async with sidecar_factory(upstream_url=url) as untrusting:  # system CAs only
            sdk = anthropic.AsyncAnthropic(base_url=untrusting.url, api_key="placeholder", max_retries=0)
            with pytest.raises(anthropic.APIStatusError) as refused:
                await sdk.messages.create(model=MODEL, max_tokens=16, messages=SAY_A)
            assert refused.value.status_code == 502
            assert "upstream TLS certificate not trusted" in str(refused.value.body)
    assert len(upstream.received) == 1
