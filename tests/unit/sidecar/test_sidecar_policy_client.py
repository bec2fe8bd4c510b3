"""PolicyClient over a real socket: a keep-alive connection OPA dropped is retried once, within
the time bound; a dead engine is still a deny."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from skillwarden_sidecar.errors import Rejection
from skillwarden_sidecar.policy import PolicyClient

ALLOW = json.dumps({"result": {"action": "allow", "reasons": ["ok"], "policy": "ns/p",
                               "rule": None}}).encode()


class FlakyOpa:
    """First connection: answers one request, then drops the connection when the next one comes
    (what a restarted opa container looks like to a pooled client). Later connections behave."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        answered = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            self.requests += 1
            if first and answered == 1:
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: keep-alive\r\n\r\n" % len(ALLOW) + ALLOW)
            await writer.drain()
            answered += 1


async def test_dropped_keepalive_connection_is_retried_once() -> None:
    opa = FlakyOpa()
    server = await asyncio.start_server(opa.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession() as session:
        client = PolicyClient(session, f"http://127.0.0.1:{port}", "skillwarden/decision", 1.0)
        first, _ = await client.decide({"request": {}})
        second, _ = await client.decide({"request": {}})
    server.close()
    assert first.action == second.action == "allow" and second.policy == "ns/p"
    assert opa.connections == 2 and opa.requests == 3  # one answered, one dropped, one retried


async def test_unreachable_engine_is_a_deny() -> None:
    async with aiohttp.ClientSession() as session:
        client = PolicyClient(session, "http://127.0.0.1:9", "skillwarden/decision", 0.5)
        with pytest.raises(Rejection) as refused:
            await client.decide({"request": {}})
    assert refused.value.status == 503 and "request denied" in refused.value.message
