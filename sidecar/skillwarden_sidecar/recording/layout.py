"""Names of things in the spool and in the bucket — the single source for writer, shipper and
verifier.

Bucket layout under the configured prefix::

    <prefix><namespace>/<pod>/<start>-<random>/records/<first:012d>-<last:012d>.jsonl
    <prefix><namespace>/<pod>/<start>-<random>/digests/<n:08d>.json
    <prefix>keys/<key_id>.pem                      (published public signing keys)

The stream id is `<namespace>/<pod>/<start>-<random>`; the record object's name is derived from
the stream id and the sequence range it holds, so a retry or a restarted shipper always writes the
same key (and `If-None-Match: *` makes a second write of that key impossible).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

# Stream ids and object names are produced by this module; the patterns only parse our own names
# (bucket listings), never user text.
_RECORDS = re.compile(r"^records/(\d{12})-(\d{12})\.jsonl$")
_DIGEST = re.compile(r"^digests/(\d{8})\.json$")
_STREAM_TAIL = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}$")


def new_stream_id(namespace: str, pod: str, started: datetime) -> str:
    start = started.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{namespace or '_'}/{pod}/{start}-{secrets.token_hex(4)}"


def records_name(first: int, last: int) -> str:
    return f"records/{first:012d}-{last:012d}.jsonl"


def digest_name(number: int) -> str:
    return f"digests/{number:08d}.json"


def key_name(key_id: str) -> str:
    return f"keys/{key_id}.pem"


def object_key(prefix: str, stream: str, name: str) -> str:
    return f"{prefix}{stream}/{name}"


@dataclass(frozen=True)
class ParsedKey:
    kind: str  # "records" | "digest" | "key" | "unknown"
    stream: str = ""
    first: int = 0
    last: int = 0
    number: int = 0
    name: str = ""


def parse_key(prefix: str, key: str) -> ParsedKey:
    if not key.startswith(prefix):
        return ParsedKey("unknown", name=key)
    rest = key[len(prefix):]
    if rest.startswith("keys/") and rest.endswith(".pem"):
        return ParsedKey("key", name=rest[len("keys/"):-len(".pem")])
    parts = rest.split("/")
    if len(parts) != 5 or not _STREAM_TAIL.match(parts[2]):
        return ParsedKey("unknown", name=rest)
    stream, name = "/".join(parts[:3]), "/".join(parts[3:])
    if match := _RECORDS.match(name):
        return ParsedKey("records", stream, int(match[1]), int(match[2]), name=name)
    if match := _DIGEST.match(name):
        return ParsedKey("digest", stream, number=int(match[1]), name=name)
    return ParsedKey("unknown", stream, name=name)


def parse_local_name(name: str) -> ParsedKey:
    """A spool file name relative to its stream directory (`records/...` or `digests/...`)."""
    if match := _RECORDS.match(name):
        return ParsedKey("records", first=int(match[1]), last=int(match[2]), name=name)
    if match := _DIGEST.match(name):
        return ParsedKey("digest", number=int(match[1]), name=name)
    return ParsedKey("unknown", name=name)
