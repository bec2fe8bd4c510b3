"""Crash and outage behaviour against the real SeaweedFS: kill -9 mid-session loses nothing that
was acknowledged; S3 going away makes admit() refuse within the bound; S3 back drains the spool."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from recording_helpers import (
    ConfigFactory,
    exchange_ids_in_bucket,
    public_key_of,
    run_session,
    verify_cli,
)

from skillwarden_devstack.processes import free_port
from skillwarden_devstack.tcp_relay import TcpRelay
from skillwarden_sidecar.recording import Recorder, RecordingUnavailable
from skillwarden_sidecar.recording.samples import request_record

WRITER = Path(__file__).with_name("recording_writer.py")


def run_and_kill_writer(settings: dict[str, Any]) -> tuple[set[str], str]:
    """Run the writer process until enough request parts are durable, then SIGKILL it mid-stream."""
    process = subprocess.Popen([sys.executable, str(WRITER), json.dumps(settings)], stdout=subprocess.PIPE,
                               text=True)
    acked: set[str] = set()
    crashed_stream = ""
    try:
        assert process.stdout is not None
        started = time.monotonic() + 3600  # reset when the stream has started
        deadline = time.monotonic() + 60
        # At least 300 acknowledged requests and 2 s of streaming: several interval digests
        # (0.3 s) were signed before the kill, and a tail after the last one.
        while (len(acked) < 300 or time.monotonic() - started < 2.0) and time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("STREAM "):
                crashed_stream, started = line.split()[1], time.monotonic()
            elif line.startswith("ACK "):
                acked.add(line.split()[1])
            elif not line:
                break
        os.kill(process.pid, signal.SIGKILL)
        rest, _ = process.communicate(timeout=10)
        acked |= {line.split()[1] for line in rest.splitlines() if line.startswith("ACK ")}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL and len(acked) >= 300 and crashed_stream
    return acked, crashed_stream


async def test_kill_9_mid_session_then_restart_ships_everything(make_config: ConfigFactory,
                                                                s3: dict[str, Any], client: Any) -> None:
    config = make_config(digest_interval_s=0.3)
    settings = {k: getattr(config, k) for k in (
        "bucket", "prefix", "endpoint_url", "access_key", "secret_key", "retention_days", "namespace", "pod",
        "digest_interval_s", "segment_max_age_s")}
    settings["spool_dir"] = str(config.spool_dir)
    acked, crashed_stream = await asyncio.to_thread(run_and_kill_writer, settings)

    async with Recorder(config) as recorder:  # restart on the same spool
        restarted_stream = recorder.stream_id
        await run_session(recorder, 3, tag="after")
        assert await recorder.wait_shipped(20)
    # Every request that was acknowledged (i.e. would have gone upstream) is in the bucket.
    assert acked <= exchange_ids_in_bucket(client, s3, config.prefix)

    code, report = verify_cli(s3, config.prefix, public_key_of(config), "--check-retention")
    assert code == 0, report["findings"]
    crashed = report["streams"][crashed_stream]
    assert not crashed["closed"] and crashed["unsealed_tail"]["count"] > 0  # reported honestly
    assert crashed["sealed_through"] > 0  # idle/interval digests were signed before the crash
    assert {f["code"] for f in report["findings"]} == {"unsealed_tail"}
    restarted = report["streams"][restarted_stream]
    assert restarted["closed"] and restarted["prev_stream"]["stream"] == crashed_stream


async def test_s3_outage_refuses_within_bound_and_drains_after(make_config: ConfigFactory, s3: dict[str, Any],
                                                               client: Any) -> None:
    proxy = TcpRelay(urlparse(s3["endpoint"]).port or 0, free_port())
    await proxy.start()
    bound = 2.0
    config = make_config(endpoint_url=proxy.url, max_unshipped_age_s=bound, ship_retry_max_s=0.5,
                         digest_interval_s=0.5)
    recorder = Recorder(config)
    await recorder.start()
    try:
        accepted = set(await run_session(recorder, 12, tag="before"))
        assert await recorder.wait_shipped(10)
        recorder.admit()

        await proxy.stop()
        stopped = time.monotonic()
        refused_after: float | None = None
        number = 0
        while time.monotonic() - stopped < 15:
            try:
                recorder.admit()
            except RecordingUnavailable as error:
                refused_after = time.monotonic() - stopped
                assert "not shipped" in error.reason and "last S3 error" in error.reason
                break
            number += 1
            accepted |= set(await run_session(recorder, 1, tag=f"during{number}"))
            await asyncio.sleep(0.1)
        assert refused_after is not None and refused_after <= bound + 1.5, refused_after
        with pytest.raises(RecordingUnavailable):
            recorder.admit()  # stays refused while S3 is away

        await proxy.start()
        deadline = time.monotonic() + 20
        while recorder.unavailable_reason() is not None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        recorder.admit()
        assert await recorder.wait_shipped(20)
    finally:
        await recorder.close()
        await proxy.stop()
    assert accepted <= exchange_ids_in_bucket(client, s3, config.prefix)
    code, report = verify_cli(s3, config.prefix, public_key_of(config))
    assert (code, report["findings"]) == (0, [])


async def test_spool_bound_refuses_and_fail_open_admits_loudly(make_config: ConfigFactory, s3: dict[str, Any],
                                                               tmp_path: Path) -> None:
    from skillwarden_sidecar.recording.metrics import RECORDS_FAILED

    proxy = TcpRelay(urlparse(s3["endpoint"]).port or 0, free_port())
    await proxy.start()
    closed = make_config(endpoint_url=proxy.url, spool_max_bytes=20_000, max_unshipped_age_s=600)
    opened = make_config(endpoint_url=proxy.url, spool_max_bytes=20_000, max_unshipped_age_s=600,
                         fail_open=True, spool_dir=tmp_path / "open-spool")
    recorders = [Recorder(closed), Recorder(opened)]
    for recorder in recorders:
        await recorder.start()
    await proxy.stop()  # S3 gone: the spool only grows
    try:
        for recorder in recorders:
            await run_session(recorder, 3)
            for number in range(200):  # requests admitted earlier keep being recorded
                if "spool full" in (recorder.unavailable_reason() or ""):
                    break
                await recorder.append("request", request_record(f"fill-{number}"))
        with pytest.raises(RecordingUnavailable, match="spool full"):
            recorders[0].admit()
        before = RECORDS_FAILED.labels(cause="admitted_unavailable")._value.get()
        recorders[1].admit()  # fail-open: admitted, but counted
        assert RECORDS_FAILED.labels(cause="admitted_unavailable")._value.get() == before + 1
        assert recorders[1].unavailable_reason() is not None
        # Past the hard limit (2 x the bound) even append refuses: the node's disk is protected,
        # and the caller learns the record was not written (no sequence number is consumed).
        with pytest.raises(RecordingUnavailable, match="spool hard limit"):
            for number in range(200):
                await recorders[0].append("request", request_record(f"hard-{number}"))
    finally:
        await proxy.start()
        for recorder in recorders:
            await recorder.close()
        await proxy.stop()
