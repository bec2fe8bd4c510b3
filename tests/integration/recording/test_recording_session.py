"""A session of mixed traffic against the real SeaweedFS Object Lock bucket: every record shipped,
locked in COMPLIANCE until now + retention, accepted by `audit verify`, findable by show/search."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from botocore.exceptions import ClientError
from recording_helpers import (
    ConfigFactory,
    object_keys,
    public_key_of,
    run_cli,
    run_session,
    verify_cli,
)

from skillwarden_sidecar.recording import Recorder
from skillwarden_sidecar.recording.entry import decode_line
from skillwarden_sidecar.recording.samples import request_record

SCHEMA_FILE = Path(__file__).parents[3] / "sidecar/skillwarden_sidecar/recording/schema/record.v1.json"
SCHEMA = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))


async def test_session_is_locked_verified_and_searchable(make_config: ConfigFactory, s3: dict[str, Any],
                                                         client: Any) -> None:
    config = make_config(digest_interval_s=0.5)
    started = datetime.now(UTC)
    recorder = Recorder(config)
    await recorder.start()
    actions = await run_session(recorder, 60)
    await recorder.write_digest()
    actions |= await run_session(recorder, 30, tag="late")
    await recorder.close()
    assert recorder.unavailable_reason() is not None  # closed recorders refuse

    records = object_keys(client, s3, config.prefix, "records")
    digests = object_keys(client, s3, config.prefix, "digests")
    assert records and len(digests) >= 2
    # Every object version: COMPLIANCE until about now + retention (1 day here), SHA-256 stored.
    for key in records + digests:
        head = client.head_object(Bucket=s3["bucket"], Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        until = head["ObjectLockRetainUntilDate"]
        assert started + timedelta(days=1) - timedelta(minutes=1) <= until <= datetime.now(UTC) + timedelta(
            days=1, minutes=1)
    # A locked version cannot be deleted.
    version = client.list_object_versions(Bucket=s3["bucket"], Prefix=records[0])["Versions"][0]
    with pytest.raises(ClientError):
        client.delete_object(Bucket=s3["bucket"], Key=records[0], VersionId=version["VersionId"])

    # Every stored line matches the versioned schema; every exchange has both parts.
    parts: dict[str, set[str]] = {}
    for key in records:
        for line in client.get_object(Bucket=s3["bucket"], Key=key)["Body"].read().splitlines():
            document = json.loads(line)
            SCHEMA.validate(document)
            entry = decode_line(line).entry
            if entry["kind"] != "stream_start":
                parts.setdefault(entry["record"]["exchange_id"], set()).add(entry["kind"])
    assert parts == {exchange: {"request", "response"} for exchange in actions}

    code, report = verify_cli(s3, config.prefix, public_key_of(config), "--check-retention",
                              "--retention-days", "1")
    assert (code, report["findings"]) == (0, [])
    (stream,) = report["streams"].values()
    assert stream["closed"] and stream["unsealed_tail"] is None and stream["entries"] == 1 + 2 * len(actions)

    # show: readable and OCSF views of one denied exchange.
    denied = sorted(e for e, a in actions.items() if a == "deny")
    base = ["--endpoint", s3["endpoint"], "--bucket", s3["bucket"], "--prefix", config.prefix,
            f"--access-key={s3['access_key']}", f"--secret-key={s3['secret_key']}"]
    code, text = run_cli("audit", "show", denied[0], *base)
    assert code == 0 and "decision   deny" in text and "HTTP 403" in text
    assert "rule=no-credential-dumps" in text
    code, text = run_cli("audit", "show", denied[0], "--format", "ocsf", *base)
    ocsf = json.loads(text)
    assert (ocsf["class_uid"], ocsf["type_uid"]) == (6003, 600301)
    assert (ocsf["action"], ocsf["status_id"]) == ("Denied", 2)
    assert ocsf["metadata"]["uid"] == denied[0]
    # search: exactly the denied exchanges, then a time window that holds nothing.
    code, text = run_cli("audit", "search", "--decision", "deny", *base)
    found = sorted(json.loads(line)["exchange_id"] for line in text.splitlines())
    assert code == 0 and found == denied
    code, text = run_cli("audit", "search", "--identity", "alice@example.com", "--skill", "xlsx",
                         "--until", started.isoformat(), *base)
    assert code == 0 and text == ""
    code, text = run_cli("audit", "search", "--identity", "system:serviceaccount:finance:report-bot",
                         "--since", started.isoformat(), *base)
    assert len(text.splitlines()) == len(actions)
    # keys: the published key re-derives to the recorder's key id; saved copies verify the session.
    code, text = run_cli("audit", "keys", "--save", str(config.spool_dir.parent / "reviewed"), *base)
    (published,) = [json.loads(line) for line in text.splitlines()]
    assert code == 0 and published["key_id"] == recorder.key_id and published["name_matches"]
    code, report = verify_cli(s3, config.prefix, config.spool_dir.parent / "reviewed")
    assert code == 0


async def test_verify_rejects_an_untrusted_key_and_bad_credentials(
        make_config: ConfigFactory, s3: dict[str, Any], tmp_path: Path) -> None:
    config = make_config()
    async with Recorder(config) as recorder:
        await run_session(recorder, 6)
    other = make_config(spool_dir=tmp_path / "other-spool", prefix="unused-other/")
    from skillwarden_sidecar.recording.keys import load_or_create_signing_key
    assert other.signing_key_file is not None
    load_or_create_signing_key(other.signing_key_file)
    code, report = verify_cli(s3, config.prefix, public_key_of(other))
    assert code == 1 and "untrusted_key" in {f["code"] for f in report["findings"]}
    code, text = run_cli("audit", "verify", "--endpoint", s3["endpoint"], "--bucket", s3["bucket"],
                         "--prefix", config.prefix, f"--access-key={s3['access_key']}", "--secret-key=wrong",
                         "--trusted-key", str(public_key_of(config)))
    assert code == 3 and "cannot read" in json.loads(text)["error"]
    code, report = verify_cli(s3, "no-such-prefix/", public_key_of(config))
    assert code == 3 and "no record streams" in report["error"]


async def test_a_fresh_spool_links_to_the_pods_previous_stream_in_the_bucket(
        make_config: ConfigFactory, s3: dict[str, Any], tmp_path: Path) -> None:
    first = make_config(spool_dir=tmp_path / "spool-a")
    async with Recorder(first) as recorder:
        await run_session(recorder, 3)
        earlier = recorder.stream_id
    # Same pod, new volume (the spool is gone), same signing key mounted from a Secret.
    second = make_config(spool_dir=tmp_path / "spool-b", signing_key_file=first.signing_key_file)
    async with Recorder(second) as recorder:
        await run_session(recorder, 3, tag="again")
        later = recorder.stream_id
    code, report = verify_cli(s3, first.prefix, public_key_of(first))
    assert (code, report["findings"]) == (0, [])
    link = report["streams"][later]["prev_stream"]
    assert (link["stream"], link["source"], link["digest_n"]) == (earlier, "bucket", 1)


async def test_check_retention_flags_weaker_mode_and_shorter_dates(make_config: ConfigFactory,
                                                                   s3: dict[str, Any]) -> None:
    config = make_config(lock_mode="GOVERNANCE")  # allowed: the bucket's default is stronger
    async with Recorder(config) as recorder:
        await run_session(recorder, 3)
    code, report = verify_cli(s3, config.prefix, public_key_of(config))
    assert (code, report["findings"]) == (0, [])  # content is intact; retention not asked for
    code, report = verify_cli(s3, config.prefix, public_key_of(config), "--check-retention",
                              "--retention-days", "30")
    summary = report["summary"]
    assert code == 1 and summary["retention_mode"] == summary["retention_short"] == report["objects"]


async def test_concurrent_appends_share_fsyncs(make_config: ConfigFactory) -> None:
    """Group commit: appends that arrive while an fsync is in flight ride on the next one."""
    async with Recorder(make_config()) as recorder:
        writer = recorder._writer
        original = writer.write_batch
        batches: list[int] = []

        def counting(lines: list[bytes], *rest: Any) -> None:
            batches.append(len(lines))
            original(lines, *rest)

        writer.write_batch = counting  # type: ignore[method-assign]
        appends = [recorder.append("request", request_record(f"g-{n}")) for n in range(200)]
        seqs = await asyncio.gather(*appends)
    assert sorted(seqs) == list(range(2, 202))  # after stream_start; no gaps, no duplicates
    assert sum(batches) >= 200 and len(batches) <= 20, batches
