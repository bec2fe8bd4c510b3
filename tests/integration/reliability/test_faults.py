"""Faults not covered by the area tests, through the real `skillwarden sidecar` process with
masking and recording to the stack's SeaweedFS: every request that reached the provider has its
records in the bucket, and nothing is forwarded without a decision and a durable request record.

- upstream 500 / timeout / disconnect mid-stream: the client gets a clean error, the records exist;
- client disconnect mid-stream: the upstream request is cancelled, the records exist;
- sidecar killed -9 under load and restarted on the same spool: every request the provider
  received is in the bucket after the restart ships the spool;
- spool disk full (a 1 MiB tmpfs): requests are refused and nothing more is forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from reliability_support import (
    MODEL,
    CliSidecar,
    SidecarStarter,
    record_entries,
    stored_objects,
    verify,
)

from skillwarden_devstack.fake_claude import FakeClaude, Fault
from skillwarden_devstack.tcp_relay import TcpRelay


def exchanges(stack: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    """exchange id -> {"request": record, "response": record} from the bucket."""
    out: dict[str, dict[str, Any]] = {}
    for entry in record_entries(stored_objects(stack, prefix)):
        if entry["kind"] not in {"request", "response"}:
            continue
        record = entry["record"]
        out.setdefault(record["exchange_id"], {})[entry["kind"]] = record
    return out


async def test_upstream_faults_give_clean_errors_and_leave_records(
    stack: dict[str, Any], cli_sidecar: SidecarStarter, fake: tuple[FakeClaude, str], prefix: str
) -> None:
    upstream, _ = fake
    async with cli_sidecar(SKILLWARDEN_UPSTREAM_READ_TIMEOUT="1") as sidecar:
        sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0, timeout=30)
        messages = [{"role": "user", "content": "Summarise Q3"}]
        upstream.faults.append(Fault(kind="status", status=500, message="boom"))
        with pytest.raises(anthropic.InternalServerError):
            await sdk.messages.create(model=MODEL, max_tokens=32, messages=messages)  # type: ignore[arg-type]
        upstream.faults.append(Fault(kind="status", status=529, message="overloaded"))
        with pytest.raises(anthropic.APIStatusError) as overloaded:
            await sdk.messages.create(model=MODEL, max_tokens=32, messages=messages)  # type: ignore[arg-type]
        assert overloaded.value.status_code == 529
        upstream.faults.append(Fault(kind="timeout", seconds=3))
        with pytest.raises(anthropic.APIStatusError) as timed_out:
            await sdk.messages.create(model=MODEL, max_tokens=32, messages=messages)  # type: ignore[arg-type]
        assert timed_out.value.status_code == 504
        upstream.faults.append(Fault(kind="disconnect", after_events=4))
        with pytest.raises(anthropic.APIError):
            async with sdk.messages.stream(model=MODEL, max_tokens=32, messages=messages) as stream:  # type: ignore[arg-type]
                await stream.get_final_message()
        answer = await sdk.messages.create(model=MODEL, max_tokens=32, messages=messages)  # type: ignore[arg-type]
        assert answer.content  # the sidecar is healthy after the faults
        await sidecar.stop()
    assert len(upstream.received) == 5
    stored = await asyncio.to_thread(exchanges, stack, prefix)
    assert len(stored) == 5 and all(set(parts) == {"request", "response"} for parts in stored.values())
    statuses = sorted(str(p["response"].get("status")) for p in stored.values())
    assert statuses.count("500") == 1 and statuses.count("529") == 1 and statuses.count("504") == 1, statuses


async def test_client_disconnect_mid_stream_cancels_upstream_and_is_recorded(
    stack: dict[str, Any], cli_sidecar: SidecarStarter, fake: tuple[FakeClaude, str], prefix: str
) -> None:
    upstream, _ = fake
    upstream.settings.reply_text = " ".join(f"w{i}" for i in range(400))
    upstream.settings.token_gap = 0.02  # ~8 s of stream
    body = {
        "model": MODEL,
        "max_tokens": 1024,
        "stream": True,
        "messages": [{"role": "user", "content": "go"}],
    }
    async with cli_sidecar() as sidecar:
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                sidecar.url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
            )
            assert response.status == 200
            await response.content.readexactly(200)  # a few events in
            response.close()  # the client goes away mid-stream
        # The upstream stream (~8 s) is cut soon after: the fake sees its client go away.
        for _ in range(60):
            if upstream.stats.streams_cut_by_client:
                break
            await asyncio.sleep(0.1)
        assert upstream.stats.streams_cut_by_client == 1 and upstream.stats.streams_completed == 0
        await sidecar.stop()
    assert len(upstream.received) == 1
    stored = await asyncio.to_thread(exchanges, stack, prefix)
    assert len(stored) == 1
    (parts,) = stored.values()
    assert set(parts) == {"request", "response"}, parts


async def test_sidecar_killed_under_load_loses_no_record_of_a_forwarded_request(
    stack: dict[str, Any],
    cli_sidecar: SidecarStarter,
    fake: tuple[FakeClaude, str],
    prefix: str,
    tmp_path: Path,
) -> None:
    upstream, _ = fake
    upstream.settings.token_gap = 0.005
    stop = asyncio.Event()
    outcomes: list[str] = []
    async with cli_sidecar() as sidecar:
        sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0, timeout=30)

        counter = iter(range(10**9))

        async def client() -> None:
            while not stop.is_set():
                try:
                    async with sdk.messages.stream(
                        model=MODEL,
                        max_tokens=64,
                        messages=[{"role": "user", "content": f"summarise quarter q{next(counter)}"}],
                    ) as stream:
                        await stream.get_final_message()
                    outcomes.append("ok")
                except Exception:  # the SDK's transport errors too: the sidecar died under it
                    outcomes.append("error")
                    await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(client()) for _ in range(16)]
        await asyncio.sleep(4)
        await sidecar.kill9()  # mid-load, no shutdown path
        killed_at = len(upstream.received)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
        assert killed_at > 10 and "ok" in outcomes
        # Restart on the same spool: recovery ships what the killed process made durable.
        restarted = CliSidecar(sidecar.url, sidecar.admin_url, sidecar.env, sidecar.log)
        await restarted.start()
        assert (
            await sdk.messages.create(
                model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "after restart"}]
            )
        ).content
        await sdk.close()
        assert await restarted.stop() == 0
    # Each prompt is unique: map what the provider received to the request records in the bucket.
    forwarded = [r.json()["messages"][0]["content"] for r in upstream.received]
    stored = await asyncio.to_thread(exchanges, stack, prefix)
    recorded = {p["request"]["prompt"]["text"] for p in stored.values() if "request" in p}
    missing = [text for text in forwarded if text not in recorded]
    assert not missing, f"{len(missing)} of {len(forwarded)} forwarded requests have no record"
    code, output = await asyncio.to_thread(verify, stack, prefix, tmp_path / "spool")
    # The killed stream ends without a final digest: reported as an unsealed tail (info), no gap.
    assert code == 0, output[-3000:]


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "1m") -> Any:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_spool_disk_full_refuses_requests_and_forwards_nothing(
    stack: dict[str, Any], cli_sidecar: SidecarStarter, fake: tuple[FakeClaude, str], tmp_path: Path
) -> None:
    upstream, _ = fake
    with tiny_tmpfs(tmp_path / "spool", "4m"):
        async with cli_sidecar() as sidecar:
            request = {
                "model": MODEL,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": "summarise"}],
            }
            headers = {"anthropic-version": "2023-06-01"}
            async with aiohttp.ClientSession() as http:
                async with http.post(sidecar.url + "/v1/messages", headers=headers, json=request) as response:
                    assert response.status == 200
                # Fill the spool's disk to the last byte.
                ballast = tmp_path / "spool" / "ballast"
                with contextlib.suppress(OSError), ballast.open("wb") as handle:
                    while True:
                        handle.write(b"\0" * 4096)
                        handle.flush()
                forwarded_before = len(upstream.received)
                statuses = []
                for _ in range(10):
                    async with http.post(
                        sidecar.url + "/v1/messages", headers=headers, json=request
                    ) as response:
                        statuses.append(response.status)
                        await response.read()
                # A record that still fits in the open segment's last page may go through; from the
                # first failed spool write on, every request is refused (fail closed, no gap).
                first = statuses.index(503)
                assert first <= 2 and statuses[first:] == [503] * (10 - first), statuses
                # Only the requests whose record was durable were forwarded.
                assert len(upstream.received) == forwarded_before + first
                async with http.get(sidecar.admin_url + "/readyz") as ready:
                    assert ready.status == 503 and "No space left" in str((await ready.json())["recording"])
            with contextlib.suppress(Exception):
                await sidecar.stop()


async def test_s3_flapping_and_slow_loses_nothing(
    stack: dict[str, Any],
    cli_sidecar: SidecarStarter,
    fake: tuple[FakeClaude, str],
    prefix: str,
    tmp_path: Path,
) -> None:
    upstream, _ = fake
    proxy = TcpRelay(int(stack["s3"]["endpoint"].rsplit(":", 1)[1]))
    await proxy.start()
    sent: list[str] = []
    failures: list[str] = []
    try:
        # Outages shorter than the unshipped-age bound (60 s) are absorbed by the spool.
        async with cli_sidecar(
            AWS_ENDPOINT_URL=proxy.url, SKILLWARDEN_RECORDS_MAX_UNSHIPPED_AGE="60"
        ) as sidecar:
            sdk = anthropic.AsyncAnthropic(
                base_url=sidecar.url, api_key="placeholder", max_retries=0, timeout=30
            )
            deadline = time.monotonic() + 12

            async def client(number: int) -> None:
                count = 0
                while time.monotonic() < deadline:
                    prompt = f"client {number} request {count}"
                    count += 1
                    sent.append(prompt)
                    try:
                        async with sdk.messages.stream(
                            model=MODEL, max_tokens=32, messages=[{"role": "user", "content": prompt}]
                        ) as stream:
                            await stream.get_final_message()
                    except anthropic.APIError as error:
                        failures.append(f"{prompt}: {error}")

            async def flap() -> None:
                while time.monotonic() < deadline:
                    await proxy.stop()
                    await asyncio.sleep(1.5)
                    await proxy.start()
                    proxy.delay = 0.2  # and slow while up
                    await asyncio.sleep(1.5)
                proxy.delay = 0.0

            await asyncio.gather(flap(), *(client(n) for n in range(8)))
            if proxy.server is None:
                await proxy.start()
            await sdk.close()
            assert await sidecar.stop() == 0, sidecar.log.read_text()[-3000:]
    finally:
        await proxy.stop()
    assert not failures, failures[:3]
    assert len(upstream.received) == len(sent) >= 16
    code, output = await asyncio.to_thread(verify, stack, prefix, tmp_path / "spool")
    assert code == 0, output[-3000:]
    stored = await asyncio.to_thread(exchanges, stack, prefix)
    recorded = {p["request"]["prompt"]["text"] for p in stored.values() if "request" in p and "response" in p}
    assert set(sent) <= recorded, len(set(sent) - recorded)
