"""PolicyClient bounds the decisions in flight: the rest wait in the sidecar in arrival order, the
OPA deadline counts from dispatch, and a wait longer than the queue timeout is a fail-closed 503."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from skillwarden_sidecar.errors import Rejection
from skillwarden_sidecar.policy import PolicyClient

ALLOW = json.dumps({"result": {"action": "allow", "reasons": ["ok"], "policy": "ns/p"}}).encode()


class SlowOpa:
    """Answers each decision after `delay` seconds, or when the test releases it (`gated`)."""

    def __init__(self, delay: float = 0.0, gated: bool = False) -> None:
        self.delay = delay
        self.gated = gated
        self.arrivals: list[int] = []
        self.gates: list[asyncio.Event] = []
        self.arrived = asyncio.Event()
        self.inflight = 0
        self.peak = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                body = json.loads(await reader.readexactly(length))
                self.inflight += 1
                self.peak = max(self.peak, self.inflight)
                self.arrivals.append(body["input"]["id"])
                gate = asyncio.Event()
                self.gates.append(gate)
                self.arrived.set()
                if self.gated:
                    await gate.wait()
                else:
                    await asyncio.sleep(self.delay)
                self.inflight -= 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                             b"Connection: keep-alive\r\n\r\n" % len(ALLOW) + ALLOW)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def next_arrival(self, count: int) -> None:
        while len(self.arrivals) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 5)


async def _serve(opa: SlowOpa) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(opa.handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _input(i: int) -> dict[str, Any]:
    return {"id": i, "request": {}}


async def test_at_most_max_inflight_and_waiters_go_first_come_first_served() -> None:
    opa = SlowOpa(gated=True)
    server, url = await _serve(opa)
    async with aiohttp.ClientSession() as session:
        client = PolicyClient(session, url, "skillwarden/decision", timeout=5, max_inflight=2)
        calls = []
        for i in range(6):
            calls.append(asyncio.create_task(client.decide(_input(i))))
            await asyncio.sleep(0)  # queue in a known order
        await opa.next_arrival(2)
        await asyncio.sleep(0.05)
        assert len(opa.arrivals) == 2 and opa.peak == 2  # the other four wait in the sidecar
        for released in range(4):  # free one slot at a time: exactly the next in line goes out
            opa.gates[released].set()
            await opa.next_arrival(3 + released)
            await asyncio.sleep(0.02)
            assert opa.arrivals[2:] == list(range(2, 3 + released))
        for gate in opa.gates:
            gate.set()
        results = await asyncio.gather(*calls)
    server.close()
    assert [d.action for d, _ in results] == ["allow"] * 6
    assert opa.peak == 2


async def test_deadline_counts_from_dispatch_not_from_queueing() -> None:
    # Each decision takes 0.15 s; four callers at once through one slot wait up to 0.45 s, far
    # beyond the 0.3 s --opa-timeout, yet all are allowed: only OPA's own time is bounded by it.
    opa = SlowOpa(delay=0.15)
    server, url = await _serve(opa)
    async with aiohttp.ClientSession() as session:
        client = PolicyClient(session, url, "skillwarden/decision", timeout=0.3, max_inflight=1)
        started = time.perf_counter()
        results = await asyncio.gather(*(client.decide(_input(i)) for i in range(4)))
        took = time.perf_counter() - started
    server.close()
    assert [d.action for d, _ in results] == ["allow"] * 4
    assert took >= 0.55 and opa.peak == 1
    assert all(0.1 <= seconds < 0.3 for _, seconds in results)  # reported time is from dispatch


async def test_waiting_longer_than_the_queue_timeout_is_a_fail_closed_503() -> None:
    opa = SlowOpa(gated=True)
    server, url = await _serve(opa)
    async with aiohttp.ClientSession() as session:
        client = PolicyClient(session, url, "skillwarden/decision", timeout=5, max_inflight=1,
                              queue_timeout=0.2)
        holder = asyncio.create_task(client.decide(_input(0)))
        await opa.next_arrival(1)
        started = time.perf_counter()
        with pytest.raises(Rejection) as refused:
            await client.decide(_input(1))
        waited = time.perf_counter() - started
        assert refused.value.status == 503 and "saturated" in str(refused.value)
        assert 0.15 <= waited < 1.0 and opa.arrivals == [0]  # never reached OPA
        opa.gates[0].set()
        decision, _ = await holder
        assert decision.action == "allow"
        # the slot is free again: the next caller is served
        opa.gated = False
        again, _ = await client.decide(_input(2))
        assert again.action == "allow"
    server.close()
