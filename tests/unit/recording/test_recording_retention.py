"""The retention rules: what a record declares, and how an object's lock combines its entries'
declarations with the configured floor (longest days, strictest mode)."""

from __future__ import annotations

from datetime import UTC, datetime

from skillwarden_sidecar.recording import retention
from skillwarden_sidecar.recording.entry import GENESIS_HASH, encode_entry
from skillwarden_sidecar.recording.retention import Retention
from skillwarden_sidecar.recording.samples import request_record, response_record

MOMENT = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
STREAM = "finance/pod/20261124T070000.000000Z-0000abcd"


def policy(days: object, mode: object) -> dict[str, object]:
    return {"bucket": "skillwarden-audit", "prefix": "finance/", "retentionDays": days, "mode": mode}


def segment(*records: tuple[str, dict[str, object]]) -> bytes:
    lines, head = [], GENESIS_HASH
    for seq, (kind, record) in enumerate(records, 1):
        encoded = encode_entry(STREAM, seq, head, kind, MOMENT, record)
        lines.append(encoded.line)
        head = encoded.hash
    return b"".join(lines)


def test_longest_days_and_strictest_mode_win_over_the_floor() -> None:
    floor = Retention("GOVERNANCE", 7)
    found = [Retention("GOVERNANCE", 30), Retention("COMPLIANCE", 10), None, Retention("GOVERNANCE", 400)]
    assert retention.combine(floor, found) == Retention("COMPLIANCE", 400)
    # The floor stays when every declaration is weaker; order does not matter.
    assert retention.combine(Retention("COMPLIANCE", 2555), reversed(found)) == Retention("COMPLIANCE", 2555)
    assert retention.combine(floor, []) == floor


def test_each_record_kind_declares_where_the_sidecar_puts_it() -> None:
    request = request_record("ex-1", recording=retention.from_policy(policy(400, "COMPLIANCE")))
    assert request["decision"]["recording"] == {"retentionDays": 400, "mode": "COMPLIANCE"}
    assert retention.declared("request", request) == Retention("COMPLIANCE", 400)
    response = response_record("ex-1", recording={"retentionDays": 30, "mode": "GOVERNANCE"})
    assert retention.declared("response", response) == Retention("GOVERNANCE", 30)
    assert retention.declared("stream_start", {"retention": {"mode": "COMPLIANCE", "days": 9}}) == \
        Retention("COMPLIANCE", 9)
    assert retention.declared("request", request_record("ex-2")) is None  # no decision: floor applies


def test_malformed_declarations_never_lower_the_floor_or_break_shipping() -> None:
    floor = Retention("COMPLIANCE", 30)
    for bad in (policy(-5, "NONE"), policy("400", None), policy(True, 7), policy(0, "")):
        wanted = retention.declared("request", request_record("ex", recording=retention.from_policy(bad)))
        assert floor.at_least(wanted) == floor
    # A typo of a million days is capped (a datetime that far out would wedge the shipper).
    huge = retention.declared("response", {"recording": {"retentionDays": 10**9, "mode": "COMPLIANCE"}})
    assert huge == Retention("COMPLIANCE", retention.MAX_RETENTION_DAYS)


def test_a_segment_is_locked_for_what_its_own_entries_asked() -> None:
    body = segment(
        ("stream_start", {"retention": {"mode": "GOVERNANCE", "days": 1}}),
        ("request", request_record("ex-1", recording={"retentionDays": 30, "mode": "GOVERNANCE"})),
        ("request", request_record("ex-2", recording={"retentionDays": 400, "mode": "COMPLIANCE"})),
        ("response", response_record("ex-1", recording={"retentionDays": 30, "mode": "GOVERNANCE"})),
    )
    assert retention.combine(Retention("GOVERNANCE", 1), retention.of_segment(body)) == \
        Retention("COMPLIANCE", 400)
    # A torn last line asks nothing but does not hide the rest.
    assert retention.combine(Retention("GOVERNANCE", 1), retention.of_segment(body + b'{"entry":')) == \
        Retention("COMPLIANCE", 400)
    running = {"retention": {"mode": "COMPLIANCE", "days": 400}}
    assert retention.of_digest(running) == Retention("COMPLIANCE", 400)
    assert retention.of_digest({"type": "skillwarden.digest.v1"}) is None
