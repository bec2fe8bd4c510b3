"""Object Lock as the SkillPolicy declares it, against the real SeaweedFS bucket: each shipped
object is locked for the longest retention (and the strictest mode) its own records' decisions
asked for, never below the recorder's configured floor; digests for the stream's running maximum,
the public key at least as long as its digests; and `audit verify --check-retention` proves it —
or flags an object retained for less."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from recording_helpers import ConfigFactory, codes, object_keys, public_key_of, verify_cli

from skillwarden_sidecar.recording import Recorder
from skillwarden_sidecar.recording.entry import decode_line
from skillwarden_sidecar.recording.samples import request_record, response_record

GOV30 = {"retentionDays": 30, "mode": "GOVERNANCE"}
COMP400 = {"retentionDays": 400, "mode": "COMPLIANCE"}


async def exchange(recorder: Recorder, exchange_id: str, recording: dict[str, Any]) -> None:
    await recorder.append("request", request_record(exchange_id, recording=recording))
    await recorder.append("response", response_record(exchange_id, recording=recording))


def lock_of(client: Any, s3: dict[str, Any], key: str) -> tuple[str, datetime]:
    found = client.get_object_retention(Bucket=s3["bucket"], Key=key)["Retention"]
    return str(found["Mode"]), found["RetainUntilDate"]


def near(until: datetime, start: datetime, days: int) -> bool:
    slack = timedelta(minutes=2)
    return start + timedelta(days=days) - slack <= until <= datetime.now(UTC) + timedelta(days=days) + slack


async def test_each_object_is_locked_as_its_records_policies_declared(
        make_config: ConfigFactory, s3: dict[str, Any], client: Any) -> None:
    # Floor: GOVERNANCE for 1 day. Policies ask 30 days GOVERNANCE, one exchange 400 days COMPLIANCE.
    config = make_config(retention_days=1, lock_mode="GOVERNANCE")
    started = datetime.now(UTC)
    recorder = Recorder(config)
    await recorder.start()
    for number in range(3):
        await exchange(recorder, f"short-{number}", GOV30)
    assert await recorder.wait_shipped(15)
    await recorder.write_digest()  # digest 1: the stream has asked for 30 days so far
    assert await recorder.wait_shipped(15)
    await exchange(recorder, "long-0", COMP400)
    assert await recorder.wait_shipped(15)
    for number in range(3, 5):
        await exchange(recorder, f"short-{number}", GOV30)
    await recorder.close()  # final digest 2: covers the 400-day exchange

    records = object_keys(client, s3, config.prefix, "records")
    digests = object_keys(client, s3, config.prefix, "digests")
    assert len(records) >= 3 and len(digests) == 2
    holding_long = []
    for key in records:
        body = client.get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
        ids = {decode_line(line).entry["record"].get("exchange_id") for line in body.splitlines()}
        mode, until = lock_of(client, s3, key)
        if "long-0" in ids:
            holding_long.append(key)
            assert mode == "COMPLIANCE" and near(until, started, 400), (key, mode, until)
        else:
            assert mode == "GOVERNANCE" and near(until, started, 30), (key, mode, until)
    assert len(holding_long) == 1  # request and response were appended back to back, one segment
    first, final = (lock_of(client, s3, key) for key in digests)
    assert first[0] == "GOVERNANCE" and near(first[1], started, 30)
    assert final[0] == "COMPLIANCE" and near(final[1], started, 400)
    # The public key that verifies the digests was published for the 1-day floor; it is extended
    # (never shortened) to outlive the 400-day digest.
    (key_object,) = object_keys(client, s3, config.prefix, "keys")
    assert lock_of(client, s3, key_object)[1] >= final[1]

    code, report = verify_cli(s3, config.prefix, public_key_of(config), "--check-retention", "--mode",
                              "GOVERNANCE")
    assert (code, report["findings"]) == (0, [])

    # The same bytes under another prefix, locked for one day only: every finding is about retention.
    copy = config.prefix.rstrip("/") + "-short/"
    until = datetime.now(UTC) + timedelta(days=1)
    for item in client.list_objects_v2(Bucket=s3["bucket"], Prefix=config.prefix)["Contents"]:
        body = client.get_object(Bucket=s3["bucket"], Key=item["Key"])["Body"].read()
        client.put_object(Bucket=s3["bucket"], Key=copy + item["Key"][len(config.prefix):], Body=body,
                          ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    code, report = verify_cli(s3, copy, public_key_of(config), "--check-retention", "--mode", "GOVERNANCE")
    assert code == 1 and codes(report) == {"retention_short", "retention_mode"}
    short = {f["key"] for f in report["findings"] if f["code"] == "retention_short"}
    weaker = {f["key"] for f in report["findings"] if f["code"] == "retention_mode"}
    assert short == {copy + key[len(config.prefix):] for key in [*records, *digests, key_object]}
    assert weaker == {copy + key[len(config.prefix):] for key in [*holding_long, digests[-1]]}
    assert all("policy decisions" in f["message"] for f in report["findings"])
