"""Stream record entries out of the bucket for `audit show` / `audit search` — object by object,
no index or database. Integrity is `verify`'s job; these read the latest version of each key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from skillwarden_sidecar.recording import layout
from skillwarden_sidecar.recording.entry import MalformedEntry, decode_line


def iter_entries(client: Any, bucket: str, prefix: str, stream_prefix: str = "") -> Iterator[dict[str, Any]]:
    """Entries of every records object under prefix, in stream and sequence order."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix + stream_prefix):
        for item in page.get("Contents", []):
            parsed = layout.parse_key(prefix, item["Key"])
            if parsed.kind != "records":
                continue
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for line in body.splitlines():
                try:
                    yield decode_line(line).entry
                except MalformedEntry:
                    continue


@dataclass
class Exchange:
    exchange_id: str
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None


def iter_exchanges(entries: Iterator[dict[str, Any]]) -> Iterator[Exchange]:
    """Pair request and response parts; an exchange is yielded when its response arrives (memory
    holds only exchanges in flight) or at the end when the response part never came."""
    open_: dict[str, Exchange] = {}
    for entry in entries:
        if entry.get("kind") not in ("request", "response"):
            continue
        exchange_id = str(entry.get("record", {}).get("exchange_id", ""))
        exchange = open_.setdefault(exchange_id, Exchange(exchange_id))
        if entry["kind"] == "request":
            exchange.request = entry
        else:
            exchange.response = entry
            yield open_.pop(exchange_id)
    yield from open_.values()


def matches(exchange: Exchange, *, identity: str | None = None, skill: str | None = None,
            decision: str | None = None, since: str | None = None, until: str | None = None) -> bool:
    request = (exchange.request or {}).get("record", {})
    when = str((exchange.request or exchange.response or {}).get("time", ""))
    if since and when < since:
        return False
    if until and when >= until:
        return False
    if identity:
        who = request.get("identity") or {}
        workload = request.get("workload") or {}
        names = {who.get("sub"), who.get("email"),
                 f"system:serviceaccount:{workload.get('namespace')}:{workload.get('service_account')}"}
        if identity not in names:
            return False
    if skill and skill not in {s.get("skill_id") for s in request.get("skills") or []}:
        return False
    return not (decision and (request.get("decision") or {}).get("action") != decision)


def summary(exchange: Exchange) -> dict[str, Any]:
    request = (exchange.request or {}).get("record", {})
    response = (exchange.response or {}).get("record", {})
    anchor = exchange.request or exchange.response or {}
    return {
        "exchange_id": exchange.exchange_id, "time": anchor.get("time"), "stream": anchor.get("stream"),
        "seq": anchor.get("seq"), "identity": (request.get("identity") or {}).get("sub"),
        "workload": request.get("workload"), "operation": (request.get("route") or {}).get("operation"),
        "model": request.get("model"), "skills": [s.get("skill_id") for s in request.get("skills") or []],
        "decision": (request.get("decision") or {}).get("action"),
        "policy": (request.get("decision") or {}).get("policy"),
        "rule": (request.get("decision") or {}).get("rule"),
        "status": response.get("status"), "outcome": response.get("outcome"),
    }
