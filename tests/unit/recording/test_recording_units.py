"""Unit tests of the record format, digests, spool recovery, key handling and the OCSF view."""

from __future__ import annotations

import errno
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from skillwarden_sidecar.recording import layout
from skillwarden_sidecar.recording.digest import SealedObject, build_digest, signature_valid
from skillwarden_sidecar.recording.entry import GENESIS_HASH, decode_line, encode_entry
from skillwarden_sidecar.recording.keys import key_id, load_or_create_signing_key, load_trusted_keys
from skillwarden_sidecar.recording.ocsf import to_ocsf
from skillwarden_sidecar.recording.samples import request_record, response_record
from skillwarden_sidecar.recording.spool import Spool, check_sealed_file, recover_stream

SCHEMA_FILE = Path(__file__).parents[3] / "sidecar/skillwarden_sidecar/recording/schema/record.v1.json"
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
STREAM = "finance/report-7f9c/20261124T061641.552217Z-1a2b3c4d"
NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


def chain(count: int, stream: str = STREAM) -> list[bytes]:
    lines, prev = [], GENESIS_HASH
    for seq in range(1, count + 1):
        kind = "request" if seq % 2 else "response"
        record = request_record(f"ex-{seq}") if kind == "request" else response_record(f"ex-{seq - 1}")
        encoded = encode_entry(stream, seq, prev, kind, NOW, record)
        lines.append(encoded.line)
        prev = encoded.hash
    return lines


def test_line_is_rfc8785_canonical_and_hash_covers_the_entry() -> None:
    line = chain(1)[0]
    decoded = decode_line(line)
    assert line == rfc8785.dumps(json.loads(line)) + b"\n" and decoded.intact
    tampered = line.replace(b"Summarise Q3 revenue", b"Summarise Q4 revenue")
    assert not decode_line(tampered).intact


def test_produced_records_validate_against_the_versioned_schema() -> None:
    rejected = encode_entry(STREAM, 1, GENESIS_HASH, "response", NOW,
                            response_record("x", outcome="rejected", status=403))
    for line in [*chain(4), rejected.line]:
        VALIDATOR.validate(json.loads(line))
    broken = request_record("x")
    del broken["decision"]
    with pytest.raises(jsonschema.ValidationError, match="'decision' is a required property"):
        VALIDATOR.validate(json.loads(encode_entry(STREAM, 1, GENESIS_HASH, "request", NOW, broken).line))


def test_digest_signature_binds_content_and_key() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    sealed = [SealedObject("records/x", 1, 3, "b" * 64)]
    data, digest_hash = build_digest(key, stream=STREAM, number=1, moment=NOW, last_seq=3, last_hash="a" * 64,
                                     prev_digest_hash=None, objects=sealed, final=False)
    document = json.loads(data)
    assert document["key_id"] == key_id(key.public_key()) and len(digest_hash) == 64
    assert signature_valid(document, key.public_key())
    assert not signature_valid(document, other.public_key())
    assert not signature_valid({**document, "last_seq": 4}, key.public_key())


def test_recovery_keeps_acknowledged_entries_and_drops_only_a_torn_tail(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    directory = spool.stream_dir(STREAM)
    (directory / "records").mkdir(parents=True)
    lines = chain(5)
    (directory / "open-000000000001.jsonl").write_bytes(b"".join(lines) + lines[0][:40])
    recovered = recover_stream(spool, STREAM, directory)
    assert [(s.name, s.first_seq, s.last_seq) for s in recovered.sealed] == [
        (layout.records_name(1, 5), 1, 5)]
    assert recovered.last_hash == decode_line(lines[-1]).stored_hash
    assert check_sealed_file(STREAM, directory / layout.records_name(1, 5)) is None


def test_recovery_quarantines_corruption_in_the_middle(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    directory = spool.stream_dir(STREAM)
    (directory / "records").mkdir(parents=True)
    lines = chain(3)
    (directory / "open-000000000001.jsonl").write_bytes(lines[0] + lines[2] + lines[1])
    recovered = recover_stream(spool, STREAM, directory)
    assert recovered.sealed == [] and not list(directory.glob("open-*"))
    reason = next((tmp_path / "quarantine").rglob("*.reason")).read_text()
    assert "line 2" in reason and "verify will report the gap" in reason


def test_sealed_file_with_wrong_range_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "000000000001-000000000009.jsonl"
    path.write_bytes(b"".join(chain(3)))
    assert check_sealed_file(STREAM, path) == "sequence range does not match the file name"


def test_object_keys_round_trip() -> None:
    key = layout.object_key("finance/", STREAM, layout.records_name(7, 42))
    parsed = layout.parse_key("finance/", key)
    assert (parsed.kind, parsed.stream, parsed.first, parsed.last) == ("records", STREAM, 7, 42)
    digest = layout.parse_key("finance/", layout.object_key("finance/", STREAM, layout.digest_name(3)))
    assert (digest.kind, digest.number) == ("digest", 3)
    assert layout.parse_key("finance/", "finance/elsewhere/x.json").kind == "unknown"
    assert layout.parse_key("finance/", "finance/keys/ed25519-0011.pem").kind == "key"


def test_trusted_keys_from_files_directories_and_private_keys(tmp_path: Path) -> None:
    private = load_or_create_signing_key(tmp_path / "a" / "signing-key.pem")
    assert (tmp_path / "a" / "signing-key.pem").stat().st_mode & 0o777 == 0o600
    public_file = tmp_path / "a" / "signing-key.pem.pub"
    expected = key_id(private.public_key())
    assert set(load_trusted_keys([public_file])) == {expected}
    assert set(load_trusted_keys([tmp_path / "a" / "signing-key.pem"])) == {expected}
    (tmp_path / "pins").mkdir()
    (tmp_path / "pins" / "k.pem").write_bytes(public_file.read_bytes())
    assert set(load_trusted_keys([tmp_path / "pins"])) == {expected}
    assert load_or_create_signing_key(tmp_path / "a" / "signing-key.pem").public_key() == private.public_key()


def entry_of(seq: int, kind: str, record: dict[str, Any]) -> dict[str, Any]:
    return decode_line(encode_entry(STREAM, seq, GENESIS_HASH, kind, NOW, record).line).entry


def test_ocsf_view_of_an_allowed_and_a_denied_exchange() -> None:
    event = to_ocsf(entry_of(2, "request", request_record("ex-1")),
                    entry_of(3, "response", response_record("ex-1")))
    assert (event["class_uid"], event["category_uid"], event["activity_id"], event["type_uid"]) == (
        6003, 6, 1, 600301)
    assert (event["status_id"], event["action"], event["severity_id"]) == (1, "Allowed", 1)
    assert event["actor"]["user"]["uid"] == "alice@example.com"
    assert event["api"]["operation"] == "messages.create"
    assert event["policy"]["name"] == "finance/finance-reporting"
    assert {r["type"] for r in event["resources"]} == {"skill", "model"}
    event = to_ocsf(entry_of(4, "request", request_record("ex-2", action="deny")),
                    entry_of(5, "response", response_record("ex-2", outcome="rejected", status=403)))
    assert (event["status_id"], event["action_id"], event["status_code"]) == (2, 2, "403")


def test_a_key_on_a_read_only_mount_is_used_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created = load_or_create_signing_key(tmp_path / "elsewhere" / "key.pem")
    mount = tmp_path / "signing"
    mount.mkdir()
    (mount / "signing-key.pem").write_bytes((tmp_path / "elsewhere" / "key.pem").read_bytes())

    def read_only(self: Path, data: bytes) -> int:  # a Secret volume (tests run as root here)
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_bytes", read_only)
    loaded = load_or_create_signing_key(mount / "signing-key.pem")
    assert key_id(loaded.public_key()) == key_id(created.public_key())
    assert not (mount / "signing-key.pem.pub").exists()
