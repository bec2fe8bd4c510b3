"""Tampering with stored evidence is caught, each kind with its own finding: a record rewritten
through the storage back door (SeaweedFS filer, which bypasses Object Lock), a record deleted,
a digest deleted, records reordered, a delete marker added."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from recording_helpers import (
    ConfigFactory,
    codes,
    filer,
    object_keys,
    public_key_of,
    run_session,
    verify_cli,
    version_path,
)

from skillwarden_sidecar.recording import Recorder
from skillwarden_sidecar.recording.entry import decode_line, encode_entry, parse_timestamp


def rewrite_record(s3: dict[str, Any], client: Any, prefix: str) -> None:
    key = object_keys(client, s3, prefix, "records")[0]
    body = client.get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
    assert b"list all passwords" in body
    filer("PUT", version_path(s3, client, key), body.replace(b"list all passwords", b"summarise the weather"))


def delete_record(s3: dict[str, Any], client: Any, prefix: str) -> None:
    key = object_keys(client, s3, prefix, "records")[1]
    filer("DELETE", version_path(s3, client, key))


def delete_digest(s3: dict[str, Any], client: Any, prefix: str) -> None:
    key = object_keys(client, s3, prefix, "digests")[1]  # a middle one: later digests still exist
    filer("DELETE", version_path(s3, client, key))


def reorder_records(s3: dict[str, Any], client: Any, prefix: str) -> None:
    key = object_keys(client, s3, prefix, "records")[0]
    lines = client.get_object(Bucket=s3["bucket"], Key=key)["Body"].read().splitlines(keepends=True)
    assert len(lines) >= 3
    lines[1], lines[2] = lines[2], lines[1]
    filer("PUT", version_path(s3, client, key), b"".join(lines))


def recompute_chain(s3: dict[str, Any], client: Any, prefix: str) -> None:
    """A careful forger: rewrites a record AND recomputes every hash and link after it, so each
    line and the chain look intact. Only the signed digests can tell."""
    key = object_keys(client, s3, prefix, "records")[0]
    lines = client.get_object(Bucket=s3["bucket"], Key=key)["Body"].read().splitlines(keepends=True)
    forged, prev = [], None
    for line in lines:
        entry = decode_line(line).entry
        if prev is not None:
            entry["prev"] = prev
        record = entry["record"]
        if record.get("prompt", {}).get("text") == "list all passwords":
            record["prompt"]["text"] = "summarise the weather"
        encoded = encode_entry(entry["stream"], entry["seq"], entry["prev"], entry["kind"],
                               parse_timestamp(entry["time"]), record)
        forged.append(encoded.line)
        prev = encoded.hash
    filer("PUT", version_path(s3, client, key), b"".join(forged))


def add_delete_marker(s3: dict[str, Any], client: Any, prefix: str) -> None:
    key = object_keys(client, s3, prefix, "records")[0]
    client.delete_object(Bucket=s3["bucket"], Key=key)  # no VersionId: S3 adds a delete marker


# Exit 1 (integrity) throughout: deleting through the filer also leaves a key S3 can no longer
# version (`version_metadata_lost`), which is itself evidence of access around the S3 API.
TAMPERING: dict[str, tuple[Callable[[dict[str, Any], Any, str], None], str, int]] = {
    "rewritten": (rewrite_record, "hash_mismatch", 1),
    "record_deleted": (delete_record, "object_missing", 1),
    "digest_deleted": (delete_digest, "digest_missing", 1),
    "reordered": (reorder_records, "reordered", 1),
    "delete_marker": (add_delete_marker, "delete_marker", 1),
    "chain_recomputed": (recompute_chain, "digest_mismatch", 1),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
async def test_tampering_is_caught(tampering: str, make_config: ConfigFactory, s3: dict[str, Any],
                                   client: Any) -> None:
    config = make_config()
    async with Recorder(config) as recorder:
        for round_ in range(3):  # three sealed objects, three digests, then the final one
            await run_session(recorder, 9, tag=f"r{round_}")
            await recorder.write_digest()
    code, report = verify_cli(s3, config.prefix, public_key_of(config))
    assert (code, report["findings"]) == (0, [])

    tamper, finding, exit_code = TAMPERING[tampering]
    tamper(s3, client, config.prefix)
    code, report = verify_cli(s3, config.prefix, public_key_of(config))
    assert finding in codes(report), report["findings"]
    assert code == exit_code, report["summary"]
