"""How long an object must stay locked: the one place that reads the retention a record declares
and combines several declarations (shipper, recorder and verifier all use it).

The policy's `recording` block comes with every OPA decision (`{retentionDays, mode}`, the
namespace's longest retention). A request record keeps it in `decision.recording`, a response
record in `recording` (its segment may differ from the request's), and a `stream_start` entry
names the recorder's configured floor in `retention: {mode, days}`. An object holding several
entries is locked for the longest of them in the strictest mode, never below the configured floor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

MODE_STRENGTH = {"GOVERNANCE": 1, "COMPLIANCE": 2}
# S3 accepts retain-until dates far in the future, but datetime does not (year 9999): a typo in a
# policy must not wedge the shipper. A century is beyond any records schedule we know of.
MAX_RETENTION_DAYS = 36500


@dataclass(frozen=True)
class Retention:
    mode: str
    days: int

    def at_least(self, other: Retention | None) -> Retention:
        """The longer days and the stricter mode of the two (COMPLIANCE > GOVERNANCE)."""
        if other is None:
            return self
        stricter = MODE_STRENGTH.get(self.mode, 0) >= MODE_STRENGTH.get(other.mode, 0)
        mode = self.mode if stricter else other.mode
        return Retention(mode, max(self.days, other.days))

    def covers(self, other: Retention) -> bool:
        return self.days >= other.days and MODE_STRENGTH.get(self.mode, 0) >= MODE_STRENGTH.get(other.mode, 0)

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "days": self.days}


def _parse(mode: Any, days: Any) -> Retention | None:
    # Malformed parts are ignored (the floor applies), never fatal: a record must always ship.
    valid_days = days if type(days) is int and days >= 1 else 0
    valid_mode = mode if mode in MODE_STRENGTH else ""
    if not valid_days and not valid_mode:
        return None
    return Retention(valid_mode, min(valid_days, MAX_RETENTION_DAYS))


def from_policy(recording: Any) -> dict[str, Any] | None:
    """The part of a decision's `recording` block a record keeps for its own lock."""
    if not isinstance(recording, dict):
        return None
    return {"retentionDays": recording.get("retentionDays"), "mode": recording.get("mode")}


def declared(kind: str, record: Any) -> Retention | None:
    """The retention one entry's record asks for, or None."""
    if not isinstance(record, dict):
        return None
    if kind == "stream_start":
        block = record.get("retention")
        return _parse(block.get("mode"), block.get("days")) if isinstance(block, dict) else None
    block = record.get("decision", {}).get("recording") if kind == "request" and isinstance(
        record.get("decision"), dict) else record.get("recording")
    return _parse(block.get("mode"), block.get("retentionDays")) if isinstance(block, dict) else None


def combine(floor: Retention, found: Iterable[Retention | None]) -> Retention:
    result = floor
    for item in found:
        result = result.at_least(item)
    return result


def of_entries(entries: Iterable[dict[str, Any]]) -> Iterable[Retention | None]:
    for entry in entries:
        yield declared(str(entry.get("kind")), entry.get("record"))


def of_segment(body: bytes) -> Iterable[Retention | None]:
    """What the entries of a records object ask for (malformed lines ask nothing)."""
    for line in body.splitlines():
        try:  # no hash re-derivation here: the shipper's segments were checked when sealed
            outer = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        entry = outer.get("entry") if isinstance(outer, dict) else None
        if isinstance(entry, dict):
            yield declared(str(entry.get("kind")), entry.get("record"))


def of_digest(document: Any) -> Retention | None:
    """The stream's running maximum a signed digest names (None in digests written before it)."""
    block = document.get("retention") if isinstance(document, dict) else None
    return _parse(block.get("mode"), block.get("days")) if isinstance(block, dict) else None
