"""Bad input gives clear errors and never loses or double-ships records: a bucket without Object
Lock, weaker bucket retention, wrong credentials, clock skew, corrupt spool files, and a segment
that is found in the spool again after it was shipped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from recording_helpers import (
    ConfigFactory,
    exchange_ids_in_bucket,
    object_keys,
    public_key_of,
    run_session,
    verify_cli,
)

from skillwarden_sidecar.recording import Recorder, RecorderConfigError
from skillwarden_sidecar.recording.entry import GENESIS_HASH, encode_entry
from skillwarden_sidecar.recording.metrics import RECORDS_FAILED
from skillwarden_sidecar.recording.samples import request_record


async def test_refuses_a_bucket_without_object_lock(make_config: ConfigFactory, client: Any) -> None:
    bucket = f"nolock-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    with pytest.raises(RecorderConfigError, match="has no Object Lock"):
        await Recorder(make_config(bucket=bucket)).start()


async def test_refuses_weaker_bucket_retention_than_configured(make_config: ConfigFactory, client: Any,
                                                               s3: dict[str, Any]) -> None:
    lock = client.get_object_lock_configuration(Bucket=s3["bucket"])["ObjectLockConfiguration"]
    days = int(lock["Rule"]["DefaultRetention"]["Days"])
    weaker = rf"COMPLIANCE {days} days is weaker than the configured COMPLIANCE {days + 1}"
    with pytest.raises(RecorderConfigError, match=weaker):
        await Recorder(make_config(retention_days=days + 1)).start()


async def test_wrong_credentials_are_named(make_config: ConfigFactory) -> None:
    with pytest.raises(RecorderConfigError, match="rejected the credentials"):
        await Recorder(make_config(secret_key="not-the-secret")).start()


async def test_clock_skew_is_refused(make_config: ConfigFactory) -> None:
    with pytest.raises(RecorderConfigError, match="clock skew"):
        await Recorder(make_config(clock=lambda: datetime.now(UTC) + timedelta(hours=2))).start()


def _stream(spool: Path, tail: str) -> tuple[str, Path]:
    stream = f"finance/report-7f9c/20261124T000000.000000Z-{tail}"
    directory = spool / "streams" / stream
    (directory / "records").mkdir(parents=True)
    return stream, directory


def _lines(stream: str, count: int) -> list[bytes]:
    lines, prev = [], GENESIS_HASH
    for seq in range(1, count + 1):
        record = request_record(f"{stream[-8:]}-{seq}")
        encoded = encode_entry(stream, seq, prev, "request", datetime.now(UTC), record)
        lines.append(encoded.line)
        prev = encoded.hash
    return lines


async def test_corrupt_spool_files_are_quarantined_not_crash_looped(make_config: ConfigFactory, client: Any,
                                                                     s3: dict[str, Any]) -> None:
    config = make_config()
    spool = config.spool_dir
    # A crashed stream whose open segment ends in a torn, never-acknowledged write: kept and shipped.
    torn, torn_dir = _stream(spool, "0000000a")
    (torn_dir / "open-000000000001.jsonl").write_bytes(b"".join(_lines(torn, 3)) + b'{"entry":{"v":1,"str')
    # Corruption in the middle of an open segment: quarantined whole, with the reason beside it.
    middle, middle_dir = _stream(spool, "0000000b")
    good = _lines(middle, 3)
    (middle_dir / "open-000000000001.jsonl").write_bytes(good[0] + b"garbage\n" + good[2])
    # A sealed segment whose bytes do not match its name: quarantined before shipping.
    _, sealed_dir = _stream(spool, "0000000c")
    (sealed_dir / "records" / "000000000001-000000000002.jsonl").write_bytes(b"not json\n")
    before = RECORDS_FAILED.labels(cause="corrupt_spool")._value.get()

    async with Recorder(config) as recorder:  # starts despite all of it
        await run_session(recorder, 3)
        assert await recorder.wait_shipped(15)

    assert RECORDS_FAILED.labels(cause="corrupt_spool")._value.get() - before == 2
    reasons = {p.name: p.read_text() for p in (spool / "quarantine").rglob("*.reason")}
    assert any("corrupt open segment (line 2" in r for r in reasons.values()), reasons
    assert any("sealed segment not shipped" in r for r in reasons.values()), reasons
    shipped = exchange_ids_in_bucket(client, s3, config.prefix)
    assert {f"0000000a-{n}" for n in (1, 2, 3)} <= shipped  # the torn stream's three entries
    assert not any(e.startswith(("0000000b", "0000000c")) for e in shipped)
    assert not list((spool / "streams").rglob("*.jsonl"))


async def test_a_segment_seen_again_is_not_shipped_twice(make_config: ConfigFactory, client: Any,
                                                         s3: dict[str, Any]) -> None:
    config = make_config()
    async with Recorder(config) as recorder:
        await run_session(recorder, 6)
        stream_dir = recorder._writer.directory
    key = object_keys(client, s3, config.prefix, "records")[0]
    body = client.get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
    # As if the process died after S3 took the object but before the spool file was removed.
    name = key.rsplit("/", 1)[1]
    (stream_dir / "records" / name).write_bytes(body)
    async with Recorder(config) as recorder:
        assert await recorder.wait_shipped(15)
    assert not (stream_dir / "records" / name).exists()
    versions = client.list_object_versions(Bucket=s3["bucket"], Prefix=config.prefix)["Versions"]
    keys = [v["Key"] for v in versions]
    assert len(keys) == len(set(keys))  # one version per key: nothing written twice
    code, report = verify_cli(s3, config.prefix, public_key_of(config))
    assert (code, report["findings"]) == (0, [])
