"""Bypasses a tenant might try, against the real `skillwarden sidecar` process with every hook on
(masking both ways, records shipped to the stack's Object Lock bucket, real OPA with an
operator-built bundle). The fake Claude upstream keeps everything it received, so each test can
assert what did — and did not — leave the pod.

The bundle's `bot` subject (the workload's service account) may use skill `xlsx` with
`claude-sonnet-4-*`; only the `finance-leads` group may use `pdf`; `pptx` is denied by a rule.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
from reliability_support import EMAIL, MODEL, REAL_KEY, SSN, SidecarStarter, record_entries, stored_objects

from skillwarden_devstack.fake_claude import FakeClaude

IDENTITY_HEADERS = {
    "X-Forwarded-User": "alice",
    "X-Forwarded-Email": "alice@example.com",
    "X-Forwarded-Groups": "finance-leads",
    "X-Remote-User": "alice",
    "X-Remote-Group": "finance-leads",
    "X-Auth-Request-User": "alice",
    "X-Auth-Request-Groups": "finance-leads",
    "X-Auth-Request-Email": "alice@example.com",
    "Impersonate-User": "alice",
    "Impersonate-Group": "finance-leads",
    "X-Skillwarden-Identity": '{"kind":"oidc","groups":["finance-leads"]}',
    "X-Skillwarden-Groups": "finance-leads",
    "X-Goog-Authenticated-User-Email": "alice@example.com",
    "X-Amzn-Oidc-Identity": "alice",
    "X-Ms-Client-Principal-Name": "alice",
}


def body(skill: str = "xlsx", model: str = MODEL, text: str = "Summarise Q3") -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": text}],
        "container": {"skills": [{"type": "anthropic", "skill_id": skill, "version": "latest"}]},
        "tools": [{"type": "code_execution_20250825", "name": "code_execution"}],
    }


async def post(
    url: str, data: bytes, headers: dict[str, str] | None = None, path: str = "/v1/messages"
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + path,
            data=data,
            headers={
                "Content-Type": "application/json",
                "anthropic-version": "2023-06-01",
                **(headers or {}),
            },
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def raw_exchange(url: str, payload: bytes, read_seconds: float = 3.0) -> bytes:
    """Write bytes on one TCP connection and read what comes back until close or timeout."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    received = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout=read_seconds)
            if not chunk:
                break
            received += chunk
    except TimeoutError:
        pass
    writer.close()
    return received


def statuses(raw: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


async def test_forged_identity_headers_change_nothing(
    cli_sidecar: SidecarStarter, fake: tuple[FakeClaude, str]
) -> None:
    upstream, _ = fake
    async with cli_sidecar() as sidecar:
        # `pdf` is granted to the finance-leads group only; the headers claim that group.
        status, answer = await post(sidecar.url, json.dumps(body("pdf")).encode(), IDENTITY_HEADERS)
        assert status == 403, answer
        assert upstream.received == []
        # An allowed request carrying the same headers: none of them reaches the provider.
        status, answer = await post(sidecar.url, json.dumps(body("xlsx")).encode(), IDENTITY_HEADERS)
        assert status == 200, answer
        assert len(upstream.received) == 1
        sent = {k.lower() for k in upstream.received[0].headers}
        assert not sent & {k.lower() for k in IDENTITY_HEADERS}, sent & {k.lower() for k in IDENTITY_HEADERS}
        await sidecar.stop()
    entries = record_entries(stored_objects_for(sidecar.env))
    identities = [e["record"]["identity"] for e in entries if e["kind"] == "request"]
    assert len(identities) == 2
    for identity in identities:  # the records name the workload, never the forged user/group
        assert identity["kind"] == "workload" and identity.get("groups", []) == [], identity
        assert "alice" not in json.dumps(identity)


def stored_objects_for(env: dict[str, str]) -> dict[str, bytes]:
    stack = {
        "s3": {
            "endpoint": env["AWS_ENDPOINT_URL"],
            "bucket": env["SKILLWARDEN_RECORDS_BUCKET"],
            "access_key": env["AWS_ACCESS_KEY_ID"],
            "secret_key": env["AWS_SECRET_ACCESS_KEY"],
        }
    }
    return stored_objects(stack, env["SKILLWARDEN_RECORDS_PREFIX"])


def pairs_of(raw: bytes) -> list[tuple[str, Any]]:
    """Top-level key/value pairs exactly as sent, duplicates kept (what a first-wins parser sees)."""
    found: list[list[tuple[str, Any]]] = []

    def hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
        found.append(items)
        return dict(items)

    json.loads(raw, object_pairs_hook=hook)
    return found[-1]


async def test_duplicate_json_keys_the_provider_sees_what_the_policy_judged(
    cli_sidecar: SidecarStarter, fake: tuple[FakeClaude, str]
) -> None:
    upstream, _ = fake
    allowed, denied = json.dumps(body("xlsx")), json.dumps(body("pptx"))
    async with cli_sidecar() as sidecar:
        # A denied model hidden before an allowed one: a first-wins upstream parser would run opus.
        smuggled = ('{"model": "claude-opus-4-7", ' + allowed[1:]).encode()
        status, answer = await post(sidecar.url, smuggled)
        assert status == 200, answer
        sent = pairs_of(upstream.received[-1].body)
        assert [v for k, v in sent if k == "model"] == [MODEL]  # one model key: the judged one
        # A denied skill container hidden after an allowed one: the policy must judge it.
        tail = json.dumps({"container": body("pptx")["container"]})
        status, answer = await post(sidecar.url, (allowed[:-1] + ", " + tail[1:]).encode())
        assert status == 403, answer
        # The other order: the allowed container last is what policy and provider both see.
        status, answer = await post(
            sidecar.url,
            (denied[:-1] + ", " + json.dumps({"container": body("xlsx")["container"]})[1:]).encode(),
        )
        assert status == 200, answer
        containers = [v for k, v in pairs_of(upstream.received[-1].body) if k == "container"]
        assert containers == [body("xlsx")["container"]]
        assert len(upstream.received) == 2


async def test_request_smuggling_and_pipelining_get_one_decision_each(
    cli_sidecar: SidecarStarter, fake: tuple[FakeClaude, str]
) -> None:
    upstream, _ = fake
    inner = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    allowed = json.dumps(body("xlsx")).encode()
    denied = json.dumps(body("pptx")).encode()
    async with cli_sidecar() as sidecar:
        # CL.TE: both framings at once; the second request hides in the chunked body.
        chunked = b"0\r\n\r\n" + inner
        raw = await raw_exchange(
            sidecar.url,
            (
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
            ),
        )
        assert statuses(raw) and statuses(raw)[0] == 400, raw[:300]
        # TE with an obfuscated value, and two Content-Length headers that disagree.
        for head in (
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            b"Transfer-Encoding: xchunked\r\n",
            b"Content-Length: 4\r\nContent-Length: 40\r\n",
            b"Content-Length: +4\r\n",
        ):
            raw = await raw_exchange(
                sidecar.url,
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n" + head + b"\r\n{}  " + inner,
            )
            assert statuses(raw) and statuses(raw)[0] == 400, (head, raw[:300])
        assert upstream.received == []

        # Pipelined: an allowed request then a denied one on one connection; each is judged.
        def request(data: bytes) -> bytes:
            return (
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nanthropic-version: 2023-06-01\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data
            )

        raw = await raw_exchange(sidecar.url, request(allowed) + request(denied) + request(allowed), 5)
        assert statuses(raw) == [200, 403, 200], raw[:600]
        assert len(upstream.received) == 2
        assert all(
            json.loads(r.body)["container"]["skills"][0]["skill_id"] == "xlsx" for r in upstream.received
        )


async def test_compressed_and_oversized_bodies_are_bounded(
    cli_sidecar: SidecarStarter, fake: tuple[FakeClaude, str]
) -> None:
    upstream, _ = fake
    limit = 1 << 20
    async with cli_sidecar(SKILLWARDEN_MAX_BODY_BYTES=str(limit)) as sidecar:
        # A 256 MiB gzip bomb (~250 KiB on the wire): refused once the inflated size passes the limit.
        inner = b'{"model": "' + b"A" * (256 << 20) + b'"}'
        bomb = gzip.compress(inner, compresslevel=9)
        del inner
        assert len(bomb) < 1 << 20
        rss_before = rss_kib(sidecar.pid)
        status, answer = await post(sidecar.url, bomb, {"Content-Encoding": "gzip"})
        assert status in {400, 413}, answer
        assert rss_kib(sidecar.pid) - rss_before < 128 * 1024  # never inflated whole
        deflated = zlib.compress(b'{"model": "' + b"B" * (64 << 20) + b'"}')
        status, answer = await post(sidecar.url, deflated, {"Content-Encoding": "deflate"})
        assert status in {400, 413}, answer
        # Plain oversized bodies, declared and chunked.
        status, answer = await post(sidecar.url, b'{"x": "' + b"C" * (2 * limit) + b'"}')
        assert status == 413, answer

        async def chunks() -> Any:
            for _ in range(64):
                yield b"D" * 65536

        async with (
            aiohttp.ClientSession() as http,
            http.post(
                sidecar.url + "/v1/messages",
                data=chunks(),
                headers={"Content-Type": "application/json", "anthropic-version": "2023-06-01"},
            ) as r,
        ):
            assert r.status == 413
        assert upstream.received == []
        # A small compressed request is judged and forwarded as the plain JSON that was judged.
        status, answer = await post(
            sidecar.url, gzip.compress(json.dumps(body()).encode()), {"Content-Encoding": "gzip"}
        )
        assert status == 200, answer
        assert len(upstream.received) == 1
        sent = upstream.received[0]
        assert "content-encoding" not in {k.lower() for k in sent.headers}
        assert json.loads(sent.body)["model"] == MODEL


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_header_injection_and_caller_credentials_never_reach_the_provider(
    cli_sidecar: SidecarStarter, fake: tuple[FakeClaude, str]
) -> None:
    upstream, _ = fake
    data = json.dumps(body()).encode()
    async with cli_sidecar() as sidecar:
        hostile = (
            b"Authorization: Bearer sk-ant-api03-CALLER-own-key\r\n"
            b"x-api-key: sk-ant-api03-CALLER-own-key\r\n"
            b"Cookie: session=caller\r\nProxy-Authorization: Basic Y2FsbGVyOmtleQ==\r\n"
            b"Connection: keep-alive, x-api-key, anthropic-version\r\nKeep-Alive: timeout=5\r\n"
            b"TE: trailers\r\nUpgrade: h2c\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=evil\r\n"
            b"X-Forwarded-Host: evil.example\r\nX-Original-URL: /v1/skills\r\n"
            b"X-HTTP-Method-Override: DELETE\r\nanthropic-beta: skills-2025-10-02\r\n"
        )
        raw = await raw_exchange(
            sidecar.url,
            b"POST /v1/messages HTTP/1.1\r\nHost: evil.example\r\nanthropic-version: 2023-06-01\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(data)).encode()
            + b"\r\n"
            + hostile
            + b"\r\n"
            + data,
            3,
        )
        assert statuses(raw) == [200], raw[:400]
        # CR/LF/NUL inside a forwarded header value, and an obs-fold continuation line.
        for injected in (
            b"anthropic-beta: a\rx-injected: 1\r\n",
            b"anthropic-beta: a\nx-injected: 1\r\n",
            b"anthropic-beta: a\x00x-injected: 1\r\n",
            b"anthropic-beta: a\r\n x-injected: 1\r\n",
        ):
            raw = await raw_exchange(
                sidecar.url,
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: "
                + str(len(data)).encode()
                + b"\r\n"
                + injected
                + b"\r\n"
                + data,
                3,
            )
            assert statuses(raw) and statuses(raw)[0] in {200, 400}, (injected, raw[:300])
    assert upstream.received, "the clean request was not forwarded"
    for received in upstream.received:
        headers = {k.lower(): v for k, v in received.headers.items()}
        assert headers["x-api-key"] == REAL_KEY
        assert "authorization" not in headers and "CALLER" not in json.dumps(headers)
        for name in (
            "cookie",
            "proxy-authorization",
            "keep-alive",
            "te",
            "upgrade",
            "x-forwarded-for",
            "forwarded",
            "x-forwarded-host",
            "x-original-url",
            "x-http-method-override",
            "x-injected",
        ):
            assert name not in headers, name
        assert "evil" not in headers.get("host", "")
        for value in headers.values():
            assert "\r" not in value and "\n" not in value and "\x00" not in value
            assert "x-injected" not in value.lower()
        assert received.path == "/v1/messages" and received.method == "POST"


TRAVERSALS = (
    "/v1/messages/../skills",
    "/v1/messages/%2e%2e/skills",
    "/v1/messages/%2E%2E/skills",
    "//v1/messages",
    "/v1//messages",
    "/v1%2fmessages",
    "/v1%2Fmessages",
    "/v1/./messages",
    "/v1/skills/..%2F..%2Fadmin",
    "/v1/skills/%2e%2e",
    "/v1/skills/abc%00",
    "/v1/messages%00",
    "/v1/messages;x=1",
    "/V1/MESSAGES",
    "/v1/messages/%252e%252e/skills",
    "/v1/skills/abc/..",
    "/v1/models/..%5c..%5cskills",
    "/v1/messages\\..",
    "http://evil.example/v1/messages",
    "*",
    "/v1/skills/%u002e%u002e",
)


async def test_path_traversal_never_reaches_another_route(
    cli_sidecar: SidecarStarter, fake: tuple[FakeClaude, str]
) -> None:
    upstream, _ = fake
    data = json.dumps(body()).encode()
    async with cli_sidecar() as sidecar:
        for path in TRAVERSALS:
            raw = await raw_exchange(
                sidecar.url,
                b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: "
                + str(len(data)).encode()
                + b"\r\n\r\n"
                + data,
                3,
            )
            got = statuses(raw)
            assert got and 400 <= got[0] < 500, (path, raw[:300])
    assert upstream.received == [], [r.path for r in upstream.received]


async def test_pii_in_urls_and_headers_stays_out_of_logs_and_metrics(
    cli_sidecar: SidecarStarter, fake: tuple[FakeClaude, str]
) -> None:
    upstream, _ = fake
    data = json.dumps(body(text=f"My SSN is {SSN}, mail {EMAIL}")).encode()
    pii_headers = {
        "X-Customer-SSN": SSN,
        "X-Customer-Email": EMAIL,
        "User-Agent": f"app/1 ({EMAIL})",
        "anthropic-beta": f"x-{SSN}",
        "Idempotency-Key": EMAIL,
    }
    async with cli_sidecar(SKILLWARDEN_LOG_LEVEL="DEBUG") as sidecar:
        for path in (
            f"/v1/messages?ssn={SSN}&email={EMAIL}",
            f"/v1/models/{SSN}?q={EMAIL}",
            f"/v1/skills/{SSN}",
            f"/v1/nope/{SSN}/{EMAIL}",
            f"/v1/messages/{EMAIL}",
        ):
            for method in ("POST", "GET"):
                async with (
                    aiohttp.ClientSession() as http,
                    http.request(
                        method,
                        sidecar.url + path,
                        data=data if method == "POST" else None,
                        headers={
                            "Content-Type": "application/json",
                            "anthropic-version": "2023-06-01",
                            **pii_headers,
                        },
                    ) as response,
                ):
                    await response.read()
        # A denied prompt with PII, and a bearer token whose claims carry PII.
        await post(
            sidecar.url, json.dumps(body("pptx", text=f"password dump for {EMAIL}")).encode(), pii_headers
        )
        await post(
            sidecar.url,
            data,
            {
                "Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6IiIsInNzbiI6IiJ9.x",
                "X-Customer-SSN": SSN,
            },
        )
        for model in (EMAIL, SSN, f"claude-{SSN}", f"claude-x-{EMAIL}"):  # personal data as the model
            await post(sidecar.url, json.dumps(body(model=model)).encode(), pii_headers)
        metrics = await sidecar.metrics_text()
        sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0)
        await sdk.messages.create(
            model=MODEL,
            max_tokens=16,
            messages=[{"role": "user", "content": SSN}],
            extra_query={"ssn": SSN},
            extra_headers={"X-Email": EMAIL},
        )
        await sidecar.stop()
    assert len(upstream.received) >= 2  # the allowed requests did go through
    log = sidecar.log.read_text()
    assert "request_id=" in log  # the access log is on (INFO) and was read
    for secret in (SSN, EMAIL, SSN.replace("-", ""), EMAIL.replace("@", "%40"), REAL_KEY):
        assert secret not in log, f"{secret} in the sidecar log"
        assert secret not in metrics, f"{secret} in /metrics"
    # Records mask every text the model reads, and the route path, `model` and skill ids too.
    stored = b"".join(stored_objects_for(sidecar.env).values())
    assert stored and f"My SSN is {SSN}".encode() not in stored and b"[US_SSN]" in stored
    # Known limit (docs/reliability.md): a number glued into a word ("claude-536-22-…") is not
    # claimed by the SSN detector, by design of its boundaries; those two model names are dropped.
    stored = stored.replace(f"claude-{SSN}".encode(), b"").replace(f"claude-x-{EMAIL}".encode(), b"")
    for secret in (SSN, EMAIL, SSN.replace("-", "")):
        at = stored.find(secret.encode())
        assert at < 0, f"{secret} in a session record: {stored[max(0, at - 300):at + 60]!r}"
    assert REAL_KEY.encode() not in stored and EMAIL.encode() + b'"' not in stored.split(b'"path"')[0]
