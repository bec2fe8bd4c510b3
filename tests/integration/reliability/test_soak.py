"""Soak: N concurrent streaming clients (the official anthropic SDK) for T seconds through the real
`skillwarden sidecar` process with masking and recording to the stack's SeaweedFS Object Lock
bucket. The sidecar's RSS and open file descriptors are sampled from /proc while it runs; afterwards
`skillwarden audit verify` must pass and the bucket must hold one request and one response record
for every request a client sent.

CI runs 32 clients for 30 s. The documented long run:
    SKILLWARDEN_SOAK_SECONDS=600 SKILLWARDEN_SOAK_CLIENTS=32 pytest tests/integration/reliability/test_soak.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import anthropic
import pytest
from reliability_support import MODEL, SSN, SidecarStarter, record_entries, stored_objects, verify

from skillwarden_devstack.fake_claude import FakeClaude

SECONDS = float(os.environ.get("SKILLWARDEN_SOAK_SECONDS", "30"))
CLIENTS = int(os.environ.get("SKILLWARDEN_SOAK_CLIENTS", "32"))
REPLY = " ".join(f"word{i}" for i in range(40)) + f" and the SSN {SSN} in the answer"


def proc_sample(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open file descriptors) of a process."""
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(SECONDS * 2 + 240)
async def test_soak_memory_and_fds_stable_records_complete(
    stack: dict[str, Any],
    cli_sidecar: SidecarStarter,
    fake: tuple[FakeClaude, str],
    prefix: str,
    tmp_path: Path,
) -> None:
    upstream, _ = fake
    upstream.settings.reply_text = REPLY
    upstream.settings.token_gap = 0.003
    sent = answered = failed = forwarded = 0
    samples: list[tuple[float, int, int]] = []
    async with cli_sidecar() as sidecar:
        baseline = proc_sample(sidecar.pid)
        sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0, timeout=60)
        deadline = time.monotonic() + SECONDS

        async def client(number: int) -> None:
            nonlocal sent, answered, failed
            while time.monotonic() < deadline:
                sent += 1
                prompt = (
                    f"client {number}: my SSN is {SSN}" if sent % 4 == 0 else f"client {number}: summarise"
                )
                try:
                    async with sdk.messages.stream(
                        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": prompt}]
                    ) as stream:
                        message = await stream.get_final_message()
                    text = message.content[0].text if message.content[0].type == "text" else ""
                    assert SSN not in text and "word39" in text
                    answered += 1
                except anthropic.APIError:
                    failed += 1

        async def sampler() -> None:
            nonlocal forwarded
            started = time.monotonic()
            while time.monotonic() < deadline:
                rss, fds = proc_sample(sidecar.pid)
                samples.append((time.monotonic() - started, rss, fds))
                for received in upstream.received:  # the provider never sees the clear SSN
                    assert SSN.encode() not in received.body
                forwarded += len(upstream.received)
                upstream.received.clear()  # bounded memory in long runs
                await asyncio.sleep(1.0)

        await asyncio.gather(sampler(), *(client(n) for n in range(CLIENTS)))
        forwarded += len(upstream.received)
        await sdk.close()
        await asyncio.sleep(1.0)
        after = proc_sample(sidecar.pid)
        assert await sidecar.stop() == 0, sidecar.log.read_text()[-3000:]

    warm = [s for s in samples if s[0] >= SECONDS * 0.2]
    third = max(1, len(warm) // 3)
    early_rss = statistics.median(s[1] for s in warm[:third])
    late_rss = statistics.median(s[1] for s in warm[-third:])
    peak_fds = max(s[2] for s in samples)
    report = (
        f"clients={CLIENTS} seconds={SECONDS:.0f} sent={sent} answered={answered} failed={failed} "
        f"forwarded={forwarded} rss_kib baseline={baseline[0]} early={early_rss:.0f} late={late_rss:.0f} "
        f"fds baseline={baseline[1]} peak={peak_fds} after={after[1]}"
    )
    print(report)
    (tmp_path / "soak-report.txt").write_text(report + "\n")
    assert failed == 0 and answered == sent and forwarded == sent, report
    assert answered >= CLIENTS * 2, report  # real load went through
    # Memory: no growth between the first and last third once warm (allocator noise allowed).
    assert late_rss - early_rss < max(16 * 1024, early_rss * 0.10), report
    # Descriptors: bounded by the connections in use (client + upstream + OPA + S3 per client), no
    # growth from the first to the last third, and once the clients are gone only the pooled
    # keep-alive upstream connections (at most one per client) remain.
    assert peak_fds < baseline[1] + 3 * CLIENTS + 64, report
    assert max(s[2] for s in warm[-third:]) <= max(s[2] for s in warm[:third]) + 16, report
    assert after[1] < baseline[1] + 2 * CLIENTS + 16, report

    code, output = await asyncio.to_thread(verify, stack, prefix, tmp_path / "spool")
    assert code == 0, output[-3000:]
    entries = await asyncio.to_thread(lambda: record_entries(stored_objects(stack, prefix)))
    requests = [e["record"] for e in entries if e["kind"] == "request"]
    responses = [e["record"] for e in entries if e["kind"] == "response"]
    assert len(requests) == sent and len(responses) == sent, (len(requests), len(responses), report)
    assert len({r["exchange_id"] for r in requests}) == sent
    assert all(r["outcome"] == "forwarded" for r in responses)
